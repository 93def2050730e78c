// LoopBalancer: which event loop a client connection lives on.
//
// Packed while load is light, spread under load (#12). Connections handed to
// loops by the kernel's SO_REUSEPORT hash land half on each loop, and then
// each loop sleeps and wakes between its own calls: measured at 4,000 calls/s
// on 2 cores, that costs 8-10 us of CPU per call over one loop serving them
// all. nginx avoids it the same way (EPOLLEXCLUSIVE wakes the idle worker,
// which at light load is always the same one). So:
//   - a new connection goes to loop 0 while loop 0 is below kSpreadAt busy,
//     else to the least busy loop;
//   - a loop at or above kSpreadAt busy hands idle connections (at their next
//     request) to the least busy loop when that one is clearly less busy,
//     enough of them to halve the gap per tick;
//   - when all loops together are below kPackBelow busy, the other loops hand
//     their idle connections back to loop 0.
// The two thresholds are far apart so that packing never causes spreading
// (kPackBelow < kSpreadAt) and spreading never causes packing (after a
// spread the loops' sum stays above kSpreadAt > kPackBelow).
//
// "Busy" is the share of wall time the loop's thread spent on the CPU (user +
// kernel) over the last tick (kTick), measured by the loop itself.
//
// Thread safety: tick(i, ...) and should_move(i) run on loop i's thread only;
// the busy figures are atomics read by every loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace msb {

class LoopBalancer {
 public:
  static constexpr int kSpreadAt = 700;   // per mille of one core
  static constexpr int kPackBelow = 450;  // per mille, all loops together
  static constexpr int kMargin = 250;     // a target loop must be this much less busy
  static constexpr std::chrono::milliseconds kTick{100};

  explicit LoopBalancer(int loops);

  int loops() const { return static_cast<int>(loops_.size()); }
  // Loop i's thread, every kTick: records its busy share (per mille) and
  // decides how many of its `connections` should move, and where.
  void tick(int i, int busy_permille, int connections);
  // Where a connection accepted on any loop should live.
  int place() const;
  // Loop i's thread, when a request arrives on an idle connection of loop i
  // that could move: the loop it should move to, or -1 to stay.
  int should_move(int i);
  int busy(int i) const { return loops_[static_cast<size_t>(i)]->busy.load(std::memory_order_relaxed); }

  // Measures the calling thread's busy share since the last call (per mille;
  // the first call returns 0): the time it ran over the time it could have
  // run, i.e. wall time less the time it waited, runnable, for a CPU
  // (/proc/thread-self/schedstat). That is its demand whatever else runs:
  // a loop that other processes keep from running but that runs whenever it
  // can reads busy, as a bottleneck should, and a loop that merely waits its
  // turn on a shared machine does not (counting the waits as busy spread the
  // benchmark's connections over both loops, at 8-10 us per call). Without
  // schedstat: CPU time (CLOCK_THREAD_CPUTIME_ID) over wall time. Construct,
  // sample and destroy on that thread.
  struct Meter {
    Meter();
    ~Meter();
    Meter(const Meter&) = delete;
    Meter& operator=(const Meter&) = delete;
    int sample();
    bool counts_waits() const { return fd >= 0; }
    int64_t used_ns = -1;
    int64_t waited_ns = 0;
    int64_t wall_ns = 0;
    int fd = -1;  // /proc/thread-self/schedstat, or -1
  };


 private:
  struct Loop {
    std::atomic<int> busy{0};
    int quota = 0;    // loop thread only: connections still to move this tick
    int target = -1;  // loop thread only
  };
  std::vector<std::unique_ptr<Loop>> loops_;
};

}  // namespace msb
