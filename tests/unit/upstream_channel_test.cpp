// UpstreamConnection and UpstreamChannel on an event loop of their own,
// against the example legacy server (fault switches) and hostile fakes on raw
// sockets, all on 127.0.0.1 port 0. Every wait here is bounded: a channel that
// hangs fails its test instead of blocking the run.
#include <doctest/doctest.h>

// GCC 12 misreads Asio's awaitable frame allocator (operator new/delete of
// awaitable_frame_base, recycled through thread_info_base) once coroutine
// lambdas are inlined: a false -Wmismatched-new-delete.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "legacy_server.h"
#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/tls.h"
#include "mcp_sse_bridge/upstream_channel.h"
#include "mcp_sse_bridge/upstream_connection.h"

using namespace msb;
using namespace std::chrono_literals;

namespace {

const std::string kTlsDir = std::string(TEST_DATA_DIR) + "/tls/";

int64_t ms_since(Clock::time_point t) { return elapsed_ms(t); }

// One event loop on its own thread. Declare it after everything its
// coroutines touch: it is destroyed first, and with it any coroutine left
// behind by a failed test.
class LoopThread {
 public:
  LoopThread() { loops_.start(); }
  ~LoopThread() { loops_.stop(); }
  asio::any_io_executor ex() { return loops_.at(0).io().get_executor(); }

  // Runs body on the loop (bound to sig's slot when given) and waits for it
  // at most `bound`. False when it did not finish, or let an exception out.
  bool run(std::function<asio::awaitable<void>()> body, std::chrono::milliseconds bound = 10s,
           asio::cancellation_signal* sig = nullptr) {
    auto done = std::make_shared<std::promise<bool>>();
    auto fut = done->get_future();
    auto ex = this->ex();
    // The coroutine lambda's captures live in the closure object: keep it
    // alive until the coroutine has completed.
    auto fn = std::make_shared<std::function<asio::awaitable<void>()>>(std::move(body));
    asio::post(ex, [ex, fn, done, sig] {
      auto handler = [done, fn](std::exception_ptr e) { done->set_value(e == nullptr); };
      if (sig)
        asio::co_spawn(ex, (*fn)(), asio::bind_cancellation_slot(sig->slot(), handler));
      else
        asio::co_spawn(ex, (*fn)(), handler);
    });
    if (fut.wait_for(bound) != std::future_status::ready) return false;
    return fut.get();
  }

  // Emits a terminal cancellation on the loop thread after `after`.
  void cancel_after(asio::cancellation_signal& sig, std::chrono::milliseconds after) {
    std::thread([this, &sig, after] {
      std::this_thread::sleep_for(after);
      asio::post(ex(), [&sig] { sig.emit(asio::cancellation_type::terminal); });
    }).detach();
  }

