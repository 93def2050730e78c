// One error type for every failure the bridge itself detects, and the one
// place that turns it into the JSON-RPC error object a client receives.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace msb {

// What went wrong. The JSON-RPC code is -32001 for kTimeout, -32000 otherwise.
enum class ErrorKind {
  kUnreachable,   // TCP connect or name resolution to the upstream failed
  kRejected,      // upstream answered an HTTP error (non-2xx, or a non-SSE reply to GET)
  kClosed,        // upstream SSE stream or connection ended / was reset
  kProtocol,      // upstream sent something unusable (malformed HTTP, bad endpoint, oversized event)
  kEndpointRefused,  // `endpoint` event pointed at another origin (SSRF guard)
  kTimeout,       // a deadline passed while waiting on the upstream
  kUnresponsive,  // the stream was silent and an MCP ping got no reply in time
  kCancelled,     // the client cancelled or went away; nothing is sent to it
  kShuttingDown,  // the bridge is draining and no longer starts upstream work
  kOverloaded,    // --max-upstream-sessions reached: no upstream session could be opened
  kInternal,      // a bug in the bridge; logged loudly
};
inline constexpr int kErrorKindCount = static_cast<int>(ErrorKind::kInternal) + 1;
inline constexpr int kPhaseCount = 4;

// Where in an upstream session's life the failure happened.
enum class Phase {
  kConnect,     // TCP connect + the SSE GET's response head
  kEndpoint,    // waiting for the `endpoint` event
  kInitialize,  // replaying initialize / notifications/initialized / session state
  kRequest,     // the client's request was (or was being) sent; waiting for its reply
};

std::string_view to_string(ErrorKind k);
// Failures after which the upstream is down or unusable for now, rather than
// refusing this client: what the bridge last learnt from it may stand in
// (a stale initialize result, server/discover from the cache).
bool upstream_unavailable(ErrorKind k);
std::string_view to_string(Phase p);

struct BridgeError {
  ErrorKind kind = ErrorKind::kInternal;
  Phase phase = Phase::kConnect;
  std::string detail;   // human-readable cause, e.g. "connect(127.0.0.1:9): Connection refused"
  int http_status = 0;  // upstream HTTP status where one was received

  int jsonrpc_code() const { return kind == ErrorKind::kTimeout ? -32001 : -32000; }
  std::string message() const;  // "upstream closed the connection (request): <detail>"
};

// Result-or-error; GCC 12 has no std::expected.
template <class T>
class Expected {
 public:
  Expected(T v) : v_(std::move(v)) {}                // NOLINT: implicit by design
  Expected(BridgeError e) : v_(std::move(e)) {}      // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }
  const BridgeError& error() const { return std::get<1>(v_); }
  BridgeError& error() { return std::get<1>(v_); }

 private:
  std::variant<T, BridgeError> v_;
};

struct Ok {};
using Status = Expected<Ok>;

inline BridgeError make_error(ErrorKind k, Phase p, std::string detail, int http_status = 0) {
  return BridgeError{k, p, std::move(detail), http_status};
}

// Builds the JSON-RPC error response for a request. `raw_id` is the request's
// id exactly as the client wrote it (re-emitted verbatim; never null for a
// request that had an id). `error.data.bridge` carries kind, phase, elapsed_ms,
// upstream URL and HTTP status in machine-readable form.
std::string jsonrpc_error_response(std::string_view raw_id, const BridgeError& e,
                                   int64_t elapsed_ms, std::string_view upstream);

// A JSON-RPC error response for errors that are not transport failures
// (parse error, invalid request, method not found...). `data_json`, when
// given, is the JSON text of `error.data`.
std::string jsonrpc_plain_error(std::string_view raw_id, int code, std::string_view message,
                                std::string_view data_json = {});

}  // namespace msb
