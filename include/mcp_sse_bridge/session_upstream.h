// SessionUpstream (session mode): the one upstream SSE session of one client
// session, shared by all of its calls at once. Opened on the event loop that
// creates it (its owner loop) by the client's initialize itself (the
// upstream's answer is the client's answer: one upstream connect per client
// session), followed by notifications/initialized; a re-open replays the
// client's initialize params, notifications/initialized, the remembered
// logging/setLevel and every resources/subscribe. Then a reader coroutine
// reads the stream continuously and dispatches each message
// (route_upstream_message):
//   a response                  → the call waiting for that id (client ids are
//                                 unique within a client session, so requests
//                                 go upstream with their own ids; the bridge's
//                                 own requests use ids no client uses)
//   notifications/progress      → the call with that progressToken
//   notifications/message and   → the one call in flight, if exactly one;
//   server→client requests        else the session's GET stream
//   other notifications         → the GET stream (dropped and counted if none)
//   an upstream ping            → answered by the bridge
// A stream silent for --ping-interval is probed with an MCP ping, with or
// without calls in flight (so a dead path is found before the next call);
// no reply within --ping-timeout is a drop.
//
// Drops. When the stream ends or fails (or the probe goes unanswered), every
// call in flight gets its error at once. Then:
//   held (a GET stream is open or a subscription is remembered): the session
//     re-opens itself at once and then with capped backoff (ReopenBackoff)
//     until it is back, closed, or no longer held; calls that arrive
//     meanwhile wait for the next attempt (they start it at once) and fail
//     with its error. After a re-open the client is told that server-side
//     state was lost: a notifications/message warning (logger
//     "mcp-sse-bridge") on the GET stream, a log line, and
//     mcp_bridge_session_state_lost_total.
//   not held: the session fails; the table forgets it and the next call
//     opens a new one (state lost: logged and counted by the table; the
//     warning goes to the GET stream once one is attached).
//
// Threading: the channel, the id maps and the GET stream pointer live on the
// owner loop. Calls run on their own loops (call()); everything they ask of
// the session is posted to the owner loop, and everything the session tells
// them goes through a thread-safe port whose wake-up is posted to the call's
// loop. Nothing blocks a loop thread.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/forwarder.h"
#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/reopen_backoff.h"

namespace msb {

class EventLoop;
class Metrics;
class SessionStreamSink;
class UpstreamChannel;
struct SessionCallPort;

// Where one upstream message goes (pure: unit-tested).
enum class SessionRoute {
  kCall,        // the call that waits for this response id or progress token
  kSingleCall,  // the one call in flight (log messages, server requests)
  kStream,      // the client session's GET stream (dropped and counted if none)
  kAnswerPing,  // an upstream ping: the bridge answers it
  kOwn,         // the reply to one of the bridge's own requests (its ping)
  kDrop,        // nobody waits for it (the late reply of a call that ended)
};
// `calls_in_flight`: calls registered on the session; `id_is_call` /
// `id_is_own`: a response's id names a call / one of the bridge's requests;
// `token_is_call`: a progress notification's token names a call.
SessionRoute route_upstream_message(const Message& m, size_t calls_in_flight, bool id_is_call,
                                    bool id_is_own, bool token_is_call);

class SessionUpstream : public std::enable_shared_from_this<SessionUpstream> {
 public:
  enum class State {
    kOpening,  // connect, endpoint, (replayed) setup; also a re-open after a
               // drop while held: calls queue
    kReady,    // calls are forwarded
    kFailed,   // the stream ended or failed: calls fail, the table forgets it
    kClosed,   // closed by DELETE, idle timeout or stop
  };
  struct Params {
    std::string client_session;  // the Mcp-Session-Id
    std::string tag;             // its log tag
    std::string init_params;     // the client's initialize params (JSON)
    std::string headers;         // "Name: value\r\n" lines sent upstream
    std::optional<std::string> log_level;  // the latest logging/setLevel params
    // Opened for a client session whose upstream session was lost (another
    // replica's, a restart, a failed one), not by its initialize: the client
    // is warned on its GET stream (the table logs and counts it).
    bool state_lost = false;
    // Runs on the owner loop after every successful open (the first and each
    // re-open), with the upstream's initialize response (JSON text): the
    // listen hub learns the upstream's capabilities from it.
    std::function<void(const std::string& init_response)> on_open;
    // Runs on the owner loop when an open fails while the session is held
    // (a GET stream or a listen feed attached before it first opened) and
    // it tries again after a backoff: the listen hub acknowledges the
    // listeners that waited for the upstream's capabilities.
    std::function<void()> on_open_failed;
  };

