// Prometheus metrics of one bridge (text exposition format 0.0.4). Counters
// are lock-free atomics in fixed label sets (methods outside the known MCP
// set count as "other"), so a hostile client cannot grow the label space.
#pragma once

#include <array>
#include <atomic>
#include <vector>
#include <cstdint>
#include <string>
#include <string_view>

#include "mcp_sse_bridge/error.h"

namespace msb {

struct ForwarderStats;
struct PoolStats;

// Fixed-bucket histogram (seconds).
class Histogram {
 public:
  static constexpr std::array<double, 15> kBounds = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                     1,     2.5,   5,    10,    30,   60,  300};
  void observe(double seconds);
  // Appends "<name>_bucket{<labels>le=...} n" lines plus _sum and _count.
  void render(std::string& out, std::string_view name, std::string_view labels) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_us_{0};
};

// Gauges read at scrape time.
struct MetricsGauges {
  int64_t inflight = 0;
  int64_t connections = 0;
  int64_t upstream_sessions = 0;
  bool ready = false;
  bool draining = false;
  std::vector<int64_t> loop_connections;  // per event loop
  uint64_t connection_moves = 0;          // between loops (LoopBalancer)
};

class Metrics {
 public:
  static constexpr std::array<std::string_view, 14> kMethods = {
      "initialize",     "ping",           "tools/list",          "tools/call",
      "resources/list", "resources/read", "resources/templates/list", "resources/subscribe",
      "prompts/list",   "prompts/get",    "completion/complete", "logging/setLevel",
      "resources/unsubscribe", "other"};  // "other" last
  static constexpr int kOutcomes = kErrorKindCount + 2;  // ok, cancelled, every error kind

  // One finished client request: outcome "ok", "cancelled" or the error kind.
  void call_done(std::string_view method, const BridgeError* error, bool cancelled, double seconds);
  // A request refused at the HTTP level (401, 403, 406, 413, 415, 429, 503...).
  void http_refused(int status);
  void keepalive_sent() { keepalives_.fetch_add(1, std::memory_order_relaxed); }
  void connection_refused() { connections_refused_.fetch_add(1, std::memory_order_relaxed); }
  void slow_client_cut() { slow_clients_.fetch_add(1, std::memory_order_relaxed); }
  void tls_handshake_failed() { tls_failures_.fetch_add(1, std::memory_order_relaxed); }
  // An initialize answered from the last upstream result while the upstream
  // was unreachable (--serve-stale-initialize).
  void stale_initialize() { stale_initializes_.fetch_add(1, std::memory_order_relaxed); }
  // Session mode: a client session got a fresh upstream session where this
  // process held none (server-side session state lost).
  void session_state_lost() { sessions_state_lost_.fetch_add(1, std::memory_order_relaxed); }
  // Session mode: an upstream message for no call dropped (no GET stream open).
  void unattributed_dropped() { unattributed_dropped_.fetch_add(1, std::memory_order_relaxed); }

  std::string render(const MetricsGauges& g, const ForwarderStats& f, const PoolStats& p) const;

 private:
  static int method_index(std::string_view m);
  std::array<std::array<std::atomic<uint64_t>, kOutcomes>, kMethods.size()> requests_{};
  std::array<Histogram, kMethods.size()> latency_{};
  Histogram time_to_error_;
  std::array<std::array<std::atomic<uint64_t>, kPhaseCount>, kErrorKindCount> failures_{};
  std::array<std::atomic<uint64_t>, 600> http_refused_{};
  std::atomic<uint64_t> keepalives_{0};
  std::atomic<uint64_t> connections_refused_{0};
  std::atomic<uint64_t> slow_clients_{0};
  std::atomic<uint64_t> tls_failures_{0};
  std::atomic<uint64_t> stale_initializes_{0};
  std::atomic<uint64_t> sessions_state_lost_{0};
  std::atomic<uint64_t> unattributed_dropped_{0};
};

}  // namespace msb
