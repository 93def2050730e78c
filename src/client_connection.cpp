#include "mcp_sse_bridge/client_connection.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/status.hpp>

#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <mutex>

#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/metrics.h"
#include "mcp_sse_bridge/text_util.h"

namespace msb {

using namespace std::string_view_literals;

namespace http = boost::beast::http;

// A write handed over by another thread: completed once its bytes are in
// the socket (ok) or the connection failed (not ok).
struct WriteTicket {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  bool ok = false;
  void complete(bool success) {
    {
      std::lock_guard lk(mu);
      if (done) return;
      done = true;
      ok = success;
    }
    cv.notify_all();
  }
  // False on failure or when `max` passes first.
  bool wait(Clock::duration max) {
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, max, [&] { return done; })) return false;
    return ok;
  }
};

namespace {

constexpr size_t kScratch = 64 * 1024;
constexpr size_t kTlsRead = 16 * 1024;  // a TLS record's plaintext at most
// Bytes still sent after a response that closes the connection are read and
// dropped for at most this long (a close with unread bytes would reset the
// connection under the response).
constexpr Duration kLinger{1000};
constexpr size_t kLingerBytes = 8u << 20;
// Bytes of pipelined requests kept unparsed while earlier ones are answered.
constexpr size_t kMaxReadAhead = 1u << 20;
// Bodies of requests parsed ahead of the one being answered: no new request
// is parsed past this (each may be --max-body-size: 16 of them held 256 MiB
// per connection before admission counted any).
constexpr size_t kMaxPendingBodies = 1u << 20;
// A stream head deferred for the stream's first bytes waits at most this
// long: a quick answer leaves in one write, a slow one shows its head soon.
constexpr Duration kHeadDelay{50};

// How a response's body is delimited.
enum class Framing { kLength, kChunked, kUntilClose };

std::string serialize_head(const HttpResponse& r, bool close, Framing framing) {
  const bool chunked = framing == Framing::kChunked;
  // Sized once: a head is written a few hundred bytes at a time otherwise.
  size_t size = 128 + r.content_type.size() + (close ? 19 : 0);
  for (auto& [k, v] : r.headers) size += k.size() + v.size() + 4;
  std::string s;
  s.reserve(size + (chunked ? 0 : r.body.size()));
  char num[24];
  auto n = std::to_chars(num, num + sizeof num, r.status);
  auto reason = http::obsolete_reason(static_cast<http::status>(r.status));
  s.append("HTTP/1.1 "sv).append(num, n.ptr).append(" "sv).append(reason.data(), reason.size()).append("\r\n"sv);
  for (auto& [k, v] : r.headers) s.append(k).append(": "sv).append(v).append("\r\n"sv);
  if (!r.content_type.empty()) s.append("Content-Type: "sv).append(r.content_type).append("\r\n"sv);
  if (chunked) {
    s.append("Transfer-Encoding: chunked\r\n"sv);
  } else if (framing == Framing::kLength) {
    n = std::to_chars(num, num + sizeof num, r.body.size());
    s.append("Content-Length: "sv).append(num, n.ptr).append("\r\n"sv);
  }
  if (close) s.append("Connection: close\r\n"sv);
  s.append("\r\n"sv);
  return s;
}

// Appends `data` as one chunk of a chunked body (nothing when it is empty)
// and, when `last`, the body's end.
void append_chunk(std::string& out, std::string_view data, bool last) {
  if (!data.empty()) {
    char hex[20];
    auto r = std::to_chars(hex, hex + sizeof hex, data.size(), 16);
    out.append(hex, r.ptr).append("\r\n"sv).append(data).append("\r\n"sv);
  }
  if (last) out.append("0\r\n\r\n"sv);
}

// `head` (a deferred stream head, or empty) followed by `data` as a chunk.
std::string framed(std::string head, std::string_view data, bool last) {
  head.reserve(head.size() + data.size() + 32);
  append_chunk(head, data, last);
  return head;
}

}  // namespace

// The response to one request. Methods may be called from any thread; the
// connection's state is only touched on its loop.
class ClientExchange : public Exchange, public std::enable_shared_from_this<ClientExchange> {
  friend class ClientConnection;  // flush_head()

