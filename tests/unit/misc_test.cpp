#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/http_client.h"
#include "mcp_sse_bridge/session_token.h"

using namespace msb;

TEST_CASE("deadline: after, reached, left, earliest, never") {
  auto d = Deadline::after(Millis(50));
  CHECK_FALSE(d.reached());
  CHECK(d.left() <= Millis(50));
  CHECK(d.poll_ms() <= 50);
  CHECK(d.poll_ms() >= 1);
  auto past = Deadline::after(Millis(-5));
  CHECK(past.reached());
  CHECK(past.left() == Clock::duration::zero());
  CHECK(past.poll_ms() == 0);
  CHECK(Deadline::earliest(d, past) == past);
  CHECK(Deadline::never().poll_ms(250) == 250);
  CHECK_FALSE(Deadline::never().reached());
  std::this_thread::sleep_for(Millis(60));
  CHECK(d.reached());
}

TEST_CASE("config: durations and sizes") {
  CHECK(parse_duration("250ms")->count() == 250);
  CHECK(parse_duration("5s")->count() == 5000);
  CHECK(parse_duration("2m")->count() == 120000);
  CHECK(parse_duration("1h")->count() == 3600000);
  CHECK(parse_duration("3")->count() == 3000);
  CHECK_FALSE(parse_duration("5 s"));
  CHECK_FALSE(parse_duration("ms"));
  CHECK_FALSE(parse_duration("-1s"));
  CHECK_FALSE(parse_duration("1d"));
  CHECK(*parse_size("16MiB") == 16ull << 20);
  CHECK(*parse_size("64KiB") == 64ull << 10);
  CHECK(*parse_size("10MB") == 10000000);
  CHECK(*parse_size("512") == 512);
  CHECK_FALSE(parse_size("1.5MiB"));
  CHECK(format_duration(Duration(1500)) == "1500ms");
  CHECK(format_duration(Duration(120000)) == "2m");
}

TEST_CASE("session ids: sign, verify, tamper, other secret, revoke") {
  SessionTokens a("0123456789abcdef-secret", 4);
  std::string params = R"({"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}})";
  std::string id = a.mint(params);
  for (unsigned char c : id) CHECK((c >= 0x21 && c <= 0x7e));
  auto s = a.verify(id);
  REQUIRE(s);
  CHECK(s->init_params == params);
  // Logs carry a tag, never the id.
  CHECK(s->tag.size() == 12);
  CHECK(s->tag == session_tag(id));
  CHECK(id.find(s->tag) == std::string::npos);
  // A second verify (served from the cache of accepted ids) says the same.
  auto again = a.verify(id);
  REQUIRE(again);
  CHECK(again->init_params == params);
  CHECK(again->tag == s->tag);
  // Same secret, another process: accepted.
  SessionTokens b("0123456789abcdef-secret", 4);
  CHECK(b.verify(id));
  // Other secret: refused.
  SessionTokens other("another-secret-0123456789", 4);
  CHECK_FALSE(other.verify(id));
  // Any single changed character is refused.
  for (size_t i = 0; i < id.size(); i += 7) {
    std::string t = id;
    t[i] = t[i] == 'A' ? 'B' : 'A';
    CHECK_FALSE(a.verify(t));
  }
  CHECK_FALSE(a.verify(""));
  CHECK_FALSE(a.verify("no-dot"));
  CHECK_FALSE(a.verify(id + "x"));
  // Two sessions with the same params get different ids.
  CHECK(a.mint(params) != id);
  // Revocation is local and bounded.
  CHECK(a.revoke(id));
  CHECK_FALSE(a.verify(id));
  CHECK(b.verify(id));
  for (int i = 0; i < 10; ++i) a.revoke(a.mint(params));
  CHECK(a.revoked_count() == 4);
}

TEST_CASE("base64url round trip") {
  for (std::string s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar", std::string("\0\xff\x10", 3)}) {
    auto d = base64url_decode(base64url_encode(s));
    REQUIRE(d);
    CHECK(*d == s);
  }
  CHECK_FALSE(base64url_decode("a"));
  CHECK_FALSE(base64url_decode("ab+/"));
}

TEST_CASE("chunked decoder: sizes, extensions, trailers, split input, garbage") {
  std::string in = "4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
  for (size_t cut = 0; cut <= in.size(); ++cut) {
    ChunkedDecoder d;
    std::string out;
    std::string_view a = std::string_view(in).substr(0, cut), b = std::string_view(in).substr(cut);
    auto r1 = d.feed(a, out);
    auto r2 = r1 == ChunkedDecoder::R::kDone ? r1 : d.feed(b, out);
    CHECK(r2 == ChunkedDecoder::R::kDone);
    CHECK(out == "Wikipedia in\r\n\r\nchunks.");
  }
  ChunkedDecoder bad;
  std::string out;
  std::string_view g = "zz\r\n";
  CHECK(bad.feed(g, out) == ChunkedDecoder::R::kError);
}

TEST_CASE("tcp connect: refused is immediate and unreachable") {
  // Port 1 on loopback is closed: connection refused.
  auto t0 = Clock::now();
  auto s = TcpStream::connect("127.0.0.1", 1, Deadline::after(Millis(2000)));
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().kind == ErrorKind::kUnreachable);
  CHECK(Clock::now() - t0 < Millis(500));
}

TEST_CASE("tcp connect: the deadline bounds a connect whose SYNs are dropped") {
  // A listener whose accept queue is full (never accepted) drops further
  // SYNs, as a black-holed path does: connect() hangs until the deadline.
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(lfd, 0) == 0);
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  std::vector<int> fillers;
  for (int i = 0; i < 8; ++i) {
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    fillers.push_back(c);
    ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
    pollfd p{c, POLLOUT, 0};
    if (::poll(&p, 1, 200) == 0) break;
  }
  auto t0 = Clock::now();
  auto s = TcpStream::connect("127.0.0.1", ntohs(a.sin_port), Deadline::after(Millis(400)));
  auto ms = std::chrono::duration_cast<Millis>(Clock::now() - t0).count();
  REQUIRE_FALSE(s.ok());
  CHECK(s.error().kind == ErrorKind::kTimeout);
  CHECK(ms >= 380);
  CHECK(ms < 900);
  for (int c : fillers) ::close(c);
  ::close(lfd);
}
