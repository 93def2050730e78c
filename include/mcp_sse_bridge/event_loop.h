// Event loops: a small fixed set of threads, each running one Asio
// io_context that owns the sockets and timers handed to it. A connection and
// everything it waits on live on one loop, so its work never crosses a thread.
//
// Deadlines are timers of the loop, kept in one DeadlineList per timeout
// length: every entry of a list has the same duration, so the list is sorted
// by expiry and arming appends in O(1); one Asio timer per list is re-armed
// only when it fires. Arming and disarming therefore cost no syscall, which
// matters on machines where syscalls are slow (#12).
//
// This is one of the few headers that pull in Asio; the MCP layers above it
// do not include it.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mcp_sse_bridge/deadline.h"

namespace msb {

namespace asio = boost::asio;

class DeadlineList;

// One pending deadline, embedded in its owner. Not copyable while linked.
struct TimerEntry {
  // Disarms it, whichever list holds it (no-op when not armed).
  void cancel();
  DeadlineList* list = nullptr;
  Clock::time_point at{};
  TimerEntry* prev = nullptr;
  TimerEntry* next = nullptr;
  bool linked = false;
  void (*fire)(TimerEntry*) = nullptr;  // runs on the loop thread, entry already unlinked
  void* owner = nullptr;
};

// Entries of one duration on one loop. Loop thread only.
class DeadlineList {
 public:
  DeadlineList(asio::io_context& io, Clock::duration d);
  ~DeadlineList();
  DeadlineList(const DeadlineList&) = delete;
  DeadlineList& operator=(const DeadlineList&) = delete;

  // (Re)arms `e` to fire after this list's duration from now.
  void arm(TimerEntry& e, void (*fire)(TimerEntry*), void* owner);
  void disarm(TimerEntry& e);  // e must be in this list (or in none)
  Clock::duration duration() const { return dur_; }

 private:
  void rearm();

  asio::steady_timer timer_;
  Clock::duration dur_;
  TimerEntry* head_ = nullptr;
  TimerEntry* tail_ = nullptr;
  bool armed_ = false;
  Clock::time_point armed_at_{};
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// One loop: an io_context run by one thread, plus its deadline lists.
class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  asio::io_context& io() { return io_; }
  // The list for duration d (created on first use). Loop thread only.
  DeadlineList& deadlines(Clock::duration d);
  // True on this loop's own thread.
  bool in_loop() const { return std::this_thread::get_id() == thread_id_.load(); }
  void set_thread(std::thread::id id) { thread_id_.store(id); }

 private:
  // Every socket and timer of a loop is used on the loop's thread only (work
  // for another loop is posted to it), so the per-descriptor mutexes of Asio's
  // reactor are skipped (UNSAFE_IO); the scheduler keeps its lock for those
  // posts from other threads.
  asio::io_context io_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  std::map<Clock::duration::rep, std::unique_ptr<DeadlineList>> lists_;
  std::atomic<std::thread::id> thread_id_{};
};

// The fixed set of loops and their threads.
class EventLoops {
 public:
  explicit EventLoops(int n);  // n >= 1
  ~EventLoops();               // stop() + join()
  int size() const { return static_cast<int>(loops_.size()); }
  EventLoop& at(int i) { return *loops_[static_cast<size_t>(i)]; }
  // Starts one thread per loop; each runs until stop(). Threads block every
  // signal (the process's signal thread handles them).
  void start();
  // Stops every loop (pending handlers are abandoned) and joins the threads.
  void stop();

 private:
  std::vector<std::unique_ptr<EventLoop>> loops_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>>> guards_;
};

// The number of loops to run by default: the CPUs this process may use, at
// least 1 — the CPUs in its affinity mask (taskset, a Kubernetes cpuset),
// capped by its cgroup v2 CPU quota (`cpu.max` of its cgroup and each parent,
// rounded up: a pod limited to 1.5 CPUs runs 2 loops), not the machine's core
// count. `why`, when given, receives how it was found.
int default_loop_count(std::string* why = nullptr);

// Whole CPUs a cgroup v2 `cpu.max` line grants, rounded up ("150000 100000"
// -> 2); 0 when it sets no limit ("max 100000") or cannot be read.
int cpu_max_cores(std::string_view cpu_max);

}  // namespace msb