 public:
  ClientExchange(std::shared_ptr<ClientConnection> c, bool keep_alive, bool head_only, bool http10)
      : conn_(std::move(c)), ex_(conn_->loop().io().get_executor()), keep_alive_(keep_alive),
        head_only_(head_only), http10_(http10) {}

  void respond(HttpResponse r) override {
    on_loop([self = shared_from_this(), r = std::move(r)]() mutable {
      auto& c = *self->conn_;
      if (self->finished_ || c.closed()) return;
      bool close = self->must_close(r.close);
      std::string out = serialize_head(r, close, Framing::kLength);
      if (!self->head_only_) out += r.body;  // HEAD: the head says how long the body would be
      c.send(std::move(out));
      self->finish(close);
    });
  }

  void start_stream(HttpResponse head) override {
    on_loop([self = shared_from_this(), head = std::move(head)]() mutable {
      auto& c = *self->conn_;
      if (self->finished_ || c.closed()) return;
      // HTTP/1.0 has no chunked encoding: the stream's body ends with the
      // connection (RFC 9112 §6.1, §6.3).
      self->close_after_ = self->must_close(head.close) || self->http10_;
      std::string bytes =
          serialize_head(head, self->close_after_, self->http10_ ? Framing::kUntilClose : Framing::kChunked);
      if (self->head_only_) {  // HEAD: no stream follows
        c.send(std::move(bytes));
        return self->finish(self->close_after_);
      }
      if (head.defer_head) {
        self->head_ = std::move(bytes);
        c.loop_.deadlines(kHeadDelay).arm(c.head_timer_, ClientConnection::on_head_timer, &c);
      } else {
        c.send(std::move(bytes));
      }
    });
  }

  bool write(std::string data) override {
    if (gone_.load() || data.empty()) return !gone_.load();
    auto t = std::make_shared<WriteTicket>();
    bool here = conn_->loop().in_loop();
    on_loop([self = shared_from_this(), data = std::move(data), t]() mutable {
      auto& c = *self->conn_;
      if (self->finished_ || c.closed()) return t->complete(false);
      c.send(self->with_head(data, false), t);
    });
    if (here) return !gone_.load();
    // Bounded: the loop's write timer closes a connection whose writes stop
    // progressing for --client-write-timeout, which completes the ticket.
    return t->wait(conn_->limits_.write_timeout + Duration(2000)) && !gone_.load();
  }

  void end(std::string last) override {
    on_loop([self = shared_from_this(), last = std::move(last)] {
      auto& c = *self->conn_;
      if (self->finished_ || c.closed()) return;
      c.send(self->with_head(last, true));
      self->finish(self->close_after_);
    });
  }

  bool client_gone() const override { return gone_.load(); }
  EventLoop& loop() override { return conn_->loop(); }
  uint64_t queued_bytes() const override { return conn_->queued_.load(std::memory_order_relaxed); }

  void on_gone(std::function<void()> f) override {
    on_loop([self = shared_from_this(), f = std::move(f)]() mutable {
      if (self->gone_.load()) return f();
      if (!self->finished_) self->gone_fns_.push_back(std::move(f));
    });
  }

  // Loop thread: the connection closed under this response.
  void mark_gone() {
    if (gone_.exchange(true)) return;
    auto fns = std::move(gone_fns_);
    gone_fns_.clear();
    for (auto& f : fns) f();
  }

 private:
  template <class F>
  void on_loop(F&& f) {
    if (conn_->loop().in_loop()) f();
    else asio::post(ex_, std::forward<F>(f));
  }
  // Loop thread: `data` as a chunk (and the end when `last`), after the
  // deferred head if it has not gone out yet: one buffer, one write.
  std::string with_head(std::string_view data, bool last) {
    if (!head_.empty()) conn_->head_timer_.cancel();
    std::string out;
    if (http10_) {
      out = std::move(head_);
      out.append(data);
    } else {
      out = framed(std::move(head_), data, last);
    }
    head_.clear();
    return out;
  }
  // Loop thread: the deferred head's wait is over.
  void flush_head() {
    if (head_.empty() || finished_ || conn_->closed()) return;
    conn_->send(std::move(head_));
    head_.clear();
  }
  bool must_close(bool asked) const {
    return asked || !keep_alive_ || conn_->drain_ || conn_->handler_.draining() ||
           conn_->served_ + 1 >= conn_->limits_.max_requests;
  }
  void finish(bool close) {
    finished_ = true;
    gone_fns_.clear();
    conn_->response_done(close);
  }

