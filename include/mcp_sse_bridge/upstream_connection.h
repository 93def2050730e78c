// UpstreamConnection: one asynchronous HTTP/1.1 client connection to one
// upstream origin, over NetStream (plain or TLS), on one event loop. Used for
// the upstream SSE GET (a streamed body read piece by piece) and for the
// upstream POSTs (kept alive between requests): the bridge's one upstream
// HTTP client. No MCP phases here: errors carry Phase::kConnect and the
// caller sets its own.
//
// Every operation takes the Deadline that bounds it: a timer of the loop is
// armed for it, and when it fires first the pending connect/read/write is
// cancelled and the operation returns kTimeout (or kUnresponsive for the
// head_timeout of request()). A cancellation of the awaiting coroutine (its
// cancellation slot, terminal) ends a pending operation at once with
// kCancelled, never reported as a timeout. No exception escapes: results are
// values, also when the caller's coroutine has throw_if_cancelled(true).
//
// Threading: construct, use and destroy on the loop thread of the executor
// given to the constructor. One operation at a time. Destroy only when no
// operation is pending (close() first, then let the awaiting coroutine end).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/http_head.h"
#include "mcp_sse_bridge/tcp_options.h"
#include "mcp_sse_bridge/tls.h"
#include "mcp_sse_bridge/url.h"

namespace msb {

namespace asio = boost::asio;
class NetStream;

class UpstreamConnection {
 public:
  // `tls`: how https origins are verified (nullptr: an https origin fails
  // with kInternal). Not owned; must outlive the connection.
  UpstreamConnection(asio::any_io_executor ex, const TlsClientOptions* tls, TcpOptions opt = {});
  ~UpstreamConnection();
  UpstreamConnection(const UpstreamConnection&) = delete;
  UpstreamConnection& operator=(const UpstreamConnection&) = delete;

  // Resolves origin.host (numeric addresses at once; names on the shared
  // Resolver's bounded pool, resumed on this loop), connects to each address
  // in turn with TCP_NODELAY and the TcpOptions (keepalive, TCP_USER_TIMEOUT),
  // then for https runs the TLS handshake (SNI and certificate name checks
  // for origin.host unless --upstream-insecure). Bounded by d and, when set,
  // opt.connect_timeout. Under a bound shorter than 2 s, which leaves the
  // kernel no room to resend a lost SYN (its first resend is at 1 s), a second
  // SYN goes out from a second socket at half the bound and the first socket to
  // connect is kept. Closes any previous connection first.
  // Errors: kUnreachable (refused, no route, name not found), kTimeout,
  // kProtocol (TLS handshake or verification failed), kCancelled, kInternal.
  asio::awaitable<Status> connect(const Url& origin, Deadline d);

  // Sends one request to `origin` and reads the response head (1xx heads are
  // skipped). Connects first when not connected to that origin, or when the
  // kept-alive connection is closed or stale; a reused connection that fails
  // before any response byte is replaced and the request resent once. A body
  // of the previous response that the caller left unread is skipped when all
  // of it has arrived (a look without waiting), else the connection is replaced.
  // `extra_headers` are full "Name: value\r\n" lines; Host and (except for a
  // body-less GET) Content-Length are added. The strings must stay valid
  // until the awaitable completes.
  //
  // Bounded by d; once the request is written, head_timeout (0 = none) bounds
  // the wait for the head: kUnresponsive when it passes before d. Errors:
  // those of connect(), kTimeout, kUnresponsive, kClosed (reset or closed
  // before the head), kProtocol (malformed head, head over kMaxHeadBytes),
  // kCancelled. After an error the connection is closed.
  asio::awaitable<Expected<HttpHead>> request(const Url& origin, std::string_view method,
                                              std::string_view target,
                                              std::string_view extra_headers,
                                              std::string_view body, Deadline d,
                                              Millis head_timeout = Millis(0));

  // True when the connection may carry pipelined requests (RFC 9112 §9.3.2)
  // to `origin`: a plain (not TLS) connection to it whose last response was
  // HTTP/1.1 without `Connection: close` (it has proven persistent).
  bool can_pipeline(const Url& origin) const;

  // What request_pair() saw.
  struct Pipelined {
    // False: nothing was sent, or the reused connection ended before any
    // byte of an answer (nothing answered); the connection is closed and
    // both requests may be sent again, one after the other.
    bool sent = false;
    Expected<HttpHead> first = make_error(ErrorKind::kInternal, Phase::kConnect, "not sent");
    std::string first_body;  // the first response's whole body (at most 64 KiB)
    // The second head; its body is left as request() leaves one.
    Expected<HttpHead> second = make_error(ErrorKind::kInternal, Phase::kConnect, "not sent");
    // The second request got no answer because the connection ended after
    // the first response (or that response said `Connection: close`): the
    // server did not take it (RFC 9112 §9.3.2, §9.6), send it again.
    bool second_unanswered = false;
  };
  // HTTP/1.1 pipelining: writes two requests (same method, target and
  // headers) in one write on the kept-alive connection, then reads the two
  // responses in order: the first one whole, the second's head. Only when
  // can_pipeline(origin) (else: not sent). A previous body still on its way
  // is read (bounded like the heads) before the first head.
  // Bounded by d; head_timeout bounds each head's wait (and the first body's)
  // as in request(). After an error the connection is closed.
  asio::awaitable<Pipelined> request_pair(const Url& origin, std::string_view method,
                                          std::string_view target, std::string_view extra_headers,
                                          std::string_view body1, std::string_view body2,
                                          Deadline d, Millis head_timeout = Millis(0));

