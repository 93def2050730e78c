// Counters of the upstream side (calls, sessions, the warm pool), kept
// apart from the classes that update them so that metrics, at the bottom of
// the layers, can read them without including those classes.
#pragma once

#include <atomic>
#include <cstdint>

#include "mcp_sse_bridge/error.h"

namespace msb {

// Counters since start (for logs and tests).
struct ForwarderStats {
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<uint64_t> retries{0};
  std::atomic<uint64_t> pings_sent{0};
  std::atomic<uint64_t> cancelled{0};
  std::atomic<uint64_t> server_requests{0};  // upstream requests forwarded to clients
  std::atomic<uint64_t> sessions_opened{0};  // upstream sessions set up (calls and pool)
  std::atomic<uint64_t> session_failures[kPhaseCount] = {};  // set-ups failed, by phase
  // The upstream left a pipelined POST unanswered without saying it would
  // close (a server that drops pipelined requests): cold sessions stop
  // pipelining notifications/initialized for the rest of the process.
  std::atomic<bool> pipelining_off{false};
};

struct PoolStats {
  std::atomic<uint64_t> hits{0};       // calls served by a warm session
  std::atomic<uint64_t> misses{0};     // calls that found none and went cold
  std::atomic<uint64_t> opened{0};     // sessions made ready by the fillers
  std::atomic<uint64_t> open_failed{0};
  std::atomic<uint64_t> dead{0};       // found dead at take() or while idle
  std::atomic<uint64_t> expired{0};    // idle longer than max_idle_age
  std::atomic<uint64_t> reused{0};     // sessions given back after a clean call
  std::atomic<uint64_t> idle{0};       // ready now
  std::atomic<int64_t> keys{0};        // pool keys with a bucket now (emptied ones are swept)
};

}  // namespace msb