  std::shared_ptr<ClientConnection> conn_;
  asio::any_io_executor ex_;
  const bool keep_alive_;
  const bool head_only_;  // a HEAD request: heads only, never a body
  const bool http10_;     // an HTTP/1.0 request: streams end with the connection
  std::atomic<bool> gone_{false};
  bool finished_ = false;     // loop thread
  bool close_after_ = false;  // loop thread
  std::string head_;          // loop thread: a deferred head not yet sent
  std::vector<std::function<void()>> gone_fns_;  // loop thread
};

ClientConnection::ClientConnection(EventLoop& loop, std::unique_ptr<NetStream> stream,
                                   const ConnLimits& limits, RequestHandler& handler,
                                   Metrics* metrics)
    : loop_(loop), stream_(std::move(stream)), limits_(limits), handler_(handler), metrics_(metrics) {}

ClientConnection::~ClientConnection() {
  head_timer_.cancel();
  read_timer_.cancel();
  idle_timer_.cancel();
  write_timer_.cancel();
}

void ClientConnection::start() {
  asio::co_spawn(loop_.io(), run(), asio::detached);
}

void ClientConnection::start_moved(std::string first, int served) {
  first_ = std::move(first);
  served_ = served;
  start();
}

bool ClientConnection::movable() const {
  return handshaken_ && !stream_->is_tls() && buf_.size() == 0 && !parser_ && !current_ &&
         pending_.empty() && !writing_ && out_.empty() && !closed_ && !closing_after_ &&
         !lingering_ && !drain_ && !deferred_status_;
}

int ClientConnection::release_for_move() {
  if (!movable()) return -1;
  ErrorCode ec;
  int fd = stream_->socket().release(ec);  // leaves this loop's epoll set
  if (ec || fd < 0) return -1;
  closed_ = true;
  disarm_reads();
  write_timer_.cancel();
  head_timer_.cancel();
  on_closed = nullptr;  // (mover stays: it is running)
  return fd;
}

ClientConnection* owner_of(TimerEntry* e) { return static_cast<ClientConnection*>(e->owner); }

void ClientConnection::on_read_timeout(TimerEntry* e) {
  auto* c = owner_of(e);
  if (c->lingering_) return c->close();
  if (c->metrics_) c->metrics_->slow_client_cut();
  if (!c->handshaken_) {
    if (c->metrics_) c->metrics_->tls_handshake_failed();
    log::debug("client TLS handshake failed", {{"cause", "deadline exceeded"}});
  } else {
    // Rate-limited: a slowloris flood would otherwise write a line per
    // connection (the counter above still counts each).
    static log::RateLimit limit(20, 10000);
    uint64_t suppressed = 0;
    if (limit.allow(&suppressed))
      log::info("client connection closed: request not received within --client-read-timeout",
                {{"suppressed", std::to_string(suppressed)}});
  }
  c->close();
}

void ClientConnection::on_idle_timeout(TimerEntry* e) {
  auto* c = owner_of(e);
  // Not idle while an answer is still being written (queued is not sent: a
  // large one to a slow reader takes longer than the idle timeout); that
  // write is bounded by --client-write-timeout, and the idle wait restarts.
  if (c->writing_ || !c->out_.empty()) return c->arm_idle();
  c->close();
}

void ClientConnection::on_head_timer(TimerEntry* e) {
  if (auto& cur = owner_of(e)->current_) cur->flush_head();
}

