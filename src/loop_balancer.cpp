#include "mcp_sse_bridge/loop_balancer.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

namespace msb {

LoopBalancer::LoopBalancer(int loops) {
  for (int i = 0; i < std::max(loops, 1); ++i) loops_.push_back(std::make_unique<Loop>());
}

void LoopBalancer::tick(int i, int busy_permille, int connections) {
  Loop& me = *loops_[static_cast<size_t>(i)];
  me.busy.store(busy_permille, std::memory_order_relaxed);
  me.quota = 0;
  me.target = -1;
  if (loops() == 1 || connections <= 0) return;
  int sum = 0, least = -1;
  for (int j = 0; j < loops(); ++j) {
    int b = busy(j);
    sum += b;
    if (j != i && (least < 0 || b < busy(least))) least = j;
  }
  if (i != 0 && sum < kPackBelow) {  // light load: back to loop 0
    me.quota = connections;
    me.target = 0;
    return;
  }
  if (busy_permille >= kSpreadAt && busy(least) + kMargin <= busy_permille) {
    // Enough connections to halve the gap, if load follows connections.
    int gap = busy_permille - busy(least);
    me.quota = std::max(1, static_cast<int>(static_cast<int64_t>(connections) * gap / (2 * busy_permille)));
    me.target = least;
  }
}

int LoopBalancer::place() const {
  if (loops() == 1 || busy(0) < kSpreadAt) return 0;
  int least = 0;
  for (int j = 1; j < loops(); ++j)
    if (busy(j) < busy(least)) least = j;
  return least;
}

int LoopBalancer::should_move(int i) {
  Loop& me = *loops_[static_cast<size_t>(i)];
  if (me.quota <= 0) return -1;
  --me.quota;
  return me.target;
}

LoopBalancer::Meter::Meter() { fd = ::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC); }

LoopBalancer::Meter::~Meter() {
  if (fd >= 0) ::close(fd);
}

namespace {

// schedstat: "<ns on a CPU> <ns runnable, waiting for one> <timeslices>".
bool read_schedstat(int fd, int64_t* ran, int64_t* waited) {
  char buf[96];
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return false;
  buf[n] = '\0';
  char* end = nullptr;
  long long a = std::strtoll(buf, &end, 10);
  if (end == buf) return false;
  char* end2 = nullptr;
  long long b = std::strtoll(end, &end2, 10);
  if (end2 == end || a < 0 || b < 0) return false;
  *ran = a;
  *waited = b;
  return true;
}

}  // namespace

int LoopBalancer::Meter::sample() {
  int64_t used = -1, waited = 0;
  if (fd >= 0) {
    int64_t ran = 0;
    if (read_schedstat(fd, &ran, &waited)) {
      used = ran;
    } else {
      ::close(fd);  // (not expected) from now on: CPU time over wall time
      fd = -1;
      used_ns = -1;
    }
  }
  if (used < 0) {
    timespec cpu{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
    used = cpu.tv_sec * 1'000'000'000LL + cpu.tv_nsec;
  }
  timespec wall{};
  clock_gettime(CLOCK_MONOTONIC, &wall);
  int64_t w = wall.tv_sec * 1'000'000'000LL + wall.tv_nsec;
  int out = 0;
  if (used_ns >= 0 && w > wall_ns) {
    // The time it could have run: wall time less the time it waited for a CPU.
    int64_t could = std::max<int64_t>((w - wall_ns) - (waited - waited_ns), 1);
    out = static_cast<int>(std::clamp<int64_t>((used - used_ns) * 1000 / could, 0, 1000));
  }
  used_ns = used;
  waited_ns = waited;
  wall_ns = w;
  return out;
}

}  // namespace msb