 private:
  EventLoops loops_{1};
};

asio::awaitable<void> sleep_on_loop(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

UpstreamConfig config_for(int port, const std::string& scheme = "http",
                          const std::string& host = "127.0.0.1") {
  UpstreamConfig c;
  c.sse_url = *parse_url(scheme + "://" + host + ":" + std::to_string(port) + "/sse");
  c.connect_timeout = 1000ms;
  c.endpoint_timeout = 600ms;
  c.post_timeout = 300ms;
  return c;
}

const std::string kInit =
    R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05",)"
    R"("capabilities":{},"clientInfo":{"name":"channel-test","version":"1"}}})";
const std::string kInitialized = R"({"jsonrpc":"2.0","method":"notifications/initialized"})";

std::string tool_call(int id, const std::string& tool, const std::string& args) {
  return R"({"jsonrpc":"2.0","id":)" + std::to_string(id) +
         R"(,"method":"tools/call","params":{"name":")" + tool + R"(","arguments":)" + args + "}}";
}

// open + initialize + initialized, as the bridge's setup does.
asio::awaitable<Status> setup(UpstreamChannel& ch, const UpstreamConfig& c) {
  auto st = co_await ch.open(Deadline::after(c.connect_timeout), c.endpoint_timeout, Deadline::after(5s));
  if (!st) co_return st;
  st = co_await ch.post(kInit, Deadline::after(2s), Phase::kInitialize);
  if (!st) co_return st;
  auto m = co_await ch.next_message(Deadline::after(2s), Phase::kInitialize);
  if (!m) co_return m.error();
  if (m->id != "1") co_return make_error(ErrorKind::kInternal, Phase::kInitialize, "unexpected " + m->raw);
  co_return co_await ch.post(kInitialized, Deadline::after(2s), Phase::kInitialize);
}

// Starts the example legacy server on 127.0.0.1 port 0; returns its port.
int start_legacy(example::LegacyServer& srv) {
  int port = srv.start("127.0.0.1", 0);
  REQUIRE(port > 0);
  return port;
}

// What one operation came to: its error (none when it succeeded) and how long
// it took.
struct Outcome {
  std::optional<BridgeError> err;
  int64_t took = 0;
};

// Awaits op (a Status or an Expected), timed. Channel operations take their
// text as a string_view: await this in the full expression that makes op's
// arguments.
template <class T>
asio::awaitable<Outcome> timed(asio::awaitable<T> op) {
  auto t0 = Clock::now();
  auto r = co_await std::move(op);
  Outcome o;
  o.took = ms_since(t0);
  if (!r) o.err = r.error();
  co_return o;
}

// Opens a channel to c on lt's loop, at most `connect` to connect and
// c.endpoint_timeout for the endpoint; REQUIREs that the run finished.
Outcome open_once(LoopThread& lt, const UpstreamConfig& c, std::chrono::milliseconds connect = 1s) {
  auto r = std::make_shared<Outcome>();
  REQUIRE(lt.run([c, connect, r]() -> asio::awaitable<void> {
    UpstreamChannel ch(co_await asio::this_coro::executor, c, "");
    *r = co_await timed(ch.open(Deadline::after(connect), c.endpoint_timeout, Deadline::after(5s)));
  }));
  return *r;
}

using ChannelBody = std::function<asio::awaitable<Status>(UpstreamChannel&)>;

// Runs body on lt's loop with a channel to c, once setup() has opened and
// initialized it (only open() when `initialize` is false). REQUIREs that the
// run finished within `bound` and that setup and body came to Ok.
void run_on_channel(LoopThread& lt, const UpstreamConfig& c, ChannelBody body, bool initialize = true,
                    std::chrono::milliseconds bound = 10s, asio::cancellation_signal* sig = nullptr) {
  auto st = std::make_shared<Status>(Ok{});
  REQUIRE(lt.run(
      [c, body, initialize, st]() -> asio::awaitable<void> {
        UpstreamChannel ch(co_await asio::this_coro::executor, c, "");
        if (initialize)
          *st = co_await setup(ch, c);
        else
          *st = co_await ch.open(Deadline::after(1s), c.endpoint_timeout, Deadline::after(5s));
        if (*st) *st = co_await body(ch);
      },
      bound, sig));
  REQUIRE_MESSAGE(st->ok(), st->error().message());
}

// Runs op on a channel to c that setup() and then `prepare` have readied,
// cancelled (terminal) 100 ms into op; REQUIREs that the run finished within
// 5 s. Returns op's outcome.
Outcome cancelled_mid(LoopThread& lt, const UpstreamConfig& c, ChannelBody prepare,
                      std::function<asio::awaitable<Outcome>(UpstreamChannel&)> op) {
  auto o = std::make_shared<Outcome>();
  auto sig = std::make_shared<asio::cancellation_signal>();
  run_on_channel(
      lt, c,
      [&lt, prepare, op, o, sig](UpstreamChannel& ch) -> asio::awaitable<Status> {
        auto st = co_await prepare(ch);
        if (!st) co_return st;
        lt.cancel_after(*sig, 100ms);
        *o = co_await op(ch);
        co_return Ok{};
      },
      true, 5s, sig.get());
  return *o;
}

// Connects an UpstreamConnection (TLS with c.tls_options when `tls`) to c.sse_url on
// lt's loop, for at most `d`; with `cancel_after`, a terminal cancellation
// comes that long after the start. REQUIREs that the run finished (within 5 s
// when cancelled). Returns the connect's outcome.
Outcome connect_once(LoopThread& lt, const UpstreamConfig& c, bool tls, TcpOptions tcp,
                     std::chrono::milliseconds d, std::optional<std::chrono::milliseconds> cancel_after = {}) {
  auto o = std::make_shared<Outcome>();
  auto sig = std::make_shared<asio::cancellation_signal>();
  auto body = [c, tls, tcp, d, o, sig]() -> asio::awaitable<void> {
    UpstreamConnection conn(co_await asio::this_coro::executor, tls ? &c.tls_options : nullptr, tcp);
    *o = co_await timed(conn.connect(c.sse_url, Deadline::after(d)));
  };
  if (cancel_after) {
    lt.cancel_after(*sig, *cancel_after);
    REQUIRE(lt.run(body, 5s, sig.get()));
  } else {
    REQUIRE(lt.run(body));
  }
  return *o;
}

// What connect_once() must come to with a 300 ms deadline (kTimeout within
// 280-1000 ms) and cancelled at 100 ms (kCancelled within 600 ms).
void check_timeout_and_cancel(const Outcome& timed_out, const Outcome& cancelled) {
  REQUIRE(timed_out.err);
  CHECK(timed_out.err->kind == ErrorKind::kTimeout);
  CHECK(timed_out.took >= 280);
  CHECK(timed_out.took < 1000);
  REQUIRE(cancelled.err);
  CHECK(cancelled.err->kind == ErrorKind::kCancelled);
  CHECK(cancelled.took < 600);
}

// Opens a channel to c on lt's loop and waits at most 2 s for a message;
// REQUIREs that it opened. Returns the wait's error, none when a message came.
std::optional<BridgeError> next_error_after_open(LoopThread& lt, const UpstreamConfig& c) {
  auto err = std::make_shared<std::optional<BridgeError>>();
  run_on_channel(
      lt, c,
      [err](UpstreamChannel& ch) -> asio::awaitable<Status> {
        auto m = co_await ch.next_message(Deadline::after(2s), Phase::kRequest);
        if (!m) *err = m.error();
        co_return Ok{};
      },
      false);
  return *err;
}

// A hostile upstream on raw sockets: each accepted connection is handed to
// `on_conn` on a thread of its own. Handlers wait in bounded slices and end
// when stop() is called.
class FakeUpstream {
 public:
  using Handler = std::function<void(int fd, const std::atomic<bool>& stop)>;
  explicit FakeUpstream(Handler h, int backlog = 16) : on_conn_(std::move(h)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, backlog) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (on_conn_) accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~FakeUpstream() { stop(); }
  void stop() {
    stop_ = true;
    if (accept_thread_.joinable()) accept_thread_.join();
    std::lock_guard lk(mu_);
    for (auto& t : conns_)
      if (t.joinable()) t.join();
    conns_.clear();
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int port() const { return port_; }
  int listen_fd() const { return fd_; }
  int accepted() const { return accepted_.load(); }

  // Reads until a blank line (a request head), bounded; returns it.
  static std::string read_head(int fd, const std::atomic<bool>& stop) {
    std::string in;
    char buf[4096];
    for (int i = 0; i < 100 && !stop && in.find("\r\n\r\n") == std::string::npos; ++i) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
    }
    return in;
  }
  static void send_all(int fd, const std::string& s) {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }
  // Holds the connection open, silent, until stop.
  static void hold(int fd, const std::atomic<bool>& stop) {
    char buf[4096];
    while (!stop) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) > 0 && ::recv(fd, buf, sizeof buf, 0) <= 0) return;
    }
  }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      ++accepted_;
      std::lock_guard lk(mu_);
      conns_.emplace_back([this, c] {
        on_conn_(c, stop_);
        ::close(c);
      });
    }
  }
  Handler on_conn_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<std::thread> conns_;
};

const std::string kSseHead =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

std::string chunk(const std::string& s) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", s.size());
  return size + s + "\r\n";
}

// An SSE upstream whose GET announces /message and then runs `script`;
// POSTs are answered 202 unless `post_handler` is given.
FakeUpstream::Handler sse_script(std::function<void(int, const std::atomic<bool>&)> script,
                                 FakeUpstream::Handler post_handler = {}) {
  return [script, post_handler](int fd, const std::atomic<bool>& stop) {
    std::string head = FakeUpstream::read_head(fd, stop);
    if (head.rfind("GET ", 0) == 0) {
      FakeUpstream::send_all(fd, kSseHead + chunk("event: endpoint\ndata: /message?sessionId=f1\n\n"));
      script(fd, stop);
      return;
    }
    if (post_handler) return post_handler(fd, stop);
    // Every request on the kept-alive connection is answered 202.
    for (; !head.empty() && !stop; head = FakeUpstream::read_head(fd, stop))
      FakeUpstream::send_all(fd, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
  };
}

}  // namespace

// ---- against the example legacy server ------------------------------------

