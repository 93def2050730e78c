// SessionTable (session mode): client session id → its SessionUpstream.
// Bounded by --max-upstream-sessions. A session is opened after the client's
// initialize; it closes on DELETE, after --session-idle-timeout without calls
// or GET stream (the session itself notices), on failure (the next call
// opens a new one), and on stop. A valid session id this process does not
// hold (another replica's, one from before a restart, one whose upstream
// session failed or idled out) gets a fresh upstream session: its
// server-side state is lost, which is logged and counted.
// Thread-safe: calls come from every event loop.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/forwarder.h"
#include "mcp_sse_bridge/session_token.h"
#include "mcp_sse_bridge/session_upstream.h"

namespace msb {

class EventLoop;
class Metrics;

class SessionTable {
 public:
  SessionTable(const UpstreamConfig& cfg, Metrics& metrics);
  ~SessionTable();

  // The usable session of `s`, opening one owned by `loop` when none is held
  // (`after_initialize`: the expected first open, not a loss of state).
  // nullptr with *err when --max-upstream-sessions are held or the bridge
  // stops. Never blocks.
  std::shared_ptr<SessionUpstream> acquire(EventLoop& loop, const ClientSession& s,
                                           const std::string& headers,
                                           const std::optional<std::string>& log_level,
                                           bool after_initialize, BridgeError* err);
  // The session held for `sid`, if any.
  std::shared_ptr<SessionUpstream> find(const std::string& sid);

  // Runs one request of client session `s` on its upstream session (see
  // SessionUpstream::call). A call whose session failed before its request
  // could reach the upstream is tried once more on a fresh session. The
  // client's initialize (with `s` minted from its params) opens the session
  // and gets the upstream's own initialize answer: one upstream connect.
  boost::asio::awaitable<CallResult> call(EventLoop& loop, const Message& req,
                                          const ClientSession& s, std::string headers,
                                          std::optional<std::string> log_level, CallSink& sink,
                                          Clock::time_point arrival);

  // DELETE: closes the session's upstream session (calls get `closed`).
  void close(const std::string& sid);
  // Bridge stop: closes every session (calls get shutting_down) and waits,
  // bounded (2 s), for their upstream work to end. The loops must still run.
  void stop();
  size_t size();

 private:
  void forget(const std::string& sid, SessionUpstream* s);

  const UpstreamConfig& cfg_;
  Metrics& metrics_;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<SessionUpstream>> sessions_;
  // Session ids closed here (DELETE, an initialize whose client left):
  // acquire() opens nothing for them again, so a call racing the close is
  // not retried onto a fresh upstream session nobody could close. Bounded:
  // the oldest are forgotten first (the revocation set refuses them still).
  static constexpr size_t kMaxClosed = 4096;
  std::unordered_set<std::string> closed_;
  std::deque<std::string> closed_order_;
  bool stopping_ = false;
};

}  // namespace msb
