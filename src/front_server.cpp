#include "mcp_sse_bridge/front_server.h"

#include <dirent.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <httplib.h>

#include <openssl/sha.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "mcp_sse_bridge/initialize_cache.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/metrics.h"
#include "mcp_sse_bridge/peer_socket.h"
#include "mcp_sse_bridge/request_policy.h"
#include "mcp_sse_bridge/session_token.h"
#include "mcp_sse_bridge/upstream_session.h"

namespace msb {

namespace {

constexpr char kSessionHeader[] = "Mcp-Session-Id";


// Set on the short-lived threads that only refuse a connection (all workers
// busy), and to the client socket on a worker serving one.
thread_local bool t_overflow = false;
thread_local int t_client_fd = -1;
// Set while a request is handled when the connection must close after its
// response: bytes of the request's body are still unread (or cannot be
// read), so anything read next would be parsed as a request.
thread_local bool t_close_after = false;

// Methods whose requests cpp-httplib reads a body for; on any other method a
// body is never read, so such a request must close its connection.
bool reads_body(const std::string& method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE" ||
         method == "PRI";
}

// cpp-httplib's ThreadPool starts all its threads at once, and its condition
// variable hands connections to threads in turn, so an idle bridge touches
// every thread's stack. This pool starts a thread only when no idle one can
// take the work (up to `max`), and lets threads above `keep` exit after
// `idle_exit` without work.
class LazyThreadPool : public httplib::TaskQueue {
 public:
  LazyThreadPool(size_t max, size_t keep, std::chrono::seconds idle_exit)
      : max_(max), keep_(keep), idle_exit_(idle_exit) {}
  ~LazyThreadPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock lk(mu_);
    if (shut_) return;
    // Every worker busy: a connection would wait in the queue, unanswered,
    // for as long as the slowest call. Refuse it at once on a short-lived
    // thread instead (503 + Retry-After), up to a bound of such threads.
    if (jobs_.size() + 1 > idle_ && live_ >= max_ && overflow_ >= kMaxOverflow) {
      // Even the refusal threads are all busy: refuse on the accepting
      // thread (a 503 into a fresh socket's buffer does not block) rather
      // than queue the connection, unanswered, behind the slowest call.
      lk.unlock();
      t_overflow = true;
      fn();
      t_overflow = false;
      return;
    }
    if (jobs_.size() + 1 > idle_ && live_ >= max_) {
      ++overflow_;
      reap_locked();
      threads_.emplace_back([this, fn = std::move(fn)] {
        t_overflow = true;
        fn();
        std::lock_guard lk2(mu_);
        --overflow_;
        retire_self_locked();
      });
      return;
    }
    jobs_.push_back(std::move(fn));
    // Idle threads already woken for earlier jobs still count as idle until
    // they take the lock: compare against the queue, not against zero.
    if (jobs_.size() > idle_ && live_ < max_) {
      ++live_;
      reap_locked();
      threads_.emplace_back([this] { work(); });
    }
    cv_.notify_one();
  }

  void shutdown() override {
    std::vector<std::thread> all;
    {
      std::lock_guard lk(mu_);
      if (shut_) return;
      shut_ = true;
      cv_.notify_all();
      all.swap(threads_);
      for (auto& t : done_) all.push_back(std::move(t));
      done_.clear();
    }
    // Workers finish their current connection first; those are bounded by
    // the server's read/write timeouts and the bridge's own deadlines.
    for (auto& t : all)
      if (t.joinable()) t.join();
  }

 private:
  void work() {
    std::unique_lock lk(mu_);
    for (;;) {
      ++idle_;
      bool got = cv_.wait_for(lk, idle_exit_, [&] { return shut_ || !jobs_.empty(); });
      --idle_;
      if (!jobs_.empty()) {
        auto fn = std::move(jobs_.front());
        jobs_.pop_front();
        lk.unlock();
        fn();
        lk.lock();
        continue;
      }
      if (shut_ || (!got && live_ > keep_)) break;
    }
    --live_;
    retire_self_locked();
  }
  // Hands this thread's handle to the reaper list (joined later).
  void retire_self_locked() {
    auto self = std::this_thread::get_id();
    for (auto it = threads_.begin(); it != threads_.end(); ++it)
      if (it->get_id() == self) {
        done_.push_back(std::move(*it));
        threads_.erase(it);
        break;
      }
  }
  // Joins threads that have exited (called with mu_ held; they no longer need it).
  void reap_locked() {
    for (auto& t : done_)
      if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
    done_.clear();
  }

  static constexpr size_t kMaxOverflow = 16;
  const size_t max_, keep_;
  const std::chrono::seconds idle_exit_;
  size_t overflow_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  std::vector<std::thread> done_;
  size_t live_ = 0, idle_ = 0;
  bool shut_ = false;
};

// What the front side and a running call share: the client's cancellation,
// client responses routed to the call, and an eventfd that wakes the call's
// waits at once when either arrives.
struct CallMailbox {
  CallMailbox() : efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~CallMailbox() {
    if (efd >= 0) ::close(efd);
  }
  CallMailbox(const CallMailbox&) = delete;
  CallMailbox& operator=(const CallMailbox&) = delete;

  void wake() {
    uint64_t one = 1;
    if (efd >= 0) (void)!::write(efd, &one, sizeof one);
  }
  void drain() {
    uint64_t v;
    if (efd >= 0) (void)!::read(efd, &v, sizeof v);
  }
  void cancel() {
    cancelled.store(true);
    wake();
  }
  void push(Message m) {
    {
      std::lock_guard lk(mu);
      if (responses.size() >= 1024) return;  // a client flooding answers gets them dropped
      responses.push_back(std::move(m));
    }
    wake();
  }
  std::optional<Message> pop() {
    std::lock_guard lk(mu);
    if (responses.empty()) return std::nullopt;
    Message m = std::move(responses.front());
    responses.pop_front();
    return m;
  }

