#include "mcp_sse_bridge/ready_probe.h"

#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/upstream_session.h"

namespace msb {

std::pair<bool, std::string> ReadyProbe::check() {
  std::unique_lock lk(mu_);
  auto now = Clock::now();
  if (probed_ && now - last_ < cfg_.ready_probe_interval) return {ready_, reason_};
  if (probing_) return {ready_, probed_ ? reason_ : "first probe in progress"};
  probing_ = true;
  lk.unlock();
  auto [ok, why] = probe();
  lk.lock();
  probing_ = false;
  probed_ = true;
  last_ = Clock::now();
  if (ok != ready_ || !logged_) {
    if (ok) log::info("upstream reachable: ready");
    else log::warn("upstream not reachable: not ready", {{"cause", why}});
    logged_ = true;
  }
  ready_ = ok;
  reason_ = why;
  return {ready_, reason_};
}

bool ReadyProbe::last() {
  std::lock_guard lk(mu_);
  return ready_;
}

std::pair<bool, std::string> ReadyProbe::probe() {
  UpstreamSession up(cfg_.upstream, headers_);
  auto outer = Deadline::after(
      std::min<Duration>(cfg_.upstream.connect_timeout + cfg_.upstream.endpoint_timeout, Duration(5000)));
  auto st = up.open(Deadline::earliest(Deadline::after(cfg_.upstream.connect_timeout), outer),
                    cfg_.upstream.endpoint_timeout, outer);
  if (!st) return {false, st.error().message()};
  return {true, "upstream answered with an endpoint"};
}

}  // namespace msb
