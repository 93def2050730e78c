// CallThreads: where blocking work of the client side runs, off the event
// loops: today only the /readyz probe (the blocking upstream client). A
// thread is started only when no idle one can take the work (up to `max`,
// beyond that work queues), and threads above `keep` exit after `idle_exit`
// without work. Calls do not come here: they are coroutines on the loops.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace msb {

class CallThreads {
 public:
  CallThreads(size_t max, size_t keep, std::chrono::seconds idle_exit);
  ~CallThreads();  // shutdown()
  CallThreads(const CallThreads&) = delete;
  CallThreads& operator=(const CallThreads&) = delete;

  // Never blocks. Dropped after shutdown().
  void post(std::function<void()> fn);
  // Runs what is queued, then joins every thread.
  void shutdown();
  size_t live() const;

 private:
  void work();
  void retire_self_locked();
  void reap_locked();

  const size_t max_, keep_;
  const std::chrono::seconds idle_exit_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  std::vector<std::thread> done_;
  size_t live_ = 0, idle_ = 0;
  bool shut_ = false;
};

}  // namespace msb
