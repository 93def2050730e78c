// `mcp-sse-bridge --probe URL`: one GET of URL, for container HEALTHCHECKs in
// an image without curl. Runs an UpstreamConnection on a temporary
// io_context in the calling thread (no event loop, no other thread).
#pragma once

#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/url.h"

namespace msb {

// GETs url and returns the response's HTTP status (the body is not read).
// Blocks the calling thread until the head arrives or d passes. https is not
// verified: it checks liveness, not identity. Errors: those of
// UpstreamConnection::request (kUnreachable, kTimeout, kClosed, kProtocol).
Expected<int> probe_url(const Url& url, Deadline d);

}  // namespace msb
