// Session mode's dispatch rule (route_upstream_message): where each upstream
// message goes, without sockets.
#include <doctest/doctest.h>

#include "mcp_sse_bridge/session_upstream.h"

using msb::SessionRoute;
using msb::route_upstream_message;

namespace {
msb::Message msg(const std::string& text) {
  msb::Message m;
  REQUIRE(msb::parse_message(text, m));
  return m;
}
}  // namespace

TEST_CASE("session dispatch: responses go to their call, the bridge's own, or nowhere") {
  auto r = msg(R"({"jsonrpc":"2.0","id":7,"result":{}})");
  CHECK(route_upstream_message(r, 3, true, false, false) == SessionRoute::kCall);
  CHECK(route_upstream_message(r, 3, false, true, false) == SessionRoute::kOwn);
  CHECK(route_upstream_message(r, 3, false, false, false) == SessionRoute::kDrop);
  auto e = msg(R"({"jsonrpc":"2.0","id":7,"error":{"code":0,"message":"Request cancelled"}})");
  CHECK(route_upstream_message(e, 0, false, false, false) == SessionRoute::kDrop);
}

TEST_CASE("session dispatch: progress by token; log messages and server requests by calls in flight") {
  auto p = msg(R"({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}})");
  CHECK(route_upstream_message(p, 2, false, false, true) == SessionRoute::kCall);
  CHECK(route_upstream_message(p, 2, false, false, false) == SessionRoute::kDrop);
  auto l = msg(R"({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}})");
  CHECK(route_upstream_message(l, 1, false, false, false) == SessionRoute::kSingleCall);
  CHECK(route_upstream_message(l, 0, false, false, false) == SessionRoute::kStream);
  CHECK(route_upstream_message(l, 2, false, false, false) == SessionRoute::kStream);
  auto s = msg(R"({"jsonrpc":"2.0","id":0,"method":"sampling/createMessage","params":{}})");
  CHECK(route_upstream_message(s, 1, false, false, false) == SessionRoute::kSingleCall);
  CHECK(route_upstream_message(s, 2, false, false, false) == SessionRoute::kStream);
  CHECK(route_upstream_message(s, 0, false, false, false) == SessionRoute::kStream);
  auto ping = msg(R"({"jsonrpc":"2.0","id":3,"method":"ping"})");
  CHECK(route_upstream_message(ping, 1, false, false, false) == SessionRoute::kAnswerPing);
}

TEST_CASE("session dispatch: other notifications always go to the GET stream") {
  for (auto* m : {"notifications/tools/list_changed", "notifications/resources/updated",
                  "notifications/resources/list_changed", "notifications/prompts/list_changed"}) {
    auto n = msg(std::string(R"({"jsonrpc":"2.0","method":")") + m + R"("})");
    CHECK(route_upstream_message(n, 0, false, false, false) == SessionRoute::kStream);
    CHECK(route_upstream_message(n, 1, false, false, false) == SessionRoute::kStream);
  }
}

#include "mcp_sse_bridge/reopen_backoff.h"

TEST_CASE("reopen backoff: at once, then doubling from `first` up to the cap, with jitter below") {
  using std::chrono::milliseconds;
  msb::ReopenBackoff b(milliseconds(500), milliseconds(15000));
  CHECK(b.next(0.0) == milliseconds(0));
  CHECK(b.next(0.0) == milliseconds(500));
  CHECK(b.next(0.0) == milliseconds(1000));
  CHECK(b.next(0.0) == milliseconds(2000));
  CHECK(b.next(0.0) == milliseconds(4000));
  CHECK(b.next(0.0) == milliseconds(8000));
  CHECK(b.next(0.0) == milliseconds(15000));
  for (int i = 0; i < 100; ++i) CHECK(b.next(0.0) == milliseconds(15000));  // no overflow
  auto j = b.next(0.999);
  CHECK(j >= milliseconds(12000));
  CHECK(j < milliseconds(15000));
  CHECK(b.next(5.0) >= milliseconds(12000));  // a bad draw is clamped
  b.reset();
  CHECK(b.attempts() == 0);
  CHECK(b.next(0.5) == milliseconds(0));  // after a success, the next drop re-opens at once
  CHECK(b.next(0.5) == milliseconds(450));
}
