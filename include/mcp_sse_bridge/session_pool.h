// SessionPool: upstream sessions opened and initialized ahead of the calls
// that will use them (the warm path), so a call pays one POST and its reply
// instead of connect + `endpoint` + initialize round trips.
//
// Sessions are keyed by everything that makes them differ: the client
// session (state some servers keep per SSE session never crosses clients),
// the client's initialize params, every header sent upstream (forwarded credentials
// included: a session is never shared across credentials) and the replayed
// log level. A session serves one call at a time; with reuse on, it returns
// to the pool after a clean call. A session that died while idle, or sat idle
// longer than max_idle_age, is discarded, never handed out.
//
// Filler threads (a fixed number) open sessions in the background; take()
// only does non-blocking checks. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/upstream_stats.h"

namespace msb {

class UpstreamSession;

struct PoolKey {
  std::string client_session;            // Mcp-Session-Id: reuse never crosses client sessions
  std::string init_params;               // compact JSON
  std::string headers;                   // "Name: value\r\n" lines sent upstream
  std::optional<std::string> log_level;  // logging/setLevel params to replay
  std::string id() const;                // the map key: all of the above
};


class SessionPool {
 public:
  // Opens and initializes a session for `key`; returns nullptr on failure.
  // Called on filler threads; `stop_fd` (an eventfd) becomes readable when
  // the pool stops, and must wake the opener's waits.
  using Opener = std::function<std::unique_ptr<UpstreamSession>(const PoolKey& key, int stop_fd)>;

  SessionPool(const PoolConfig& cfg, Opener opener);
  ~SessionPool();  // stop()
  SessionPool(const SessionPool&) = delete;
  SessionPool& operator=(const SessionPool&) = delete;

  // A ready, live session for key, or nullptr. Never blocks on the network.
  std::unique_ptr<UpstreamSession> take(const PoolKey& key);
  // Returns a session after a clean call (--pool-reuse): it waits, idle, for
  // the next call on the same key, within max_idle_age. Dropped when full.
  void give_back(const PoolKey& key, std::unique_ptr<UpstreamSession> s);
  // Asks the fillers for one more ready session for key (bounded by the
  // per-key and total limits). Cheap; call once per call on that key.
  void want(const PoolKey& key);
  // Stops the fillers (waking their waits) and closes every idle session.
  void stop();

  const PoolStats& stats() const { return stats_; }
  bool enabled() const { return cfg_.size > 0; }

 private:
  struct Entry {
    std::unique_ptr<UpstreamSession> session;
    Clock::time_point ready_at;
  };
  struct Bucket {
    PoolKey key;
    std::deque<Entry> idle;
    int pending = 0;  // refills queued or in progress
  };

  void filler_loop();
  void expire_locked(Clock::time_point now, std::vector<std::unique_ptr<UpstreamSession>>& out);

  PoolConfig cfg_;
  Opener opener_;
  PoolStats stats_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<std::string, Bucket> buckets_;
  std::deque<std::string> work_;  // bucket ids to refill, one entry per session
  size_t total_idle_ = 0;
  size_t total_pending_ = 0;
  bool stopping_ = false;
  int stop_fd_ = -1;
  std::vector<std::thread> fillers_;
};

}  // namespace msb
