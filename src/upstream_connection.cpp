#include "mcp_sse_bridge/upstream_connection.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

// GCC 12 with -fsanitize=address,undefined sees Beast's parser read a
// boost::optional<uint64_t> "maybe uninitialized" (basic_parser.hpp:66, the
// body limit): a false positive of the sanitized inliner, fatal under -Werror.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/net_stream.h"
#include "mcp_sse_bridge/resolver.h"
#include "mcp_sse_bridge/text_util.h"

namespace msb {

using namespace std::string_view_literals;

namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;

namespace {

constexpr auto kTok = asio::as_tuple(asio::use_awaitable);
constexpr size_t kReadSize = 16 * 1024;
// At most this many reads of kReadSize without a loop turn (fill()).
constexpr uint8_t kMaxDirectStreak = 4;
// After a direct read found nothing, this many fills skip it (fill()).
constexpr uint8_t kDirectMissSkip = 15;
// Counts the upstream reads of this thread (loop) that waited (fill()).
thread_local uint64_t t_upstream_waits = 0;
constexpr size_t kMaxSkippedBody = 64 * 1024;  // larger unread bodies cost the connection

// True once the awaiting coroutine's cancellation slot fired. Checked before
// and after every wait; co_await on this_coro::cancellation_state never throws.
#define MSB_CANCELLED() \
  ((co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none)

bool is_ip_literal(const std::string& host) {
  ErrorCode ec;
  (void)asio::ip::make_address(host, ec);
  return !ec;
}

// ---- name resolution: the shared Resolver, off the loop ------------------

// Waits on Resolver::shared() (its own bounded pool does the getaddrinfo) on
// a small pool of this file, so that the loop never blocks; the answer comes
// back to the loop as a posted handler that cancels the waiting timer.
asio::thread_pool& resolve_pool() {
  static auto* pool = new asio::thread_pool(2);  // never destroyed, like Resolver::shared()
  return *pool;
}

struct ResolveWait {
  explicit ResolveWait(asio::any_io_executor ex) : timer(ex) {}
  asio::steady_timer timer;
  bool done = false;
  Resolved result;
};

asio::awaitable<Expected<std::vector<tcp::endpoint>>> resolve(asio::any_io_executor ex,
                                                              const std::string& host, int port,
                                                              Deadline d) {
  std::vector<tcp::endpoint> out;
  ErrorCode ec;
  auto addr = asio::ip::make_address(host, ec);
  if (!ec) {
    out.emplace_back(addr, static_cast<unsigned short>(port));
    co_return out;
  }
  auto w = std::make_shared<ResolveWait>(ex);
  // The pool thread hands its reference over with the answer, so that the
  // timer is only ever touched (and destroyed) on the loop thread.
  asio::post(resolve_pool(), [w, ex, host, port, d]() mutable {
    Resolved r = Resolver::shared().resolve(host, port, d);
    asio::post(ex, [w = std::move(w), r = std::move(r)]() mutable {
      w->result = std::move(r);
      w->done = true;
      w->timer.cancel();
    });
  });
  w->timer.expires_at(d.is_never() ? Clock::time_point::max() : d.when());
  if (!w->done) (void)co_await w->timer.async_wait(kTok);
  if (!w->done) {
    if (MSB_CANCELLED())
      co_return make_error(ErrorKind::kCancelled, Phase::kConnect, "cancelled while resolving " + host);
    co_return make_error(ErrorKind::kTimeout, Phase::kConnect, "resolve " + host + ": deadline exceeded");
  }
  Resolved& r = w->result;
  if (r.timed_out) co_return make_error(ErrorKind::kTimeout, Phase::kConnect, r.error);
  if (r.addrs.empty())
    co_return make_error(ErrorKind::kUnreachable, Phase::kConnect,
                         r.error.empty() ? "no address for " + host : r.error);
  for (size_t i = 0; i < r.addrs.size(); ++i) {
    tcp::endpoint ep;
    std::memcpy(ep.data(), &r.addrs[i], std::min<size_t>(r.lens[i], sizeof(sockaddr_storage)));
    ep.resize(r.lens[i]);
    out.push_back(ep);
  }
  co_return out;
}

// ---- TLS: one Asio context per (options, host) ----------------------------

// NetStream does not expose its SSL object, so SNI and the certificate name
// check are set on a context of our own per upstream host: the verify
// parameters are inherited by every SSL made from it, and the SNI name is set
// by an info callback at the start of each handshake (before the ClientHello
// is written). Built on first use from the same options as UpstreamConfig::tls.
void free_host(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<std::string*>(ptr);
}

int host_index() {
  static int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_host);
  return idx;
}

void set_sni(const SSL* ssl, int where, int) {
  if (!(where & SSL_CB_HANDSHAKE_START)) return;
  SSL* s = const_cast<SSL*>(ssl);
  if (SSL_get_servername(s, TLSEXT_NAMETYPE_host_name)) return;
  auto* host = static_cast<const std::string*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), host_index()));
  if (host) SSL_set_tlsext_host_name(s, host->c_str());
}