TEST_CASE("upstream channel: open, initialize and a tool call against the legacy server") {
  for (bool python : {false, true}) {
    CAPTURE(python);
    example::Options opt;
    opt.python_style = python;
    example::LegacyServer srv(opt);
    int port = start_legacy(srv);
    UpstreamConfig c = config_for(port);
    Status st = make_error(ErrorKind::kInternal, Phase::kConnect, "not run");
    std::string endpoint, sid, reply;
    size_t open_during = 0;
    LoopThread lt;
    REQUIRE(lt.run([&]() -> asio::awaitable<void> {
      UpstreamChannel ch(co_await asio::this_coro::executor, c, "X-Test: 1\r\n");
      open_during = UpstreamChannel::open_count();
      st = co_await setup(ch, c);
      if (!st) co_return;
      endpoint = ch.endpoint().str();
      sid = ch.upstream_session_id();
      st = co_await ch.post(tool_call(2, "echo", R"({"text":"hi"})"), Deadline::after(2s), Phase::kRequest);
      if (!st) co_return;
      auto m = co_await ch.next_message(Deadline::after(2s), Phase::kRequest);
      if (!m) {
        st = m.error();
        co_return;
      }
      reply = m->raw;
      CHECK(m->id == "2");
      CHECK(m->kind == MsgKind::kResponse);
      CHECK(ch.last_activity() > Clock::now() - 2s);
    }));
    REQUIRE_MESSAGE(st.ok(), st.error().message());
    CHECK(open_during >= 1);
    CHECK(UpstreamChannel::open_count() == 0);
    CHECK(endpoint.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
    CHECK(!sid.empty());
    CHECK(reply.find("hi") != std::string::npos);
    CHECK(srv.premature_requests() == 0);
    bool saw_header = false;
    for (auto& [k, v] : srv.last_post_headers())
      if (k == "X-Test" && v == "1") saw_header = true;
    CHECK(saw_header);
  }
}

TEST_CASE("upstream channel: a timeout on the stream is not fatal; the next call resumes it") {
  example::LegacyServer srv;
  UpstreamConfig c = config_for(start_legacy(srv));
  std::optional<BridgeError> timeout_err;
  std::string reply;
  int64_t waited = 0;
  LoopThread lt;
  run_on_channel(lt, c, [&](UpstreamChannel& ch) -> asio::awaitable<Status> {
    auto t0 = Clock::now();
    auto m = co_await ch.next_message(Deadline::after(150ms), Phase::kRequest);
    waited = ms_since(t0);
    if (!m) timeout_err = m.error();
    auto st = co_await ch.post(tool_call(3, "add", R"({"a":2,"b":3})"), Deadline::after(2s), Phase::kRequest);
    if (!st) co_return st;
    auto r = co_await ch.next_message(Deadline::after(2s), Phase::kRequest);
    if (!r) co_return r.error();
    reply = r->raw;
    co_return Ok{};
  });
  REQUIRE(timeout_err);
  CHECK(timeout_err->kind == ErrorKind::kTimeout);
  CHECK(timeout_err->phase == Phase::kRequest);
  CHECK(waited >= 140);
  CHECK(waited < 1000);
  CHECK(reply.find("\"id\":3") != std::string::npos);
  CHECK(reply.find('5') != std::string::npos);
}

TEST_CASE("upstream channel: a non-200 or non-SSE reply to the GET is kRejected in kConnect") {
  example::LegacyServer srv;
  UpstreamConfig c = config_for(start_legacy(srv));
  LoopThread lt;
  srv.faults().sse_status = 503;
  Outcome status = open_once(lt, c);
  srv.faults().sse_status = 0;
  srv.faults().sse_wrong_type = true;
  Outcome type = open_once(lt, c);
  REQUIRE(status.err);
  CHECK(status.err->kind == ErrorKind::kRejected);
  CHECK(status.err->phase == Phase::kConnect);
  CHECK(status.err->http_status == 503);
  CHECK(status.err->detail.find("HTTP 503") != std::string::npos);
  REQUIRE(type.err);
  CHECK(type.err->kind == ErrorKind::kRejected);
  CHECK(type.err->detail.find("text/html") != std::string::npos);
}

TEST_CASE("upstream channel: no endpoint, a stream dropped before it, a foreign endpoint") {
  example::LegacyServer srv;
  UpstreamConfig c = config_for(start_legacy(srv));
  c.endpoint_timeout = 300ms;
  LoopThread lt;
  srv.faults().no_endpoint = true;
  Outcome silent = open_once(lt, c);
  srv.faults().no_endpoint = false;
  // A drop is noticed at once, far inside a long endpoint timeout (a slow
  // sanitized build on a busy machine still tells the two apart).
  c.endpoint_timeout = 3s;
  srv.faults().drop_before_endpoint = true;
  Outcome dropped = open_once(lt, c);
  srv.faults().drop_before_endpoint = false;
  srv.faults().endpoint_foreign = true;
  Outcome foreign = open_once(lt, c);
  REQUIRE(silent.err);
  CHECK(silent.err->kind == ErrorKind::kTimeout);
  CHECK(silent.err->phase == Phase::kEndpoint);
  CHECK(silent.err->detail.find("no `endpoint` event within") != std::string::npos);
  CHECK(silent.took >= 280);
  CHECK(silent.took < 1000);
  REQUIRE(dropped.err);
  CHECK(dropped.err->kind == ErrorKind::kClosed);
  CHECK(dropped.err->phase == Phase::kEndpoint);
  CHECK(dropped.took < 1000);
  REQUIRE(foreign.err);
  CHECK(foreign.err->kind == ErrorKind::kEndpointRefused);
  CHECK(foreign.err->phase == Phase::kEndpoint);
}

TEST_CASE("upstream channel: the stream dropped mid-event fails the waiting call at once") {
  example::LegacyServer srv;
  UpstreamConfig c = config_for(start_legacy(srv));
  std::optional<BridgeError> err, again;
  int64_t took = 0;
  LoopThread lt;
  run_on_channel(lt, c, [&](UpstreamChannel& ch) -> asio::awaitable<Status> {
    srv.faults().drop_mid_event = true;
    auto t0 = Clock::now();
    auto st = co_await ch.post(tool_call(4, "echo", R"({"text":"x"})"), Deadline::after(2s), Phase::kRequest);
    if (!st) co_return st;
    auto m = co_await ch.next_message(Deadline::after(3s), Phase::kRequest);
    took = ms_since(t0);
    if (!m) err = m.error();
    auto m2 = co_await ch.next_message(Deadline::after(3s), Phase::kRequest);
    if (!m2) again = m2.error();
    CHECK(ch.failed());
    co_return Ok{};
  });
  REQUIRE(err);
  CHECK(err->kind == ErrorKind::kClosed);
  CHECK(err->phase == Phase::kRequest);
  CHECK(took < 1000);
  REQUIRE(again);
  CHECK(again->kind == ErrorKind::kClosed);
}

TEST_CASE("upstream channel: a POST that is never answered is kUnresponsive at --post-timeout") {
  example::LegacyServer srv;
  UpstreamConfig c = config_for(start_legacy(srv));
  c.post_timeout = 300ms;
  Outcome o;
  LoopThread lt;
  run_on_channel(lt, c, [&](UpstreamChannel& ch) -> asio::awaitable<Status> {
    srv.faults().post_hang = true;
    o = co_await timed(ch.post(tool_call(5, "echo", R"({"text":"x"})"), Deadline::after(5s), Phase::kRequest));
    srv.faults().post_hang = false;
    co_return Ok{};
  });
  REQUIRE(o.err);
  CHECK(o.err->kind == ErrorKind::kUnresponsive);
  CHECK(o.err->phase == Phase::kRequest);
  CHECK(o.err->detail.find("--post-timeout") != std::string::npos);
  CHECK(o.took >= 280);
  CHECK(o.took < 1500);
}

TEST_CASE("upstream channel: a POST refused, and a 404 after the stream died") {
  example::LegacyServer srv;
  UpstreamConfig c = config_for(start_legacy(srv));
  Status st = Ok{};
  std::optional<BridgeError> refused, gone;
  LoopThread lt;
  REQUIRE(lt.run([&]() -> asio::awaitable<void> {
    {
      UpstreamChannel ch(co_await asio::this_coro::executor, c, "");
      st = co_await setup(ch, c);
      if (!st) co_return;
      srv.faults().post_status = 500;
      auto p = co_await ch.post(tool_call(6, "echo", R"({"text":"x"})"), Deadline::after(2s), Phase::kRequest);
      srv.faults().post_status = 0;
      if (!p) refused = p.error();
    }
    UpstreamChannel ch(co_await asio::this_coro::executor, c, "");
    st = co_await setup(ch, c);
    if (!st) co_return;
    srv.faults().drop_then_404 = 1;
    auto p = co_await ch.post(tool_call(7, "echo", R"({"text":"x"})"), Deadline::after(2s), Phase::kRequest);
    if (!p) gone = p.error();
  }));
  REQUIRE_MESSAGE(st.ok(), st.error().message());
  REQUIRE(refused);
  CHECK(refused->kind == ErrorKind::kRejected);
  CHECK(refused->http_status == 500);
  CHECK(refused->phase == Phase::kRequest);
  REQUIRE(gone);
  CHECK(gone->kind == ErrorKind::kClosed);
  CHECK(gone->http_status == 404);
}

TEST_CASE("upstream channel: an event over --max-message-size is kProtocol") {
  example::LegacyServer srv;
  UpstreamConfig c = config_for(start_legacy(srv));
  c.max_message_size = 4096;
  std::optional<BridgeError> err;
  LoopThread lt;
  run_on_channel(lt, c, [&](UpstreamChannel& ch) -> asio::awaitable<Status> {
    auto st = co_await ch.post(tool_call(8, "big", R"({"bytes":20000})"), Deadline::after(2s), Phase::kRequest);
    if (!st) co_return st;
    auto m = co_await ch.next_message(Deadline::after(3s), Phase::kRequest);
    if (!m) err = m.error();
    co_return Ok{};
  });
  REQUIRE(err);
  CHECK(err->kind == ErrorKind::kProtocol);
  CHECK(err->detail.find("--max-message-size") != std::string::npos);
}

TEST_CASE("upstream channel: refresh_idle drops stale notifications and sees a dead stream") {
  example::LegacyServer srv;
  UpstreamConfig c = config_for(start_legacy(srv));
  bool alive_first = false, alive_after_kill = true;
  std::optional<BridgeError> after;
  LoopThread lt;
  run_on_channel(lt, c, [&](UpstreamChannel& ch) -> asio::awaitable<Status> {
    // A log notification arrives while nobody waits.
    auto st = co_await ch.post(R"({"jsonrpc":"2.0","id":9,"method":"logging/setLevel","params":{"level":"debug"}})",
                               Deadline::after(2s), Phase::kRequest);
    if (!st) co_return st;
    auto r = co_await ch.next_message(Deadline::after(2s), Phase::kRequest);
    if (!r) co_return Ok{};
    st = co_await ch.post(tool_call(10, "log", R"({"level":"info","text":"stale"})"), Deadline::after(2s),
                          Phase::kRequest);
    co_await sleep_on_loop(200ms);
    alive_first = co_await ch.refresh_idle();
    // Only the tool's response may remain: the notification was dropped.
    auto m = co_await ch.next_message(Deadline::after(50ms), Phase::kRequest);
    if (m) CHECK(m->kind != MsgKind::kNotification);
    srv.kill_streams();
    co_await sleep_on_loop(200ms);
    alive_after_kill = co_await ch.refresh_idle();
    auto m2 = co_await ch.next_message(Deadline::after(1s), Phase::kRequest);
    if (!m2) after = m2.error();
    co_return st;
  });
  CHECK(alive_first);
  CHECK_FALSE(alive_after_kill);
  REQUIRE(after);
  CHECK(after->kind == ErrorKind::kClosed);
}

TEST_CASE("upstream channel: abort() ends a pending wait at once") {
  example::LegacyServer srv;
  UpstreamConfig c = config_for(start_legacy(srv));
  Status st = Ok{};
  std::optional<BridgeError> err;
  int64_t took = 0;
  LoopThread lt;
  REQUIRE(lt.run([&]() -> asio::awaitable<void> {
    // Not make_shared<…>(co_await …): GCC 12 then loses the shared_ptr's
    // reference (the channel died with the other holder).
    auto ex = co_await asio::this_coro::executor;
    auto ch = std::make_shared<UpstreamChannel>(ex, c, "");
    st = co_await setup(*ch, c);
    if (!st) co_return;
    // Another coroutine on the loop aborts the channel in 100 ms.
    asio::co_spawn(ex,
                   [ch]() -> asio::awaitable<void> {
                     co_await sleep_on_loop(100ms);
                     ch->abort();
                   },
                   asio::detached);
    auto t0 = Clock::now();
    auto m = co_await ch->next_message(Deadline::after(3s), Phase::kRequest);
    took = ms_since(t0);
    if (!m) err = m.error();
  }));
  REQUIRE_MESSAGE(st.ok(), st.error().message());
  REQUIRE(err);
  CHECK(err->kind == ErrorKind::kClosed);
  CHECK(took >= 90);
  CHECK(took < 400);
}

// ---- cancellation ---------------------------------------------------------------

TEST_CASE("upstream channel: cancellation mid-wait returns kCancelled promptly, never a timeout") {
  example::LegacyServer srv;
  UpstreamConfig c = config_for(start_legacy(srv));
  c.post_timeout = 3000ms;
  LoopThread lt;

  SUBCASE("waiting for the endpoint") {
    srv.faults().no_endpoint = true;
    Outcome o;
    asio::cancellation_signal sig;
    lt.cancel_after(sig, 150ms);
    REQUIRE(lt.run(
        [&]() -> asio::awaitable<void> {
          UpstreamChannel ch(co_await asio::this_coro::executor, c, "");
          o = co_await timed(ch.open(Deadline::after(3s), 3000ms, Deadline::after(5s)));
        },
        5s, &sig));
    REQUIRE(o.err);
    CHECK(o.err->kind == ErrorKind::kCancelled);
    CHECK(o.took < 600);
  }
  SUBCASE("waiting for a response on a silent stream") {
    Outcome o = cancelled_mid(
        lt, c,
        [&](UpstreamChannel& ch) -> asio::awaitable<Status> {
          srv.faults().half_open = true;
          co_return co_await ch.post(tool_call(11, "echo", R"({"text":"x"})"), Deadline::after(2s), Phase::kRequest);
        },
        [](UpstreamChannel& ch) -> asio::awaitable<Outcome> {
          co_return co_await timed(ch.next_message(Deadline::after(3s), Phase::kRequest));
        });
    REQUIRE(o.err);
    CHECK(o.err->kind == ErrorKind::kCancelled);
    CHECK(o.err->phase == Phase::kRequest);
    CHECK(o.took < 600);
  }
  SUBCASE("waiting for a POST's answer") {
    Outcome o = cancelled_mid(
        lt, c,
        [&](UpstreamChannel&) -> asio::awaitable<Status> {
          srv.faults().post_hang = true;
          co_return Ok{};
        },
        [](UpstreamChannel& ch) -> asio::awaitable<Outcome> {
          // Awaited here: the request's text lives until the POST is done.
          co_return co_await timed(
              ch.post(tool_call(12, "echo", R"({"text":"x"})"), Deadline::after(3s), Phase::kRequest));
        });
    srv.faults().post_hang = false;
    REQUIRE(o.err);
    CHECK(o.err->kind == ErrorKind::kCancelled);
    CHECK(o.took < 600);
  }
}

// ---- hostile fakes -------------------------------------------------------------

// Fills the accept queue of a listener with backlog 0 that nobody accepts
// from: Linux then drops further SYNs, as a lossy or black-holed path does.
// Returns the filler sockets (the caller closes them).
std::vector<int> fill_accept_queue(int port) {
  std::vector<int> fillers;
  for (int i = 0; i < 4; ++i) {
    int s = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    (void)::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    fillers.push_back(s);
  }
  std::this_thread::sleep_for(50ms);
  return fillers;
}

TEST_CASE("upstream connection: a closed port is kUnreachable at once") {
  int port = 0;
  {
    FakeUpstream f(nullptr);
    port = f.port();
  }  // closed again: nothing listens there now
  LoopThread lt;
  Outcome r = open_once(lt, config_for(port));
  REQUIRE(r.err);
  CHECK(r.err->kind == ErrorKind::kUnreachable);
  CHECK(r.err->phase == Phase::kConnect);
  CHECK(r.err->detail.find("refused") != std::string::npos);
  CHECK(r.took < 200);
}

TEST_CASE("upstream connection: a black-holed connect is kTimeout at the deadline, or kCancelled") {
  // A listener that never accepts, its queue filled: further SYNs are dropped.
  FakeUpstream f(nullptr, 0);
  std::vector<int> fillers = fill_accept_queue(f.port());
  UpstreamConfig c = config_for(f.port());
  c.connect_timeout = 300ms;
  LoopThread lt;
  Outcome timed_out = connect_once(lt, c, false, TcpOptions{Millis(0), Millis(0), c.connect_timeout}, 5s);
  Outcome cancelled = connect_once(lt, c, false, TcpOptions{}, 3s, 100ms);
  for (int s : fillers) ::close(s);
  check_timeout_and_cancel(timed_out, cancelled);
}

TEST_CASE("upstream connection: under a bound below 2 s a lost SYN is sent again at half the bound") {
  // The listener's queue is full, so the first SYN is dropped (as on a lossy
  // path). 200 ms in, the queue is emptied. The kernel would resend that SYN
  // only at 1 s, when the 1 s bound ends: without the bridge's own second SYN
  // at 500 ms the connect fails although the path works from 200 ms on.
  FakeUpstream f(nullptr, 0);
  std::vector<int> fillers = fill_accept_queue(f.port());
  std::atomic<int> drained{0};
  std::jthread drainer([&] {  // joined also when a REQUIRE below throws
    std::this_thread::sleep_for(200ms);
    for (int i = 0; i < 100; ++i) {  // empty the accept queue (bounded)
      pollfd p{f.listen_fd(), POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) break;  // the listener blocks: accept only what is there
      int a = ::accept4(f.listen_fd(), nullptr, nullptr, SOCK_CLOEXEC);
      if (a < 0) break;
      ::close(a);
      ++drained;
    }
  });
  UpstreamConfig c = config_for(f.port());
  LoopThread lt;
  Outcome r = connect_once(lt, c, false, TcpOptions{Millis(0), Millis(0), 1000ms}, 5s);
  drainer.join();
  for (int s : fillers) ::close(s);
  CHECK(drained.load() >= 1);
  CHECK_MESSAGE(!r.err, (r.err ? r.err->message() : std::string()));
  CHECK(r.took >= 400);
  CHECK(r.took < 950);
}

TEST_CASE("upstream channel: an upstream that accepts and never answers the GET is kTimeout in kConnect") {
  FakeUpstream f([](int fd, const std::atomic<bool>& stop) { FakeUpstream::hold(fd, stop); });
  LoopThread lt;
  Outcome r = open_once(lt, config_for(f.port()), 300ms);
  REQUIRE(r.err);
  CHECK(r.err->kind == ErrorKind::kTimeout);
  CHECK(r.err->phase == Phase::kConnect);
  CHECK(r.took >= 280);
  CHECK(r.took < 1000);
}

TEST_CASE("upstream channel: malformed HTTP and malformed chunks from the upstream") {
  SUBCASE("garbage instead of a status line") {
    FakeUpstream f([](int fd, const std::atomic<bool>& stop) {
      (void)FakeUpstream::read_head(fd, stop);
      FakeUpstream::send_all(fd, "HTTX/9 banana\r\n\r\n");
      FakeUpstream::hold(fd, stop);
    });
    LoopThread lt;
    Outcome r = open_once(lt, config_for(f.port()));
    REQUIRE(r.err);
    CHECK(r.err->kind == ErrorKind::kProtocol);
    CHECK(r.err->phase == Phase::kConnect);
  }
  SUBCASE("a bad chunk size after the endpoint ends the stream") {
    FakeUpstream f(sse_script([](int fd, const std::atomic<bool>& stop) {
      FakeUpstream::send_all(fd, "zz\r\nnot a chunk\r\n");
      FakeUpstream::hold(fd, stop);
    }));
    UpstreamConfig c = config_for(f.port());
    LoopThread lt;
    auto err = next_error_after_open(lt, c);
    REQUIRE(err);
    CHECK(err->kind == ErrorKind::kClosed);
    CHECK(err->phase == Phase::kRequest);
  }
}

TEST_CASE("upstream channel: an endpoint URI over 8 KiB is kProtocol in kEndpoint, not the target of every POST") {
  for (size_t len : {UpstreamChannel::kMaxEndpointBytes, UpstreamChannel::kMaxEndpointBytes + 1}) {
    CAPTURE(len);
    std::string target = "/message?sessionId=" + std::string(len - 19, 'a');
    FakeUpstream f([target](int fd, const std::atomic<bool>& stop) {
      std::string head = FakeUpstream::read_head(fd, stop);
      if (head.rfind("GET ", 0) == 0) {
        FakeUpstream::send_all(fd, kSseHead + chunk("event: endpoint\ndata: " + target + "\n\n"));
        FakeUpstream::hold(fd, stop);
        return;
      }
      for (; !head.empty() && !stop; head = FakeUpstream::read_head(fd, stop))
        FakeUpstream::send_all(fd, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    });
    LoopThread lt;
    Outcome r = open_once(lt, config_for(f.port()));
    if (len <= UpstreamChannel::kMaxEndpointBytes) {
      CHECK_FALSE(r.err);
    } else {
      REQUIRE(r.err);
      CHECK(r.err->kind == ErrorKind::kProtocol);
      CHECK(r.err->phase == Phase::kEndpoint);
      CHECK(r.err->detail.find("bytes (at most 8192)") != std::string::npos);
    }
  }
}

TEST_CASE("upstream channel: an oversized event from a fake, split across chunks, is kProtocol") {
  FakeUpstream f(sse_script([](int fd, const std::atomic<bool>& stop) {
    std::string big(3000, 'a');
    std::this_thread::sleep_for(100ms);  // after open(): the call's wait sees it
    FakeUpstream::send_all(fd, chunk("event: message\ndata: " + big));
    std::this_thread::sleep_for(20ms);
    FakeUpstream::send_all(fd, chunk(big + "\n\n"));
    FakeUpstream::hold(fd, stop);
  }));
  UpstreamConfig c = config_for(f.port());
  c.max_message_size = 4096;
  LoopThread lt;
  auto err = next_error_after_open(lt, c);
  REQUIRE(err);
  CHECK(err->kind == ErrorKind::kProtocol);
}

// Writes SSE comments (in chunks) as fast as the socket takes them, for at
// most `for_at_most` or until stop; the chunk framing survives partial sends.
void flood_comments(int fd, const std::atomic<bool>& stop, std::chrono::milliseconds for_at_most) {
  // Empty comments, 2 bytes a line: the reader parses a line per 2 bytes,
  // slower than this thread writes them, so the socket never runs dry.
  std::string lines;
  while (lines.size() < 8 * 1024) lines += ":\n";
  std::string block;
  while (block.size() < 64 * 1024) block += chunk(lines);
  size_t off = 0;
  const auto until = Clock::now() + for_at_most;
  while (!stop && Clock::now() < until) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    ssize_t n = ::send(fd, block.data() + off, block.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return;
    if (n > 0) off = (off + static_cast<size_t>(n)) % block.size();
  }
}

TEST_CASE("upstream channel: a stream flooded with comments neither holds a call past its deadline nor pins the loop") {
  // The flood ends by itself after 6 s: a bridge that fails this test fails
  // it on the bounds below instead of hanging.
  FakeUpstream f(sse_script([](int fd, const std::atomic<bool>& stop) {
    flood_comments(fd, stop, 6000ms);
    FakeUpstream::hold(fd, stop);
  }));
  UpstreamConfig c = config_for(f.port());
  auto err = std::make_shared<std::optional<BridgeError>>();
  auto took = std::make_shared<int64_t>(-1);
  auto tick_late = std::make_shared<int64_t>(-1);  // how late a 20 ms timer of the same loop fired
  LoopThread lt;
  run_on_channel(
      lt, c,
      [err, took, tick_late](UpstreamChannel& ch) -> asio::awaitable<Status> {
        auto ex = co_await asio::this_coro::executor;
        asio::co_spawn(
            ex,
            [tick_late]() -> asio::awaitable<void> {
              auto t0 = Clock::now();
              co_await sleep_on_loop(20ms);
              *tick_late = ms_since(t0) - 20;
            },
            asio::detached);
        // A busy neighbour on the same loop (1 ms of work per turn) takes
        // turns from the reader, so the flood outpaces it.
        auto busy = std::make_shared<bool>(true);
        auto neighbour = std::make_shared<std::function<void()>>();
        *neighbour = [ex, busy, weak = std::weak_ptr<std::function<void()>>(neighbour)] {
          if (!*busy) return;
          for (auto until = Clock::now() + 1ms; Clock::now() < until;) {
          }
          if (auto n = weak.lock()) asio::post(ex, *n);
        };
        asio::post(ex, *neighbour);
        auto t0 = Clock::now();
        auto m = co_await ch.next_message(Deadline::after(400ms), Phase::kRequest);
        *took = ms_since(t0);
        *busy = false;
        if (!m) *err = m.error();
        co_return Ok{};
      },
      false, 15s);
  MESSAGE("flooded stream: the call ended after ", *took, " ms; a 20 ms timer fired ", *tick_late, " ms late");
  REQUIRE(*err);
  CHECK((*err)->kind == ErrorKind::kTimeout);
  CHECK(*took >= 380);
  CHECK(*took < 1500);
  CHECK(*tick_late >= 0);
  CHECK(*tick_late < 200);
}

TEST_CASE("upstream channel: a stream delimited by the close (no chunking) works and ends as kClosed") {
  FakeUpstream f([](int fd, const std::atomic<bool>& stop) {
    std::string head = FakeUpstream::read_head(fd, stop);
    if (head.rfind("GET ", 0) == 0) {
      FakeUpstream::send_all(fd,
                             "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                             "event: endpoint\r\ndata: /message?sessionId=e2\r\n\r\n"
                             ": ping\r\n\r\n"
                             "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/x\"}\r\n\r\n");
      std::this_thread::sleep_for(100ms);
      return;  // closes
    }
    FakeUpstream::send_all(fd, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    FakeUpstream::hold(fd, stop);
  });
  UpstreamConfig c = config_for(f.port());
  Status st = Ok{};
  std::string first;
  std::optional<BridgeError> end;
  LoopThread lt;
  REQUIRE(lt.run([&]() -> asio::awaitable<void> {
    UpstreamChannel ch(co_await asio::this_coro::executor, c, "");
    st = co_await ch.open(Deadline::after(1s), 600ms, Deadline::after(5s));
    if (!st) co_return;
    CHECK(ch.upstream_session_id() == "sessionId=e2");
    auto m = co_await ch.next_message(Deadline::after(2s), Phase::kRequest);
    if (m) first = m->method;
    auto m2 = co_await ch.next_message(Deadline::after(2s), Phase::kRequest);
    if (!m2) end = m2.error();
  }));
  REQUIRE_MESSAGE(st.ok(), st.error().message());
  CHECK(first == "notifications/x");
  REQUIRE(end);
  CHECK(end->kind == ErrorKind::kClosed);
  CHECK(end->detail == "SSE stream ended");
}

TEST_CASE("upstream channel: the POST connection is opened alongside the GET") {
  FakeUpstream f(sse_script([](int fd, const std::atomic<bool>& stop) { FakeUpstream::hold(fd, stop); }));
  UpstreamConfig c = config_for(f.port());
  Status st = Ok{};
  int accepted_after_open = 0;
  LoopThread lt;
  REQUIRE(lt.run([&]() -> asio::awaitable<void> {
    UpstreamChannel ch(co_await asio::this_coro::executor, c, "");
    st = co_await ch.open(Deadline::after(1s), 600ms, Deadline::after(5s));
    // open() returns once both connects completed on this side; the fake
    // server's accept thread counts them a moment later. No POST was sent
    // yet, so a second connection can only be open()'s.
    for (int i = 0; i < 200 && f.accepted() < 2; ++i) co_await sleep_on_loop(5ms);
    accepted_after_open = f.accepted();
    if (!st) co_return;
    st = co_await ch.post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})", Deadline::after(1s),
                          Phase::kInitialize);
    if (!st) co_return;
    st = co_await ch.post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})", Deadline::after(1s),
                          Phase::kInitialize);
  }));
  REQUIRE_MESSAGE(st.ok(), st.error().message());
  CHECK(accepted_after_open == 2);  // the GET and the POST connection
  CHECK(f.accepted() == 2);         // both POSTs used the one kept-alive connection
}