  // `on_end` runs on the owner loop once the session has failed or closed.
  // `cfg` and `metrics` must outlive the session.
  SessionUpstream(EventLoop& owner, const UpstreamConfig& cfg, Metrics& metrics, Params p,
                  std::function<void(SessionUpstream*)> on_end);
  ~SessionUpstream();

  // Starts opening on the owner loop. Any thread; once.
  void start();

  // Runs one client request on this session; the coroutine runs on `loop`
  // (the caller's). The client's initialize (the one whose params opened
  // the session) is not sent again: it waits for the open and gets the
  // upstream's initialize answer with its own id. Ends with the response, the session's failure (at once,
  // with the stream's error kind and phase), the call's deadline
  // (request_timeout from `arrival`, extended by progress up to
  // max_request_timeout) or the client's departure/cancellation (then
  // notifications/cancelled goes upstream). `*request_sent` says whether the
  // request may have reached the upstream.
  boost::asio::awaitable<CallResult> call(EventLoop& loop, const Message& req, CallSink& sink,
                                          Clock::time_point arrival, bool* request_sent);

  // Makes `s` the session's GET stream; a previous one is ended. Any thread.
  void attach_stream(std::shared_ptr<SessionStreamSink> s);
  // The client's answer to a server request forwarded on the GET stream
  // (its id is the bridge id). Any thread.
  void client_answer(Message m);
  // A client notification for the upstream (not initialized/cancelled). Any thread.
  void client_notification(std::string raw);
  // Remembers the log level to replay if the session is opened again. Any thread.
  void set_log_level(std::string params);
  // A resource subscription the bridge holds itself (subscriptions/listen):
  // remembered like a client's resources/subscribe and replayed on every
  // re-open; sent at once when the session is ready, else with the open. An
  // upstream refusal is logged and forgets it. Any thread.
  void hold_subscription(std::string uri);
  // Forgets it; resources/unsubscribe goes upstream when the session is
  // ready (a re-open would not subscribe it anyway). Any thread.
  void release_subscription(std::string uri);
  // Ends the session: calls in flight get `why`, the GET stream ends. Any
  // thread; asynchronous (done on the owner loop).
  void close(BridgeError why);

  State state() const { return state_.load(); }
  bool usable() const {
    auto s = state_.load();
    return s == State::kOpening || s == State::kReady;
  }
  const std::string& client_session() const { return p_.client_session; }
  std::string upstream_session_id() const;
  // Sessions whose owner-loop work (open, reader, writer) is still running.
  static size_t running();

 private:
  struct Pending {
    std::shared_ptr<SessionCallPort> port;
    std::string id, token, raw;
    Deadline deadline;
    bool open_only = false;  // the client's initialize: answered by the open
  };
  struct Write {
    std::string body;
    Deadline deadline;
    std::function<void(const Status&)> done;
  };
  class Running;