std::shared_ptr<asio::ssl::context> tls_context_for(const TlsClientOptions& o,
                                                    const std::string& host, std::string* why) {
  static std::mutex mu;
  static auto* cache = new std::map<std::string, std::shared_ptr<asio::ssl::context>>();
  std::string key = host + '\n' + o.ca_file + '\n' + o.cert_file + '\n' + o.key_file + '\n' +
                    (o.insecure ? "1" : "0");
  std::lock_guard lk(mu);
  if (auto it = cache->find(key); it != cache->end()) return it->second;
  auto t = TlsContext::client(o, why);
  if (!t) return nullptr;
  SSL_CTX* c = t->get();
  bool ip = is_ip_literal(host);
  if (t->verify_peer()) {
    X509_VERIFY_PARAM* param = SSL_CTX_get0_param(c);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                : X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
    if (ok != 1) {
      *why = "cannot check name " + host;
      return nullptr;
    }
  }
  if (!ip) {
    SSL_CTX_set_ex_data(c, host_index(), new std::string(host));  // freed with the SSL_CTX
    SSL_CTX_set_info_callback(c, set_sni);
  }
  auto ctx = asio_tls_context(*t);  // holds its own reference to the SSL_CTX
  if (cache->size() >= 64) cache->clear();  // bounded; contexts in use stay alive
  (*cache)[key] = ctx;
  return ctx;
}

void set_tcp_options(tcp::socket& s, const TcpOptions& opt) {
  int fd = s.native_handle();
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (opt.keepalive_idle.count() > 0) {
    int idle = std::max<int>(1, static_cast<int>(opt.keepalive_idle.count() / 1000));
    int intvl = 1, cnt = 3;
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
  }
  if (opt.user_timeout.count() > 0) {
    unsigned ut = static_cast<unsigned>(opt.user_timeout.count());
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut);
  }
}

bool is_eof(const ErrorCode& ec) {
  return ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
}

// An exception from inside a coroutine: a co_await after cancellation (the
// caller's throw_if_cancelled) or a bug.
BridgeError from_exception(const std::exception& e, std::string_view what) {
  if (auto* se = dynamic_cast<const boost::system::system_error*>(&e);
      se && se->code() == asio::error::operation_aborted)
    return make_error(ErrorKind::kCancelled, Phase::kConnect, std::string(what) + ": cancelled");
  return make_error(ErrorKind::kInternal, Phase::kConnect, std::string(what) + ": " + e.what());
}

}  // namespace

// Beast's response parser without its header container: the status and
// headers go straight into an HttpHead, decoded body bytes straight into the
// caller's string (no intermediate body buffer).
class ResponseReader : public http::basic_parser<false> {
 public:
  ResponseReader() {
    header_limit(static_cast<std::uint32_t>(kMaxHeadBytes));
    body_limit(boost::none);  // streamed bodies have no end; callers bound what they keep
  }
  HttpHead head;
  std::string* out = nullptr;  // where decoded body bytes go (set around put())

 private:
  using sv = boost::beast::string_view;
  void on_request_impl(http::verb, sv, sv, int, ErrorCode&) override {}
  void on_response_impl(int code, sv, int version, ErrorCode&) override {
    head.status = code;
    head.version = version;
    head.fields.reserve(256);  // a usual head's headers in one allocation
  }
  void on_field_impl(http::field, sv name, sv value, ErrorCode&) override {
    head.add({name.data(), name.size()}, {value.data(), value.size()});
  }
  void on_header_impl(ErrorCode&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, ErrorCode&) override {}
  size_t on_body_impl(sv body, ErrorCode& ec) override { return take(body, ec); }
  void on_chunk_header_impl(std::uint64_t, sv, ErrorCode&) override {}
  size_t on_chunk_body_impl(std::uint64_t, sv body, ErrorCode& ec) override { return take(body, ec); }
  void on_finish_impl(ErrorCode&) override {}
  size_t take(sv body, ErrorCode& ec) {
    if (!out) {  // not reading a body now: leave the bytes buffered
      ec = http::error::need_buffer;
      return 0;
    }
    out->append(body.data(), body.size());
    return body.size();
  }
};

struct UpstreamConnection::Parser {
  Parser() { reset(); }
  void reset() { p.emplace(); }
  boost::beast::flat_buffer buf;  // raw bytes read but not yet parsed
  std::optional<ResponseReader> p;
};

UpstreamConnection::UpstreamConnection(asio::any_io_executor ex, const TlsClientOptions* tls,
                                       TcpOptions opt)
    : ex_(ex), tls_(tls), opt_(opt), timer_(ex), connecting_(ex), parser_(std::make_unique<Parser>()) {}

UpstreamConnection::~UpstreamConnection() {
  *alive_ = false;
  close();
}

bool UpstreamConnection::connected() const { return stream_ && stream_->is_open(); }

void UpstreamConnection::close() {
  closed_by_us_ = true;
  ErrorCode ig;
  if (connecting_.is_open()) connecting_.close(ig);
  if (stream_ && stream_->is_open()) stream_->close();
  reusable_ = false;
}