TEST_CASE("upstream channel: a 202 whose body comes late is not waited for; the next POST skips it") {
  // Each POST is answered with the head at once and its body 800 ms later
  // (cpp-httplib, the example server, also writes them apart).
  FakeUpstream f(sse_script([](int fd, const std::atomic<bool>& stop) { FakeUpstream::hold(fd, stop); },
                            [](int fd, const std::atomic<bool>& stop) {
                              for (int i = 0; i < 8 && !stop; ++i) {
                                FakeUpstream::send_all(fd, "HTTP/1.1 202 Accepted\r\nContent-Length: 8\r\n\r\n");
                                for (int t = 0; t < 16 && !stop; ++t) std::this_thread::sleep_for(50ms);
                                FakeUpstream::send_all(fd, "Accepted");
                                if (FakeUpstream::read_head(fd, stop).empty()) return;
                              }
                            }));
  UpstreamConfig c = config_for(f.port());
  c.post_timeout = 2000ms;
  Status st = Ok{};
  int64_t first_ms = -1, second_ms = -1;
  int accepted_after_second = 0;
  LoopThread lt;
  REQUIRE(lt.run([&]() -> asio::awaitable<void> {
    UpstreamChannel ch(co_await asio::this_coro::executor, c, "");
    st = co_await ch.open(Deadline::after(1s), 600ms, Deadline::after(5s));
    if (!st) co_return;
    auto t0 = Clock::now();
    st = co_await ch.post(kInitialized, Deadline::after(3s), Phase::kInitialize);
    first_ms = ms_since(t0);
    if (!st) co_return;
    co_await sleep_on_loop(1200ms);  // the body has arrived meanwhile
    t0 = Clock::now();
    st = co_await ch.post(kInitialized, Deadline::after(3s), Phase::kInitialize);
    second_ms = ms_since(t0);
    accepted_after_second = f.accepted();
    if (!st) co_return;
    // Before the second body has come: that connection is replaced, and the
    // POST still succeeds.
    st = co_await ch.post(kInitialized, Deadline::after(3s), Phase::kInitialize);
  }));
  REQUIRE_MESSAGE(st.ok(), st.error().message());
  CHECK(first_ms < 500);   // not the 800 ms of the body
  CHECK(second_ms < 500);
  CHECK(accepted_after_second == 2);  // the GET and one POST connection: the body was skipped
  CHECK(f.accepted() == 3);           // the third POST went on a fresh connection
}