  int efd;
  std::atomic<bool> cancelled{false};
  std::mutex mu;
  std::deque<Message> responses;
};
using MailboxPtr = std::shared_ptr<CallMailbox>;

// In-flight calls by (client session, request id), so that a client's
// notifications/cancelled reaches the call it names; and forwarded server
// requests by (client session, bridge id), so that the client's answer
// reaches the call that forwarded it.
class CallRegistry {
 public:
  void add_call(const std::string& key, const MailboxPtr& m) {
    std::lock_guard lk(mu_);
    calls_[key] = m;
  }
  void remove_call(const std::string& key, const MailboxPtr& m) {
    std::lock_guard lk(mu_);
    auto it = calls_.find(key);
    if (it != calls_.end() && it->second == m) calls_.erase(it);
  }
  bool cancel(const std::string& key) {
    std::lock_guard lk(mu_);
    auto it = calls_.find(key);
    if (it == calls_.end()) return false;
    it->second->cancel();
    return true;
  }
  void add_route(const std::string& key, const MailboxPtr& m) {
    std::lock_guard lk(mu_);
    routes_[key] = m;
  }
  void remove_route(const std::string& key) {
    std::lock_guard lk(mu_);
    routes_.erase(key);
  }
  bool route(const std::string& key, Message m) {
    MailboxPtr box;
    {
      std::lock_guard lk(mu_);
      auto it = routes_.find(key);
      if (it == routes_.end()) return false;
      box = it->second;
    }
    box->push(std::move(m));
    return true;
  }
  void wake_all() {
    std::lock_guard lk(mu_);
    for (auto& [k, m] : calls_) m->wake();
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, MailboxPtr> calls_;
  std::unordered_map<std::string, MailboxPtr> routes_;
};

// A client request whose response is still to be produced.
struct PendingCall {
  Message msg;
  std::string key;  // session + id, for cancellation
  MailboxPtr mailbox;
  bool counted = true;  // still counted in Impl::inflight (and per session)
  std::string request_id;  // X-Request-Id, for logs
  Clock::time_point arrival;  // when the HTTP request arrived: the call's deadline starts here
};

// The client capability a server-to-client request needs, if any.
std::string_view capability_for(std::string_view method) {
  if (method == "sampling/createMessage") return "sampling";
  if (method == "roots/list") return "roots";
  if (method == "elicitation/create") return "elicitation";
  return {};
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}


}  // namespace

// What the connection layer needs from the bridge.
struct ConnPolicy {
  std::shared_ptr<const TlsContext> tls;
  Duration read_timeout;   // a request's head + body
  Duration write_timeout;  // each write's progress
  Duration idle_timeout;   // keep-alive wait for the next request
  Metrics* metrics = nullptr;
  std::atomic<bool>* draining = nullptr;
  std::atomic<int64_t> connections{0};
  // Client sockets being served, so that stop() can end every blocked read
  // or write at once instead of waiting out the client's timeouts.
  std::mutex fds_mu;
  std::unordered_set<int> fds;
  void track(int fd, bool on) {
    std::lock_guard lk(fds_mu);
    if (on) fds.insert(fd);
    else fds.erase(fd);
  }
  void shutdown_all() {
    std::lock_guard lk(fds_mu);
    for (int fd : fds) ::shutdown(fd, SHUT_RDWR);
  }
};

// One client connection, plain or TLS, on a non-blocking socket. Reads are
// bounded by the request's deadline (armed when a request starts: slowloris
// clients cannot hold a worker longer than --client-read-timeout), writes by
// --client-write-timeout per write.
class ClientStream : public httplib::Stream {
 public:
  ClientStream(int fd, SSL* ssl, const ConnPolicy& p) : fd_(fd), ssl_(ssl), p_(p) {}

  void arm_read_deadline() {
    read_deadline_ = Deadline::after(p_.read_timeout);
    read_expired_ = false;
  }
  bool read_expired() const { return read_expired_; }

  // Waits for the first byte of the next request (keep-alive), waking every
  // 100 ms to notice a drain. False on timeout, close or drain.
  bool wait_next_request(Duration max) {
    if (buffered() || (ssl_ && SSL_pending(ssl_) > 0)) return true;
    auto d = Deadline::after(max);
    while (!d.reached()) {
      if (p_.draining && p_.draining->load()) return false;
      pollfd pf{fd_, POLLIN, 0};
      int rc = ::poll(&pf, 1, std::min(100, d.poll_ms()));
      if (rc > 0) return (pf.revents & POLLIN) != 0;
      if (rc < 0 && errno != EINTR) return false;
    }
    return false;
  }

  bool is_readable() const override {
    if (buffered() || (ssl_ && SSL_pending(ssl_) > 0)) return true;
    return wait_fd(POLLIN, read_deadline_) == 1;
  }
  bool is_writable() const override {
    return wait_fd(POLLOUT, Deadline::after(p_.write_timeout)) == 1;
  }

  // cpp-httplib reads request lines one byte at a time (its own SocketStream
  // buffers): serve small reads from a buffer filled by one recv.
  ssize_t read(char* ptr, size_t size) override {
    if (!buffered()) {
      if (size >= sizeof buf_) return raw_read(ptr, size);
      ssize_t n = raw_read(buf_, sizeof buf_);
      if (n <= 0) return n;
      pos_ = 0;
      len_ = static_cast<size_t>(n);
    }
    size_t n = std::min(size, len_ - pos_);
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t raw_read(char* ptr, size_t size) {
    for (;;) {
      short ev = POLLIN;
      if (ssl_) {
        ERR_clear_error();
        int n = SSL_read(ssl_, ptr, static_cast<int>(std::min<size_t>(size, INT32_MAX)));
        if (n > 0) return n;
        int err = SSL_get_error(ssl_, n);
        if (err == SSL_ERROR_ZERO_RETURN) return 0;
        if (err == SSL_ERROR_WANT_WRITE) ev = POLLOUT;
        else if (err != SSL_ERROR_WANT_READ) return -1;
      } else {
        ssize_t n = ::recv(fd_, ptr, size, 0);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      }
      int w = wait_fd(ev, read_deadline_);
      if (w == 0) read_expired_ = true;
      if (w != 1) return -1;
    }
  }

  ssize_t write(const char* ptr, size_t size) override {
    auto d = Deadline::after(p_.write_timeout);
    for (;;) {
      short ev = POLLOUT;
      if (ssl_) {
        ERR_clear_error();
        int n = SSL_write(ssl_, ptr, static_cast<int>(std::min<size_t>(size, INT32_MAX)));
        if (n > 0) return n;
        int err = SSL_get_error(ssl_, n);
        if (err == SSL_ERROR_WANT_READ) ev = POLLIN;
        else if (err != SSL_ERROR_WANT_WRITE) return -1;
      } else {
        ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
      }
      if (wait_fd(ev, d) != 1) return -1;
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getpeername(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) address(ss, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) address(ss, ip, port);
  }
  socket_t socket() const override { return fd_; }

  // 1 ready, 0 deadline, -1 error.
  int wait_fd(short ev, Deadline d) const {
    for (;;) {
      pollfd pf{fd_, ev, 0};
      int rc = ::poll(&pf, 1, d.poll_ms());
      if (rc > 0) return 1;
      if (rc == 0) return 0;
      if (errno != EINTR) return -1;
    }
  }

 private:
  static void address(const sockaddr_storage& ss, std::string& ip, int& port) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (ss.ss_family == AF_INET) {
      auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
      inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
      inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
      port = ntohs(a->sin6_port);
    }
    ip = buf;
  }

  bool buffered() const { return pos_ < len_; }

  int fd_;
  SSL* ssl_;
  const ConnPolicy& p_;
  Deadline read_deadline_ = Deadline::never();
  bool read_expired_ = false;
  char buf_[8192];
  size_t pos_ = 0, len_ = 0;
};

// cpp-httplib's Server with the connection loop replaced (it is the one
// virtual hook 0.11.4 has; its SSLServer overrides it the same way): TLS
// handshakes and request reads under deadlines, connections refused when
// every worker is busy, the client socket known to the handlers.
class Server : public httplib::Server {
 public:
  explicit Server(ConnPolicy& p) : p_(p) {}
  // cpp-httplib 0.11.4 listens with a backlog of 5: a burst of connections
  // (64 clients at once) overflows it and the kernel drops SYNs, which
  // clients retry only after a second. Raise it once bound.
  void raise_backlog(int n) {
    if (svr_sock_ != INVALID_SOCKET) ::listen(svr_sock_, n);
  }

 private:
  bool process_and_close_socket(socket_t sock) override {
    p_.connections.fetch_add(1);
    int fd = static_cast<int>(sock);
    p_.track(fd, true);
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    SSL* ssl = nullptr;
    if (t_overflow) {
      refuse(fd);
    } else if (!p_.tls || (ssl = handshake(fd))) {
      serve(fd, ssl);
    }
    if (ssl) {
      SSL_shutdown(ssl);  // best effort close_notify (non-blocking)
      SSL_free(ssl);
    }
    if (t_close_after) linger_close(fd);
    t_close_after = false;
    p_.track(fd, false);
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    p_.connections.fetch_sub(1);
    return true;
  }

