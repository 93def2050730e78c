#include "mcp_sse_bridge/ready_probe.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>

#include <algorithm>
#include <chrono>
#include <utility>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/upstream_channel.h"

namespace msb {

ReadyProbe::ReadyProbe(const Config& cfg, std::string headers)
    : cfg_(cfg), headers_(std::move(headers)) {}

void ReadyProbe::check(EventLoop& loop, Done done) {
  std::unique_lock lk(mu_);
  if (stopped_) {
    lk.unlock();
    return done(Answer{false, "shutting down"});
  }
  // Fresh, or a probe is under way: the answer we have (as before the probe).
  if (probed_ && (probing_ || Clock::now() - last_ < cfg_.ready_probe_interval)) {
    Answer a{ready_, reason_};
    lk.unlock();
    return done(std::move(a));
  }
  waiters_.push_back(Waiter{&loop, std::move(done)});
  if (probing_) return;
  probing_ = true;
  probe_loop_ = &loop;
  lk.unlock();
  asio::co_spawn(loop.io(), run(&loop), asio::detached);
}

bool ReadyProbe::last() {
  std::lock_guard lk(mu_);
  return ready_;
}

void ReadyProbe::stop() {
  std::unique_lock lk(mu_);
  stopped_ = true;
  if (!probing_) return;
  EventLoop* loop = probe_loop_;
  if (loop->in_loop()) {
    if (channel_) channel_->abort();
    return;
  }
  asio::post(loop->io(), [this] {
    if (channel_) channel_->abort();
  });
  ended_.wait_for(lk, std::chrono::seconds(2), [&] { return !probing_; });
}

// On `loop`: one probe, then its answer to everyone waiting for it.
asio::awaitable<void> ReadyProbe::run(EventLoop* loop) {
  Answer a = co_await probe_once(cfg_, headers_, &channel_);
  finish(loop, std::move(a));
}

void ReadyProbe::finish(EventLoop* loop, Answer a) {
  std::vector<Waiter> waiters;
  {
    std::lock_guard lk(mu_);
    probing_ = false;
    probe_loop_ = nullptr;
    probed_ = true;
    last_ = Clock::now();
    if (!stopped_ && (a.ready != ready_ || !logged_)) {  // an aborted probe at stop is no news
      if (a.ready)
        log::info("upstream reachable: ready");
      else
        log::warn("upstream not reachable: not ready", {{"cause", a.reason}});
      logged_ = true;
    }
    ready_ = a.ready;
    reason_ = a.reason;
    waiters.swap(waiters_);
  }
  ended_.notify_all();
  for (auto& w : waiters) {
    if (w.loop == loop) {
      w.done(a);
      continue;
    }
    asio::post(w.loop->io(), [done = std::move(w.done), a]() mutable { done(std::move(a)); });
  }
}

asio::awaitable<ReadyProbe::Answer> ReadyProbe::probe_once(const Config& cfg, std::string headers,
                                                           UpstreamChannel** running) {
  const UpstreamConfig& u = cfg.upstream;
  UpstreamChannel ch(co_await asio::this_coro::executor, u, std::move(headers));
  // Cleared however this frame ends (also when a stopped loop destroys it).
  struct Running {
    UpstreamChannel** at;
    ~Running() {
      if (at) *at = nullptr;
    }
  } running_guard{running};
  if (running) *running = &ch;
  auto outer =
      Deadline::after(std::min<Duration>(u.connect_timeout + u.endpoint_timeout, Duration(5000)));
  auto st = co_await ch.open(Deadline::earliest(Deadline::after(u.connect_timeout), outer),
                             u.endpoint_timeout, outer);
  ch.abort();
  if (!st) co_return Answer{false, st.error().message()};
  co_return Answer{true, "upstream answered with an endpoint"};
}

}  // namespace msb