namespace {

// An upstream (the SSE GET, then POSTs) that serves pipelined requests in order: each request
// (head + Content-Length body) is answered with `status_line` and an
// 8-byte body, the body `body_delay` after the head. Records the writes
// (recv calls that brought a request start) per request.
struct PipeServer {
  std::string status_line = "HTTP/1.1 202 Accepted\r\n";
  std::chrono::milliseconds body_delay{0};
  std::atomic<int> requests{0};
  std::atomic<int> arrived_together{0};  // requests already buffered when their turn came
  FakeUpstream::Handler handler() {
    return [this](int fd, const std::atomic<bool>& stop) {
      std::string in;
      char buf[4096];
      auto fill = [&]() {
        for (int i = 0; i < 100 && !stop; ++i) {
          pollfd p{fd, POLLIN, 0};
          if (::poll(&p, 1, 50) <= 0) continue;
          ssize_t n = ::recv(fd, buf, sizeof buf, 0);
          if (n <= 0) return false;
          in.append(buf, static_cast<size_t>(n));
          return true;
        }
        return false;
      };
      bool buffered = false;
      for (int k = 0; k < 64 && !stop; ++k) {
        buffered = !in.empty();
        size_t end;
        while ((end = in.find("\r\n\r\n")) == std::string::npos)
          if (!fill()) return;
        size_t cl = 0;
        if (auto p = in.find("Content-Length: "); p != std::string::npos && p < end)
          cl = std::stoul(in.substr(p + 16));
        while (in.size() < end + 4 + cl)
          if (!fill()) return;
        if (in.rfind("GET ", 0) == 0) {  // the SSE stream
          FakeUpstream::send_all(fd, kSseHead + chunk("event: endpoint\ndata: /message?sessionId=f1\n\n"));
          return FakeUpstream::hold(fd, stop);
        }
        in.erase(0, end + 4 + cl);
        ++requests;
        if (buffered) ++arrived_together;
        FakeUpstream::send_all(fd, status_line + "Content-Length: 8\r\n\r\n");
        if (body_delay.count() > 0) std::this_thread::sleep_for(body_delay);
        FakeUpstream::send_all(fd, "Accepted");
      }
    };
  }
};

}  // namespace

