#include "mcp_sse_bridge/retry_policy.h"

#include "mcp_sse_bridge/jsonrpc.h"

namespace msb {

bool post_failure_proves_not_taken(const BridgeError& e) {
  return e.kind == ErrorKind::kUnreachable || e.http_status == 404;
}

bool may_retry(const BridgeError& e, bool request_sent, std::string_view method) {
  if (e.kind == ErrorKind::kEndpointRefused || e.kind == ErrorKind::kCancelled ||
      e.kind == ErrorKind::kShuttingDown || e.kind == ErrorKind::kOverloaded ||
      e.kind == ErrorKind::kInternal)
    return false;
  if (!request_sent) {
    // A connect that timed out already spent --connect-timeout, and a SYN was
    // resent within it (by the kernel, or under a bound below 2 s by
    // UpstreamConnection itself): the path is dead, and a second connect
    // would only double the client's wait.
    if (e.phase == Phase::kConnect && e.kind == ErrorKind::kTimeout) return false;
    // The upstream refused the replayed initialize: a fresh session will too.
    return !(e.phase == Phase::kInitialize && e.kind == ErrorKind::kRejected && e.http_status == 0);
  }
  return is_read_only_method(method) || method == "initialize";
}

}  // namespace msb
