// Router: which code answers a client request, by path: the MCP endpoint
// (--path) goes to the session-era handler; /healthz, /readyz and /metrics
// are answered here; anything else is a 404. Also the answer to requests the
// connection layer refused before they were whole. Loop thread; never blocks
// (/readyz answers from ReadyProbe's cache, or later, when its probe on the
// loop ends).
#pragma once

#include <functional>
#include <memory>

#include "mcp_sse_bridge/admission.h"
#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/http_exchange.h"
#include "mcp_sse_bridge/metrics.h"
#include "mcp_sse_bridge/ready_probe.h"
#include "mcp_sse_bridge/request_policy.h"
#include "mcp_sse_bridge/session_handler.h"

namespace msb {

class Router : public RequestHandler {
 public:
  struct Deps {
    const Config& cfg;
    SessionHandler& mcp;
    const RequestPolicy& policy;
    Refusals& refusals;
    Metrics& metrics;
    ReadyProbe& ready;
    const Lifecycle& life;
    const Forwarder& forwarder;
    std::function<MetricsGauges()> gauges;
  };
  explicit Router(Deps d) : d_(std::move(d)) {}

  void handle(std::shared_ptr<Exchange> ex, HttpRequest&& req) override;
  HttpResponse refused(int status, std::string_view why) override;
  bool draining() const override { return d_.life.draining.load(); }

 private:
  bool authorized(bool protect, const HttpRequest& req, Exchange& ex);
  Deps d_;
};

}  // namespace msb
