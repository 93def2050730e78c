#include "mcp_sse_bridge/router.h"

#include "mcp_sse_bridge/error.h"

namespace msb {

namespace {

HttpResponse text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/plain";
  r.body = std::move(body);
  return r;
}

}  // namespace

bool Router::authorized(bool protect, const HttpRequest& req, Exchange& ex) {
  if (!protect) return true;
  auto r = d_.policy.check_auth(req.headers);
  if (!r) return true;
  ex.respond(d_.refusals.answer(*r));
  return false;
}

void Router::handle(std::shared_ptr<Exchange> ex, HttpRequest&& req) {
  if (req.path == d_.cfg.path) return d_.mcp.handle(std::move(ex), std::move(req));
  bool get = req.method == "GET" || req.method == "HEAD";
  if (get && req.path == "/healthz") {
    if (!authorized(d_.cfg.auth_health, req, *ex)) return;
    return ex->respond(text(200, "ok\n"));
  }
  if (get && req.path == "/readyz") {
    if (!authorized(d_.cfg.auth_health, req, *ex)) return;
    if (d_.life.draining.load()) return ex->respond(text(503, "not ready: draining (shutting down)\n"));
    // Answered now from the cache, or on this loop when the probe ends.
    EventLoop& loop = ex->loop();
    d_.ready.check(loop, [ex = std::move(ex)](ReadyProbe::Answer a) {
      ex->respond(text(a.ready ? 200 : 503,
                       std::string(a.ready ? "ready: " : "not ready: ") + a.reason + "\n"));
    });
    return;
  }
  if (get && !d_.cfg.metrics_path.empty() && req.path == d_.cfg.metrics_path) {
    if (!authorized(d_.cfg.auth_metrics, req, *ex)) return;
    MetricsGauges g = d_.gauges();
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = d_.metrics.render(g, d_.forwarder.stats(), d_.forwarder.pool_stats());
    return ex->respond(std::move(r));
  }
  d_.refusals.note(404, "no such path: " + req.path.substr(0, 200));
  ex->respond(text(404, "not found: " + req.path.substr(0, 200) + "\n"));
}

HttpResponse Router::refused(int status, std::string_view why) {
  if (status == 413)
    return d_.refusals.answer(Rejection{413, -32600,
                                        "Request body larger than --max-body-size (" +
                                            std::to_string(d_.cfg.max_body_size) + " bytes)"});
  if (status == 431)
    return d_.refusals.answer(Rejection{431, -32600, "Request header fields too large"});
  if (status == 429)
    return d_.refusals.answer(Rejection{429, -32600,
                                        "Too many pipelined requests: more than 16, or 1 MiB of bodies, waiting "
                                        "behind the request being answered"});
  return d_.refusals.answer(Rejection{status, -32600, "Bad Request: " + std::string(why)});
}

}  // namespace msb
