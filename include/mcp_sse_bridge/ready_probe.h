// ReadyProbe: the answer of /readyz: does the upstream's SSE endpoint answer
// with an `endpoint` event? A probe opens one upstream session
// (UpstreamChannel, on the event loop of the request that started it), waits
// for `endpoint` within --connect-timeout and then --endpoint-timeout (5 s at
// most in all), and closes it. At most one probe runs at a time in the
// process and its answer is cached for --ready-probe-interval, so that
// probes cannot load the upstream; a change of state is logged.
//
// Thread-safe. Nothing here blocks a loop: a request waiting for a probe is
// a callback run later on its own loop.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"

namespace msb {

namespace asio = boost::asio;
class EventLoop;
class UpstreamChannel;

class ReadyProbe {
 public:
  struct Answer {
    bool ready = false;
    std::string reason;  // "upstream answered with an endpoint", or why not
  };
  using Done = std::function<void(Answer)>;

  // `headers`: the static upstream headers (credentials the upstream may
  // need), full "Name: value\r\n" lines. `cfg` must outlive the probe.
  ReadyProbe(const Config& cfg, std::string headers);
  // Destroy only after the loops that ran probes are stopped and destroyed
  // (an abandoned probe's coroutine still refers to this object).
  ~ReadyProbe() = default;
  ReadyProbe(const ReadyProbe&) = delete;
  ReadyProbe& operator=(const ReadyProbe&) = delete;

  // On `loop`'s thread; returns at once. `done` runs once, on that thread:
  //  - at once with the cached answer while it is younger than
  //    --ready-probe-interval;
  //  - at once with the previous answer while a probe is under way (on any
  //    loop), as before the probe;
  //  - otherwise when a probe ends: the one under way (before the first
  //    answer, everyone who asks waits for it), or one this call starts on
  //    `loop`. Bounded by the probe's own deadlines.
  // After stop(): at once, not ready.
  void check(EventLoop& loop, Done done);

  // The last answer (false before the first), without probing.
  bool last();

  // Aborts a probe under way (its waiters are answered not ready) and waits
  // until it has ended, at most 2 s; later checks answer not ready. Call it
  // from outside the loops while they still run (FrontServer::stop).
  void stop();

  // One probe, on the calling coroutine's executor: opens an upstream
  // session, waits for `endpoint` (bounded as above), closes it. `*running`
  // (when given) points at the session while it is open, so that the loop's
  // thread can abort it. Never throws.
  static asio::awaitable<Answer> probe_once(const Config& cfg, std::string headers,
                                            UpstreamChannel** running = nullptr);

 private:
  struct Waiter {
    EventLoop* loop;
    Done done;
  };
  asio::awaitable<void> run(EventLoop* loop);
  void finish(EventLoop* loop, Answer a);

  const Config& cfg_;
  const std::string headers_;
  std::mutex mu_;
  std::condition_variable ended_;  // a probe ended (for stop())
  bool probed_ = false, probing_ = false, ready_ = false, logged_ = false, stopped_ = false;
  std::string reason_ = "not probed yet";
  Clock::time_point last_{};
  std::vector<Waiter> waiters_;         // waiting for the probe under way
  EventLoop* probe_loop_ = nullptr;     // where the probe under way runs
  UpstreamChannel* channel_ = nullptr;  // its session; touched on probe_loop_'s thread only
};

}  // namespace msb
