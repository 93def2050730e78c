// Forwarder: runs one client request on a fresh, short-lived upstream session
// (connect, `endpoint`, replay initialize + initialized + session state, send
// the request, relay its notifications, deliver its response, close), with a
// deadline on every step and the retry rules of DESIGN §2.5.
//
// Thread-safe: any number of calls run at once, each on its caller's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/session_pool.h"
#include "mcp_sse_bridge/session_token.h"
#include "mcp_sse_bridge/upstream_stats.h"

namespace msb {

// The client side of one call, as the forwarder sees it.
class CallSink {
 public:
  virtual ~CallSink() = default;
  // Delivers a message that precedes the response (progress, logging, other
  // notifications). Returns false once the client has gone.
  virtual bool deliver(std::string_view json) = 0;
  // Polled at least every kPollSlice while the call waits, and at once when
  // wake_fd() or client_fd() fires; may write a keepalive. Returns false once
  // the client has gone or cancelled the call.
  virtual bool alive() = 0;

  // An eventfd signalled when alive() or take_response() has news, and the
  // client's socket (hang-up wakes the call). -1 = none.
  virtual int wake_fd() const { return -1; }
  virtual int client_fd() const { return -1; }

  // Forwards a server-to-client request (`json` already carries the
  // bridge-unique id `bridge_id`) on the call's stream and routes the
  // client's answer back to this call. Returns false with a reason when the
  // client cannot take it (capability not declared, no SSE stream).
  virtual bool forward_request(std::string_view method, std::string_view bridge_id,
                               std::string_view json, std::string* why) {
    (void)method, (void)bridge_id, (void)json;
    *why = "the client cannot receive server-to-client requests";
    return false;
  }
  // The next client response routed to this call, if any.
  virtual std::optional<Message> take_response() { return std::nullopt; }
  // Stops routing client responses for bridge_id to this call.
  virtual void end_request(std::string_view bridge_id) { (void)bridge_id; }
};

struct CallResult {
  std::string response;  // final JSON-RPC response for the client (empty if cancelled)
  bool cancelled = false;
  std::optional<BridgeError> error;  // set when the bridge minted the response
  int attempts = 0;
  std::string upstream_session;  // last upstream session id, for logs
};


class Forwarder {
 public:
  static constexpr Millis kPollSlice{200};

  explicit Forwarder(const UpstreamConfig& cfg);
  ~Forwarder();

  // Runs `req` (a request). `session` is the client's session (nullptr for
  // `initialize`, which is then sent as-is instead of being replayed);
  // `log_level_params` the latest logging/setLevel params to replay, if any.
  // `extra_headers` are "Name: value\r\n" lines sent upstream. Blocks until
  // the response, an error, or the client's departure; never past the call's
  // deadline (request_timeout from `arrival`, when the client's HTTP request
  // came in, extended by progress up to max_request_timeout).
  CallResult call(const Message& req, const ClientSession* session,
                  const std::optional<std::string>& log_level_params,
                  std::string_view extra_headers, CallSink& sink,
                  Clock::time_point arrival = Clock::now());

  // Asks the warm pool for a session ready for this client session's next
  // call (after initialize). No-op when the pool is off.
  void prewarm(std::string_view client_session, std::string_view init_params,
               std::string_view extra_headers, const std::optional<std::string>& log_level_params);
  // Stops the pool's fillers and closes its idle sessions.
  void stop();

  const ForwarderStats& stats() const { return stats_; }
  const PoolStats& pool_stats() const { return pool_.stats(); }
  const UpstreamConfig& config() const { return cfg_; }

 private:
  std::unique_ptr<UpstreamSession> open_for_pool(const PoolKey& key, int stop_fd);

  const UpstreamConfig& cfg_;
  ForwarderStats stats_;
  SessionPool pool_;
};

}  // namespace msb