  // Closing with unread request bytes makes the kernel send a reset, which
  // can destroy the response before the client reads it. Stop sending,
  // then read and drop what the client still sends, within a bound.
  static void linger_close(int fd) {
    ::shutdown(fd, SHUT_WR);
    auto d = Deadline::after(Millis(1000));
    char buf[16384];
    for (size_t total = 0; total < (8u << 20) && !d.reached();) {
      pollfd pf{fd, POLLIN, 0};
      if (::poll(&pf, 1, d.poll_ms()) <= 0) break;
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      total += static_cast<size_t>(n);
    }
  }

  void refuse(int fd) {
    if (p_.metrics) p_.metrics->connection_refused();
    static log::RateLimit limit(20, 10000);
    uint64_t suppressed = 0;
    if (limit.allow(&suppressed))
      log::warn("connection refused: every worker thread is busy (--worker-threads)",
                {{"status", "503"}, {"suppressed", std::to_string(suppressed)}});
    if (p_.tls) return;  // no handshake for a refusal: just close
    static const std::string body =
        jsonrpc_plain_error("", -32000, "Service Unavailable: every worker thread is busy "
                                        "(--worker-threads); retry shortly");
    std::string res = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                      "Content-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n" + body;
    ClientStream s(fd, nullptr, p_);
    for (size_t off = 0; off < res.size();) {
      ssize_t n = s.write(res.data() + off, res.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    // Drop what the client already sent (without waiting): closing with
    // unread bytes would reset the connection under the 503.
    ::shutdown(fd, SHUT_WR);
    char buf[16384];
    for (int i = 0; i < 8 && ::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0; ++i) {
    }
  }

  SSL* handshake(int fd) {
    ERR_clear_error();
    SSL* ssl = SSL_new(p_.tls->get());
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
      SSL_free(ssl);
      return nullptr;
    }
    ClientStream s(fd, nullptr, p_);
    auto d = Deadline::after(p_.read_timeout);
    for (;;) {
      int rc = SSL_accept(ssl);
      if (rc == 1) return ssl;
      int err = SSL_get_error(ssl, rc);
      short ev = err == SSL_ERROR_WANT_READ ? POLLIN : err == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
      if (ev && s.wait_fd(ev, d) == 1) continue;
      if (p_.metrics) p_.metrics->tls_handshake_failed();
      log::debug("client TLS handshake failed",
                 {{"cause", ev ? std::string("deadline exceeded") : tls_error_text()}});
      ERR_clear_error();
      SSL_free(ssl);
      return nullptr;
    }
  }

  void serve(int fd, SSL* ssl) {
    ClientStream strm(fd, ssl, p_);
    t_client_fd = fd;
    bool first = true;
    for (size_t count = keep_alive_max_count_; count > 0; --count) {
      if (!strm.wait_next_request(first ? p_.read_timeout : p_.idle_timeout)) break;
      first = false;
      strm.arm_read_deadline();
      bool closed = false;
      bool close_now = count == 1 || (p_.draining && p_.draining->load());
      t_close_after = false;
      bool ok = process_request(strm, close_now, closed, [](httplib::Request& req) {
        // A request without Content-Length or Transfer-Encoding has no body
        // (RFC 9112 6.3); cpp-httplib 0.11 would read one until the client
        // closes, so a plain `DELETE` (fetch sends no Content-Length) hung
        // until --client-read-timeout.
        if (reads_body(req.method) && !req.has_header("Content-Length") &&
            !req.has_header("Transfer-Encoding"))
          req.headers.emplace("Content-Length", "0");
        if (!reads_body(req.method) &&
            (req.has_header("Transfer-Encoding") ||
             (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0"))) {
          t_close_after = true;
          // cpp-httplib then answers with "Connection: close".
          req.headers.erase("Connection");
          req.headers.emplace("Connection", "close");
        }
      });
      if (t_close_after) break;
      if (strm.read_expired()) {
        if (p_.metrics) p_.metrics->slow_client_cut();
        log::info("client connection closed: request not received within --client-read-timeout");
      }
      if (!ok || closed) break;
    }
    t_client_fd = -1;
  }

  ConnPolicy& p_;
};

// /readyz: is the upstream's SSE endpoint answering with an `endpoint`
// event? Probed at most once per interval (concurrent checks share the
// cached answer), so probes cannot load the upstream.
class ReadyProbe {
 public:
  // `headers`: the static upstream headers (credentials the upstream may need).
  ReadyProbe(const Config& cfg, std::string headers) : cfg_(cfg), headers_(std::move(headers)) {}
  // Returns ready + a reason; probes when the cached answer is stale.
  std::pair<bool, std::string> check() {
    std::unique_lock lk(mu_);
    auto now = Clock::now();
    if (probed_ && now - last_ < cfg_.ready_probe_interval) return {ready_, reason_};
    if (probing_) return {ready_, probed_ ? reason_ : "first probe in progress"};
    probing_ = true;
    lk.unlock();
    auto [ok, why] = probe();
    lk.lock();
    probing_ = false;
    probed_ = true;
    last_ = Clock::now();
    if (ok != ready_ || !logged_) {
      if (ok) log::info("upstream reachable: ready");
      else log::warn("upstream not reachable: not ready", {{"cause", why}});
      logged_ = true;
    }
    ready_ = ok;
    reason_ = why;
    return {ready_, reason_};
  }
  bool last() {
    std::lock_guard lk(mu_);
    return ready_;
  }

 private:
  std::pair<bool, std::string> probe() {
    UpstreamSession up(cfg_.upstream, headers_);
    auto outer = Deadline::after(std::min<Duration>(
        cfg_.upstream.connect_timeout + cfg_.upstream.endpoint_timeout, Duration(5000)));
    auto st = up.open(Deadline::earliest(Deadline::after(cfg_.upstream.connect_timeout), outer),
                      cfg_.upstream.endpoint_timeout, outer);
    if (!st) return {false, st.error().message()};
    return {true, "upstream answered with an endpoint"};
  }

  const Config& cfg_;
  const std::string headers_;
  std::mutex mu_;
  bool probed_ = false, probing_ = false, ready_ = false, logged_ = false;
  std::string reason_ = "not probed yet";
  Clock::time_point last_{};
};

// The body of a POST, read at most once and bounded by --max-body-size.
// Whatever path answers the request (a refusal made on headers alone
// included), finish() makes sure that no byte of the body stays on the
// connection: an unread body is read and dropped within the same bound, and a
// body that could not be consumed whole closes the connection after the
// response. Without this, a keep-alive client's next request (the fallback
// initialize after a refused probe) is parsed from the leftover bytes.
class PostBody {
 public:
  enum class Read { kOk, kTooLarge, kFailed };
  PostBody(const httplib::ContentReader& reader, size_t limit) : reader_(reader), limit_(limit) {}

  // Reads the whole body into *out. kTooLarge: above the limit (the rest is
  // read and dropped up to a cap so that the client reads the 413 rather
  // than a reset); kFailed: the client stopped sending or sent bad framing.
  Read read(std::string* out) {
    if (read_) return Read::kFailed;
    read_ = true;
    bool too_large = false;
    size_t dropped = 0;
    const size_t drain_cap = std::max<size_t>(limit_, 1 << 20);
    bool ok = reader_([&](const char* data, size_t n) {
      if (too_large || out->size() + n > limit_) {
        too_large = true;
        out->clear();
        dropped += n;
        return dropped < drain_cap;
      }
      out->append(data, n);
      return true;
    });
    consumed_ = ok;
    if (too_large) return Read::kTooLarge;
    return ok ? Read::kOk : Read::kFailed;
  }

  // Called once the response is decided, before it is written.
  void finish(httplib::Response& res) {
    if (!read_) {
      std::string sink;
      (void)read(&sink);
    }
    if (!consumed_) {
      t_close_after = true;
      res.set_header("Connection", "close");
    }
  }

 private:
  const httplib::ContentReader& reader_;
  const size_t limit_;
  bool read_ = false;
  bool consumed_ = false;
};

// Header view of a cpp-httplib request (no copies).
HeaderList header_list(const httplib::Request& req) {
  HeaderList h;
  h.reserve(req.headers.size());
  for (auto& [k, v] : req.headers) h.push_back(HeaderView{k, v});
  return h;
}

void reject(httplib::Response& res, const Rejection& r, std::string_view id = "") {
  res.status = r.status;
  for (auto& [k, v] : r.headers) res.set_header(k, v);
  res.set_content(jsonrpc_plain_error(id, r.code, r.message), "application/json");
}

// X-Request-Id: the client's when it is short and plain, else a new one.
std::string request_id_for(const httplib::Request& req) {
  auto v = req.get_header_value("X-Request-Id");
  bool ok = !v.empty() && v.size() <= 64;
  for (unsigned char c : v)
    if (!(std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == ':')) ok = false;
  if (ok) return v;
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = [] {
    uint64_t x = 0;
    std::string r = random_bytes(8);
    std::memcpy(&x, r.data(), 8);
    return x;
  }();
  uint64_t n = counter.fetch_add(1) ^ salt;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(n));
  return buf;
}

// A short, non-reversible tag of a client session id for logs (the id itself
// is a credential-like token).
std::string session_tag(std::string_view sid) {
  unsigned char d[32];
  SHA256(reinterpret_cast<const unsigned char*>(sid.data()), sid.size(), d);
  char out[13];
  for (int i = 0; i < 6; ++i) std::snprintf(out + 2 * i, 3, "%02x", d[i]);
  return out;
}

struct FrontServer::Impl {
  Config cfg;
  Forwarder forwarder;
  SessionTokens tokens;
  RequestPolicy policy;
  Metrics metrics;
  ConnPolicy conn;
  Server svr;
  CallRegistry registry;
  ReadyProbe ready;
  std::atomic<bool> stopping{false};  // remaining calls are being answered with shutting_down
  std::atomic<bool> draining{false};  // no new calls; /readyz false
  std::atomic<int> inflight{0};       // calls admitted and not yet finished
  log::RateLimit refusal_log{20, 10000};  // refusal log lines: 20 per 10 s
  InitializeCache init_cache;             // --serve-stale-initialize
  std::mutex session_mu;
  std::unordered_map<std::string, int> session_calls;  // calls in progress per client session
  int bound_port = -1;
  std::thread thread;
  std::mutex run_mu;

  explicit Impl(Config c)
      : cfg(std::move(c)),
        forwarder(cfg.upstream),
        tokens(cfg.session_secret, cfg.max_revoked_sessions),
        policy(cfg),
        conn{cfg.tls_ctx, cfg.client_read_timeout, cfg.client_write_timeout,
             cfg.client_idle_timeout, &metrics, &draining},
        svr(conn),
        ready(cfg, policy.static_headers()) {
    int threads = cfg.worker_threads;
    svr.new_task_queue = [threads] {
      return new LazyThreadPool(static_cast<size_t>(threads), 4, std::chrono::seconds(30));
    };
    svr.set_tcp_nodelay(true);
    svr.set_keep_alive_max_count(1000);
    // Read/write timeouts and keep-alive are enforced by ClientStream.
    // The POST handler enforces --max-body-size itself (for chunked bodies
    // too, with a message naming the limit); other routes take no body.
    svr.set_payload_max_length(std::numeric_limits<size_t>::max());
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      log::error("handler exception", {{"what", what}});
      reject(res, Rejection{500, -32603, "Internal error in mcp-sse-bridge"});
    });
    svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      // Answers cpp-httplib makes itself (no route, bad framing) have no
      // body yet; the bridge's own refusals were counted by refuse().
      if (res.body.empty()) {
        metrics.http_refused(res.status);
        log_refusal(res.status, res.status == 404 ? "no such path: " + req.path.substr(0, 200)
                                                  : "malformed or unroutable request");
      }
      if (res.status == 413 && res.body.empty()) {
        res.set_content(jsonrpc_plain_error("", -32600, "Request body too large"),
                        "application/json");
      } else if (res.status == 404 && res.body.empty()) {
        res.set_content("not found: " + req.path.substr(0, 200) + "\n", "text/plain");
      }
    });
    const std::string& p = cfg.path;
    svr.Post(p, [this](const httplib::Request& req, httplib::Response& res,
                       const httplib::ContentReader& reader) {
      auto h = header_list(req);
      PostBody body(reader, cfg.max_body_size);
      if (mcp_guard(h, res)) handle_post(req, h, res, body);
      body.finish(res);  // no refusal leaves body bytes on the connection
    });
    svr.Get(p, [this](const httplib::Request& req, httplib::Response& res) {
      if (!mcp_guard(header_list(req), res)) return;
      Rejection r{405, -32000,
                  "Method Not Allowed: this bridge has no standalone server-to-client stream "
                  "(GET); use POST"};
      r.headers.emplace_back("Allow", "POST, DELETE");
      refuse(res, r);
    });
    svr.Delete(p, [this](const httplib::Request& req, httplib::Response& res) {
      auto h = header_list(req);
      if (mcp_guard(h, res)) handle_delete(h, res);
    });
    svr.Get("/healthz", [this](const httplib::Request& req, httplib::Response& res) {
      if (!open_or_authorized(cfg.auth_health, req, res)) return;
      res.set_content("ok\n", "text/plain");
    });
    svr.Get("/readyz", [this](const httplib::Request& req, httplib::Response& res) {
      if (!open_or_authorized(cfg.auth_health, req, res)) return;
      if (draining.load()) {
        res.status = 503;
        res.set_content("not ready: draining (shutting down)\n", "text/plain");
        return;
      }
      auto [ok, why] = ready.check();
      res.status = ok ? 200 : 503;
      res.set_content(std::string(ok ? "ready: " : "not ready: ") + why + "\n", "text/plain");
    });
    if (!cfg.metrics_path.empty())
      svr.Get(cfg.metrics_path, [this](const httplib::Request& req, httplib::Response& res) {
        if (!open_or_authorized(cfg.auth_metrics, req, res)) return;
        MetricsGauges g;
        g.inflight = inflight.load();
        g.connections = conn.connections.load();
        g.upstream_sessions = static_cast<int64_t>(UpstreamSession::open_count());
        g.ready = !draining.load() && ready.last();
        g.draining = draining.load();
        res.set_content(metrics.render(g, forwarder.stats(), forwarder.pool_stats()),
                        "text/plain; version=0.0.4; charset=utf-8");
      });
  }

