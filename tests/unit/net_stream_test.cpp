// NetStream's readiness tracking on a real event loop: a plain socket known
// drained is waited on without a read attempt, so the cases where "drained"
// would be wrong must still end at once: an end (FIN) or a reset (RST) that
// arrived together with the last bytes. A peer thread on raw sockets plays
// the other side on 127.0.0.1 port 0; every wait is bounded.
#include <doctest/doctest.h>

// GCC 12 misreads Asio's awaitable frame allocator once coroutine lambdas are
// inlined (see upstream_channel_test.cpp).
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/net_stream.h"

using namespace msb;
using namespace std::chrono_literals;

namespace {

constexpr auto kTok = asio::as_tuple(asio::use_awaitable);

// One connection accepted on 127.0.0.1:0 and handed to `script` on a thread
// of its own; the listening socket closes after the accept.
class Peer {
 public:
  explicit Peer(std::function<void(int)> script) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(lfd_, 4) == 0);
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this, script = std::move(script)] {
      int fd = ::accept(lfd_, nullptr, nullptr);
      if (fd >= 0) script(fd);
    });
  }
  ~Peer() {
    ::shutdown(lfd_, SHUT_RDWR);  // ends an accept that never came
    thread_.join();
    ::close(lfd_);
  }
  int port() const { return port_; }

 private:
  int lfd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

void write_all(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    s.remove_prefix(static_cast<size_t>(n));
  }
}

// Runs body on a loop of its own, bounded.
bool run_on_loop(std::function<asio::awaitable<void>()> body, std::chrono::milliseconds bound = 5s) {
  EventLoops loops(1);
  loops.start();
  auto done = std::make_shared<std::promise<bool>>();
  auto fut = done->get_future();
  auto fn = std::make_shared<std::function<asio::awaitable<void>()>>(std::move(body));
  auto ex = loops.at(0).io().get_executor();
  asio::post(ex, [ex, fn, done] {
    asio::co_spawn(ex, (*fn)(), [done, fn](std::exception_ptr e) { done->set_value(e == nullptr); });
  });
  bool ok = fut.wait_for(bound) == std::future_status::ready && fut.get();
  loops.stop();
  return ok;
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(d);
  co_await t.async_wait(kTok);
}

asio::awaitable<std::unique_ptr<NetStream>> connect_to(int port) {
  tcp::socket s(co_await asio::this_coro::executor);
  auto [ec] = co_await s.async_connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)},
                                       kTok);
  REQUIRE(!ec);
  co_return std::make_unique<NetStream>(std::move(s));
}

// A read that finds nothing: the socket is known drained from here on (and
// what the reactor saw before is settled), as between two requests.
asio::awaitable<void> drain(NetStream& s) {
  char c;
  ErrorCode ec;
  (void)s.read_now(asio::buffer(&c, 1), ec);
  CHECK(ec == asio::error::would_block);
  if (NetStream::tracks_readiness()) CHECK_FALSE(s.may_have_input());
  co_return;
}

struct ReadResult {
  std::string got;
  ErrorCode end;
  int64_t ms = 0;
};

// Reads until the stream ends or fails, the way the bridge reads: what may be
// there is read at once, a socket known drained is waited on. A timer cancels
// the socket at `bound`: a wait that is never woken ends as operation_aborted.
asio::awaitable<ReadResult> read_to_end(NetStream& s, std::chrono::milliseconds bound = 1000ms) {
  ReadResult r;
  auto t0 = Clock::now();
  asio::steady_timer guard(co_await asio::this_coro::executor);
  guard.expires_after(bound);
  guard.async_wait([&s](const ErrorCode& ec) {
    if (!ec) s.socket().cancel();
  });
  char buf[4096];
  bool wait_first = false;  // after a read that found nothing (the bridge's rule)
  for (int i = 0; i < 1000; ++i) {
    if (!wait_first && s.may_have_input()) {
      ErrorCode ec;
      size_t n = s.read_now(asio::buffer(buf), ec);
      if (!ec) {
        r.got.append(buf, n);
        continue;
      }
      wait_first = ec == asio::error::would_block || ec == asio::error::try_again;
      if (wait_first) continue;
      r.end = ec;
      break;
    }
    wait_first = false;
    auto [wec] = co_await s.wait_readable();
    if (wec) {
      r.end = wec;
      break;
    }
  }
  guard.cancel();
  r.ms = elapsed_ms(t0);
  co_return r;
}

}  // namespace