void ClientConnection::on_write_timeout(TimerEntry* e) {
  auto* c = owner_of(e);
  // The kernel wakes a blocked writer only once much of its send buffer has
  // drained, so a steady slow reader can take longer than the timeout
  // between two wake-ups: progress is what left the send queue meanwhile.
  int q = c->send_queue_bytes();
  if (q >= 0 && c->outq_mark_ >= 0 && q < c->outq_mark_) {
    c->outq_mark_ = q;
    c->loop_.deadlines(c->limits_.write_timeout).arm(c->write_timer_, on_write_timeout, c);
    return;
  }
  log::info("client connection closed: a write made no progress within --client-write-timeout");
  c->close();
}

int ClientConnection::send_queue_bytes() {
  int n = 0;
  int fd = stream_->fd();
  if (fd < 0 || ::ioctl(fd, SIOCOUTQ, &n) != 0) return -1;
  return n;
}

void ClientConnection::arm_idle() {
  if (closed_) return;
  // The first request may take --client-read-timeout to start; later ones
  // --client-idle-timeout (keep-alive).
  Duration d = served_ == 0 ? limits_.read_timeout : limits_.idle_timeout;
  loop_.deadlines(d).arm(idle_timer_, on_idle_timeout, this);
}

void ClientConnection::arm_read() {
  if (closed_ || read_timer_.linked) return;
  loop_.deadlines(limits_.read_timeout).arm(read_timer_, on_read_timeout, this);
}

void ClientConnection::disarm_reads() {
  read_timer_.cancel();
  idle_timer_.cancel();
}

asio::awaitable<void> ClientConnection::run() {
  auto self = shared_from_this();
  try {
    co_await serve();
  } catch (const std::exception& e) {
    log::error("client connection failed with an exception", {{"what", e.what()}});
  }
  close();
}

asio::awaitable<void> ClientConnection::serve() {
  ErrorCode nb;
  stream_->socket().non_blocking(true, nb);
  if (stream_->is_tls()) {
    arm_read();
    ErrorCode ec = co_await stream_->handshake(true);
    disarm_reads();
    if (ec) {
      if (!closed_) {
        if (metrics_) metrics_->tls_handshake_failed();
        log::debug("client TLS handshake failed", {{"cause", ec.message()}});
      }
      close();
      co_return;
    }
  }
  handshaken_ = true;
  arm_idle();
  if (!first_.empty()) {  // moved here with the start of a request
    std::string first = std::move(first_);
    first_ = std::string();
    take(first.data(), first.size());
  }
  thread_local std::vector<char> scratch(kScratch);
  while (!closed_) {
    size_t n = 0;
    const char* data = nullptr;
    if (stream_->is_tls()) {
      // Into a buffer of this connection's own, never into buf_: the read
      // stays pending while a response is produced, and meanwhile buf_ is
      // consumed, reallocated or freed (response_done's shrink_to_fit), so
      // the decrypted bytes would land in memory buf_ no longer owns.
      if (!tls_in_) tls_in_ = std::make_unique<char[]>(kTlsRead);
      auto [ec, got] = co_await stream_->read_some(asio::buffer(tls_in_.get(), kTlsRead));
      if (ec) break;
      n = got;
      data = tls_in_.get();
    } else {
      // Wait for readability, then one non-blocking read into the loop's
      // scratch buffer: no speculative read that returns EAGAIN, and an idle
      // connection holds no read buffer of its own. (A pending read into a
      // small buffer of the connection's was tried: Asio's next read after
      // one that returned bytes is speculative, so the epoll_ctl this wait
      // costs became an EAGAIN recv, for 2 KiB more per connection.)
      auto [ec] = co_await stream_->socket().async_wait(tcp::socket::wait_read,
                                                       asio::as_tuple(asio::use_awaitable));
      if (ec || closed_) break;
      ErrorCode rec;
      n = stream_->socket().read_some(asio::buffer(scratch.data(), scratch.size()), rec);
      if (rec == asio::error::would_block || rec == asio::error::try_again) continue;
      if (rec) break;
      if (lingering_) continue;
      data = scratch.data();
    }
    if (lingering_ || closing_after_ || deferred_status_) {
      buf_.consume(buf_.size());  // nothing more is answered on this connection
      continue;
    }
    if (n == 0) continue;
    if (buf_.size() > 0) {
      auto dst = buf_.prepare(n);
      std::memcpy(dst.data(), data, n);
      buf_.commit(n);
      feed();
      continue;
    }
    // A request starting on an idle connection: the listener may move the
    // connection to a loop with more room (LoopBalancer), bytes and all.
    if (mover && movable() && mover(this, std::string_view(data, n))) co_return;
    take(data, n);
  }
}