  // After request(): reads the next piece of the decoded body (chunked,
  // Content-Length or until close) and appends it to `out`; returns true once
  // the body is complete (possibly with a last piece appended). Waits until
  // at least one byte is decoded or the body ends.
  // Errors: kTimeout (d passed; the connection stays usable: a later call
  // resumes where this one stopped), kCancelled (likewise), kClosed (closed
  // or reset in the middle of the body), kUnresponsive (the kernel gave up on
  // the peer: ETIMEDOUT from keepalive probes or TCP_USER_TIMEOUT),
  // kProtocol (malformed chunked coding).
  asio::awaitable<Expected<bool>> read_body(std::string& out, Deadline d);

  // Reads the whole body, at most `max` bytes (larger: kProtocol, closed).
  asio::awaitable<Expected<std::string>> read_full_body(size_t max, Deadline d);

  // Without waiting: false when the peer closed or reset an idle connection,
  // or sent bytes nobody asked for (plain connections; a TLS connection with
  // raw bytes pending is assumed alive, see request()'s resend).
  bool idle_alive() const;
  // True when bytes of the current body may be readable without waiting
  // (buffered here, or pending on the socket; always true on TLS, whose
  // engine may hold a record): a cheap test before a zero-deadline read.
  bool maybe_readable();

  // Closes the socket; a pending operation ends at once (kClosed).
  void close();
  bool connected() const;
  // The origin of the last connect().
  const Url& origin() const { return origin_; }
  // Ready for a next request: freshly connected, or the last body is
  // complete and the server allowed keep-alive.
  bool reusable() const { return reusable_; }
  // The last failure of read_body() was the peer closing the connection
  // (EOF), not a reset or another socket error.
  bool peer_closed() const { return peer_closed_; }
  asio::any_io_executor executor() const { return ex_; }

 private:
  struct Parser;  // Beast's response parser and the read buffer, kept out of this header
  enum class Woke { kDone, kTimer, kCancelled, kClosed };

  asio::awaitable<Status> connect_impl(const Url& origin, Deadline d);
  // The bridge's own early SYN resend under a short connect bound (see the
  // source); nullptr when the kernel's resend fits in the bound.
  struct SecondSyn;
  std::shared_ptr<SecondSyn> start_second_syn(const asio::ip::tcp::endpoint& ep, Deadline cd);
  void append_request(std::string& req, const Url& origin, std::string_view method,
                      std::string_view target, std::string_view extra_headers,
                      std::string_view body, bool with_body);
  enum class HeadStep { kNeedMore, kProgress, kHead, kError };
  // Parses buffered bytes toward a response head (1xx skipped); kHead fills out.
  HeadStep parse_head(HttpHead& out, std::string& why);
  struct HeadRead {
    Expected<HttpHead> head;
    bool stale = false;  // the connection ended before any byte of an answer
  };
  // Reads the response head after a request was written (see request()).
  asio::awaitable<HeadRead> read_head(Deadline d, Millis head_timeout);
  // Consumes the rest of the current body if all of it is here (buffered or
  // readable without waiting, plain sockets; at most max bytes), else closes
  // (or, close_if_incomplete false, leaves what it consumed consumed).
  void skip_body_now(size_t max, bool close_if_incomplete = true);
  // Reads more raw bytes into the parser's buffer, bounded by d. direct: on
  // a plain socket, first read what is already there (see the source).
  asio::awaitable<std::pair<boost::system::error_code, Woke>> fill(Deadline d, bool direct = false);
  void arm(Deadline d);
  void disarm();
  void set_timer(Clock::time_point at);
  bool op_active() const { return !op_deadline_.is_never(); }
  void cancel_io();
  Woke why_aborted(bool cancelled) const;

  asio::any_io_executor ex_;
  const TlsClientOptions* tls_;
  TcpOptions opt_;
  Url origin_;
  asio::steady_timer timer_;
  uint64_t gen_ = 0;         // counts operations
  Deadline op_deadline_ = Deadline::never();  // the current operation's (never: none)
  Clock::time_point timer_at_{};  // when timer_ fires, if timer_set_
  bool timer_set_ = false;
  uint64_t timer_tick_ = 0;  // a wait replaced by a later set_timer is stale
  bool timed_out_ = false;   // the timer of the current operation fired
  bool closed_by_us_ = false;
  asio::ip::tcp::socket connecting_;  // the socket during connect, before the stream owns it
  std::unique_ptr<NetStream> stream_;
  std::unique_ptr<Parser> parser_;
  std::string req_;          // the request being sent (its buffer reused)
  Url host_origin_;          // the origin host_header_ was made for
  std::string host_header_;  // "host[:port]" of host_origin_
  bool reusable_ = false;
  bool persistent_ = false;  // the last response was HTTP/1.1 keep-alive
  bool body_done_ = true;
  bool peer_closed_ = false;
  // fill(d, true) first reads without waiting, unless that found nothing
  // lately: then this many such fills skip it before the next try.
  uint8_t direct_skip_ = 0;
  // Direct reads that found bytes since an upstream read of this thread last
  // waited (the loop may not have run anything else meanwhile: bounded, see
  // fill()), and which of those waits that was.
  uint8_t direct_streak_ = 0;
  uint64_t direct_epoch_ = 0;
  std::optional<BridgeError> pending_error_;  // reported by the next read_body()
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace msb