  // The MCP endpoint's guards, in order: Host/Origin (403), then auth (401).
  // Returns false after filling res.
  bool mcp_guard(const HeaderList& h, httplib::Response& res) {
    auto r = policy.check_host_origin(h);
    if (!r) r = policy.check_auth(h);
    if (!r) return true;
    refuse(res, *r);
    return false;
  }

  bool open_or_authorized(bool protect, const httplib::Request& req, httplib::Response& res) {
    if (!protect) return true;
    auto r = policy.check_auth(header_list(req));
    if (!r) return true;
    refuse(res, *r);
    return false;
  }

  // Every refusal is counted, and logged through a rate limit (a flood of
  // bad requests must not flood the log; the next line written says how many
  // were left out). Capacity refusals, which operators act on, log at warn.
  void refuse(httplib::Response& res, const Rejection& r, std::string_view id = "") {
    metrics.http_refused(r.status);
    log_refusal(r.status, r.message, id);
    reject(res, r, id);
  }
  void log_refusal(int status, std::string_view why, std::string_view id = "") {
    uint64_t suppressed = 0;
    if (!refusal_log.allow(&suppressed)) return;
    auto lvl = status == 429 || status == 503 ? log::Level::kWarn : log::Level::kInfo;
    if (!log::enabled(lvl)) return;
    log::write(lvl, "request refused",
               {{"status", std::to_string(status)},
                {"id", std::string(id)},
                {"why", std::string(why.substr(0, 300))},
                {"suppressed", std::to_string(suppressed)}});
  }

