// Resolver: lookups run on a fixed pool, at most one per name at a time,
// answers are cached, numeric hosts never touch the pool.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "mcp_sse_bridge/resolver.h"

using namespace msb;

TEST_CASE("resolver: numeric hosts need no lookup; names are looked up once and cached") {
  Resolver r(Resolver::Options{});
  auto n = r.resolve("127.0.0.1", 80, Deadline::after(Millis(1000)));
  CHECK(n.addrs.size() == 1);
  CHECK(r.lookups() == 0);
  auto a = r.resolve("localhost", 80, Deadline::after(Millis(2000)));
  REQUIRE_FALSE(a.addrs.empty());
  auto b = r.resolve("localhost", 80, Deadline::after(Millis(2000)));
  CHECK(b.addrs.size() == a.addrs.size());
  CHECK(r.lookups() == 1);
}

TEST_CASE("resolver: a burst for one name costs one lookup, on a bounded number of threads") {
  Resolver r(Resolver::Options{Millis(2000), Millis(30000), 2, 64});
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int i = 0; i < 32; ++i)
    ts.emplace_back([&] {
      if (!r.resolve("localhost", 443, Deadline::after(Millis(3000))).addrs.empty()) ++ok;
    });
  for (auto& t : ts) t.join();
  CHECK(ok == 32);
  CHECK(r.lookups() == 1);
}

TEST_CASE("resolver: with no cache every call looks up; the caller's deadline bounds the wait") {
  Resolver r(Resolver::Options{Millis(2000), Millis(0), 2, 64});
  (void)r.resolve("localhost", 80, Deadline::after(Millis(2000)));
  (void)r.resolve("localhost", 80, Deadline::after(Millis(2000)));
  CHECK(r.lookups() == 2);
  // A deadline already passed: no wait beyond it (the answer may still
  // have come in the instant the wait released its lock). Names that need
  // DNS are not used here: tests send nothing beyond loopback.
  auto t0 = Clock::now();
  auto x = r.resolve("localhost", 80, Deadline::after(Millis(0)));
  CHECK(Clock::now() - t0 < Millis(200));
  CHECK((x.timed_out || !x.addrs.empty()));
}