void UpstreamConnection::cancel_io() {
  ErrorCode ig;
  if (connecting_.is_open()) connecting_.cancel(ig);
  if (stream_ && stream_->is_open()) stream_->socket().cancel(ig);
}

// One timer per connection. Re-arming an Asio timer costs a timerfd_settime
// whenever it becomes the loop's earliest, so the timer is only moved
// earlier, never later: when it fires before the current operation's
// deadline (the deadline moved later, or the operation ended) it is set again
// for what is current then. An operation is recognised by its generation.
void UpstreamConnection::arm(Deadline d) {
  ++gen_;
  timed_out_ = false;
  op_deadline_ = d;
  if (d.is_never()) return;
  if (timer_set_ && timer_at_ <= d.when()) return;  // fires early; re-checked then
  set_timer(d.when());
}

void UpstreamConnection::set_timer(Clock::time_point at) {
  timer_at_ = at;
  timer_set_ = true;
  timer_.expires_at(at);  // aborts the wait it replaces (its handler sees a stale tick)
  timer_.async_wait([this, tick = ++timer_tick_, alive = alive_](const ErrorCode& ec) {
    if (ec || !*alive || tick != timer_tick_) return;
    timer_set_ = false;
    if (!op_active() || op_deadline_.is_never()) return;
    if (!op_deadline_.reached()) return set_timer(op_deadline_.when());
    timed_out_ = true;
    cancel_io();
  });
}

void UpstreamConnection::disarm() {
  ++gen_;
  op_deadline_ = Deadline::never();
}

UpstreamConnection::Woke UpstreamConnection::why_aborted(bool cancelled) const {
  if (cancelled) return Woke::kCancelled;
  if (closed_by_us_) return Woke::kClosed;
  if (timed_out_) return Woke::kTimer;
  return Woke::kDone;
}

bool UpstreamConnection::idle_alive() const {
  // No look at the socket (a syscall per request): a connection the server
  // closed while idle fails before any byte of the answer, and request()
  // then sends once more on a fresh one.
  return connected() && parser_->buf.size() == 0;
}

