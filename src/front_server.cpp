#include "mcp_sse_bridge/front_server.h"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "mcp_sse_bridge/admission.h"
#include "mcp_sse_bridge/client_connection.h"
#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/listener.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/metrics.h"
#include "mcp_sse_bridge/ready_probe.h"
#include "mcp_sse_bridge/request_policy.h"
#include "mcp_sse_bridge/router.h"
#include "mcp_sse_bridge/session_handler.h"
#include "mcp_sse_bridge/session_token.h"

namespace msb {

namespace {

ConnLimits limits_of(const Config& c) {
  ConnLimits l;
  l.read_timeout = c.client_read_timeout;
  l.write_timeout = c.client_write_timeout;
  l.idle_timeout = c.client_idle_timeout;
  l.max_body_size = c.max_body_size;
  // One answer may be queued whole (sliced, but at once) for a slow client.
  l.max_queued = c.upstream.max_message_size + (16ull << 20);
  return l;
}

}  // namespace

struct FrontServer::Impl {
  Config cfg;
  Forwarder forwarder;
  SessionTokens tokens;
  RequestPolicy policy;
  Metrics metrics;
  Lifecycle life;
  Admission admission;
  Refusals refusals;
  // /readyz: probes on the loops, one at a time. Declared before the loops:
  // a probe abandoned by a stopped loop refers to it until the loop is gone.
  ReadyProbe ready;
  InitializeCache init_cache;  // upstream initialize results: stale initialize, server/discover
  StatelessHandler stateless;  // the 2026-07-28 era
  SessionHandler mcp;
  Router router;
  ConnLimits limits;
  std::string loops_from;  // how the default loop count was found; filled by `loops`' initializer
  EventLoops loops;
  Listener listener;

  std::mutex mu;
  std::condition_variable cv;
  bool started = false, stopped = false, bound = false;

  explicit Impl(Config c)
      : cfg(std::move(c)),
        forwarder(cfg.upstream),
        tokens(cfg.session_secret, cfg.max_revoked_sessions),
        policy(cfg),
        admission(cfg.max_inflight, cfg.max_calls_per_session),
        refusals(metrics),
        ready(cfg, policy.static_headers()),
        stateless(StatelessHandler::Deps{cfg, forwarder, metrics, admission, refusals, life,
                                         init_cache}),
        mcp(SessionHandler::Deps{cfg, forwarder, tokens, policy, metrics, admission, refusals, life,
                                 init_cache, stateless}),
        router(Router::Deps{cfg, mcp, policy, refusals, metrics, ready, life, forwarder,
                            [this] { return gauges(); }}),
        limits(limits_of(cfg)),
        loops(cfg.loop_threads > 0 ? cfg.loop_threads : default_loop_count(&loops_from)),
        listener(loops, limits, cfg.max_connections, router, &metrics, cfg.tls_ctx, cfg.loop_packing) {}

  MetricsGauges gauges() {
    MetricsGauges g;
    g.inflight = admission.inflight();
    g.connections = listener.connections();
    for (int i = 0; i < loops.size(); ++i) g.loop_connections.push_back(listener.connections_on(i));
    g.connection_moves = listener.moves();
    g.upstream_sessions = static_cast<int64_t>(Forwarder::open_sessions());
    g.ready = !life.draining.load() && ready.last();
    g.draining = life.draining.load();
    return g;
  }
};

FrontServer::FrontServer(Config cfg) : impl_(std::make_unique<Impl>(std::move(cfg))) {}

FrontServer::~FrontServer() { stop(); }

bool FrontServer::bind(std::string* why) {
  auto& i = *impl_;
  std::lock_guard lk(i.mu);
  if (i.bound) return true;
  i.bound = i.listener.bind(i.cfg.listen_host, i.cfg.listen_port, why);
  return i.bound;
}

int FrontServer::port() const { return impl_->listener.port(); }

std::string FrontServer::loops() const {
  const auto& i = *impl_;
  return std::to_string(i.loops.size()) + " (" + (i.loops_from.empty() ? "--loop-threads" : i.loops_from) + ")";
}

bool FrontServer::start(std::string* why) {
  if (!bind(why)) return false;
  auto& i = *impl_;
  std::lock_guard lk(i.mu);
  if (i.started || i.stopped) return !i.stopped;
  i.started = true;
  i.listener.start();
  i.loops.start();
  return true;
}

void FrontServer::run() {
  std::string why;
  if (!start(&why)) {
    log::error("cannot serve", {{"cause", why}});
    return;
  }
  auto& i = *impl_;
  std::unique_lock lk(i.mu);
  i.cv.wait(lk, [&] { return i.stopped; });
}

int FrontServer::drain(Duration timeout) {
  auto& i = *impl_;
  if (i.life.draining.exchange(true)) return 0;
  log::info("draining: stopped accepting; waiting for in-flight calls",
            {{"inflight", std::to_string(i.admission.inflight())},
             {"drain_timeout", format_duration(timeout)}});
  i.listener.stop_accepting();
  // Open connections stay: a request arriving on one is answered (with
  // shutting_down and Connection: close) rather than cut.
  auto d = Deadline::after(timeout);
  while (i.admission.inflight() > 0 && !d.reached()) std::this_thread::sleep_for(Millis(20));
  int left = std::max(0, i.admission.inflight());
  if (left > 0)
    log::warn("drain timeout: answering the remaining calls with shutting_down",
              {{"calls", std::to_string(left)}});
  else
    log::info("drained: no call in progress");
  stop();
  return left;
}

bool FrontServer::draining() const { return impl_->life.draining.load(); }

void FrontServer::stop() {
  auto& i = *impl_;
  {
    std::lock_guard lk(i.mu);
    if (i.stopped) return;
    i.stopped = true;
  }
  i.life.stopping.store(true);
  i.life.draining.store(true);
  i.mcp.wake_all();  // running calls end now and answer shutting_down
  i.stateless.wake_all();
  i.stateless.stop_parked();  // calls parked for an MRTR retry are cancelled upstream
  i.stateless.stop_listen();  // subscriptions/listen streams end, their upstream sessions close
  i.mcp.stop_sessions();  // session mode: upstream sessions and GET streams end (bounded)
  if (i.started) {
    i.listener.stop_accepting();
    i.listener.drain();  // idle connections close now, busy ones after their answer
    // Bounded: connections get a moment to write their last answers, then
    // every one is closed, so that no call waits on a client that stopped
    // reading or sending.
    auto grace = Deadline::after(Millis(2000));
    while (i.listener.connections() > 0 && !grace.reached()) std::this_thread::sleep_for(Millis(20));
    i.listener.close_all();
  }
  i.forwarder.stop();  // the warm pools close on their loops
  i.ready.stop();      // a probe under way is aborted on its loop
  i.loops.stop();
  i.cv.notify_all();
}

const Forwarder& FrontServer::forwarder() const { return impl_->forwarder; }
const Config& FrontServer::config() const { return impl_->cfg; }

}  // namespace msb
