// ParkedCalls: the bounded, take-once registry of calls waiting for their
// client's MRTR retry.
#include <doctest/doctest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/mrtr_sink.h"
#include "mcp_sse_bridge/parked_calls.h"

using namespace msb;

namespace {

struct Fixture {
  Fixture() { loops.start(); }
  ~Fixture() {
    // Sinks die before the loop that owns their timers.
    made.clear();
    loops.stop();
  }
  std::shared_ptr<MrtrSink> sink() {
    auto b = RequestBinding::of("tools/call", R"({"name":"t"})");
    made.push_back(MrtrSink::create(loops.at(0), parked, sealer, *b, {}));
    return made.back();
  }
  EventLoops loops{1};
  ParkedCalls parked{3};
  RequestStateSealer sealer{"0123456789abcdef0123456789abcdef", "r"};
  std::vector<std::shared_ptr<MrtrSink>> made;
};

}  // namespace

TEST_CASE("parked calls: bounded by max_parked, keys unguessable and distinct") {
  Fixture f;
  std::set<std::string> keys;
  for (int i = 0; i < 3; ++i) {
    auto k = f.parked.park(f.sink());
    REQUIRE(k.size() == 32);
    CHECK(k.find_first_not_of("0123456789abcdef") == std::string::npos);
    keys.insert(k);
  }
  CHECK(keys.size() == 3);
  CHECK(f.parked.size() == 3);
  CHECK(f.parked.park(f.sink()).empty());
  CHECK(f.parked.stats().refused.load() == 1);
  // Taking one frees a place.
  CHECK(f.parked.take(*keys.begin()));
  CHECK_FALSE(f.parked.park(f.sink()).empty());
  CHECK(f.parked.stats().parked.load() == 4);
}

TEST_CASE("parked calls: a key is taken once; unknown keys find nothing") {
  Fixture f;
  auto s = f.sink();
  auto k = f.parked.park(s);
  CHECK_FALSE(f.parked.take("00000000000000000000000000000000"));
  CHECK_FALSE(f.parked.take(""));
  CHECK(f.parked.take(k) == s);
  CHECK_FALSE(f.parked.take(k));
  CHECK_FALSE(f.parked.take_expired(k));
  auto k2 = f.parked.park(s);
  CHECK(f.parked.take_expired(k2) == s);
  CHECK_FALSE(f.parked.take(k2));
  CHECK(f.parked.stats().resumed.load() == 1);
  CHECK(f.parked.stats().expired.load() == 1);
  CHECK(f.parked.size() == 0);
}

TEST_CASE("parked calls: racing takes from many threads: exactly one wins") {
  Fixture f;
  for (int round = 0; round < 50; ++round) {
    auto k = f.parked.park(f.sink());
    std::atomic<int> wins{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 6; ++t)
      ts.emplace_back([&, t] {
        auto c = t % 2 ? f.parked.take(k) : f.parked.take_expired(k);
        if (c) wins++;
      });
    for (auto& t : ts) t.join();
    CHECK(wins.load() == 1);
  }
  CHECK(f.parked.size() == 0);
}

TEST_CASE("parked calls: stop takes every call and refuses more") {
  Fixture f;
  f.parked.park(f.sink());
  f.parked.park(f.sink());
  auto all = f.parked.stop();
  CHECK(all.size() == 2);
  CHECK(f.parked.size() == 0);
  CHECK(f.parked.park(f.sink()).empty());
}
