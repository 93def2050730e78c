// Deadline: one absolute point in time, created at the edge and passed down.
//
// Every wait in the bridge takes a Deadline (never a bare duration), so the
// bound of an outer operation also bounds everything below it. A Deadline is a
// value: it is never re-armed in place; a wider or narrower one is a new value.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace msb {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

class Deadline {
 public:
  // A deadline that never passes (only for configuration "0 = off").
  static Deadline never() { return Deadline(Clock::time_point::max()); }
  static Deadline after(Clock::duration d) {
    if (d <= Clock::duration::zero()) return Deadline(Clock::now());
    return Deadline(Clock::now() + d);
  }
  static Deadline at(Clock::time_point t) { return Deadline(t); }

  bool reached() const { return Clock::now() >= when_; }
  bool is_never() const { return when_ == Clock::time_point::max(); }
  Clock::time_point when() const { return when_; }

  // Time left, never negative.
  Clock::duration left() const {
    if (is_never()) return Clock::duration::max();
    auto now = Clock::now();
    return now >= when_ ? Clock::duration::zero() : when_ - now;
  }
  // Time left in whole milliseconds for poll(2), rounded up so that a
  // sub-millisecond remainder does not become a busy loop; capped at cap_ms.
  int poll_ms(int cap_ms = 1 << 30) const {
    if (is_never()) return cap_ms;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(left()).count();
    int64_t ms = (us + 999) / 1000;
    return static_cast<int>(std::min<int64_t>(ms, cap_ms));
  }

  // The earlier of two deadlines.
  static Deadline earliest(Deadline a, Deadline b) { return a.when_ <= b.when_ ? a : b; }
  // d, narrowed to `bound` from now when bound is set (a zero bound = off,
  // as configured timeouts use it).
  static Deadline within(Deadline d, Clock::duration bound) {
    return bound > Clock::duration::zero() ? earliest(d, after(bound)) : d;
  }

  friend bool operator<(const Deadline& a, const Deadline& b) { return a.when_ < b.when_; }
  friend bool operator==(const Deadline& a, const Deadline& b) { return a.when_ == b.when_; }

 private:
  explicit Deadline(Clock::time_point t) : when_(t) {}
  Clock::time_point when_;
};

inline int64_t elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<Millis>(Clock::now() - since).count();
}

}  // namespace msb
