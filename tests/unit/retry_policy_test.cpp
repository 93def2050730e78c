// DESIGN §2.5, the retry rule: a table of failures and whether each may be
// retried on a fresh upstream session.
#include <doctest/doctest.h>

#include "mcp_sse_bridge/retry_policy.h"

using namespace msb;

namespace {
BridgeError err(ErrorKind k, Phase p, int status = 0) { return make_error(k, p, "x", status); }
}  // namespace

TEST_CASE("retry policy: a request that never reached the upstream may be retried") {
  CHECK(may_retry(err(ErrorKind::kUnreachable, Phase::kConnect), false, "tools/call"));
  CHECK(may_retry(err(ErrorKind::kRejected, Phase::kConnect, 503), false, "tools/call"));
  CHECK(may_retry(err(ErrorKind::kClosed, Phase::kEndpoint), false, "tools/call"));
  CHECK(may_retry(err(ErrorKind::kTimeout, Phase::kEndpoint), false, "tools/call"));
  CHECK(may_retry(err(ErrorKind::kClosed, Phase::kInitialize), false, "tools/call"));
  CHECK(may_retry(err(ErrorKind::kRejected, Phase::kRequest, 404), false, "tools/call"));
}

TEST_CASE("retry policy: never after a connect timeout, a refused replay, the SSRF guard, a stop") {
  CHECK_FALSE(may_retry(err(ErrorKind::kTimeout, Phase::kConnect), false, "tools/list"));
  CHECK_FALSE(may_retry(err(ErrorKind::kRejected, Phase::kInitialize), false, "tools/call"));
  CHECK(may_retry(err(ErrorKind::kRejected, Phase::kInitialize, 500), false, "tools/call"));
  CHECK_FALSE(may_retry(err(ErrorKind::kEndpointRefused, Phase::kEndpoint), false, "ping"));
  CHECK_FALSE(may_retry(err(ErrorKind::kShuttingDown, Phase::kConnect), false, "ping"));
  CHECK_FALSE(may_retry(err(ErrorKind::kCancelled, Phase::kRequest), false, "ping"));
  CHECK_FALSE(may_retry(err(ErrorKind::kOverloaded, Phase::kConnect), false, "ping"));
}

TEST_CASE("retry policy: once the upstream may have the request, only read-only methods are retried") {
  auto closed = err(ErrorKind::kClosed, Phase::kRequest);
  CHECK_FALSE(may_retry(closed, true, "tools/call"));
  CHECK_FALSE(may_retry(closed, true, "resources/subscribe"));
  CHECK_FALSE(may_retry(closed, true, "logging/setLevel"));
  for (auto m : {"ping", "tools/list", "resources/list", "resources/templates/list", "prompts/list",
                 "resources/read", "prompts/get", "completion/complete", "initialize"})
    CHECK_MESSAGE(may_retry(closed, true, m), m);
}

TEST_CASE("retry policy: which POST failures prove the request was not taken") {
  CHECK(post_failure_proves_not_taken(err(ErrorKind::kUnreachable, Phase::kRequest)));
  CHECK(post_failure_proves_not_taken(err(ErrorKind::kRejected, Phase::kRequest, 404)));
  // The stream's end was seen first, then the 404: still not taken.
  CHECK(post_failure_proves_not_taken(err(ErrorKind::kClosed, Phase::kRequest, 404)));
  CHECK_FALSE(post_failure_proves_not_taken(err(ErrorKind::kRejected, Phase::kRequest, 500)));
  CHECK_FALSE(post_failure_proves_not_taken(err(ErrorKind::kUnresponsive, Phase::kRequest)));
  CHECK_FALSE(post_failure_proves_not_taken(err(ErrorKind::kClosed, Phase::kRequest)));
}