TEST_CASE("upstream channel: post_pair pipelines only after an HTTP/1.1 keep-alive answer; a late 202 body is read first") {
  for (int variant = 0; variant < 3; ++variant) {
    // 0: HTTP/1.1 keep-alive; 1: HTTP/1.0 with keep-alive (not proven
    // persistent); 2: HTTP/1.1 whose bodies come 300 ms after their heads.
    CAPTURE(variant);
    PipeServer ps;
    if (variant == 1) ps.status_line = "HTTP/1.0 202 Accepted\r\nConnection: keep-alive\r\n";
    if (variant == 2) ps.body_delay = 300ms;
    FakeUpstream f(ps.handler());
    UpstreamConfig c = config_for(f.port());
    c.post_timeout = 2000ms;
    Status st = Ok{};
    UpstreamChannel::PostPair pr;
    bool could = false;
    LoopThread lt;
    REQUIRE(lt.run([&]() -> asio::awaitable<void> {
      UpstreamChannel ch(co_await asio::this_coro::executor, c, "");
      st = co_await ch.open(Deadline::after(1s), 600ms, Deadline::after(5s));
      if (!st) co_return;
      st = co_await ch.post(kInitialized, Deadline::after(3s), Phase::kInitialize);
      if (!st) co_return;
      could = ch.can_pipeline();
      const std::string call = R"({"jsonrpc":"2.0","id":1,"method":"ping"})";
      pr = co_await ch.post_pair(kInitialized, call, Deadline::after(3s), Phase::kInitialize, Phase::kRequest);
    }));
    REQUIRE_MESSAGE(st.ok(), st.error().message());
    CHECK(pr.first.ok());
    CHECK(pr.second.ok());
    CHECK(pr.second_sent);
    CHECK(!pr.resent);
    CHECK(could == (variant != 1));
    CHECK(pr.pipelined == (variant != 1));
    CHECK(ps.requests.load() == 3);
    CHECK(ps.arrived_together.load() == (variant != 1 ? 1 : 0));
    if (variant != 1) CHECK(f.accepted() == 2);  // the GET and one POST connection
  }
}

