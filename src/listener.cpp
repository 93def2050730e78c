#include "mcp_sse_bridge/listener.h"

#include <sys/socket.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <future>
#include <unistd.h>
#include <utility>

#include "mcp_sse_bridge/client_connection.h"
#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/metrics.h"

namespace msb {

namespace {
constexpr auto kTok = asio::as_tuple(asio::use_awaitable);
}

struct Listener::PerLoop {
  PerLoop(EventLoop& l, int i) : loop(l), index(i), acceptor(l.io()) {}
  EventLoop& loop;
  const int index;
  tcp::acceptor acceptor;
  std::shared_ptr<asio::ssl::context> tls;
  ClientConnection* head = nullptr;  // this loop's open connections (loop thread only)
  std::atomic<int64_t> count{0};     // how many (written on the loop thread)

  void link(ClientConnection* c) {
    c->next = head;
    if (head) head->prev = c;
    head = c;
    count.store(count.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  void unlink(ClientConnection* c) {
    (c->prev ? c->prev->next : head) = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = nullptr;
    count.store(count.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
  }
  template <class F>
  void for_each(F f) {
    // f may close (and unlink) the connection: take next first.
    for (ClientConnection* c = head; c;) {
      ClientConnection* n = c->next;
      f(c);
      c = n;
    }
  }
};

Listener::Listener(EventLoops& loops, const ConnLimits& limits, int max_connections,
                   RequestHandler& handler, Metrics* metrics, std::shared_ptr<const TlsContext> tls,
                   bool pack)
    : loops_(loops), limits_(limits), max_connections_(max_connections), handler_(handler),
      metrics_(metrics), tls_(std::move(tls)) {
  for (int i = 0; i < loops_.size(); ++i) {
    per_loop_.push_back(std::make_unique<PerLoop>(loops_.at(i), i));
    if (tls_) per_loop_.back()->tls = asio_tls_context(*tls_);
  }
  if (pack && loops_.size() > 1) balancer_ = std::make_unique<LoopBalancer>(loops_.size());
}

int64_t Listener::connections_on(int i) const {
  return per_loop_[static_cast<size_t>(i)]->count.load(std::memory_order_relaxed);
}

Listener::~Listener() = default;

bool Listener::bind(const std::string& host, int port, std::string* why) {
  ErrorCode ec;
  asio::ip::address addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) {
    tcp::resolver r(loops_.at(0).io());
    auto res = r.resolve(host, std::to_string(port), ec);
    if (ec || res.empty()) {
      if (why) *why = "cannot resolve listen address " + host + ": " + ec.message();
      return false;
    }
    addr = res.begin()->endpoint().address();
  }
  tcp::endpoint ep(addr, static_cast<unsigned short>(port));
  for (auto& pl : per_loop_) {
    auto& a = pl->acceptor;
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) {
      int one = 1;
      if (::setsockopt(a.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        ec = ErrorCode(errno, boost::system::system_category());
    }
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(4096, ec);
    if (ec) {
      if (why) *why = "cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message();
      for (auto& p : per_loop_) p->acceptor.close(ec);
      return false;
    }
    ep = a.local_endpoint();  // port 0: the other loops bind the port just chosen
  }
  port_ = ep.port();
  v6_ = ep.address().is_v6();
  return true;
}

namespace {

// Above --max-connections: a 503 written straight into the new socket's
// buffer (it does not block), then close. TLS connections are just closed:
// a refusal is not worth a handshake.
void refuse_connection(tcp::socket& s, bool tls, Metrics* metrics) {
  if (metrics) metrics->connection_refused();
  static log::RateLimit limit(20, 10000);
  uint64_t suppressed = 0;
  if (limit.allow(&suppressed))
    log::warn("connection refused: every connection slot is taken (--max-connections)",
              {{"status", "503"}, {"suppressed", std::to_string(suppressed)}});
  ErrorCode ec;
  if (!tls) {
    static const std::string body = jsonrpc_plain_error(
        "", -32000, "Service Unavailable: every connection slot is taken (--max-connections); retry shortly");
    static const std::string res =
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
        "Connection: close\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    s.non_blocking(true, ec);
    (void)::send(s.native_handle(), res.data(), res.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    // Drop what the client already sent (without waiting): closing with
    // unread bytes would reset the connection under the 503.
    s.shutdown(tcp::socket::shutdown_send, ec);
    char buf[16384];
    for (int i = 0; i < 8 && ::recv(s.native_handle(), buf, sizeof buf, MSG_DONTWAIT) > 0; ++i) {
    }
  }
  s.close(ec);
}

}  // namespace

// A descriptor on its way to another loop: closed unless it arrives (the
// loop may stop with the post pending).
struct OwnedFd {
  explicit OwnedFd(int f) : fd(f) {}
  OwnedFd(OwnedFd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  OwnedFd& operator=(OwnedFd&&) = delete;
  ~OwnedFd() {
    if (fd >= 0) ::close(fd);
  }
  int take() { return std::exchange(fd, -1); }
  int fd;
};

void Listener::serve_on(PerLoop* p, std::unique_ptr<NetStream> stream, std::string first, int served) {
  auto c = std::make_shared<ClientConnection>(p->loop, std::move(stream), limits_, handler_, metrics_);
  p->link(c.get());
  c->on_closed = [this, p](ClientConnection* cc) {
    p->unlink(cc);
    connections_.fetch_sub(1);
  };
  if (balancer_) c->mover = [this, p](ClientConnection* cc, std::string_view b) { return move(p, cc, b); };
  if (first.empty() && served == 0) c->start();
  else c->start_moved(std::move(first), served);
}

void Listener::post_to(int to, int fd, std::string first, int served) {
  PerLoop* q = per_loop_[static_cast<size_t>(to)].get();
  asio::post(q->loop.io(), [this, q, owned = OwnedFd(fd), first = std::move(first), served]() mutable {
    tcp::socket s(q->loop.io());
    ErrorCode ec;
    s.assign(v6_ ? tcp::v6() : tcp::v4(), owned.fd, ec);
    if (ec) {
      connections_.fetch_sub(1);
      return;  // owned closes it
    }
    owned.take();
    auto stream = q->tls ? std::make_unique<NetStream>(std::move(s), q->tls)
                         : std::make_unique<NetStream>(std::move(s));
    serve_on(q, std::move(stream), std::move(first), served);
  });
}

bool Listener::move(PerLoop* p, ClientConnection* c, std::string_view first) {
  int to = balancer_->should_move(p->index);
  if (to < 0 || to == p->index) return false;
  int served = c->served();
  int fd = c->release_for_move();
  if (fd < 0) return false;
  p->unlink(c);  // connections_ is unchanged: it lives on elsewhere
  moves_.fetch_add(1, std::memory_order_relaxed);
  post_to(to, fd, std::string(first), served);
  return true;
}

void Listener::start() {
  for (auto& pl : per_loop_) {
    PerLoop* p = pl.get();
    asio::co_spawn(
        p->loop.io(),
        [this, p]() -> asio::awaitable<void> {
          for (;;) {
            auto [ec, s] = co_await p->acceptor.async_accept(kTok);
            if (ec == asio::error::operation_aborted || !p->acceptor.is_open()) co_return;
            if (ec) {
              // Out of fds or memory: back off a little instead of spinning.
              asio::steady_timer t(p->loop.io(), std::chrono::milliseconds(50));
              co_await t.async_wait(kTok);
              continue;
            }
            ErrorCode e;
            s.set_option(tcp::no_delay(true), e);
            if (connections_.fetch_add(1) >= max_connections_) {
              connections_.fetch_sub(1);
              refuse_connection(s, p->tls != nullptr, metrics_);
              continue;
            }
            int to = balancer_ ? balancer_->place() : p->index;
            if (to != p->index) {
              int fd = s.release(e);
              if (!e && fd >= 0) {
                post_to(to, fd, {}, 0);
                continue;
              }
              connections_.fetch_sub(1);
              continue;
            }
            auto stream = p->tls ? std::make_unique<NetStream>(std::move(s), p->tls)
                                 : std::make_unique<NetStream>(std::move(s));
            serve_on(p, std::move(stream), {}, 0);
          }
        },
        asio::detached);
    if (!balancer_) continue;
    // The loop's busy share, every LoopBalancer::kTick, while it accepts.
    asio::co_spawn(
        p->loop.io(),
        [this, p]() -> asio::awaitable<void> {
          LoopBalancer::Meter meter;
          meter.sample();
          asio::steady_timer t(p->loop.io());
          while (p->acceptor.is_open()) {
            t.expires_after(LoopBalancer::kTick);
            auto [ec] = co_await t.async_wait(kTok);
            if (ec) co_return;
            balancer_->tick(p->index, meter.sample(),
                            static_cast<int>(p->count.load(std::memory_order_relaxed)));
          }
        },
        asio::detached);
  }
}

namespace {

// Runs f on every loop and waits (bounded) until each has.
template <class F>
void on_every_loop(EventLoops& loops, F f) {
  std::vector<std::future<void>> done;
  for (int i = 0; i < loops.size(); ++i) {
    auto p = std::make_shared<std::promise<void>>();
    done.push_back(p->get_future());
    EventLoop& l = loops.at(i);
    if (l.in_loop()) {
      f(i);
      p->set_value();
      continue;
    }
    asio::post(l.io(), [f, i, p] {
      f(i);
      p->set_value();
    });
  }
  for (auto& d : done) d.wait_for(std::chrono::seconds(2));
}

}  // namespace

void Listener::stop_accepting() {
  on_every_loop(loops_, [this](int i) {
    ErrorCode ec;
    per_loop_[static_cast<size_t>(i)]->acceptor.close(ec);
  });
}

void Listener::drain() {
  on_every_loop(loops_, [this](int i) {
    per_loop_[static_cast<size_t>(i)]->for_each([](ClientConnection* c) { c->close_when_idle(); });
  });
}

void Listener::close_all() {
  on_every_loop(loops_, [this](int i) {
    per_loop_[static_cast<size_t>(i)]->for_each([](ClientConnection* c) { c->close(); });
  });
}

}  // namespace msb
