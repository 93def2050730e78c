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
#include "mcp_sse_bridge/session_token.h"

namespace msb {

// The client side of one call, as the forwarder sees it.
class CallSink {
 public:
  virtual ~CallSink() = default;
  // Delivers a message that precedes the response (progress, logging, other
  // notifications). Returns false once the client has gone.
  virtual bool deliver(std::string_view json) = 0;
  // Polled at least every kPollSlice while the call waits; may write a
  // keepalive. Returns false once the client has gone or cancelled the call.
  virtual bool alive() = 0;
};

struct CallResult {
  std::string response;  // final JSON-RPC response for the client (empty if cancelled)
  bool cancelled = false;
  std::optional<BridgeError> error;  // set when the bridge minted the response
  int attempts = 0;
  std::string upstream_session;  // last upstream session id, for logs
};

// Counters since start (for logs and tests).
struct ForwarderStats {
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<uint64_t> retries{0};
  std::atomic<uint64_t> pings_sent{0};
  std::atomic<uint64_t> cancelled{0};
};

class Forwarder {
 public:
  static constexpr Millis kPollSlice{200};

  explicit Forwarder(const UpstreamConfig& cfg) : cfg_(cfg) {}

  // Runs `req` (a request). `session` is the client's session (nullptr for
  // `initialize`, which is then sent as-is instead of being replayed);
  // `log_level_params` the latest logging/setLevel params to replay, if any.
  // `extra_headers` are "Name: value\r\n" lines sent upstream. Blocks until
  // the response, an error, or the client's departure; never past the call's
  // deadline (request_timeout from now, extended by progress up to
  // max_request_timeout).
  CallResult call(const Message& req, const ClientSession* session,
                  const std::optional<std::string>& log_level_params,
                  std::string_view extra_headers, CallSink& sink);

  const ForwarderStats& stats() const { return stats_; }
  const UpstreamConfig& config() const { return cfg_; }

 private:
  const UpstreamConfig& cfg_;
  ForwarderStats stats_;
};

}  // namespace msb