// ---- TLS ---------------------------------------------------------------------------

TEST_CASE("upstream channel: https upstream by name, verified against its CA; another CA fails") {
  example::Options opt;
  opt.tls_cert = kTlsDir + "server.pem";
  opt.tls_key = kTlsDir + "server.key";
  example::LegacyServer srv(opt);
  int port = start_legacy(srv);
  UpstreamConfig good = config_for(port, "https", "localhost");
  good.tls_options.ca_file = kTlsDir + "ca.pem";
  UpstreamConfig bad = config_for(port, "https", "127.0.0.1");
  bad.tls_options.ca_file = kTlsDir + "other-ca.pem";
  Status st = Ok{};
  std::optional<BridgeError> err;
  std::string reply;
  LoopThread lt;
  REQUIRE(lt.run([&]() -> asio::awaitable<void> {
    {
      UpstreamChannel ch(co_await asio::this_coro::executor, good, "");
      st = co_await setup(ch, good);
      if (!st) co_return;
      st = co_await ch.post(tool_call(13, "echo", R"({"text":"tls"})"), Deadline::after(2s), Phase::kRequest);
      if (!st) co_return;
      auto m = co_await ch.next_message(Deadline::after(2s), Phase::kRequest);
      if (m) reply = m->raw;
    }
    UpstreamChannel ch(co_await asio::this_coro::executor, bad, "");
    auto b = co_await ch.open(Deadline::after(1s), 600ms, Deadline::after(5s));
    if (!b) err = b.error();
  }));
  REQUIRE_MESSAGE(st.ok(), st.error().message());
  CHECK(reply.find("tls") != std::string::npos);
  REQUIRE(err);
  CHECK(err->kind == ErrorKind::kProtocol);
  CHECK(err->phase == Phase::kConnect);
  CHECK(err->detail.find("TLS handshake") != std::string::npos);
}