  std::optional<ClientSession> require_session(const HeaderList& h, httplib::Response& res,
                                               std::string_view id = "") {
    auto sid = find_header(h, kSessionHeader);
    if (!sid) {
      refuse(res, Rejection{400, -32000, "Bad Request: Mcp-Session-Id header is required"}, id);
      return std::nullopt;
    }
    auto s = tokens.verify(std::string(*sid));
    if (!s) {
      refuse(res,
             Rejection{404, -32001,
                       "Session not found: unknown, expired or terminated Mcp-Session-Id; "
                       "send initialize again"},
             id);
      return std::nullopt;
    }
    return s;
  }

  // The answer above --max-inflight (calls and initialize alike).
  Rejection inflight_refusal() const {
    Rejection r{503, -32000,
                "Service Unavailable: " + std::to_string(cfg.max_inflight) +
                    " calls in progress (--max-inflight); retry shortly"};
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }

  // Per-session admission (--max-calls-per-session); release with session_release.
  bool session_admit(const std::string& sid, int n) {
    std::lock_guard lk(session_mu);
    int& c = session_calls[sid];
    if (c + n > cfg.max_calls_per_session) {
      if (c == 0) session_calls.erase(sid);
      return false;
    }
    c += n;
    return true;
  }
  void session_release(const std::string& sid) {
    std::lock_guard lk(session_mu);
    auto it = session_calls.find(sid);
    if (it != session_calls.end() && --it->second <= 0) session_calls.erase(it);
  }

  void handle_delete(const HeaderList& h, httplib::Response& res) {
    if (auto r = policy.check_protocol_version(h)) return refuse(res, *r);
    auto s = require_session(h, res);
    if (!s) return;
    tokens.revoke(s->id);
    log::info("client session terminated", {{"session", session_tag(s->id)}});
    res.status = 200;
  }

  void handle_post(const httplib::Request& req, const HeaderList& h, httplib::Response& res,
                   PostBody& post_body) {
    // Every call of this request (a batch shares it) is bounded from here.
    const auto arrival = Clock::now();
    // Content negotiation first: these are the client's mistakes, not the upstream's.
    bool accepts_sse = false;
    if (auto r = policy.check_post(h, &accepts_sse)) return refuse(res, *r);
    std::string upstream_headers;
    if (auto r = policy.upstream_headers(h, &upstream_headers)) return refuse(res, *r);
    std::string request_id = request_id_for(req);
    res.set_header("X-Request-Id", request_id);
    if (draining.load()) res.set_header("Connection", "close");
    // Read the body ourselves: set_payload_max_length only bounds bodies that
    // declare a Content-Length, not chunked ones.
    std::string body;
    switch (post_body.read(&body)) {
      case PostBody::Read::kOk: break;
      case PostBody::Read::kTooLarge:
        return refuse(res, Rejection{413, -32600,
                                     "Request body larger than --max-body-size (" +
                                         std::to_string(cfg.max_body_size) + " bytes)"});
      case PostBody::Read::kFailed:
        return refuse(res, Rejection{400, -32600, "Bad Request: the request body could not be read"});
    }
    auto parsed = parse_body(std::move(body));
    if (!parsed.ok) return refuse(res, Rejection{400, parsed.error_code, parsed.error_message});
    // Refusals from here on name the request's id where there is one.
    const Message* single =
        !parsed.batch && parsed.messages.front().kind == MsgKind::kRequest ? &parsed.messages.front()
                                                                           : nullptr;
    std::string_view id = single ? std::string_view(single->id) : std::string_view();
    // A 2026-07-28 request (the probe of a dual-era client) gets the answer
    // of a session-era server, on which the client falls back to initialize.
    if (single && is_modern_era_request(h, *single)) {
      std::string_view v = single->meta_protocol_version;
      if (v.empty()) v = find_header(h, "MCP-Protocol-Version").value_or("");
      return refuse(res, modern_era_refusal(v), id);
    }
    if (auto r = policy.check_protocol_version(h)) return refuse(res, *r, id);
    // initialize opens a client session; it must stand alone.
    for (auto& m : parsed.messages) {
      if (m.kind == MsgKind::kRequest && m.method == "initialize") {
        if (parsed.batch)
          return refuse(res, Rejection{400, -32600,
                                       "Invalid Request: initialize must not be part of a batch"});
        handle_initialize(res, parsed.messages.front(), accepts_sse, upstream_headers, request_id);
        return;
      }
    }
    auto session = require_session(h, res, id);
    if (!session) return;

    std::vector<PendingCall> calls;
    for (auto& m : parsed.messages) {
      if (m.kind == MsgKind::kRequest) {
        std::string key = session->id + "\n" + m.id;
        calls.push_back(PendingCall{std::move(m), std::move(key), nullptr, true, request_id, arrival});
        continue;
      }
      if (m.kind == MsgKind::kNotification && m.method == "notifications/cancelled" &&
          !m.cancel_id.empty()) {
        if (registry.cancel(session->id + "\n" + m.cancel_id))
          log::info("client cancelled a call", {{"id", m.cancel_id}});
      } else if (m.kind == MsgKind::kResponse) {
        // An answer to a server-to-client request forwarded by one of this
        // session's calls.
        std::string id = m.id;
        if (!registry.route(session->id + "\n" + id, std::move(m)))
          log::debug("client response matches no forwarded request", {{"id", id}});
      }
      // notifications/initialized is the bridge's to send upstream (per
      // upstream session); other client notifications have no upstream
      // session to go to in per-call mode.
    }
    if (calls.empty()) {
      res.status = 202;  // always, even when the upstream is dead (DESIGN §2.4)
      return;
    }
    // Admission: every call holds a worker thread for its duration. The
    // refusal names the (first) request's id so that the client's pending
    // request gets it.
    int n = static_cast<int>(calls.size());
    std::string first_id = calls.size() == 1 ? calls.front().msg.id : "";
    if (!session_admit(session->id, n)) {
      Rejection r{429, -32000,
                  "Too Many Requests: " + std::to_string(cfg.max_calls_per_session) +
                      " calls in progress on this session (--max-calls-per-session); retry shortly"};
      r.headers.emplace_back("Retry-After", "1");
      return refuse(res, r, first_id);
    }
    if (inflight.fetch_add(n) + n > cfg.max_inflight) {
      inflight.fetch_sub(n);
      for (int i = 0; i < n; ++i) session_release(session->id);
      return refuse(res, inflight_refusal(), first_id);
    }
    for (auto& c : calls) {
      c.mailbox = std::make_shared<CallMailbox>();
      registry.add_call(c.key, c.mailbox);
    }
    auto& headers = upstream_headers;
    int fd = t_client_fd;
    if (accepts_sse) {
      stream_calls(res, std::move(calls), std::move(*session), std::move(headers), fd, parsed.batch);
    } else {
      json_calls(res, std::move(calls), *session, headers, fd, parsed.batch);
    }
  }