  // Owner loop only, below.
  boost::asio::awaitable<void> run(std::shared_ptr<SessionUpstream> self);
  // Between re-open attempts: sleeps the backoff, cut short by a call that
  // needs the session or by close(). False when the session ended (closed,
  // or no longer held: then failed with `cause`).
  boost::asio::awaitable<bool> wait_before_reopen(Millis d, const BridgeError& cause);
  // The setup steps; false with *err set on failure (false without it:
  // closed meanwhile).
  boost::asio::awaitable<bool> open_steps(UpstreamChannel& ch, std::optional<BridgeError>* err);
  boost::asio::awaitable<Expected<Message>> roundtrip(UpstreamChannel& ch, const std::string& body,
                                                      const std::string& id, Deadline d);
  boost::asio::awaitable<void> read_loop(std::shared_ptr<UpstreamChannel> ch);
  boost::asio::awaitable<void> writer(std::shared_ptr<SessionUpstream> self);
  void begin(Pending p);
  void end_call(const std::shared_ptr<SessionCallPort>& port, const std::string& id);
  void cancel_call(const std::shared_ptr<SessionCallPort>& port, const std::string& id,
                   const std::string& reason);
  void dispatch(Message& m);
  void to_stream_or_refuse(const std::string& method, const std::string& bridge_id,
                           const std::string& json, std::string why);
  void refuse_request(const std::string& bridge_id, const std::string& why);
  void answer(const Message& m);
  void enqueue(std::string body, Deadline d, std::function<void(const Status&)> done = {});
  void finish(State st, BridgeError e);
  // The stream is gone: calls fail with `e` at once; a held session re-opens
  // (state kOpening), any other fails.
  void drop(BridgeError e);
  // Held for listeners: a re-open is worth it without a call.
  bool held() const;
  void announce_state_lost();
  // Sends the pending state-lost warning to the GET stream, if one is open.
  void tell_state_lost();
  // resources/subscribe and unsubscribe: remembered for the re-open. False
  // (and the call answered with an error) past kMaxSubscriptions.
  bool note_subscription(const Pending& p);
  // Sends the bridge's own resources/subscribe or unsubscribe for `uri`.
  void send_subscription(std::string_view method, const std::string& uri);
  void answer_call(const std::shared_ptr<SessionCallPort>& port, const std::string& raw);
  bool client_has_capability(std::string_view method, std::string* why);
  bool idle(Clock::time_point now) const;

  EventLoop& owner_;
  boost::asio::any_io_executor ex_;
  const UpstreamConfig& cfg_;
  Metrics& metrics_;
  Params p_;
  std::function<void(SessionUpstream*)> on_end_;
  std::atomic<State> state_{State::kOpening};
  std::atomic<bool> started_{false};

  // Owner loop only.
  std::shared_ptr<UpstreamChannel> ch_;
  std::optional<BridgeError> failure_;
  std::vector<Pending> pending_;  // calls that came while opening
  std::unordered_map<std::string, std::shared_ptr<SessionCallPort>> calls_;  // by request id
  std::unordered_map<std::string, std::string> tokens_;  // progress token -> request id
  // Server requests forwarded to the client: bridge id -> upstream id.
  std::unordered_map<std::string, std::string> server_requests_;
  std::shared_ptr<SessionStreamSink> stream_;
  std::optional<std::string> ping_id_;
  Deadline ping_deadline_ = Deadline::never();
  std::deque<Write> writes_;
  bool writing_ = false;
  Clock::time_point last_used_;
  std::optional<std::string> caps_;  // the client's capabilities (JSON), parsed once
  std::set<std::string> subscriptions_;  // resource URIs, replayed on a re-open
  std::unordered_map<std::string, std::string> subscribing_;  // request id -> URI, until answered
  // Held subscriptions (hold_subscription): added while opening after the
  // replay took its snapshot (sent once ready); own request id -> URI of the
  // bridge's own subscribes (unsubscribes: ""), until answered.
  std::set<std::string> unsent_;
  std::unordered_map<std::string, std::string> own_subscribing_;
  std::string last_init_;  // the upstream's answer to the latest initialize (on_open)
  std::string init_response_;  // the upstream's answer to the first initialize
  bool init_refused_ = false;  // ... a JSON-RPC error: the client gets it as is
  int opens_ = 0;              // successful opens (> 1: re-opened, state lost)
  bool warn_pending_ = false;  // state lost, the client's GET stream not told yet
  ReopenBackoff backoff_;
  std::unique_ptr<boost::asio::steady_timer> backoff_timer_;  // while waiting to re-open

  mutable std::mutex id_mu_;
  std::string upstream_session_id_;  // for logs
};

}  // namespace msb
