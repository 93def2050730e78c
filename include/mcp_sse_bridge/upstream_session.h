// One legacy HTTP+SSE (2024-11-05) upstream session: a `GET <sse-url>` stream
// plus POSTs to the endpoint it announces.
//
// The session is driven by its owner's thread: every call takes a Deadline and
// returns by it. It does not care whether it serves one call or many; today
// the bridge opens one per client call and closes it afterwards.
// Not thread-safe, except abort(), which may be called from any thread.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/http_client.h"
#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/sse_parser.h"

namespace msb {

class UpstreamSession {
 public:
  // `extra_headers`: full "Name: value\r\n" lines (static + forwarded client
  // headers) sent on the GET and on every POST.
  UpstreamSession(const UpstreamConfig& cfg, std::string extra_headers);
  ~UpstreamSession();

  // What a wait asks when it is woken (a watched fd fired) or at least every
  // Forwarder::kPollSlice: true = go on waiting, false = stop (kCancelled).
  using KeepWaiting = std::function<bool()>;

  // Connects, sends the SSE GET and checks its reply (bounded by
  // connect_deadline), then waits for the `endpoint` event for at most
  // endpoint_timeout after that, never past `outer`. Errors: phase kConnect
  // or kEndpoint; kCancelled when keep_waiting said stop (a wake-up is never
  // reported as a timeout).
  Status open(Deadline connect_deadline, Duration endpoint_timeout, Deadline outer,
              const KeepWaiting* keep_waiting = nullptr);

  // POSTs one JSON-RPC message to the endpoint; OK on any 2xx. Blocks up to
  // d; the response head must come within --post-timeout of sending (else
  // kUnresponsive: a live legacy server answers 202 in milliseconds).
  // keep_waiting is asked every Forwarder::kPollSlice meanwhile.
  Status post(std::string_view json, Deadline d, Phase phase,
              const KeepWaiting* keep_waiting = nullptr);

  // Returns the next message from the stream, waiting up to d. A timeout is
  // returned as kTimeout with the given phase (the caller decides whether that
  // is fatal). Stream end/reset is kClosed; an oversized or malformed event,
  // kProtocol. Once the stream has failed, every call fails the same way.
  Expected<Message> next_message(Deadline d, Phase phase);

  // For a session that sat idle (pooled): reads whatever arrived meanwhile
  // without blocking, drops stale notifications, and returns false when the
  // stream has ended or failed.
  bool refresh_idle();

  // Time of the last bytes received on the SSE stream (data or comment).
  Clock::time_point last_activity() const { return last_rx_; }
  const Url& endpoint() const { return endpoint_; }
  std::string upstream_session_id() const;  // from the endpoint query, for logs

  // Makes waits on the SSE stream also return (as kTimeout) when wake_fd is
  // readable or hup_fd hangs up; see TcpStream::set_watch.
  void set_watch(int wake_fd, int hup_fd) { sse_.set_watch(wake_fd, hup_fd); }

  // Closes both connections; a blocked read in another thread returns at once.
  void abort();

  // Sessions alive in this process (for --max-upstream-sessions and metrics).
  static size_t open_count();

 private:
  Status read_more(Deadline d, Phase phase);

  const UpstreamConfig& cfg_;
  std::string extra_headers_;
  HttpConnection sse_;
  std::unique_ptr<HttpConnection> post_;
  SseParser parser_;
  Url endpoint_;
  bool have_endpoint_ = false;
  std::deque<Message> inbox_;
  std::string body_;  // decoded SSE bytes not yet fed to the parser
  std::optional<BridgeError> failed_;
  Clock::time_point last_rx_;
};

}  // namespace msb
