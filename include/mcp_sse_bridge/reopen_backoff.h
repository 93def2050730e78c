// ReopenBackoff: when to try again to re-open an upstream session that is
// held for listeners (session mode: a client session with a GET stream or a
// resource subscription; later the listeners of #15) after it dropped. The
// first attempt goes at once, the next after `first`, then doubling up to
// `cap`, each shortened by up to 20 % jitter so that sessions dropped together
// (an upstream restart) do not reconnect in lockstep. Pure (the jitter is
// passed in) and unit-tested; one owner, not thread-safe.
#pragma once

#include "mcp_sse_bridge/deadline.h"

namespace msb {

class ReopenBackoff {
 public:
  ReopenBackoff(Millis first, Millis cap) : first_(first), cap_(cap) {}
  // The wait before the next attempt; `jitter01` in [0, 1) (a random draw).
  Millis next(double jitter01);
  // After a session that stayed up: the next drop re-opens at once again.
  void reset() { attempts_ = 0; }
  int attempts() const { return attempts_; }

 private:
  Millis first_, cap_;
  int attempts_ = 0;  // waits handed out since the last reset
};

}  // namespace msb
