// Metrics: counters land in fixed label sets (a hostile client cannot grow
// them) and render in the Prometheus text format.
#include <doctest/doctest.h>

#include <string>

#include "mcp_sse_bridge/metrics.h"
#include "mcp_sse_bridge/upstream_stats.h"

using namespace msb;

namespace {
bool has(const std::string& text, const std::string& line) { return text.find("\n" + line + "\n") != std::string::npos; }
}  // namespace

TEST_CASE("metrics: requests by method and outcome, unknown methods as other, failures by kind and phase") {
  Metrics m;
  m.call_done("tools/call", nullptr, false, 0.002);
  m.call_done("tools/call", nullptr, false, 0.004);
  BridgeError e = make_error(ErrorKind::kUnreachable, Phase::kConnect, "x");
  m.call_done("tools/call", &e, false, 0.5);
  m.call_done("tools/call", nullptr, true, 0.1);
  for (int i = 0; i < 50; ++i) m.call_done("made/up/" + std::to_string(i), nullptr, false, 0.001);
  m.http_refused(413);
  m.http_refused(413);
  m.http_refused(9999);  // out of range: ignored, never a crash
  m.stale_initialize();
  ForwarderStats f;
  PoolStats p;
  f.retries = 3;
  p.hits = 7;
  std::string out = m.render(MetricsGauges{2, 5, 1, true, false}, f, p);
  CHECK(has(out, R"(mcp_bridge_requests_total{method="tools/call",outcome="ok"} 2)"));
  CHECK(has(out, R"(mcp_bridge_requests_total{method="tools/call",outcome="upstream_unreachable"} 1)"));
  CHECK(has(out, R"(mcp_bridge_requests_total{method="tools/call",outcome="cancelled"} 1)"));
  CHECK(has(out, R"(mcp_bridge_requests_total{method="other",outcome="ok"} 50)"));
  CHECK(has(out, R"(mcp_bridge_failures_total{kind="upstream_unreachable",phase="connect"} 1)"));
  CHECK(has(out, R"(mcp_bridge_http_refused_total{code="413"} 2)"));
  CHECK(has(out, "mcp_bridge_initialize_stale_total 1"));
  CHECK(has(out, "mcp_bridge_retries_total 3"));
  CHECK(has(out, "mcp_bridge_pool_hits_total 7"));
  CHECK(has(out, "mcp_bridge_inflight_calls 2"));
  CHECK(has(out, "mcp_bridge_ready 1"));
  CHECK(has(out, R"(mcp_bridge_request_duration_seconds_count{method="tools/call"} 4)"));
  CHECK(has(out, R"(mcp_bridge_request_duration_seconds_bucket{method="tools/call",le="0.005"} 2)"));
  CHECK(has(out, R"(mcp_bridge_request_duration_seconds_bucket{method="tools/call",le="+Inf"} 4)"));
  CHECK(out.find("made/up") == std::string::npos);
}
