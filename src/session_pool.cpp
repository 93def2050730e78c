#include "mcp_sse_bridge/session_pool.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/upstream_session.h"

namespace msb {

std::string PoolKey::id() const {
  std::string k;
  k.reserve(client_session.size() + init_params.size() + headers.size() +
            (log_level ? log_level->size() : 0) + 4);
  k.append(client_session).push_back('\0');
  k.append(init_params).push_back('\0');
  k.append(headers).push_back('\0');
  if (log_level) k.append(*log_level);
  return k;
}

SessionPool::SessionPool(const PoolConfig& cfg, Opener opener)
    : cfg_(cfg), opener_(std::move(opener)) {
  if (!enabled()) return;
  stop_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  for (int i = 0; i < std::max(1, cfg_.fillers); ++i) fillers_.emplace_back([this] { filler_loop(); });
}

SessionPool::~SessionPool() {
  stop();
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void SessionPool::stop() {
  std::vector<std::unique_ptr<UpstreamSession>> doomed;
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& [id, b] : buckets_)
      for (auto& e : b.idle) doomed.push_back(std::move(e.session));
    buckets_.clear();
    total_idle_ = 0;
    stats_.idle = 0;
  }
  if (stop_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof one);
  }
  cv_.notify_all();
  for (auto& t : fillers_)
    if (t.joinable()) t.join();
  doomed.clear();  // closes their connections
}

std::unique_ptr<UpstreamSession> SessionPool::take(const PoolKey& key) {
  if (!enabled()) return nullptr;
  std::unique_ptr<UpstreamSession> out;
  // Candidates are taken out under the lock and checked outside it: the
  // check reads their sockets, and no other call may wait on that.
  for (int tries = 0; tries < 64 && !out; ++tries) {
    std::unique_ptr<UpstreamSession> cand;
    {
      std::lock_guard lk(mu_);
      auto it = buckets_.find(key.id());
      auto now = Clock::now();
      while (it != buckets_.end() && !it->second.idle.empty()) {
        // Most recently ready first: under light load a few sessions stay hot
        // and the rest age out.
        Entry e = std::move(it->second.idle.back());
        it->second.idle.pop_back();
        --total_idle_;
        if (now - e.ready_at > cfg_.max_idle_age) {
          stats_.expired.fetch_add(1, std::memory_order_relaxed);
          continue;  // e.session closes at the end of this iteration (a socket close, no wait)
        }
        cand = std::move(e.session);
        break;
      }
      stats_.idle = total_idle_;
    }
    if (!cand) break;
    // Non-blocking: reads only what already arrived.
    if (!cand->refresh_idle()) {
      stats_.dead.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    out = std::move(cand);
  }
  (out ? stats_.hits : stats_.misses).fetch_add(1, std::memory_order_relaxed);
  return out;
}

void SessionPool::give_back(const PoolKey& key, std::unique_ptr<UpstreamSession> s) {
  if (!enabled() || !s) return;
  std::lock_guard lk(mu_);
  if (stopping_ || total_idle_ >= cfg_.size) return;  // s closes as it goes
  auto [it, inserted] = buckets_.try_emplace(key.id());
  if (inserted) it->second.key = key;
  it->second.idle.push_back(Entry{std::move(s), Clock::now()});
  ++total_idle_;
  stats_.reused.fetch_add(1, std::memory_order_relaxed);
  stats_.idle = total_idle_;
}

void SessionPool::want(const PoolKey& key) {
  if (!enabled()) return;
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    if (total_idle_ + total_pending_ >= cfg_.size) return;
    std::string id = key.id();
    auto [it, inserted] = buckets_.try_emplace(id);
    if (inserted) it->second.key = key;
    ++it->second.pending;
    ++total_pending_;
    work_.push_back(std::move(id));
  }
  cv_.notify_one();
}

void SessionPool::expire_locked(Clock::time_point now,
                                std::vector<std::unique_ptr<UpstreamSession>>& out) {
  for (auto it = buckets_.begin(); it != buckets_.end();) {
    auto& q = it->second.idle;
    while (!q.empty() && now - q.front().ready_at > cfg_.max_idle_age) {
      out.push_back(std::move(q.front().session));
      q.pop_front();
      --total_idle_;
      stats_.expired.fetch_add(1, std::memory_order_relaxed);
    }
    if (q.empty() && it->second.pending == 0) {
      it = buckets_.erase(it);
    } else {
      ++it;
    }
  }
  stats_.idle = total_idle_;
}

void SessionPool::filler_loop() {
  for (;;) {
    std::string id;
    PoolKey key;
    std::vector<std::unique_ptr<UpstreamSession>> doomed;
    {
      std::unique_lock lk(mu_);
      // Wake at least every second to expire idle sessions.
      cv_.wait_for(lk, std::chrono::seconds(1), [&] { return stopping_ || !work_.empty(); });
      if (stopping_) return;
      expire_locked(Clock::now(), doomed);
      if (work_.empty()) continue;
      id = std::move(work_.front());
      work_.pop_front();
      auto it = buckets_.find(id);
      if (it == buckets_.end()) {  // dropped meanwhile
        --total_pending_;
        continue;
      }
      key = it->second.key;
    }
    doomed.clear();
    auto s = opener_(key, stop_fd_);  // blocks, bounded by the upstream deadlines
    std::lock_guard lk(mu_);
    --total_pending_;
    auto it = buckets_.find(id);
    if (it != buckets_.end()) --it->second.pending;
    if (!s) {
      stats_.open_failed.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (stopping_ || it == buckets_.end()) continue;  // s closes as it goes out of scope
    stats_.opened.fetch_add(1, std::memory_order_relaxed);
    it->second.idle.push_back(Entry{std::move(s), Clock::now()});
    ++total_idle_;
    stats_.idle = total_idle_;
  }
}

}  // namespace msb
