// Forwarder: runs one client request on a short-lived upstream session
// (connect, `endpoint`, replay initialize + initialized + session state, send
// the request, relay its notifications, deliver its response, close), with a
// deadline on every step and the retry rules of DESIGN §2.5.
//
// A call is a coroutine on the event loop that owns its client connection;
// its upstream sockets live on the same loop (a warm call crosses no thread).
// The warm pool is per loop for the same reason.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/session_token.h"
#include "mcp_sse_bridge/upstream_stats.h"

namespace boost::asio {
class io_context;
}

namespace msb {

class EventLoop;
class WarmPool;
struct PoolKey;

// The client side of one call, as the forwarder sees it. Used on the call's
// loop thread only.
class CallSink {
 public:
  virtual ~CallSink() = default;
  // Delivers a message that precedes the response (progress, logging, other
  // notifications). Returns false once the client has gone. Never blocks.
  virtual bool deliver(std::string_view json) = 0;
  // False once the client has gone or cancelled the call, or the bridge
  // stops. Asked whenever the call is woken (see set_waker) and between steps;
  // may write a keepalive.
  virtual bool alive() = 0;
  // Installs the call's wake-up: called (on the call's loop) when alive() or
  // take_response() may have news. `urgent`: the call should stop at once
  // (cancel, hang-up, stop) rather than only re-check between waits.
  virtual void set_waker(std::function<void(bool urgent)> w) { (void)w; }

  // Forwards a server-to-client request (`json` already carries the
  // bridge-unique id `bridge_id`) on the call's stream and routes the
  // client's answer back to this call. Returns false with a reason when the
  // client cannot take it (capability not declared, no SSE stream).
  virtual bool forward_request(std::string_view method, std::string_view bridge_id,
                               std::string_view json, std::string* why) {
    (void)method, (void)bridge_id, (void)json;
    *why = "the client cannot receive server-to-client requests";
    return false;
  }
  // The next client response routed to this call, if any.
  virtual std::optional<Message> take_response() { return std::nullopt; }
  // Stops routing client responses for bridge_id to this call.
  virtual void end_request(std::string_view bridge_id) { (void)bridge_id; }
  // Time the call has spent waiting on its client between rounds (MRTR: parked
  // after an `input_required` answer until the client's retry); it does not
  // count against the call's deadlines. Grows while the call waits.
  virtual Clock::duration client_wait() { return Clock::duration::zero(); }
  // The signal the coroutine that awaits Forwarder::call was spawned bound
  // to (asio::bind_cancellation_slot), if it was: the call's attempts then
  // run inline in that coroutine and its wake-ups cut their waits through
  // this signal. Without one each attempt runs as a child coroutine with a
  // signal of its own (a co_spawn per attempt: ~3k instructions per call).
  virtual boost::asio::cancellation_signal* wake_signal() { return nullptr; }
  // The client takes what is written to it slower than it comes
  // (Exchange::kCongested queued): the call stops reading its upstream
  // until that drains.
  virtual bool congested() { return false; }
};

struct CallResult {
  std::string response;  // final JSON-RPC response for the client (empty if cancelled)
  bool cancelled = false;
  std::optional<BridgeError> error;  // set when the bridge minted the response
  int attempts = 0;
  std::string upstream_session;  // last upstream session id, for logs
};

class Forwarder {
 public:
  explicit Forwarder(const UpstreamConfig& cfg);
  ~Forwarder();

  // Runs `req` (a request) on `loop` (the caller's: the coroutine must run
  // there). `session` is the client's session (nullptr for `initialize`,
  // which is then sent as-is instead of being replayed); `log_level_params`
  // the latest logging/setLevel params to replay, if any. `extra_headers`
  // are "Name: value\r\n" lines sent upstream. Ends with the response, an
  // error, or the client's departure; never past the call's deadline
  // (request_timeout from `arrival`, extended by progress up to
  // max_request_timeout).
  boost::asio::awaitable<CallResult> call(EventLoop& loop, const Message& req,
                                          const ClientSession* session,
                                          std::optional<std::string> log_level_params,
                                          std::string extra_headers, CallSink& sink,
                                          Clock::time_point arrival);

  // Awaits `call` (a call coroutine for request `m`, not started yet) with
  // no exception escaping: one (an allocation failing on a huge event)
  // becomes the call's internal error with `m`'s id, logged, so that no
  // client is left without an answer. Every caller of a call coroutine
  // (Forwarder::call, SessionTable::call) awaits it through this.
  // `upstream` (named in the error) must outlive the call: the config's.
  static boost::asio::awaitable<CallResult> guarded(boost::asio::awaitable<CallResult> call,
                                                    const Message& m, CallSink& sink,
                                                    Clock::time_point arrival, const Url& upstream);

  // Spawns the coroutine `make(sig)` returns (one that awaits call(), its
  // sinks answering wake_signal() with `sig`) detached on `io`, bound to a
  // new signal `sig`: the calls run their attempts inline. The spawn holds
  // the signal until the coroutine ends.
  template <class MakeCalls>
  static void spawn_bound(boost::asio::io_context& io, MakeCalls make) {
    auto wake = std::make_shared<boost::asio::cancellation_signal>();
    auto calls = make(wake.get());
    spawn_bound(io, std::move(calls), std::move(wake));
  }
  static void spawn_bound(boost::asio::io_context& io, boost::asio::awaitable<void> calls,
                          std::shared_ptr<boost::asio::cancellation_signal> wake);

  // Asks loop's warm pool for a session ready for this client session's next
  // call (after initialize). No-op when the pool is off. Loop thread.
  void prewarm(EventLoop& loop, const ClientSession& session, std::string_view extra_headers,
               const std::optional<std::string>& log_level_params);
  // Stops the pools' fillers and closes their idle sessions (each on its
  // loop; the loops must still run). Bounded.
  void stop();

  const ForwarderStats& stats() const { return stats_; }
  const PoolStats& pool_stats() const { return pool_stats_; }
  const UpstreamConfig& config() const { return cfg_; }
  // Upstream sessions (channels) open in this process.
  static size_t open_sessions();

 private:
  // The loop's pool (created on first use); null once stop() has run. Held
  // by the call for its whole run: a pool stopped meanwhile refuses returns.
  std::shared_ptr<WarmPool> pool_for(EventLoop& loop);

  const UpstreamConfig& cfg_;
  ForwarderStats stats_;
  PoolStats pool_stats_;
  std::atomic<size_t> pool_idle_{0};  // idle warm sessions over all loops
  std::mutex pools_mu_;
  std::unordered_map<EventLoop*, std::shared_ptr<WarmPool>> pools_;
  bool pools_stopped_ = false;  // under pools_mu_
};

}  // namespace msb
