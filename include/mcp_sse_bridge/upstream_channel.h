// UpstreamChannel: one legacy HTTP+SSE (2024-11-05) upstream session on an
// event loop: a `GET <sse-url>` stream plus POSTs to the endpoint it
// announces. It does not care whether it serves one call or many: calls,
// the warm pool, /readyz probes and tools/bench's direct client all use it.
//
// Every wait takes a Deadline and returns by it. The caller runs these
// coroutines bound to its cancellation_signal slot: a terminal cancellation
// ends a pending open/post/next_message at once with kCancelled (never
// reported as a timeout). No exception escapes.
//
// Threading: construct, use and destroy on the loop thread of the executor
// given to the constructor (also abort()). At most one next_message() or
// refresh_idle() and at most one post() at a time; a post() may run while a
// next_message() waits (the two use separate connections). Destroy only once
// no coroutine is suspended in it: abort() (or cancel) first, let them end.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/sse_parser.h"
#include "mcp_sse_bridge/upstream_connection.h"

namespace msb {

class UpstreamChannel {
 public:
  // The longest `endpoint` URI taken (it is the target of every POST).
  static constexpr size_t kMaxEndpointBytes = 8192;

  // `cfg` must outlive the channel. `extra_headers`: full "Name: value\r\n"
  // lines (static + forwarded client headers) sent on the GET and on every POST.
  UpstreamChannel(asio::any_io_executor ex, const UpstreamConfig& cfg, std::string extra_headers);
  ~UpstreamChannel();
  UpstreamChannel(const UpstreamChannel&) = delete;
  UpstreamChannel& operator=(const UpstreamChannel&) = delete;

  // Connects, sends the SSE GET and checks its reply (200, text/event-stream;
  // bounded by connect_deadline), then waits for the `endpoint` event for at
  // most endpoint_timeout after that, never past `outer`. The endpoint must be
  // on the SSE URL's origin unless allow_foreign_endpoint (SSRF guard). Meanwhile the
  // POST connection to the SSE URL's origin is opened alongside (its failure
  // is not open()'s: post() reconnects). Messages that arrive before the
  // endpoint are kept for next_message(). Errors: phase kConnect
  // (kUnreachable, kTimeout, kRejected with the HTTP status, kProtocol,
  // kClosed) or kEndpoint (kTimeout "no `endpoint` event within …", kClosed,
  // kProtocol, kEndpointRefused); kCancelled when cancelled.
  asio::awaitable<Status> open(Deadline connect_deadline, Duration endpoint_timeout, Deadline outer);

  // POSTs one JSON-RPC message to the endpoint (after a successful open());
  // OK on any 2xx. Bounded by d; the response head must come within
  // --post-timeout of sending (else kUnresponsive: a live legacy server
  // answers 202 in milliseconds). A non-2xx is kRejected with the status; a
  // 404 while the stream has ended is reported as the stream's kClosed.
  // Errors carry `phase`. `json` must stay valid until the awaitable completes.
  // A 2xx returns with its head: on a plain connection its body is not waited
  // for (the next POST skips it, or takes a fresh connection if it is late).
  asio::awaitable<Status> post(std::string_view json, Deadline d, Phase phase);

  // True when post_pair() will pipeline: the POST connection is open and its
  // last response was HTTP/1.1 without `Connection: close`.
  bool can_pipeline() const;

  // What post_pair() did.
  struct PostPair {
    Status first = make_error(ErrorKind::kInternal, Phase::kConnect, "not sent");
    Status second = make_error(ErrorKind::kInternal, Phase::kConnect, "not sent");
    bool second_sent = false;  // false: the first failed before the second was sent
    bool pipelined = false;    // both went out in one write on the kept-alive connection
    bool resent = false;       // the second was sent again on a fresh connection
    // The upstream answered the first and then left the second unanswered
    // (closed without `Connection: close`, or no head within --post-timeout):
    // it does not serve pipelined requests.
    bool dropped = false;
  };
  // Two POSTs, `first` before `second`, pipelined (RFC 9112 §9.3.2) when
  // can_pipeline(): both in one write, the two response heads read in order,
  // each bound by --post-timeout as in post(), all by d. The server receives
  // them in order on one connection. When the upstream closes the connection
  // after answering `first` (or answers it with `Connection: close`), `second`
  // is sent once more on a fresh connection; when it closes before any answer,
  // both are. Without pipelining: post(first), then post(second) only if
  // `first` was taken, exactly as two post() calls. Statuses as post()'s,
  // with the given phases; when the pipelined pair went unanswered (timeout),
  // both fail, `second` possibly taken. The strings must stay valid until
  // the awaitable completes.
  asio::awaitable<PostPair> post_pair(std::string_view first, std::string_view second, Deadline d,
                                      Phase first_phase, Phase second_phase);

