// EventLoop / DeadlineList: timers of the loop, in expiry order, disarmable,
// re-armable from their own callback, and cheap (one Asio timer per list).
#include <doctest/doctest.h>

#include <sched.h>

#include <boost/asio/post.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <vector>

#include "mcp_sse_bridge/event_loop.h"

using namespace std::chrono_literals;

namespace {

struct Probe {
  msb::TimerEntry e;
  std::vector<int>* fired = nullptr;
  int id = 0;
  static void fire(msb::TimerEntry* t) {
    auto* p = static_cast<Probe*>(t->owner);
    p->fired->push_back(p->id);
  }
};

// Runs f on the loop's thread and waits (bounded) for it.
template <class F>
void on_loop(msb::EventLoop& l, F f) {
  std::promise<void> done;
  boost::asio::post(l.io(), [&] {
    f();
    done.set_value();
  });
  REQUIRE(done.get_future().wait_for(5s) == std::future_status::ready);
}

}  // namespace

TEST_CASE("deadline lists: entries fire in order after their duration; a disarmed one never fires") {
  msb::EventLoops loops(1);
  loops.start();
  auto& l = loops.at(0);
  std::vector<int> fired;
  Probe a, b, c;
  a.fired = b.fired = c.fired = &fired;
  a.id = 1, b.id = 2, c.id = 3;
  auto t0 = msb::Clock::now();
  on_loop(l, [&] {
    auto& list = l.deadlines(100ms);
    list.arm(a.e, Probe::fire, &a);
    list.arm(b.e, Probe::fire, &b);
    list.arm(c.e, Probe::fire, &c);
    b.e.cancel();
  });
  // Bounded wait for the two that must fire.
  for (int i = 0; i < 200; ++i) {
    std::vector<int> seen;
    on_loop(l, [&] { seen = fired; });
    if (seen.size() >= 2) break;
    std::this_thread::sleep_for(10ms);
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(msb::Clock::now() - t0).count();
  std::this_thread::sleep_for(150ms);  // b must stay silent
  std::vector<int> seen;
  on_loop(l, [&] { seen = fired; });
  CHECK(seen == std::vector<int>{1, 3});
  CHECK(ms >= 95);
  CHECK(ms < 2000);
  CHECK_FALSE(a.e.linked);
}

TEST_CASE("deadline lists: re-arming moves an entry to the back; two lengths run independently") {
  msb::EventLoops loops(1);
  loops.start();
  auto& l = loops.at(0);
  std::vector<int> fired;
  Probe early, rearmed, longer;
  early.fired = rearmed.fired = longer.fired = &fired;
  early.id = 1, rearmed.id = 2, longer.id = 3;
  on_loop(l, [&] {
    l.deadlines(80ms).arm(rearmed.e, Probe::fire, &rearmed);
    l.deadlines(80ms).arm(early.e, Probe::fire, &early);
    l.deadlines(300ms).arm(longer.e, Probe::fire, &longer);
  });
  std::this_thread::sleep_for(40ms);
  // Re-armed 40 ms later: fires after `early`.
  on_loop(l, [&] { l.deadlines(80ms).arm(rearmed.e, Probe::fire, &rearmed); });
  for (int i = 0; i < 300; ++i) {
    std::vector<int> seen;
    on_loop(l, [&] { seen = fired; });
    if (seen.size() >= 3) break;
    std::this_thread::sleep_for(10ms);
  }
  std::vector<int> seen;
  on_loop(l, [&] { seen = fired; });
  CHECK(seen == std::vector<int>{1, 2, 3});
}

TEST_CASE("deadline lists: a callback may re-arm its own entry (a periodic keepalive)") {
  msb::EventLoops loops(1);
  loops.start();
  auto& l = loops.at(0);
  struct Ticker {
    msb::TimerEntry e;
    msb::DeadlineList* list = nullptr;
    std::atomic<int> n{0};
    static void fire(msb::TimerEntry* t) {
      auto* k = static_cast<Ticker*>(t->owner);
      if (++k->n < 5) k->list->arm(k->e, fire, k);
    }
  } k;
  on_loop(l, [&] {
    k.list = &l.deadlines(20ms);
    k.list->arm(k.e, Ticker::fire, &k);
  });
  for (int i = 0; i < 300 && k.n.load() < 5; ++i) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(60ms);
  CHECK(k.n.load() == 5);
}

TEST_CASE("event loops: stop() returns promptly with timers still armed") {
  auto loops = std::make_unique<msb::EventLoops>(2);
  loops->start();
  Probe p;
  std::vector<int> fired;
  p.fired = &fired;
  on_loop(loops->at(1), [&] { loops->at(1).deadlines(1h).arm(p.e, Probe::fire, &p); });
  CHECK(loops->at(0).in_loop() == false);
  auto t0 = msb::Clock::now();
  loops->stop();
  CHECK(msb::Clock::now() - t0 < 2s);
  loops.reset();  // the list unlinks what it still holds
  CHECK_FALSE(p.e.linked);
  CHECK(fired.empty());
}

TEST_CASE("cpu.max: whole CPUs a cgroup v2 quota grants, rounded up; no limit is 0") {
  CHECK(msb::cpu_max_cores("max 100000\n") == 0);
  CHECK(msb::cpu_max_cores("100000 100000\n") == 1);
  CHECK(msb::cpu_max_cores("150000 100000") == 2);
  CHECK(msb::cpu_max_cores("50000 100000") == 1);
  CHECK(msb::cpu_max_cores("400000 100000\n") == 4);
  // Unreadable or hostile text is no limit, never a crash or 0 loops.
  CHECK(msb::cpu_max_cores("") == 0);
  CHECK(msb::cpu_max_cores("garbage") == 0);
  CHECK(msb::cpu_max_cores("100000 0") == 0);
  CHECK(msb::cpu_max_cores("-5 100000") == 0);
  CHECK(msb::cpu_max_cores("99999999999999999999 1") == 0);
  CHECK(msb::cpu_max_cores("9000000000 1") == 4096);
}

TEST_CASE("default loop count: the CPUs this process may run on, not the machine's cores") {
  // On a thread pinned to one CPU (taskset, a cpuset), one loop; restored after.
  cpu_set_t before;
  CPU_ZERO(&before);
  REQUIRE(::sched_getaffinity(0, sizeof before, &before) == 0);
  int cpu = -1;
  for (int c = 0; c < CPU_SETSIZE && cpu < 0; ++c)
    if (CPU_ISSET(c, &before)) cpu = c;
  REQUIRE(cpu >= 0);
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  struct Restore {  // the test thread's mask comes back however the case ends
    cpu_set_t mask;
    ~Restore() { ::sched_setaffinity(0, sizeof mask, &mask); }
  } restore{before};
  REQUIRE(::sched_setaffinity(0, sizeof one, &one) == 0);
  std::string why;
  int pinned = msb::default_loop_count(&why);
  REQUIRE(::sched_setaffinity(0, sizeof before, &before) == 0);
  CHECK(pinned == 1);
  CHECK(why.find("1 CPU in the affinity mask") != std::string::npos);
  // Unpinned: as many as the mask allows (or the cgroup quota, if lower), at least 1.
  int all = msb::default_loop_count();
  CHECK(all >= 1);
  CHECK(all <= CPU_COUNT(&before));
}