  // Answers requests the bridge serves itself; returns nullopt for the rest.
  std::optional<std::string> local_answer(const Message& m, const ClientSession& s) {
    if (m.method == "ping") return R"({"jsonrpc":"2.0","id":)" + m.id + R"(,"result":{}})";
    if (m.method == "resources/subscribe" || m.method == "resources/unsubscribe")
      return jsonrpc_plain_error(
          m.id, -32601,
          m.method + " is not supported through mcp-sse-bridge: resource updates need a "
                     "standalone server-to-client stream (GET), and upstream sessions here "
                     "live only for one call");
    if (m.method == "logging/setLevel") {
      // Only a valid level is remembered (and replayed), in a normal form:
      // hostile params must not grow the per-session state.
      static constexpr std::string_view kLevels[] = {"debug",    "info",  "notice", "warning",
                                                     "error",    "critical", "alert", "emergency"};
      // Per-call upstream sessions live for one call: the level matters only
      // as the state replayed on every later session, so the bridge answers
      // it itself (and so a client that sets it right after initialize
      // still connects while the upstream is down).
      auto j = nlohmann::json::parse(m.raw, nullptr, false);
      if (!j.is_discarded() && j.contains("params") && j["params"].is_object() &&
          j["params"].contains("level") && j["params"]["level"].is_string()) {
        std::string level = j["params"]["level"].get<std::string>();
        for (auto l : kLevels)
          if (level == l) {
            tokens.set_log_level(s.id, R"({"level":")" + level + R"("})");
            return R"({"jsonrpc":"2.0","id":)" + m.id + R"(,"result":{}})";
          }
      }
      return jsonrpc_plain_error(m.id, -32602,
                                 "Invalid params: logging/setLevel needs params.level, one of "
                                 "debug, info, notice, warning, error, critical, alert, emergency");
    }
    return std::nullopt;
  }

  // Gives back a call's admission (global and per session) once.
  void release(PendingCall& c) {
    if (!c.counted) return;
    c.counted = false;
    registry.remove_call(c.key, c.mailbox);
    inflight.fetch_sub(1);
    session_release(c.key.substr(0, c.key.find('\n')));
  }

  // Forwarder::call, with no exception escaping: one (thread creation
  // failing, an allocation failing on a huge event) becomes the call's
  // internal error with its id, the answer the client acts on.
  CallResult call_guarded(const Message& m, const ClientSession* s,
                          const std::optional<std::string>& log_level, std::string_view headers,
                          CallSink& sink, Clock::time_point arrival) {
    try {
      return forwarder.call(m, s, log_level, headers, sink, arrival);
    } catch (const std::exception& ex) {
      CallResult r;
      r.error = make_error(ErrorKind::kInternal, Phase::kRequest,
                           std::string("internal error in mcp-sse-bridge: ") + ex.what());
      r.response = jsonrpc_error_response(m.id, *r.error, elapsed_ms(arrival), cfg.upstream.sse_url.str());
      log::error("call failed with an exception", {{"method", m.method}, {"id", m.id}, {"what", ex.what()}});
      return r;
    }
  }

  // Runs one call to completion (or cancellation) and logs it.
  CallResult run_call(PendingCall& c, const ClientSession& s, const std::string& headers,
                      CallSink& sink) {
    auto t0 = Clock::now();
    CallResult r;
    if (auto local = local_answer(c.msg, s)) {
      r.response = std::move(*local);
    } else if (stopping.load() || draining.load()) {
      BridgeError e = make_error(ErrorKind::kShuttingDown, Phase::kConnect, "bridge is shutting down");
      r.error = e;
      r.response = jsonrpc_error_response(c.msg.id, e, 0, cfg.upstream.sse_url.str());
    } else {
      r = call_guarded(c.msg, &s, tokens.log_level(s.id), headers, sink, c.arrival);
    }
    release(c);
    auto ms = elapsed_ms(t0);
    // Cut short by the drain, not by the client: the client is answered with
    // shutting_down (shutdown_answer), so count and log it as that.
    if (r.cancelled && !c.mailbox->cancelled.load() && stopping.load())
      r.error = make_error(ErrorKind::kShuttingDown, Phase::kRequest,
                           "bridge is shutting down; the call was abandoned");
    bool client_cancelled = r.cancelled && !r.error;
    metrics.call_done(c.msg.method, r.error ? &*r.error : nullptr, client_cancelled, seconds_since(t0));
    std::string outcome = client_cancelled ? "cancelled" : r.error ? std::string(to_string(r.error->kind)) : "ok";
    if (r.error) {
      log::warn("call failed",
                {{"request_id", c.request_id}, {"session", session_tag(s.id)},
                 {"upstream_session", r.upstream_session}, {"method", c.msg.method},
                 {"id", c.msg.id}, {"outcome", outcome}, {"phase", std::string(to_string(r.error->phase))},
                 {"cause", r.error->message()}, {"ms", std::to_string(ms)},
                 {"attempts", std::to_string(r.attempts)}});
    } else {
      log::info("call", {{"request_id", c.request_id}, {"session", session_tag(s.id)},
                         {"upstream_session", r.upstream_session}, {"method", c.msg.method},
                         {"id", c.msg.id}, {"outcome", outcome}, {"ms", std::to_string(ms)},
                         {"attempts", std::to_string(r.attempts)}});
    }
    return r;
  }

  // What both sinks share: cancellation and wake-ups through the call's
  // mailbox, and the client socket for hang-up detection.
  class SinkBase : public CallSink {
   public:
    SinkBase(Impl& impl, int fd, MailboxPtr box, const ClientSession* session)
        : impl_(impl), fd_(fd), box_(std::move(box)), session_(session) {}
    ~SinkBase() override {
      for (auto& id : routes_) impl_.registry.remove_route(id);
    }
    bool alive() override {
      box_->drain();
      if (gone_ || box_->cancelled.load() || impl_.stopping.load()) return false;
      if (peer_gone(fd_)) gone_ = true;
      return !gone_;
    }
    int wake_fd() const override { return box_->efd; }
    int client_fd() const override { return fd_; }
    std::optional<Message> take_response() override { return box_->pop(); }
    void end_request(std::string_view bridge_id) override {
      std::string key = route_key(bridge_id);
      impl_.registry.remove_route(key);
      routes_.erase(key);
    }
    bool gone() const { return gone_; }
    bool client_cancelled() const { return box_->cancelled.load(); }