TEST_CASE("net stream: the peer's FIN that came with the last bytes ends the stream at once") {
  // The bytes and the FIN arrive before the loop looks: one readiness event
  // for both. A short read alone would look "drained" and the wait would
  // never be woken; TCP_INQ reports the FIN behind the bytes.
  Peer peer([](int fd) {
    std::this_thread::sleep_for(100ms);
    write_all(fd, "abc");
    ::close(fd);
  });
  ReadResult r;
  REQUIRE(run_on_loop([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(peer.port());
    co_await drain(*s);
    co_await sleep_for(250ms);  // both arrive; the loop's epoll sees them meanwhile
    r = co_await read_to_end(*s);
  }));
  CHECK(r.got == "abc");
  CHECK(r.end == asio::error::eof);
  CHECK(r.ms < 500);
}

TEST_CASE("net stream: a reset that came with the last bytes fails the stream at once") {
  Peer peer([](int fd) {
    std::this_thread::sleep_for(100ms);
    write_all(fd, "abc");
    std::this_thread::sleep_for(20ms);
    linger l{1, 0};  // close with an RST
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd);
  });
  ReadResult r;
  REQUIRE(run_on_loop([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(peer.port());
    co_await drain(*s);
    co_await sleep_for(250ms);
    r = co_await read_to_end(*s);
  }));
  CHECK(r.got == "abc");
  CHECK(r.end == asio::error::connection_reset);
  CHECK(r.ms < 500);
}

TEST_CASE("net stream: a drained socket is known drained; bytes that come later wake its wait") {
  Peer peer([](int fd) {
    std::this_thread::sleep_for(200ms);
    write_all(fd, "later");
    std::this_thread::sleep_for(100ms);
    ::close(fd);
  });
  bool before = true, after_drain = true;
  ReadResult r;
  REQUIRE(run_on_loop([&]() -> asio::awaitable<void> {
    auto s = co_await connect_to(peer.port());
    before = s->may_have_input();  // unknown yet: a new socket
    char c;
    ErrorCode ec;
    (void)s->read_now(asio::buffer(&c, 1), ec);
    CHECK(ec == asio::error::would_block);
    after_drain = s->may_have_input();
    r = co_await read_to_end(*s);
  }));
  CHECK(before);
  if (NetStream::tracks_readiness()) CHECK_FALSE(after_drain);
  CHECK(r.got == "later");
  CHECK(r.end == asio::error::eof);
  CHECK(r.ms >= 150);
  CHECK(r.ms < 800);
}

TEST_CASE("net stream: a readiness wait ends at the awaiting coroutine's cancellation") {
  Peer peer([](int fd) {
    pollfd p{fd, POLLIN, 0};
    (void)::poll(&p, 1, 3000);  // never writes; ends when the client closes
    ::close(fd);
  });
  ErrorCode end;
  int64_t ms = -1;
  REQUIRE(run_on_loop([&]() -> asio::awaitable<void> {
    auto ex = co_await asio::this_coro::executor;
    auto s = co_await connect_to(peer.port());
    char c;
    ErrorCode ec;
    (void)s->read_now(asio::buffer(&c, 1), ec);  // drained: the wait is queued without a look
    asio::cancellation_signal sig;
    auto t0 = Clock::now();
    auto done = std::make_shared<std::promise<ErrorCode>>();
    auto fut = done->get_future();
    asio::co_spawn(
        ex, [&]() -> asio::awaitable<ErrorCode> { co_return std::get<0>(co_await s->wait_readable()); },
        asio::bind_cancellation_slot(sig.slot(), [done](std::exception_ptr, ErrorCode e) { done->set_value(e); }));
    co_await sleep_for(50ms);
    sig.emit(asio::cancellation_type::terminal);
    for (int i = 0; i < 100 && fut.wait_for(0s) != std::future_status::ready; ++i) co_await sleep_for(10ms);
    if (fut.wait_for(0s) == std::future_status::ready) {
      end = fut.get();
      ms = elapsed_ms(t0);
    }
    s->close();
  }));
  CHECK(end == asio::error::operation_aborted);
  CHECK(ms >= 0);
  CHECK(ms < 500);
}
