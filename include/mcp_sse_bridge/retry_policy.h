// The retry rule of DESIGN §2.5 as pure functions: non-idempotent work the
// upstream may have accepted is never retried; a call that provably never
// reached the upstream, or a read-only one, may be retried on a fresh
// session (within --upstream-retries and the call's deadline, which the
// caller checks).
#pragma once

#include <string_view>

#include "mcp_sse_bridge/error.h"

namespace msb {

// Whether a failed POST of the client's request proves the upstream never
// took it: the connect failed, or the POST was answered 404 (session gone;
// also when the session's stream was seen ending first).
bool post_failure_proves_not_taken(const BridgeError& e);

// Whether an attempt that failed with `e` may be retried on a fresh session.
// `request_sent`: the client's request may have reached the upstream.
bool may_retry(const BridgeError& e, bool request_sent, std::string_view method);

}  // namespace msb