bool UpstreamConnection::maybe_readable() {
  if (!connected()) return true;  // a read reports the failure at once
  if (stream_->is_tls()) return true;
  // The CRLF that ends a chunk stays buffered until the next chunk's size
  // line arrives (the parser reads the two together): alone it yields
  // nothing, so the socket decides (a 1-byte peek instead of a read attempt,
  // its timer and its coroutine frames).
  const auto& b = parser_->buf;
  bool chunk_crlf_only = b.size() == 2 && parser_->p->chunked() &&
                         std::memcmp(b.data().data(), "\r\n", 2) == 0;
  if (b.size() > 0 && !chunk_crlf_only) return true;
  char c;
  ssize_t n = ::recv(stream_->fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

// ---- connect ----------------------------------------------------------------

// Linux resends an unanswered SYN after its initial RTO, 1 s (RFC 6298 §2.1;
// then 3 s, 7 s, ...).
constexpr Millis kKernelSynResend{1000};

// A connect bounded by less than twice the kernel's first SYN resend would
// never see that resend answered: one lost SYN or SYN-ACK (3 % loss: about one
// connect in 16) fails a connect on a path that works. So under such a bound
// the bridge sends a second SYN itself, from a second socket, at half the
// bound, and keeps whichever connects first. The bound is unchanged: a dead
// path still fails at it.
struct UpstreamConnection::SecondSyn {
  explicit SecondSyn(const asio::any_io_executor& ex) : sock(ex), timer(ex) {}
  tcp::socket sock;
  asio::steady_timer timer;
  Millis after{0};
  bool won = false;   // the second socket connected while the first still waited
  bool done = false;  // the connect ended; late completions are ignored
  void stop() {
    done = true;
    ErrorCode ig;
    timer.cancel();
    if (sock.is_open()) sock.close(ig);
  }
};

std::shared_ptr<UpstreamConnection::SecondSyn> UpstreamConnection::start_second_syn(
    const tcp::endpoint& ep, Deadline cd) {
  if (cd.is_never()) return nullptr;
  const auto bound = std::chrono::duration_cast<Millis>(cd.left());
  if (bound >= 2 * kKernelSynResend || bound < Millis(20)) return nullptr;
  auto s = std::make_shared<SecondSyn>(ex_);
  s->after = bound / 2;
  s->timer.expires_after(s->after);
  s->timer.async_wait([this, s, ep, alive = alive_](const ErrorCode& ec) {
    if (ec || s->done || !*alive) return;
    ErrorCode oec;
    s->sock.open(ep.protocol(), oec);
    if (oec) return;  // the first connect goes on alone
    set_tcp_options(s->sock, opt_);
    s->sock.async_connect(ep, [this, s, alive](const ErrorCode& cec) {
      if (cec || s->done || !*alive) return;
      s->won = true;
      ErrorCode ig;
      connecting_.cancel(ig);  // wakes connect_impl, which takes this socket
    });
  });
  return s;
}

asio::awaitable<Status> UpstreamConnection::connect(const Url& origin, Deadline d) {
  try {
    co_return co_await connect_impl(origin, d);
  } catch (const std::exception& e) {
    close();
    co_return from_exception(e, "connect " + origin.origin());
  }
}

asio::awaitable<Status> UpstreamConnection::connect_impl(const Url& origin, Deadline d) {
  close();
  closed_by_us_ = false;
  reusable_ = false;
  persistent_ = false;
  body_done_ = true;
  peer_closed_ = false;
  pending_error_.reset();
  parser_->buf.clear();
  origin_ = origin;
  const std::string where = origin.host + ":" + std::to_string(origin.port);
  if (origin.tls() && !tls_)
    co_return make_error(ErrorKind::kInternal, Phase::kConnect, "https upstream without a TLS context");
  const Deadline cd = Deadline::within(d, opt_.connect_timeout);
  auto addrs = co_await resolve(ex_, origin.host, origin.port, cd);
  if (!addrs) co_return addrs.error();

  std::string last = "no address";
  bool up = false;
  for (auto& ep : *addrs) {
    if (MSB_CANCELLED())
      co_return make_error(ErrorKind::kCancelled, Phase::kConnect, "cancelled while connecting to " + where);
    ErrorCode ec;
    connecting_ = tcp::socket(ex_);
    connecting_.open(ep.protocol(), ec);
    if (ec) {
      last = "socket: " + ec.message();
      continue;
    }
    set_tcp_options(connecting_, opt_);
    auto second = start_second_syn(ep, cd);
    arm(cd);
    auto [cec] = co_await connecting_.async_connect(ep, kTok);
    disarm();
    if (second) {
      if (cec && second->won && !MSB_CANCELLED() && !closed_by_us_) {
        log::debug("upstream connect: no answer to the first SYN; the second one connected",
                   {{"upstream", where}, {"after_ms", std::to_string(second->after.count())}});
        cec = {};
        connecting_ = std::move(second->sock);
      }
      second->stop();
    }
    switch (cec ? why_aborted(MSB_CANCELLED()) : Woke::kDone) {
      case Woke::kCancelled:
        close();
        co_return make_error(ErrorKind::kCancelled, Phase::kConnect, "cancelled while connecting to " + where);
      case Woke::kTimer:
        close();
        co_return make_error(ErrorKind::kTimeout, Phase::kConnect, "connect " + where + ": deadline exceeded");
      case Woke::kClosed:
        co_return make_error(ErrorKind::kClosed, Phase::kConnect, "connect " + where + ": closed by the bridge");
      case Woke::kDone:
        break;
    }
    if (cec) {
      last = "connect " + where + ": " + cec.message();
      connecting_.close(ec);
      continue;
    }
    up = true;
    break;
  }
  if (!up) co_return make_error(ErrorKind::kUnreachable, Phase::kConnect, last);

  if (!origin.tls()) {
    stream_ = std::make_unique<NetStream>(std::move(connecting_));
    reusable_ = true;
    co_return Ok{};
  }
  std::string why;
  auto ctx = tls_context_for(*tls_, origin.host, &why);
  if (!ctx) {
    close();
    co_return make_error(ErrorKind::kInternal, Phase::kConnect, "TLS setup: " + why);
  }
  stream_ = std::make_unique<NetStream>(std::move(connecting_), std::move(ctx));
  arm(cd);
  ErrorCode hec = co_await stream_->handshake(false);
  disarm();
  switch (hec ? why_aborted(MSB_CANCELLED()) : Woke::kDone) {
    case Woke::kCancelled:
      close();
      co_return make_error(ErrorKind::kCancelled, Phase::kConnect, "cancelled in the TLS handshake with " + origin.host);
    case Woke::kTimer:
      close();
      co_return make_error(ErrorKind::kTimeout, Phase::kConnect,
                           "TLS handshake with " + origin.host + ": deadline exceeded");
    case Woke::kClosed:
      co_return make_error(ErrorKind::kClosed, Phase::kConnect, "TLS handshake: closed by the bridge");
    case Woke::kDone:
      break;
  }
  if (hec) {
    // The certificate's own reason ("unable to get local issuer
    // certificate", "hostname mismatch") says what to fix.
    long verify = X509_V_OK;
    if (auto* ssl = stream_->ssl()) verify = SSL_get_verify_result(ssl);
    close();
    std::string reason = verify != X509_V_OK
                             ? std::string("certificate verification failed: ") +
                                   X509_verify_cert_error_string(verify)
                         : is_eof(hec) || hec == asio::error::connection_reset
                             ? std::string("connection closed during the handshake")
                             : hec.message();
    co_return make_error(ErrorKind::kProtocol, Phase::kConnect,
                         "TLS handshake with " + origin.host + ": " + reason);
  }
  reusable_ = true;
  co_return Ok{};
}

// ---- request + response head ----------------------------------------------

asio::awaitable<std::pair<ErrorCode, UpstreamConnection::Woke>> UpstreamConnection::fill(Deadline d, bool direct) {
  if (MSB_CANCELLED()) co_return std::pair{ErrorCode(asio::error::operation_aborted), Woke::kCancelled};
  if (!connected()) co_return std::pair{ErrorCode(asio::error::not_connected), Woke::kDone};
  auto b = parser_->buf.prepare(kReadSize);
  if (d.reached() && !stream_->is_tls()) {
    // A look at what is already there (no timer: arming one that is already
    // due costs a timerfd_settime and a loop turn).
    ErrorCode ec;
    size_t n = stream_->read_now(b, ec);
    parser_->buf.commit(n);
    if (ec == asio::error::would_block || ec == asio::error::try_again)
      co_return std::pair{ErrorCode(asio::error::operation_aborted), Woke::kTimer};
    co_return std::pair{ec, Woke::kDone};
  }
  if (direct && !stream_->is_tls()) {
    // Body bytes that are already here are read without a loop turn. (An
    // async read that finds them at once still posts its completion: the
    // coroutine suspends, and the loop polls epoll once more before resuming
    // it, which mostly finds nothing.) The usual case is the SSE answer read
    // after its POST's 202: servers that write both in one turn (the TS and
    // Python SDKs) have sent it already. Not for a response head, which
    // cannot be there yet right after its request. Where the bytes usually
    // come later (a thread-per-request server's event), a miss costs a recv
    // that returns EAGAIN: after one, kDirectMissSkip fills go straight to the
    // async read before the next try. A direct read does not let the loop run anything
    // else, so an upstream that never lets the socket run dry (a flood of
    // SSE comments or messages) would pin the loop: after kMaxDirectStreak
    // direct reads with no upstream read of this loop waiting in between, the
    // next one is async, whose completion waits its turn. (A call's POST
    // waits for its 202 between two answers: calls themselves never hit it.)
    if (direct_epoch_ != t_upstream_waits) {
      direct_epoch_ = t_upstream_waits;
      direct_streak_ = 0;
    }
    if (direct_skip_ == 0 && direct_streak_ < kMaxDirectStreak) {
      ErrorCode ec;
      size_t n = stream_->read_now(b, ec);
      if (ec != asio::error::would_block && ec != asio::error::try_again) {
        parser_->buf.commit(n);
        ++direct_streak_;
        co_return std::pair{ec, Woke::kDone};
      }
      direct_skip_ = kDirectMissSkip;
    } else if (direct_skip_ > 0) {
      --direct_skip_;
    }
  }
  ++t_upstream_waits;
  arm(d);
  // A plain socket's read is awaited here, not through NetStream's
  // coroutine: a frame less per read.
  ErrorCode ec;
  size_t n = 0;
  if (stream_->is_tls()) {
    std::tie(ec, n) = co_await stream_->read_some(b);
  } else {
    std::tie(ec, n) = co_await stream_->socket().async_read_some(b, kTok);
  }
  disarm();
  parser_->buf.commit(n);
  if (!ec) co_return std::pair{ec, Woke::kDone};
  co_return std::pair{ec, why_aborted(MSB_CANCELLED())};
}

asio::awaitable<Expected<HttpHead>> UpstreamConnection::request(
    const Url& origin, std::string_view method, std::string_view target,
    std::string_view extra_headers, std::string_view body, Deadline d, Millis head_timeout) {
  // (One coroutine: a wrapper with the try would cost a frame per call.)
  try {
    // The connection's own buffer, reused request after request.
    std::string& req = req_;
    req.clear();
    const bool small = body.size() < 16384;
    req.reserve(256 + extra_headers.size() + (small ? body.size() : 0));
    append_request(req, origin, method, target, extra_headers, body, small);

    // A body the caller left unread (a POST's 202 "Accepted") is skipped
    // when all of it is here already, without waiting.
    if (!body_done_) skip_body_now(kMaxSkippedBody);
    for (int attempt = 0; attempt < 2; ++attempt) {
      bool reused = false;
      if (reusable_ && body_done_ && same_origin(origin_, origin) && idle_alive()) {
        reused = true;
      } else {
        auto st = co_await connect_impl(origin, d);
        if (!st) co_return st.error();
      }
      reusable_ = false;
      body_done_ = false;
      parser_->buf.clear();
      parser_->reset();

      if (MSB_CANCELLED()) {
        close();
        co_return make_error(ErrorKind::kCancelled, Phase::kConnect, "cancelled before sending the request");
      }
      arm(d);
      // Straight into the socket when it takes it all (the usual case): no
      // write coroutine.
      ErrorCode wec;
      size_t wrote = stream_->is_tls() ? 0 : stream_->write_now(req, wec);
      if (!wec && wrote < req.size()) wec = co_await stream_->write_all(std::string_view(req).substr(wrote));
      if (!wec && !small) wec = co_await stream_->write_all(body);
      disarm();
      if (wec) {
        Woke w = why_aborted(MSB_CANCELLED());
        close();
        if (w == Woke::kCancelled)
          co_return make_error(ErrorKind::kCancelled, Phase::kConnect, "cancelled while sending the request");
        if (w == Woke::kTimer)
          co_return make_error(ErrorKind::kTimeout, Phase::kConnect, "sending request: deadline exceeded");
        if (reused && w == Woke::kDone) continue;  // stale keep-alive connection: resend once
        co_return make_error(ErrorKind::kClosed, Phase::kConnect, "sending request: " + wec.message());
      }

      auto r = co_await read_head(d, head_timeout);
      if (r.stale && reused) continue;  // stale keep-alive connection: resend once
      co_return std::move(r.head);
    }
    co_return make_error(ErrorKind::kClosed, Phase::kConnect, "connection closed before the response");
  } catch (const std::exception& e) {
    close();
    co_return from_exception(e, std::string(method) + " " + std::string(target));
  }
}

void UpstreamConnection::append_request(std::string& req, const Url& origin, std::string_view method,
                                        std::string_view target, std::string_view extra_headers,
                                        std::string_view body, bool with_body) {
  req.append(method).append(" "sv).append(target).append(" HTTP/1.1\r\nHost: "sv);
  if (host_header_.empty() || !same_origin(host_origin_, origin)) {
    host_origin_ = origin;
    host_header_ = origin.host_header();
  }
  req.append(host_header_).append("\r\n"sv);
  req.append(extra_headers);
  if (method != "GET" || !body.empty()) {
    char len[24];
    auto r = std::to_chars(len, len + sizeof len, body.size());
    req.append("Content-Length: "sv).append(len, r.ptr).append("\r\n"sv);
  }
  req.append("\r\n"sv);
  if (with_body) req.append(body);
}

UpstreamConnection::HeadStep UpstreamConnection::parse_head(HttpHead& out, std::string& why) {
  auto& p = *parser_->p;
  ErrorCode pec;
  size_t n = p.put(parser_->buf.data(), pec);
  parser_->buf.consume(n);
  if (pec && pec != http::error::need_more) {
    why = pec == http::error::header_limit ? std::string("upstream HTTP head too large")
                                           : "upstream HTTP: " + pec.message();
    return HeadStep::kError;
  }
  if (!p.is_header_done()) return n > 0 ? HeadStep::kProgress : HeadStep::kNeedMore;
  if (p.head.status >= 100 && p.head.status < 200) {  // 1xx: read the real head
    parser_->reset();
    return HeadStep::kProgress;
  }
  out = std::move(p.head);
  out.chunked = p.chunked();
  if (auto cl = p.content_length()) out.content_length = *cl;
  out.keep_alive = p.keep_alive();
  p.eager(true);
  body_done_ = p.is_done();
  if (body_done_) reusable_ = out.keep_alive;
  persistent_ = out.version >= 11 && out.keep_alive;
  return HeadStep::kHead;
}

asio::awaitable<UpstreamConnection::HeadRead> UpstreamConnection::read_head(Deadline d,
                                                                            Millis head_timeout) {
  // A live server answers at once; head_timeout (--post-timeout) names the
  // wait when it does not.
  const Deadline head_d = Deadline::within(d, head_timeout);
  bool got_any = parser_->buf.size() > 0;
  for (;;) {
    if (parser_->buf.size() > 0) {
      HttpHead h;
      std::string why;
      auto step = parse_head(h, why);
      if (step == HeadStep::kError) {
        close();
        co_return HeadRead{make_error(ErrorKind::kProtocol, Phase::kConnect, why)};
      }
      if (step == HeadStep::kHead) co_return HeadRead{std::move(h)};
      if (step == HeadStep::kProgress) continue;
    }
    auto [ec, woke] = co_await fill(head_d);
    if (!ec) {
      got_any = true;
      continue;
    }
    switch (woke) {
      case Woke::kCancelled:
        close();  // the request is abandoned mid-exchange
        co_return HeadRead{make_error(ErrorKind::kCancelled, Phase::kConnect,
                                      "cancelled while the upstream had not answered")};
      case Woke::kClosed:
        co_return HeadRead{make_error(ErrorKind::kClosed, Phase::kConnect, "connection closed by the bridge")};
      case Woke::kTimer:
        close();
        if (head_timeout.count() > 0 && !d.reached())
          co_return HeadRead{make_error(ErrorKind::kUnresponsive, Phase::kConnect,
                                        "no response head within " + std::to_string(head_timeout.count()) +
                                            "ms of sending the request")};
        co_return HeadRead{make_error(ErrorKind::kTimeout, Phase::kConnect,
                                      "waiting for the response head: deadline exceeded")};
      case Woke::kDone:
        break;
    }
    close();
    co_return HeadRead{make_error(ErrorKind::kClosed, Phase::kConnect,
                                  is_eof(ec) ? std::string("connection closed before the response head")
                                             : "reading response head: " + ec.message()),
                       !got_any};
  }
}

// ---- pipelining ---------------------------------------------------------------

bool UpstreamConnection::can_pipeline(const Url& origin) const {
  // Plain connections only: no TLS test server here serves pipelined
  // requests (cpp-httplib 0.11.4's SSLServer leaves the second one in its
  // TLS engine until the keep-alive timeout), so TLS is not claimed.
  return persistent_ && connected() && !origin.tls() && same_origin(origin_, origin);
}

asio::awaitable<UpstreamConnection::Pipelined> UpstreamConnection::request_pair(
    const Url& origin, std::string_view method, std::string_view target,
    std::string_view extra_headers, std::string_view body1, std::string_view body2, Deadline d,
    Millis head_timeout) {
  Pipelined out;
  try {
    if (!can_pipeline(origin)) co_return out;  // not sent
    // The previous response's body (a 202's "Accepted") may still be on its
    // way (servers write it apart from the head, and the SSE event the
    // caller waited for can overtake it): the server is done with that
    // request, so the two go out now and the body is read first.
    if (!body_done_) skip_body_now(kMaxSkippedBody, /*close_if_incomplete=*/false);
    if (!connected()) co_return out;  // it ended or failed meanwhile: not sent
    const bool drain_previous = !body_done_;
    if (!drain_previous && !(reusable_ && idle_alive())) co_return out;  // not sent
    std::string& req = req_;
    req.clear();
    req.reserve(512 + 2 * extra_headers.size() + body1.size() + body2.size());
    append_request(req, origin, method, target, extra_headers, body1, true);
    append_request(req, origin, method, target, extra_headers, body2, true);
    reusable_ = false;
    if (!drain_previous) {
      body_done_ = false;
      parser_->buf.clear();
      parser_->reset();
    }
    if (MSB_CANCELLED()) {
      close();
      out.first = out.second = make_error(ErrorKind::kCancelled, Phase::kConnect,
                                          "cancelled before sending the request");
      out.sent = true;
      co_return out;
    }
    // Both requests in one write: the server reads them in order.
    arm(d);
    ErrorCode wec;
    size_t wrote = stream_->is_tls() ? 0 : stream_->write_now(req, wec);
    if (!wec && wrote < req.size()) wec = co_await stream_->write_all(std::string_view(req).substr(wrote));
    disarm();
    if (wec) {
      Woke w = why_aborted(MSB_CANCELLED());
      close();
      if (w == Woke::kDone) co_return out;  // stale keep-alive connection: not sent, resend both
      out.sent = true;
      out.first = out.second =
          w == Woke::kCancelled ? make_error(ErrorKind::kCancelled, Phase::kConnect, "cancelled while sending the request")
          : w == Woke::kTimer   ? make_error(ErrorKind::kTimeout, Phase::kConnect, "sending request: deadline exceeded")
                                : make_error(ErrorKind::kClosed, Phase::kConnect, "connection closed by the bridge");
      co_return out;
    }
    out.sent = true;
    if (drain_previous) {
      auto prev = co_await read_full_body(kMaxSkippedBody, Deadline::within(d, head_timeout));
      if (!prev) {
        const auto k = prev.error().kind;
        if (k != ErrorKind::kCancelled && k != ErrorKind::kTimeout && k != ErrorKind::kUnresponsive) {
          out.sent = false;  // closed before answering either: nothing was answered
          co_return out;
        }
        out.first = out.second = prev.error();
        co_return out;
      }
      if (!persistent_) {  // cannot happen with a persistent head; be safe
        close();
        out.sent = false;
        co_return out;
      }
      body_done_ = false;
      parser_->reset();
    }
    auto r1 = co_await read_head(d, head_timeout);
    if (!r1.head) {
      if (r1.stale) {  // closed before any byte of an answer: nothing was answered
        out.sent = false;
        co_return out;
      }
      out.first = r1.head.error();
      out.second = r1.head.error();  // sent, unanswered, fate unknown
      co_return out;
    }
    out.first = std::move(r1.head);
    // The first body is read whole (a 202's "Accepted", or why it was refused).
    auto body = co_await read_full_body(kMaxSkippedBody, Deadline::within(d, head_timeout));
    if (!body) {
      // Its connection is gone (read_full_body closed it) with the second
      // unanswered.
      if (body.error().kind == ErrorKind::kCancelled || body.error().kind == ErrorKind::kTimeout) {
        out.second = body.error();
        co_return out;
      }
      out.second_unanswered = true;
      out.second = body.error();
      co_return out;
    }
    out.first_body = std::move(*body);
    if (!out.first->keep_alive) {
      // RFC 9112 §9.6: a server that answers with `Connection: close` does not
      // process further requests on that connection.
      close();
      out.second_unanswered = true;
      out.second = make_error(ErrorKind::kClosed, Phase::kConnect,
                              "the upstream closed the connection after the first pipelined response");
      co_return out;
    }
    body_done_ = false;
    reusable_ = false;
    parser_->reset();
    auto r2 = co_await read_head(d, head_timeout);
    if (!r2.head && r2.stale) out.second_unanswered = true;
    out.second = std::move(r2.head);
    co_return out;
  } catch (const std::exception& e) {
    close();
    out.first = out.second = from_exception(e, "pipelined " + std::string(target));
    out.sent = true;
    co_return out;
  }
}

// ---- body -------------------------------------------------------------------

void UpstreamConnection::skip_body_now(size_t max, bool close_if_incomplete) {
  if (body_done_ || !connected()) return;
  std::string dropped;
  // Bounded: each pass parses bytes or reads more; a body that is not all
  // here after a few reads is not waited for.
  for (int pass = 0; pass < 8; ++pass) {
    auto& p = *parser_->p;
    if (parser_->buf.size() > 0) {
      p.out = &dropped;
      ErrorCode pec;
      size_t n = p.put(parser_->buf.data(), pec);
      p.out = nullptr;
      parser_->buf.consume(n);
      if (pec == http::error::need_buffer || pec == http::error::need_more) pec = {};
      if (pec || dropped.size() > max) return close();
      if (p.is_done()) {
        body_done_ = true;
        reusable_ = p.keep_alive();
        return;
      }
      if (n > 0) continue;
    }
    if (stream_->is_tls()) break;  // no look without waiting into a TLS engine
    ErrorCode ec;
    size_t n = stream_->read_now(parser_->buf.prepare(kReadSize), ec);
    parser_->buf.commit(n);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;  // not here yet
    if (ec || n == 0) return close();  // closed or failed
  }
  if (close_if_incomplete) close();  // not all here: the next request goes on a fresh connection
}

asio::awaitable<Expected<bool>> UpstreamConnection::read_body(std::string& out, Deadline d) {
  // (One coroutine: a wrapper with the try would cost a frame per call.)
  try {
    if (pending_error_) {
      auto e = std::move(*pending_error_);
      pending_error_.reset();
      co_return e;
    }
    if (body_done_) co_return true;
    for (;;) {
      auto& p = *parser_->p;
      if (parser_->buf.size() > 0) {
        const size_t before = out.size();
        p.out = &out;
        ErrorCode pec;
        size_t n = p.put(parser_->buf.data(), pec);
        p.out = nullptr;
        parser_->buf.consume(n);
        size_t got = out.size() - before;
        if (pec == http::error::need_buffer || pec == http::error::need_more) pec = {};
        if (pec) {
          close();
          auto e = make_error(ErrorKind::kProtocol, Phase::kConnect, "upstream HTTP body: " + pec.message());
          if (got == 0) co_return e;
          pending_error_ = std::move(e);  // hand over the good bytes first
          co_return false;
        }
        if (p.is_done()) {
          body_done_ = true;
          reusable_ = p.keep_alive();
          co_return true;
        }
        if (got > 0) co_return false;
        if (n > 0) continue;  // framing consumed (a chunk header), no data yet
        if (parser_->buf.size() > kMaxHeadBytes) {
          // Nothing taken from this much: a chunk-size line or a trailer
          // that never ends. Body bytes are taken as they come (the caller
          // bounds them), so only framing can pile up here: without this
          // bound a hostile upstream grows the buffer until the deadline.
          close();
          co_return make_error(ErrorKind::kProtocol, Phase::kConnect,
                               "upstream HTTP body: chunk framing (a chunk-size line or the trailer) over " +
                                   std::to_string(kMaxHeadBytes) + " bytes");
        }
      }
      auto [ec, woke] = co_await fill(d, true);
      if (!ec) continue;
      switch (woke) {
        case Woke::kCancelled:  // the connection stays usable: the read resumes later
          co_return make_error(ErrorKind::kCancelled, Phase::kConnect, "cancelled while reading the body");
        case Woke::kTimer:
          co_return make_error(ErrorKind::kTimeout, Phase::kConnect, "reading body: deadline exceeded");
        case Woke::kClosed:
          co_return make_error(ErrorKind::kClosed, Phase::kConnect, "connection closed by the bridge");
        case Woke::kDone:
          break;
      }
      if (is_eof(ec)) {
        peer_closed_ = true;
        ErrorCode eec;
        p.put_eof(eec);
        close();
        if (!eec && p.is_done()) {  // a body delimited by the close
          body_done_ = true;
          co_return true;
        }
        co_return make_error(ErrorKind::kClosed, Phase::kConnect, "connection closed in the middle of the body");
      }
      close();
      // ETIMEDOUT on a read: TCP keepalive probes or sent data went
      // unacknowledged (TcpOptions): the peer or the path vanished without a
      // FIN or RST.
      if (ec == asio::error::timed_out)
        co_return make_error(ErrorKind::kUnresponsive, Phase::kConnect,
                             "reading body: " + ec.message() +
                                 " (the upstream stopped acknowledging: the host or the path to it is down)");
      co_return make_error(ErrorKind::kClosed, Phase::kConnect, "reading body: " + ec.message());
    }
  } catch (const std::exception& e) {
    co_return from_exception(e, "reading body");
  }
}

asio::awaitable<Expected<std::string>> UpstreamConnection::read_full_body(size_t max, Deadline d) {
  std::string out;
  for (;;) {
    auto r = co_await read_body(out, d);
    if (!r) {
      close();  // an unfinished body leaves the connection unusable
      co_return r.error();
    }
    if (out.size() > max) {
      close();
      co_return make_error(ErrorKind::kProtocol, Phase::kConnect,
                           "response body larger than " + std::to_string(max) + " bytes");
    }
    if (*r) co_return out;
  }
}

}  // namespace msb