  // The next message from the stream, waiting up to d. A timeout is kTimeout
  // with the given phase and is not fatal (the caller decides; a later call
  // resumes the stream), nor is kCancelled. Stream end/reset is kClosed (or
  // kUnresponsive when the kernel gave up on the peer: ETIMEDOUT); an
  // oversized or malformed event, kProtocol. Once the stream has failed,
  // every call fails the same way.
  asio::awaitable<Expected<Message>> next_message(Deadline d, Phase phase);

  // For a session that sat idle (pooled): reads whatever arrived meanwhile
  // without waiting on the network, drops stale notifications (keeps
  // requests such as an upstream ping), and returns false when the stream
  // has ended or failed.
  asio::awaitable<bool> refresh_idle();
  // Whether refresh_idle() would find nothing to do and return true: the
  // stream has not failed, nothing is buffered for the next call, and
  // nothing arrived meanwhile (the usual case; no coroutine to find it).
  bool idle_settled();

  // Closes both connections; pending waits end at once (kClosed "upstream
  // session aborted"), and so does every later call.
  void abort();

  // Time of the last bytes received on the SSE stream (data or comment).
  Clock::time_point last_activity() const { return last_rx_; }
  const Url& endpoint() const { return endpoint_; }
  std::string upstream_session_id() const;  // from the endpoint query, for logs
  // The stream has ended or failed (every wait on it fails).
  bool failed() const { return failed_.has_value(); }
  asio::any_io_executor executor() const { return ex_; }

  // Channels alive in this process (for --max-upstream-sessions and metrics).
  static size_t open_count();

 private:
  asio::awaitable<Status> open_impl(Deadline connect_deadline, Duration endpoint_timeout,
                                    Deadline outer);
  asio::awaitable<std::optional<BridgeError>> open_stream(Deadline connect_deadline,
                                                          Duration endpoint_timeout, Deadline outer);
  asio::awaitable<bool> preconnect_post(Deadline d);
  // Reads one more piece of the SSE stream and parses it (inbox_, endpoint_).
  asio::awaitable<Status> read_more(Deadline d, Phase phase);
  void on_event(SseEvent& ev, Phase phase);
  // A 2xx on a plain connection: done at its head (its body is skipped
  // before the next request).
  bool accepted_at_head(int status) const;
  // A POST's failure as its caller sees it: the phase, the target (`how`
  // after it, e.g. " (pipelined)"), --post-timeout named when it fired.
  BridgeError post_error(BridgeError e, Phase phase, std::string_view how) const;
  // After a POST's head that was not accepted_at_head(): reads its body
  // (bounded by --post-timeout and d) and makes a non-2xx the error.
  asio::awaitable<Status> finish_post(int status, Deadline d, Phase phase);
  // The error for a POST answered with a non-2xx status (and its body).
  asio::awaitable<BridgeError> refused(int status, const std::string& body, Phase phase);

  asio::any_io_executor ex_;
  const UpstreamConfig& cfg_;
  std::string extra_headers_;
  std::string post_headers_;  // every POST's header lines (made once)
  UpstreamConnection sse_;
  UpstreamConnection post_;
  SseParser parser_;
  Url endpoint_;
  bool have_endpoint_ = false;
  bool reading_ = false;  // a read of the SSE stream is under way
  bool aborted_ = false;
  std::deque<Message> inbox_;
  std::string body_;  // decoded SSE bytes not yet fed to the parser
  std::optional<BridgeError> failed_;
  Clock::time_point last_rx_;
};

}  // namespace msb
