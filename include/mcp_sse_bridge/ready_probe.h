// /readyz: is the upstream's SSE endpoint answering with an `endpoint`
// event? Probed at most once per --ready-probe-interval (concurrent checks
// share the cached answer), so probes cannot load the upstream. check()
// blocks while it probes (at most 5 s): call it off the event loops.
// Thread-safe.
#pragma once

#include <mutex>
#include <string>
#include <utility>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"

namespace msb {

class ReadyProbe {
 public:
  // `headers`: the static upstream headers (credentials the upstream may need).
  ReadyProbe(const Config& cfg, std::string headers) : cfg_(cfg), headers_(std::move(headers)) {}
  // Returns ready + a reason; probes when the cached answer is stale.
  std::pair<bool, std::string> check();
  // The last answer, without probing.
  bool last();

 private:
  std::pair<bool, std::string> probe();

  const Config& cfg_;
  const std::string headers_;
  std::mutex mu_;
  bool probed_ = false, probing_ = false, ready_ = false, logged_ = false;
  std::string reason_ = "not probed yet";
  Clock::time_point last_{};
};

}  // namespace msb
