#include "mcp_sse_bridge/event_loop.h"

#include <signal.h>

namespace msb {

DeadlineList::DeadlineList(asio::io_context& io, Clock::duration d) : timer_(io), dur_(d) {}

DeadlineList::~DeadlineList() {
  *alive_ = false;
  for (TimerEntry* e = head_; e;) {
    TimerEntry* n = e->next;
    e->linked = false;
    e->prev = e->next = nullptr;
    e = n;
  }
}

void TimerEntry::cancel() {
  if (linked && list) list->disarm(*this);
}

void DeadlineList::arm(TimerEntry& e, void (*fire)(TimerEntry*), void* owner) {
  e.cancel();
  e.list = this;
  e.at = Clock::now() + dur_;
  e.fire = fire;
  e.owner = owner;
  e.prev = tail_;
  e.next = nullptr;
  e.linked = true;
  (tail_ ? tail_->next : head_) = &e;
  tail_ = &e;
  if (!armed_) rearm();
}

void DeadlineList::disarm(TimerEntry& e) {
  if (!e.linked || e.list != this) return;
  (e.prev ? e.prev->next : head_) = e.next;
  (e.next ? e.next->prev : tail_) = e.prev;
  e.prev = e.next = nullptr;
  e.linked = false;
}

// The timer is armed for the head's expiry; entries disarmed meanwhile do not
// re-arm it (when it fires early it just re-arms for the new head).
void DeadlineList::rearm() {
  armed_ = true;
  armed_at_ = head_->at;
  timer_.expires_at(armed_at_);
  timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (!*alive || ec == asio::error::operation_aborted) return;
    armed_ = false;
    auto now = Clock::now();
    // Bounded: each iteration unlinks one entry; an entry re-armed by its
    // own fire() goes to the tail with a later expiry.
    while (head_ && head_->at <= now) {
      TimerEntry* e = head_;
      disarm(*e);
      e->fire(e);
      if (!*alive) return;
    }
    if (head_ && !armed_) rearm();
  });
}

EventLoop::EventLoop() = default;
EventLoop::~EventLoop() { lists_.clear(); }

DeadlineList& EventLoop::deadlines(Clock::duration d) {
  auto& slot = lists_[d.count()];
  if (!slot) slot = std::make_unique<DeadlineList>(io_, d);
  return *slot;
}

EventLoops::EventLoops(int n) {
  if (n < 1) n = 1;
  for (int i = 0; i < n; ++i) loops_.push_back(std::make_unique<EventLoop>());
}

EventLoops::~EventLoops() { stop(); }

void EventLoops::start() {
  if (!threads_.empty()) return;
  for (auto& l : loops_) {
    guards_.push_back(std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
        l->io().get_executor()));
    EventLoop* loop = l.get();
    threads_.emplace_back([loop] {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, nullptr);
      loop->set_thread(std::this_thread::get_id());
      loop->io().run();
    });
  }
}

void EventLoops::stop() {
  guards_.clear();
  for (auto& l : loops_) l->io().stop();
  for (auto& t : threads_) {
    if (!t.joinable()) continue;
    if (t.get_id() == std::this_thread::get_id()) t.detach();  // stopped from its own loop
    else t.join();
  }
  threads_.clear();
}

int default_loop_count() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace msb