   protected:
    // Checks the capability a server request needs against the client's
    // initialize params, and registers the route for the client's answer.
    bool admit_request(std::string_view method, std::string_view bridge_id, std::string* why) {
      auto cap = capability_for(method);
      if (!cap.empty()) {
        if (!caps_) {
          auto j = session_ ? nlohmann::json::parse(session_->init_params, nullptr, false)
                            : nlohmann::json();
          caps_ = (!j.is_discarded() && j.is_object() && j.contains("capabilities") &&
                   j["capabilities"].is_object())
                      ? j["capabilities"]
                      : nlohmann::json::object();
        }
        if (!caps_->contains(std::string(cap))) {
          *why = "the client did not declare the '" + std::string(cap) + "' capability";
          return false;
        }
      }
      std::string key = route_key(bridge_id);
      impl_.registry.add_route(key, box_);
      routes_.insert(key);
      return true;
    }
    std::string route_key(std::string_view bridge_id) const {
      return (session_ ? session_->id : std::string()) + "\n" + std::string(bridge_id);
    }

    Impl& impl_;
    int fd_;
    MailboxPtr box_;
    const ClientSession* session_;
    std::optional<nlohmann::json> caps_;
    std::set<std::string> routes_;
    bool gone_ = false;
  };

  // Sink for a response streamed as text/event-stream.
  class SseSink : public SinkBase {
   public:
    SseSink(Impl& impl, httplib::DataSink& sink, int fd, MailboxPtr box,
            const ClientSession* session)
        : SinkBase(impl, fd, std::move(box), session), sink_(sink), last_write_(Clock::now()) {}
    bool deliver(std::string_view json) override { return write_event(json); }
    bool alive() override {
      if (!SinkBase::alive()) return false;
      auto ka = impl_.cfg.keepalive_interval;
      if (ka.count() > 0 && Clock::now() - last_write_ >= ka) {
        impl_.metrics.keepalive_sent();
        return write_raw(": keepalive\n\n");
      }
      return true;
    }
    bool forward_request(std::string_view method, std::string_view bridge_id,
                         std::string_view json, std::string* why) override {
      if (!admit_request(method, bridge_id, why)) return false;
      if (!write_event(json)) {
        *why = "the client went away";
        return false;
      }
      return true;
    }
    bool write_event(std::string_view json) {
      // cpp-httplib copies each write into a chunk: large messages go out in
      // 1 MiB slices so that the copy stays small.
      constexpr size_t kSlice = 1 << 20;
      if (json.size() <= kSlice) {
        std::string ev;
        ev.reserve(json.size() + 24);
        ev.append("event: message\ndata: ").append(json).append("\n\n");
        return write_raw(ev);
      }
      if (!write_raw("event: message\ndata: ")) return false;
      for (size_t off = 0; off < json.size(); off += kSlice)
        if (!write_raw(json.substr(off, kSlice))) return false;
      return write_raw("\n\n");
    }
    bool write_raw(std::string_view s) {
      if (gone_) return false;
      if (!sink_.write(s.data(), s.size())) gone_ = true;
      last_write_ = Clock::now();
      return !gone_;
    }

   private:
    httplib::DataSink& sink_;
    Clock::time_point last_write_;
  };

  // Sink for an application/json response: notifications are dropped, and
  // server requests cannot be forwarded (there is no stream to carry them).
  class JsonSink : public SinkBase {
   public:
    using SinkBase::SinkBase;
    bool deliver(std::string_view) override { return alive(); }
    bool forward_request(std::string_view, std::string_view, std::string_view,
                         std::string* why) override {
      *why = "the client did not accept text/event-stream for this call";
      return false;
    }
  };

  // A call that ended "cancelled" because the bridge is stopping still owes
  // the client an answer.
  std::string shutdown_answer(const PendingCall& c) {
    BridgeError e = make_error(ErrorKind::kShuttingDown, Phase::kRequest,
                               "bridge is shutting down; the call was abandoned");
    return jsonrpc_error_response(c.msg.id, e, 0, cfg.upstream.sse_url.str());
  }

