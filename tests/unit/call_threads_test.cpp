// CallThreads: threads start only when needed, up to the bound; work beyond
// it queues (never dropped, never run twice); shutdown runs what is queued.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "mcp_sse_bridge/call_threads.h"

using namespace std::chrono_literals;

TEST_CASE("call threads: grow on demand up to the bound, queue beyond it, run everything once") {
  msb::CallThreads pool(4, 1, std::chrono::seconds(30));
  CHECK(pool.live() == 0);  // nothing started before work arrives
  std::atomic<int> running{0}, peak{0}, done{0};
  std::atomic<bool> release{false};
  for (int i = 0; i < 10; ++i)
    pool.post([&] {
      int now = ++running;
      int p = peak.load();
      while (now > p && !peak.compare_exchange_weak(p, now)) {
      }
      for (int k = 0; k < 500 && !release.load(); ++k) std::this_thread::sleep_for(2ms);
      --running;
      ++done;
    });
  for (int i = 0; i < 200 && running.load() < 4; ++i) std::this_thread::sleep_for(5ms);
  CHECK(running.load() == 4);
  CHECK(pool.live() == 4);
  release = true;
  for (int i = 0; i < 400 && done.load() < 10; ++i) std::this_thread::sleep_for(5ms);
  CHECK(done.load() == 10);
  CHECK(peak.load() == 4);
}

TEST_CASE("call threads: shutdown runs queued work and joins; later posts are dropped") {
  std::atomic<int> done{0};
  {
    msb::CallThreads pool(1, 1, std::chrono::seconds(30));
    for (int i = 0; i < 5; ++i)
      pool.post([&] {
        std::this_thread::sleep_for(5ms);
        ++done;
      });
    pool.shutdown();
    CHECK(done.load() == 5);
    pool.post([&] { ++done; });
  }
  CHECK(done.load() == 5);
}