TEST_CASE("upstream connection: TLS sends the host name as SNI, and none for an address") {
  std::string why;
  auto server_ctx = TlsContext::server({kTlsDir + "server.pem", kTlsDir + "server.key", ""}, &why);
  REQUIRE_MESSAGE(server_ctx, why);
  std::mutex mu;
  std::vector<std::string> names;
  FakeUpstream f([&](int fd, const std::atomic<bool>& stop) {
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL* ssl = SSL_new(server_ctx->get());
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
      const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
      {
        std::lock_guard lk(mu);
        names.push_back(sni ? sni : "");
      }
      char buf[4096];
      (void)SSL_read(ssl, buf, sizeof buf);  // the request head
      std::string out = kSseHead + chunk("event: endpoint\ndata: /message?sessionId=t1\n\n");
      (void)SSL_write(ssl, out.data(), static_cast<int>(out.size()));
      FakeUpstream::hold(fd, stop);
    }
    SSL_free(ssl);
  });
  Status by_name = Ok{}, by_ip = Ok{};
  UpstreamConfig named = config_for(f.port(), "https", "localhost");
  named.tls_options.ca_file = kTlsDir + "ca.pem";
  UpstreamConfig ip = config_for(f.port(), "https", "127.0.0.1");
  ip.tls_options.ca_file = kTlsDir + "ca.pem";
  LoopThread lt;
  REQUIRE(lt.run([&]() -> asio::awaitable<void> {
    {
      UpstreamChannel ch(co_await asio::this_coro::executor, named, "");
      by_name = co_await ch.open(Deadline::after(2s), 1000ms, Deadline::after(5s));
    }
    UpstreamChannel ch(co_await asio::this_coro::executor, ip, "");
    by_ip = co_await ch.open(Deadline::after(2s), 1000ms, Deadline::after(5s));
  }));
  REQUIRE_MESSAGE(by_name.ok(), by_name.error().message());
  REQUIRE_MESSAGE(by_ip.ok(), by_ip.error().message());
  f.stop();
  std::lock_guard lk(mu);
  REQUIRE(names.size() == 4);  // a GET and a POST connection each time
  CHECK(names[0] == "localhost");
  CHECK(names[1] == "localhost");
  CHECK(names[2] == "");
  CHECK(names[3] == "");
}

TEST_CASE("upstream connection: a TLS handshake never answered is kTimeout at the deadline, or kCancelled") {
  FakeUpstream f([](int fd, const std::atomic<bool>& stop) { FakeUpstream::hold(fd, stop); });
  UpstreamConfig c = config_for(f.port(), "https", "localhost");
  c.tls_options.ca_file = kTlsDir + "ca.pem";
  LoopThread lt;
  Outcome timed_out = connect_once(lt, c, true, TcpOptions{}, 300ms);
  Outcome cancelled = connect_once(lt, c, true, TcpOptions{}, 3s, 100ms);
  check_timeout_and_cancel(timed_out, cancelled);
  CHECK(timed_out.err->detail.find("TLS handshake") != std::string::npos);
}

TEST_CASE("upstream connection: a chunk-size line or a trailer that never ends is kProtocol, not a buffer without bound") {
  // A hostile upstream: a chunk-size line (or, after the last chunk, a
  // trailer field) that never reaches its CRLF. The parser consumes nothing
  // of it, so without a bound every read would grow the buffer until the
  // deadline (at loopback speed, gigabytes): it fails once 64 KiB are held.
  std::atomic<bool> trailer{false};
  FakeUpstream f([&](int fd, const std::atomic<bool>& stop) {
    (void)FakeUpstream::read_head(fd, stop);
    std::string head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
    FakeUpstream::send_all(fd, head + (trailer ? "3\r\nabc\r\n0\r\nX-T: " : "1;"));
    const std::string block(64 * 1024, 'a');
    for (int i = 0; i < 32 && !stop; ++i)  // 2 MiB at most, then held open
      if (::send(fd, block.data(), block.size(), MSG_NOSIGNAL) <= 0) break;
    FakeUpstream::hold(fd, stop);
  });
  UpstreamConfig c = config_for(f.port());
  std::vector<std::optional<BridgeError>> errs;
  std::vector<int64_t> took;
  LoopThread lt;
  REQUIRE(lt.run(
      [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        for (bool t : {false, true}) {
          trailer = t;
          UpstreamConnection conn(ex, nullptr, TcpOptions{});
          auto t0 = Clock::now();
          auto head = co_await conn.request(c.sse_url, "GET", "/chunked", "", "", Deadline::after(5s));
          if (!head) {
            errs.push_back(head.error());
            took.push_back(ms_since(t0));
            continue;
          }
          auto b = co_await conn.read_full_body(1024 * 1024, Deadline::after(5s));
          errs.push_back(b ? std::nullopt : std::optional<BridgeError>(b.error()));
          took.push_back(ms_since(t0));
          conn.close();
        }
      },
      20s));
  REQUIRE(errs.size() == 2);
  for (size_t i = 0; i < errs.size(); ++i) {
    CAPTURE(i);
    REQUIRE(errs[i]);
    CAPTURE(errs[i]->message());
    CHECK(errs[i]->kind == ErrorKind::kProtocol);
    CHECK(took[i] < 2000);  // at the bound, not at the deadline
  }
}

TEST_CASE("upstream connection: a chunked body with extensions and a trailer, split anywhere; a bad chunk size") {
  const std::string body =
      "4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
  std::atomic<size_t> cut{0};
  std::atomic<bool> garbage{false};
  FakeUpstream f([&](int fd, const std::atomic<bool>& stop) {
    (void)FakeUpstream::read_head(fd, stop);
    std::string head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
    if (garbage) {
      FakeUpstream::send_all(fd, head + "zz\r\n");
    } else {
      FakeUpstream::send_all(fd, head + body.substr(0, cut));
      std::this_thread::sleep_for(2ms);  // the rest in a later read
      FakeUpstream::send_all(fd, body.substr(cut));
    }
    FakeUpstream::hold(fd, stop);
  });
  UpstreamConfig c = config_for(f.port());
  std::vector<std::string> got;
  std::optional<BridgeError> bad;
  LoopThread lt;
  REQUIRE(lt.run(
      [&]() -> asio::awaitable<void> {
        auto ex = co_await asio::this_coro::executor;
        for (size_t i = 0; i <= body.size(); ++i) {
          cut = i;
          UpstreamConnection conn(ex, nullptr, TcpOptions{});
          auto head = co_await conn.request(c.sse_url, "GET", "/chunked", "", "", Deadline::after(2s));
          if (!head) {
            got.push_back("error: " + head.error().message());
            continue;
          }
          auto b = co_await conn.read_full_body(1024, Deadline::after(2s));
          got.push_back(b ? *b : "error: " + b.error().message());
          conn.close();
        }
        garbage = true;
        UpstreamConnection conn(ex, nullptr, TcpOptions{});
        auto head = co_await conn.request(c.sse_url, "GET", "/chunked", "", "", Deadline::after(2s));
        if (!head) co_return;
        auto b = co_await conn.read_full_body(1024, Deadline::after(2s));
        if (!b) bad = b.error();
      },
      30s));
  REQUIRE(got.size() == body.size() + 1);
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == "Wikipedia in\r\n\r\nchunks.");
  }
  REQUIRE(bad);
  CHECK(bad->kind == ErrorKind::kProtocol);
}
