#include "mcp_sse_bridge/reopen_backoff.h"

#include <algorithm>

namespace msb {

Millis ReopenBackoff::next(double jitter01) {
  int n = attempts_++;
  if (n == 0) return Millis::zero();
  Millis d = first_;
  for (int i = 1; i < n && d < cap_; ++i) d *= 2;
  d = std::min(d, cap_);
  jitter01 = std::clamp(jitter01, 0.0, 1.0);
  return std::chrono::duration_cast<Millis>(d * (1.0 - 0.2 * jitter01));
}

}  // namespace msb
