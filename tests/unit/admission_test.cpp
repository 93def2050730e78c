// Admission and the call registry: caps are all-or-nothing and released
// exactly; cancellation and routed answers reach the right call.
#include <doctest/doctest.h>

#include "mcp_sse_bridge/admission.h"
#include "mcp_sse_bridge/call_registry.h"
#include "mcp_sse_bridge/metrics.h"
#include "mcp_sse_bridge/upstream_stats.h"

TEST_CASE("admission: --max-inflight is all-or-nothing for a batch, and released exactly") {
  msb::Admission a(3, 2);
  CHECK(a.admit(2));
  CHECK_FALSE(a.admit(2));  // would be 4 > 3: nothing taken
  CHECK(a.inflight() == 2);
  CHECK(a.admit(1));
  CHECK_FALSE(a.admit(1));
  a.release(3);
  CHECK(a.inflight() == 0);
  auto r = a.inflight_refusal();
  CHECK(r.status == 503);
  CHECK(r.message.find("--max-inflight") != std::string::npos);
  REQUIRE(r.headers.size() == 1);
  CHECK(r.headers[0].first == "Retry-After");
}

TEST_CASE("admission: per-session caps are per session") {
  msb::Admission a(100, 2);
  CHECK(a.admit_session("s1", 2));
  CHECK_FALSE(a.admit_session("s1", 1));
  CHECK(a.admit_session("s2", 1));
  a.release_session("s1");
  CHECK(a.admit_session("s1", 1));
  CHECK(a.session_refusal().status == 429);
  // A batch larger than the cap is refused whole, on a new session too, and
  // leaves nothing counted behind.
  CHECK_FALSE(a.admit_session("s3", 3));
  CHECK(a.admit_session("s3", 2));
  a.release_session("s3");
  a.release_session("s3");
  CHECK(a.admit_session("s3", 2));
}

TEST_CASE("refusals: the answer carries the id and the status is counted") {
  msb::Metrics m;
  msb::Refusals r(m);
  auto res = r.answer(msb::Rejection{503, -32000, "busy", {{"Retry-After", "1"}}}, "\"abc\"");
  CHECK(res.status == 503);
  CHECK(res.content_type == "application/json");
  CHECK(res.body.find(R"("id":"abc")") != std::string::npos);
  CHECK(res.body.find("-32000") != std::string::npos);
  msb::MetricsGauges g;
  msb::ForwarderStats fs;
  msb::PoolStats ps;
  std::string text = m.render(g, fs, ps);
  CHECK(text.find(R"(mcp_bridge_http_refused_total{code="503"} 1)") != std::string::npos);
}

TEST_CASE("call registry: cancel and route reach the registered call only") {
  msb::CallRegistry reg;
  auto a = std::make_shared<msb::CallMailbox>();
  auto b = std::make_shared<msb::CallMailbox>();
  reg.add_call("s\n1", a);
  reg.add_call("s\n2", b);
  CHECK(reg.cancel("s\n1"));
  CHECK(a->cancelled.load());
  CHECK_FALSE(b->cancelled.load());
  CHECK_FALSE(reg.cancel("other\n1"));
  reg.add_route("s\nfwd-1", b);
  msb::Message m;
  m.id = "\"fwd-1\"";
  CHECK(reg.route("s\nfwd-1", m));
  auto got = b->pop();
  REQUIRE(got);
  CHECK(got->id == "\"fwd-1\"");
  reg.remove_route("s\nfwd-1");
  CHECK_FALSE(reg.route("s\nfwd-1", m));
  // A stale removal (another call took the key since) leaves the new one.
  reg.add_call("s\n1", b);
  reg.remove_call("s\n1", a);
  CHECK(reg.cancel("s\n1"));
}
