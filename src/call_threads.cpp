#include "mcp_sse_bridge/call_threads.h"

#include <signal.h>

namespace msb {

CallThreads::CallThreads(size_t max, size_t keep, std::chrono::seconds idle_exit)
    : max_(max < 1 ? 1 : max), keep_(keep), idle_exit_(idle_exit) {}

CallThreads::~CallThreads() { shutdown(); }

void CallThreads::post(std::function<void()> fn) {
  std::lock_guard lk(mu_);
  if (shut_) return;
  jobs_.push_back(std::move(fn));
  // Idle threads already woken for earlier jobs still count as idle until
  // they take the lock: compare against the queue, not against zero.
  if (jobs_.size() > idle_ && live_ < max_) {
    ++live_;
    reap_locked();
    threads_.emplace_back([this] {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, nullptr);
      work();
    });
  }
  cv_.notify_one();
}

void CallThreads::shutdown() {
  std::vector<std::thread> all;
  {
    std::lock_guard lk(mu_);
    if (shut_ && threads_.empty() && done_.empty()) return;
    shut_ = true;
    cv_.notify_all();
    all.swap(threads_);
    for (auto& t : done_) all.push_back(std::move(t));
    done_.clear();
  }
  // Calls end by their own deadlines, and at once when the bridge stops
  // (their mailboxes are woken and report the stop).
  for (auto& t : all) {
    if (!t.joinable()) continue;
    if (t.get_id() == std::this_thread::get_id()) t.detach();  // shut down from one of its own
    else t.join();
  }
}

size_t CallThreads::live() const {
  std::lock_guard lk(mu_);
  return live_;
}

void CallThreads::work() {
  std::unique_lock lk(mu_);
  for (;;) {
    ++idle_;
    bool got = cv_.wait_for(lk, idle_exit_, [&] { return shut_ || !jobs_.empty(); });
    --idle_;
    if (!jobs_.empty()) {
      auto fn = std::move(jobs_.front());
      jobs_.pop_front();
      lk.unlock();
      fn();
      lk.lock();
      continue;
    }
    if (shut_ || (!got && live_ > keep_)) break;
  }
  --live_;
  retire_self_locked();
}

void CallThreads::retire_self_locked() {
  auto self = std::this_thread::get_id();
  for (auto it = threads_.begin(); it != threads_.end(); ++it)
    if (it->get_id() == self) {
      done_.push_back(std::move(*it));
      threads_.erase(it);
      break;
    }
}

void CallThreads::reap_locked() {
  for (auto& t : done_)
    if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
  done_.clear();
}

}  // namespace msb
