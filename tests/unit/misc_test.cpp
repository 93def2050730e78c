#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/session_token.h"
#include "mcp_sse_bridge/text_util.h"

using namespace msb;

TEST_CASE("deadline: after, reached, left, earliest, within, never") {
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
  // within: a set bound narrows, a zero bound (off) leaves d, a wider one too.
  CHECK(Deadline::within(d, Millis(10)) < d);
  CHECK(Deadline::within(d, Millis(0)) == d);
  CHECK(Deadline::within(d, Millis(5000)) == d);
  CHECK(Deadline::within(Deadline::never(), Millis(0)).is_never());
  CHECK_FALSE(Deadline::within(Deadline::never(), Millis(10)).is_never());
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
  // Bounded, never wrapped: a year of milliseconds, 1 TiB.
  CHECK(parse_duration("8784h")->count() == 8784ll * 3600000);
  CHECK_FALSE(parse_duration("8785h"));
  CHECK_FALSE(parse_duration("3000000h"));
  CHECK(*parse_size("1024GiB") == 1ull << 40);
  CHECK_FALSE(parse_size("1025GiB"));
  CHECK_FALSE(parse_size("17179869185GiB"));
  CHECK_FALSE(parse_size("999999999999999GiB"));
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
  // Two sessions with the same params get different ids, and different keys:
  // the key (the MAC part) is what per-session maps and the warm pool use.
  std::string id2 = a.mint(params);
  CHECK(id2 != id);
  auto s2 = a.verify(id2);
  REQUIRE(s2);
  CHECK(s->key == id.substr(id.find('.') + 1));
  CHECK(s->key.size() == 43);
  CHECK(s2->key != s->key);
  CHECK(s->scope() == s->key);
  // A cached session is shared, not copied per request.
  CHECK(a.verify(id).get() == s.get());
  // A synthesized session (no minted id) is told apart by its id.
  ClientSession synth;
  synth.id = "stateless";
  CHECK(synth.scope() == "stateless");
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

TEST_CASE("text: ASCII case-insensitive equals, starts-with and contains") {
  CHECK(iequals("Content-Type", "content-type"));
  CHECK_FALSE(iequals("Content-Type", "content-typ"));
  CHECK(istarts_with("Application/JSON; charset=utf-8", "application/json"));
  CHECK_FALSE(istarts_with("text/application/json", "application/json"));
  CHECK_FALSE(istarts_with("application/js", "application/json"));
  CHECK(icontains("application/json, Text/Event-Stream", "text/event-stream"));
  CHECK(icontains("*/*", "*/*"));
  CHECK_FALSE(icontains("application/json", "text/event-stream"));
  CHECK_FALSE(icontains("", "a"));
  CHECK(icontains("", ""));
  CHECK(icontains("aab", "ab"));  // a false start is not the end of the search
}