void ClientConnection::take(const char* in, size_t n) {
  // Nothing buffered: parse straight from `in` and keep only what is left
  // (a partial or read-ahead request).
  size_t used = parse(in, n);
  if (used < n && !closed_ && !closing_after_ && !lingering_ && !deferred_status_) {
    auto dst = buf_.prepare(n - used);
    std::memcpy(dst.data(), in + used, n - used);
    buf_.commit(n - used);
  }
}

void ClientConnection::feed() {
  // parse() may re-enter feed() (a response finished at once): take the
  // buffered bytes out first.
  while (buf_.size() > 0 && !closed_ && !closing_after_) {
    std::string held(static_cast<const char*>(buf_.data().data()), buf_.size());
    buf_.consume(buf_.size());
    size_t used = parse(held.data(), held.size());
    if (used < held.size() && !closed_ && !closing_after_ && !deferred_status_) {
      // Keep the rest in front of anything buffered meanwhile.
      std::string rest = held.substr(used);
      rest.append(static_cast<const char*>(buf_.data().data()), buf_.size());
      buf_.consume(buf_.size());
      auto dst = buf_.prepare(rest.size());
      std::memcpy(dst.data(), rest.data(), rest.size());
      buf_.commit(rest.size());
      if (used == 0) {
        // Inside a body, the parser takes nothing only while a chunk-size
        // line (its extensions) or the trailer is incomplete; Beast bounds
        // neither. Past the head's limit with no progress it is no client.
        if (parser_ && parser_->is_header_done() && rest.size() > limits_.max_header_size)
          refuse_and_close(400, "malformed request: chunk framing (extension or trailer) too long");
        return;
      }
    }
  }
}

size_t ClientConnection::parse(const char* in, size_t n) {
  size_t pos = 0;
  // Bounded: every pass consumes bytes or stops.
  while (pos < n && !closed_ && !closing_after_) {
    if (!parser_) {
      if (static_cast<int>(pending_.size()) >= limits_.max_pipelined || pending_body_bytes() >= kMaxPendingBodies) {
        // Read ahead far enough: the rest waits in the buffer (bounded)
        // until the requests before it are answered.
        if (buf_.size() + (n - pos) > kMaxReadAhead) refuse_and_close(429, "too many pipelined requests");
        return pos;
      }
      // Above --max-body-size the request is refused (413); a body up to
      // one more such size (at least 1 MiB) is still read and dropped so
      // that the connection stays usable, a larger one closes it.
      parser_.emplace(limits_.max_header_size,
                      limits_.max_body_size + std::max<uint64_t>(limits_.max_body_size, 1u << 20),
                      limits_.max_body_size);
      request_start_ = Clock::now();
      idle_timer_.cancel();
      arm_read();
    }
    ErrorCode ec;
    bool header_was_done = parser_->is_header_done();
    size_t used = parser_->put(asio::const_buffer(in + pos, n - pos), ec);
    pos += used;
    if (ec == http::error::need_more) {
      if (!header_was_done && parser_->is_header_done()) continue;
      break;
    }
    if (ec) {
      if (ec == http::error::body_limit)
        refuse_and_close(413, "body larger than --max-body-size");
      else if (ec == http::error::header_limit)
        refuse_and_close(431, "request head too large");
      else
        refuse_and_close(400, "malformed request: " + ec.message());
      return n;
    }
    if (!header_was_done && parser_->is_header_done() && !parser_->is_done()) {
      // Only when nothing else is being answered on this connection (it
      // would land inside that response).
      if (parser_->expects_continue() && !current_ && pending_.empty() && !writing_)
        send("HTTP/1.1 100 Continue\r\n\r\n");
    }
    if (parser_->is_done()) {
      HttpRequest req = std::move(parser_->request());
      parser_.reset();
      read_timer_.cancel();
      req.arrival = request_start_;
      // A body on a method that takes none is a client (or smuggling)
      // mistake: answer, then close.
      static constexpr std::string_view kBodied[] = {"POST", "PUT", "PATCH", "DELETE"};
      bool bodied = false;
      for (auto m : kBodied) bodied = bodied || req.method == m;
      if (!bodied && (!req.body.empty() || req.too_large)) req.keep_alive = false;
      if (!current_ && pending_.empty()) dispatch(std::move(req));  // the usual case: no queue
      else pending_.push_back(std::move(req));
      continue;
    }
    if (used == 0) break;
  }
  return pos;
}

