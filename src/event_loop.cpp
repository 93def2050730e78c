#include "mcp_sse_bridge/event_loop.h"

#include <sched.h>
#include <signal.h>

#include <charconv>
#include <fstream>
#include <string>

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

int cpu_max_cores(std::string_view cpu_max) {
  // "<quota> <period>" in microseconds, or "max <period>".
  auto sp = cpu_max.find(' ');
  if (sp == std::string_view::npos) return 0;
  auto number = [](std::string_view t, long long& v) {
    while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.remove_suffix(1);
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    return ec == std::errc() && end == t.data() + t.size() && v > 0;
  };
  long long quota = 0, period = 0;
  if (!number(cpu_max.substr(0, sp), quota) || !number(cpu_max.substr(sp + 1), period)) return 0;
  long long cores = quota / period + (quota % period != 0);
  return cores > 4096 ? 4096 : static_cast<int>(cores);
}

namespace {

// The smallest cgroup v2 CPU quota on the path from this process's cgroup to
// the root (0: none). cgroup v1 and unreadable files count as no limit.
int cgroup_quota_cores() {
  std::ifstream f("/proc/self/cgroup");
  std::string line, path;
  while (std::getline(f, line))
    if (line.rfind("0::", 0) == 0) path = line.substr(3);
  if (path.empty() || path[0] != '/' || path.find("..") != std::string::npos) return 0;
  int best = 0;
  for (int depth = 0; depth < 64; ++depth) {  // bounded walk to the root
    std::ifstream m("/sys/fs/cgroup" + path + (path == "/" ? "" : "/") + "cpu.max");
    std::string text;
    if (m && std::getline(m, text)) {
      int c = cpu_max_cores(text);
      if (c > 0 && (best == 0 || c < best)) best = c;
    }
    if (path == "/") break;
    auto slash = path.rfind('/');
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
  return best;
}

}  // namespace

int default_loop_count(std::string* why) {
  int n = 0;
  std::string how;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
  if (n > 0) {
    how = std::to_string(n) + (n == 1 ? " CPU" : " CPUs") + " in the affinity mask";
  } else {
    n = static_cast<int>(std::thread::hardware_concurrency());
    how = std::to_string(n) + " cores";
  }
  int quota = cgroup_quota_cores();
  if (quota > 0 && (n <= 0 || quota < n)) {
    n = quota;
    how += ", cgroup CPU quota " + std::to_string(quota);
  }
  if (n < 1) n = 1;
  if (why) *why = how;
  return n;
}

}  // namespace msb
