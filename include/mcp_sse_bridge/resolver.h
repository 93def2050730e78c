// Name resolution for upstream connections. getaddrinfo has no timeout, so
// lookups run on a small fixed pool of threads (never one thread per lookup)
// and the caller waits only until its deadline, never past
// --resolve-timeout. Answers are cached for a short TTL (failures for a
// shorter one), so a burst of calls costs one lookup. Numeric addresses never
// touch the pool. Thread-safe; one instance per process (shared()).
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mcp_sse_bridge/deadline.h"

namespace msb {

using Millis = std::chrono::milliseconds;

struct Resolved {
  std::vector<sockaddr_storage> addrs;
  std::vector<socklen_t> lens;
  std::string error;       // set when addrs is empty
  bool timed_out = false;  // the wait ended at the deadline or --resolve-timeout
};

class Resolver {
 public:
  struct Options {
    Millis timeout{2000};     // --resolve-timeout: longest wait for one lookup
    Millis cache_ttl{30000};  // --resolve-cache-ttl: answers kept this long (0 = no cache)
    int threads = 2;            // lookups at once
    size_t max_pending = 64;    // queued lookups; more fail at once ("resolver busy")
  };

  explicit Resolver(Options o);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Resolves host:port, waiting until `d` or the resolve timeout, whichever
  // comes first. Never blocks past them.
  Resolved resolve(const std::string& host, int port, Deadline d);

  // The process-wide resolver.
  static Resolver& shared();
  // Sets the timeout and cache TTL (thread-safe; the last call wins).
  void set_limits(Millis timeout, Millis cache_ttl);

  uint64_t lookups() const;  // getaddrinfo calls made (for tests)

 private:
  // Shared with the lookup threads, which may outlive the Resolver while a
  // getaddrinfo they started is still running.
  struct State;
  static void work(std::shared_ptr<State> st);
  const int threads_;
  const size_t max_pending_;
  std::shared_ptr<State> st_;
};

}  // namespace msb