size_t ClientConnection::pending_body_bytes() const {
  size_t n = 0;
  for (auto& r : pending_) n += r.body.size();  // at most --max-pipelined of them
  return n;
}

void ClientConnection::next_request() {
  if (current_ || closed_ || closing_after_ || pending_.empty()) return;
  HttpRequest req = std::move(pending_.front());
  pending_.pop_front();
  dispatch(std::move(req));
}

void ClientConnection::dispatch(HttpRequest&& req) {
  bool keep_alive = req.keep_alive;
  current_ = std::make_shared<ClientExchange>(shared_from_this(), keep_alive, req.method == "HEAD",
                                              req.version < 11);
  auto ex = current_;
  if (req.too_large) return ex->respond(handler_.refused(413, "body larger than --max-body-size"));
  handler_.handle(std::move(ex), std::move(req));
}

void ClientConnection::response_done(bool close) {
  current_.reset();
  ++served_;
  if (closed_) return;
  // Draining (the bridge is stopping): an answer whose head went out before
  // the drain began ends its connection too, once nothing else is queued.
  if (drain_ && pending_.empty()) close = true;
  if (deferred_status_ && (close || pending_.empty())) {
    // A refusal that waited for the responses before it (requests parsed
    // ahead of the refused one are answered first, in order).
    int status = deferred_status_;
    deferred_status_ = 0;
    return refuse_and_close(status, deferred_why_);
  }
  if (close) {
    closing_after_ = true;
    pending_.clear();
    parser_.reset();
    disarm_reads();
    if (!writing_) co_spawn(loop_.io(), linger_close(), asio::detached);
    return;
  }
  if (!pending_.empty()) {
    next_request();
    if (!closed_ && buf_.size() > 0) feed();  // requests read ahead, unparsed
    return;
  }
  if (buf_.size() > 0) feed();
  if (closed_ || current_) return;
  if (!parser_) {
    arm_idle();
    if (buf_.size() == 0) buf_.shrink_to_fit();
  }
}

void ClientConnection::refuse_and_close(int status, std::string_view why) {
  if (current_) {
    // A response is in progress: the refusal follows it (no more requests
    // are read meanwhile).
    if (!deferred_status_) {
      deferred_status_ = status;
      deferred_why_ = std::string(why);
    }
    // Requests already parsed ahead of it keep their turn (pending_); no
    // request is being read any more, so the read timer armed for the
    // refused one must not cut the answers in progress.
    parser_.reset();
    disarm_reads();
    return;
  }
  HttpResponse r = handler_.refused(status, why);
  r.close = true;
  std::string out = serialize_head(r, true, Framing::kLength);
  out += r.body;
  send(std::move(out));
  closing_after_ = true;
  pending_.clear();
  parser_.reset();
  disarm_reads();
  if (!writing_) co_spawn(loop_.io(), linger_close(), asio::detached);
}