  void stream_calls(httplib::Response& res, std::vector<PendingCall> calls, ClientSession session,
                    std::string headers, int fd, bool batch) {
    (void)batch;
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    auto state = std::make_shared<std::vector<PendingCall>>(std::move(calls));
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, state, session = std::move(session), headers = std::move(headers), fd](
            size_t, httplib::DataSink& sink) {
          // Nothing may escape a content provider (it would end the process).
          try {
            for (auto& c : *state) {
              SseSink s(*this, sink, fd, c.mailbox, &session);
              CallResult r = run_call(c, session, headers, s);
              if (s.gone()) break;
              if (r.cancelled) {
                if (s.client_cancelled()) continue;  // client asked: no response is owed
                if (!stopping.load()) break;
                r.response = shutdown_answer(c);
              }
              if (!s.write_event(r.response)) break;
            }
          } catch (const std::exception& ex) {
            log::error("response stream failed with an exception", {{"what", ex.what()}});
          }
          sink.done();
          return true;
        },
        [this, state](bool) {
          for (auto& c : *state) release(c);
        });
  }

  void json_calls(httplib::Response& res, std::vector<PendingCall> calls,
                  const ClientSession& session, const std::string& headers, int fd, bool batch) {
    std::vector<std::string> out;
    for (auto& c : calls) {
      JsonSink s(*this, fd, c.mailbox, &session);
      CallResult r = run_call(c, session, headers, s);
      if (s.gone()) {  // nobody to answer; release the calls never run
        for (auto& rest : calls) release(rest);
        return;
      }
      if (r.cancelled) {
        if (s.client_cancelled()) continue;
        r.response = shutdown_answer(c);
      }
      out.push_back(std::move(r.response));
    }
    if (out.empty()) {
      res.status = 202;
      return;
    }
    std::string body;
    if (batch) {
      body = "[";
      for (size_t i = 0; i < out.size(); ++i) body.append(i ? "," : "").append(out[i]);
      body += "]";
    } else {
      body = std::move(out.front());
    }
    res.status = 200;
    res.set_content(std::move(body), "application/json");
  }

  // Takes a successful upstream initialize response (parsed once) and
  // returns its `result` as JSON text, for the initialize cache. Nothing can
  // deliver resource updates (see local_answer): the upstream's result must
  // not promise them, so `resources.subscribe` is removed; other bytes of the
  // response stay as they were.
  static std::string initialize_result(std::string& response) {
    auto j = nlohmann::ordered_json::parse(response, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("result")) return {};
    auto p = nlohmann::ordered_json::json_pointer("/result/capabilities/resources");
    if (j.contains(p) && j[p].is_object() && j[p].contains("subscribe")) {
      j[p].erase("subscribe");
      response = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    }
    return j["result"].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }

  // Failures after which the upstream is down or unusable for now, rather
  // than refusing this client: a stale initialize result may stand in.
  static bool upstream_unavailable(ErrorKind k) {
    switch (k) {
      case ErrorKind::kUnreachable:
      case ErrorKind::kRejected:
      case ErrorKind::kClosed:
      case ErrorKind::kProtocol:
      case ErrorKind::kTimeout:
      case ErrorKind::kUnresponsive:
        return true;
      default:
        return false;
    }
  }

  void handle_initialize(httplib::Response& res, Message& init, bool accepts_sse,
                         const std::string& headers, const std::string& request_id) {
    auto j = nlohmann::ordered_json::parse(init.raw, nullptr, false);
    if (j.is_discarded() || !j.contains("params") || !j["params"].is_object()) {
      refuse(res, Rejection{400, -32602, "Invalid params: initialize needs a params object"}, init.id);
      return;
    }
    std::string params = j["params"].dump();
    // initialize holds a worker and an upstream session like any call: it
    // counts against --max-inflight, and the drain waits for it.
    if (inflight.fetch_add(1) + 1 > cfg.max_inflight) {
      inflight.fetch_sub(1);
      refuse(res, inflight_refusal(), init.id);
      return;
    }
    struct Admitted {
      std::atomic<int>& n;
      ~Admitted() { n.fetch_sub(1); }
    } admitted{inflight};
    int fd = t_client_fd;
    JsonSink sink(*this, fd, std::make_shared<CallMailbox>(), nullptr);
    auto t0 = Clock::now();
    CallResult r;
    if (stopping.load() || draining.load()) {
      r.error = make_error(ErrorKind::kShuttingDown, Phase::kConnect, "bridge is shutting down");
      r.response = jsonrpc_error_response(init.id, *r.error, 0, cfg.upstream.sse_url.str());
    } else {
      r = call_guarded(init, nullptr, std::nullopt, headers, sink, Clock::now());
    }
    if (r.cancelled) {
      metrics.call_done("initialize", nullptr, true, seconds_since(t0));
      if (sink.gone()) return;
      r.error = make_error(ErrorKind::kShuttingDown, Phase::kRequest, "bridge is shutting down");
      r.response = jsonrpc_error_response(init.id, *r.error, elapsed_ms(t0), cfg.upstream.sse_url.str());
      r.cancelled = false;
    }
    if (!r.cancelled) metrics.call_done("initialize", r.error ? &*r.error : nullptr, false, seconds_since(t0));
    Message m;
    bool ok = !r.error && parse_message(r.response, m) && m.kind == MsgKind::kResponse && !m.is_error;
    std::string version;
    if (j["params"].contains("protocolVersion") && j["params"]["protocolVersion"].is_string())
      version = j["params"]["protocolVersion"].get<std::string>();
    std::string cache_key = InitializeCache::key(version, headers);
    if (ok) {
      if (std::string result = initialize_result(r.response); !result.empty())
        init_cache.store(cache_key, std::move(result));
    } else if (r.error && cfg.serve_stale_initialize && upstream_unavailable(r.error->kind)) {
      // The client gets a session now; its calls fail fast while the
      // upstream is down and work once it is back, with no reconnect.
      if (auto hit = init_cache.find(cache_key)) {
        metrics.stale_initialize();
        log::warn("initialize answered from the last upstream initialize result: the upstream "
                  "cannot be reached",
                  {{"request_id", request_id},
                   {"age_ms", std::to_string(hit->age.count())},
                   {"cause", r.error->message()},
                   {"ms", std::to_string(elapsed_ms(t0))}});
        r.response = R"({"jsonrpc":"2.0","id":)" + init.id + R"(,"result":)" + hit->result_json + "}";
        r.error.reset();
        ok = true;
      }
    }
    std::string sid = ok ? tokens.mint(params) : std::string();
    if (ok && sid.empty()) {
      ok = false;
      r.error = make_error(ErrorKind::kInternal, Phase::kInitialize, "initialize params too large");
      r.response = jsonrpc_plain_error(
          init.id, -32602,
          "Invalid params: the initialize params (" + std::to_string(params.size()) +
              " bytes) are too large to be carried in a session id; send at most about 20 KiB");
    }
    if (ok) {
      forwarder.prewarm(sid, params, headers, std::nullopt);
      res.set_header(kSessionHeader, sid);
      log::info("client session initialized",
                {{"request_id", request_id}, {"session", session_tag(sid)},
                 {"upstream_session", r.upstream_session}, {"ms", std::to_string(elapsed_ms(t0))}});
    } else {
      log::warn("initialize failed",
                {{"request_id", request_id}, {"upstream_session", r.upstream_session},
                 {"phase", r.error ? std::string(to_string(r.error->phase)) : "request"},
                 {"cause", r.error ? r.error->message() : r.response.substr(0, 300)},
                 {"ms", std::to_string(elapsed_ms(t0))}});
    }
    res.status = 200;
    if (accepts_sse) {
      std::string ev = "event: message\ndata: " + r.response + "\n\n";
      res.set_content(std::move(ev), "text/event-stream");
    } else {
      res.set_content(std::move(r.response), "application/json");
    }
  }
};

FrontServer::FrontServer(Config cfg) : impl_(std::make_unique<Impl>(std::move(cfg))) {}

FrontServer::~FrontServer() { stop(); }

bool FrontServer::bind(std::string* why) {
  auto& i = *impl_;
  if (i.cfg.listen_port == 0) {
    i.bound_port = i.svr.bind_to_any_port(i.cfg.listen_host);
  } else {
    i.bound_port = i.svr.bind_to_port(i.cfg.listen_host, i.cfg.listen_port) ? i.cfg.listen_port : -1;
  }
  if (i.bound_port <= 0) {
    if (why) *why = "cannot listen on " + i.cfg.listen_host + ":" + std::to_string(i.cfg.listen_port);
    return false;
  }
  i.svr.raise_backlog(4096);
  return true;
}

int FrontServer::port() const { return impl_->bound_port; }

void FrontServer::run() { impl_->svr.listen_after_bind(); }

bool FrontServer::start(std::string* why) {
  if (!bind(why)) return false;
  impl_->thread = std::thread([this] { run(); });
  auto d = Deadline::after(Millis(5000));
  while (!impl_->svr.is_running() && !d.reached())
    std::this_thread::sleep_for(Millis(2));
  if (!impl_->svr.is_running()) {
    if (why) *why = "server did not start within 5s";
    return false;
  }
  return true;
}

int FrontServer::drain(Duration timeout) {
  auto& i = *impl_;
  if (i.draining.exchange(true)) return 0;
  log::info("draining: stopped accepting; waiting for in-flight calls",
            {{"inflight", std::to_string(i.inflight.load())},
             {"drain_timeout", format_duration(timeout)}});
  // Closing the listening socket ends cpp-httplib's accept loop; its
  // workers keep serving the requests they hold.
  i.svr.stop();
  auto d = Deadline::after(timeout);
  while (i.inflight.load() > 0 && !d.reached()) std::this_thread::sleep_for(Millis(20));
  int left = std::max(0, i.inflight.load());
  if (left > 0)
    log::warn("drain timeout: answering the remaining calls with shutting_down",
              {{"calls", std::to_string(left)}});
  else
    log::info("drained: no call in progress");
  stop();
  return left;
}

bool FrontServer::draining() const { return impl_->draining.load(); }

void FrontServer::stop() {
  auto& i = *impl_;
  std::lock_guard lk(i.run_mu);
  i.stopping.store(true);
  i.draining.store(true);  // idle keep-alive connections close at once
  i.registry.wake_all();
  // stop() before is_running() does nothing in cpp-httplib; wait (bounded).
  if (i.thread.joinable()) {
    auto d = Deadline::after(Millis(5000));
    while (!i.svr.is_running() && !d.reached()) std::this_thread::sleep_for(Millis(2));
  }
  i.svr.stop();  // no new connections; workers end with their connections
  // Bounded: connections get a moment to write their last answers
  // (shutting_down), then every client socket is shut down, so that no
  // worker waits out a client that stopped reading or sending.
  auto grace = Deadline::after(Millis(2000));
  while (i.conn.connections.load() > 0 && !grace.reached()) std::this_thread::sleep_for(Millis(20));
  i.conn.shutdown_all();
  if (i.thread.joinable()) i.thread.join();
  i.forwarder.stop();
}

const Forwarder& FrontServer::forwarder() const { return impl_->forwarder; }
const Config& FrontServer::config() const { return impl_->cfg; }

}  // namespace msb