void ClientConnection::send(std::string bytes, std::shared_ptr<WriteTicket> ticket) {
  if (closed_) {
    if (ticket) ticket->complete(false);
    return;
  }
  if (!writing_ && out_.empty() && !stream_->is_tls()) {
    // Straight into the socket when it takes it all: no writer coroutine,
    // no write timer.
    ErrorCode ec;
    size_t n = stream_->write_now(bytes, ec);
    if (ec) {
      if (ticket) ticket->complete(false);
      return close();
    }
    if (n == bytes.size()) {
      if (ticket) ticket->complete(true);
      return;
    }
    bytes.erase(0, n);
  }
  uint64_t queued = queued_.load(std::memory_order_relaxed) + bytes.size();
  if (queued > limits_.max_queued) {
    // Calls relaying a stream wait for the client (backpressure); this is
    // what did not: the client takes far less than it is sent.
    static log::RateLimit limit(20, 10000);
    uint64_t suppressed = 0;
    if (limit.allow(&suppressed))
      log::warn("client connection closed: it reads slower than its answers arrive",
                {{"queued_bytes", std::to_string(queued)}, {"limit", std::to_string(limits_.max_queued)},
                 {"suppressed", std::to_string(suppressed)}});
    if (metrics_) metrics_->slow_client_cut();
    if (ticket) ticket->complete(false);
    return close();
  }
  queued_.store(queued, std::memory_order_relaxed);
  out_.emplace_back(std::move(bytes), std::move(ticket));
  if (!writing_) {
    writing_ = true;
    asio::co_spawn(loop_.io(), writer(), asio::detached);
  }
}

asio::awaitable<void> ClientConnection::writer() {
  auto self = shared_from_this();
  while (!out_.empty() && !closed_) {
    // Coalesce what is queued into one write.
    std::string bytes = std::move(out_.front().first);
    std::vector<std::shared_ptr<WriteTicket>> tickets;
    if (out_.front().second) tickets.push_back(std::move(out_.front().second));
    out_.pop_front();
    while (!out_.empty() && bytes.size() < (256u << 10)) {
      bytes += out_.front().first;
      if (out_.front().second) tickets.push_back(std::move(out_.front().second));
      out_.pop_front();
    }
    // --client-write-timeout bounds each step: a client reading steadily,
    // however slowly, is not cut in the middle of a long answer; one that
    // takes nothing for that long is.
    ErrorCode ec;
    for (size_t off = 0; off < bytes.size() && !ec && !closed_;) {
      outq_mark_ = send_queue_bytes();
      loop_.deadlines(limits_.write_timeout).arm(write_timer_, on_write_timeout, this);
      auto [e, n] = co_await stream_->write_some(std::string_view(bytes).substr(off));
      ec = e;
      off += n;
      queued_.fetch_sub(std::min<uint64_t>(n, queued_.load(std::memory_order_relaxed)), std::memory_order_relaxed);
    }
    write_timer_.cancel();
    for (auto& t : tickets) t->complete(!ec && !closed_);
    if (ec) {
      close();
      break;
    }
  }
  writing_ = false;
  if (closing_after_ && !closed_ && !lingering_) co_await linger_close();
  else if (drain_ && !closed_ && !current_ && pending_.empty() && !parser_) close();
}

asio::awaitable<void> ClientConnection::linger_close() {
  auto self = shared_from_this();
  if (closed_ || lingering_ || writing_) co_return;
  lingering_ = true;
  stream_->shutdown_send();
  // The reader keeps reading and dropping bytes; EOF or this timer closes.
  loop_.deadlines(kLinger).arm(read_timer_, [](TimerEntry* e) { owner_of(e)->close(); }, this);
  co_return;
}

void ClientConnection::close_when_idle() {
  drain_ = true;
  if (!current_ && pending_.empty() && !parser_ && !writing_) close();
}

void ClientConnection::close() {
  if (closed_) return;
  closed_ = true;
  disarm_reads();
  write_timer_.cancel();
  head_timer_.cancel();
  stream_->close();
  for (auto& [b, t] : out_)
    if (t) t->complete(false);
  out_.clear();
  queued_.store(0, std::memory_order_relaxed);
  pending_.clear();
  if (current_) {
    auto c = std::move(current_);
    c->mark_gone();
  }
  if (on_closed) {
    auto f = std::move(on_closed);
    on_closed = nullptr;
    f(this);
  }
}

}  // namespace msb
