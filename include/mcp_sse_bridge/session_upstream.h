// SessionUpstream (session mode): the one upstream SSE session of one client
// session, shared by all of its calls at once. Opened on the event loop that
// creates it (its owner loop) by replaying the client's initialize params,
// notifications/initialized and the remembered logging/setLevel; then a
// reader coroutine reads the stream continuously and dispatches each message
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
// A silent stream with calls in flight is probed with an MCP ping
// (--ping-interval / --ping-timeout). When the stream ends or fails, every
// call in flight gets its error at once and the session is failed; the table
// then forgets it and the next call opens a new one (state lost).
//
// Threading: the channel, the id maps and the GET stream pointer live on the
// owner loop. Calls run on their own loops (call()); everything they ask of
// the session is posted to the owner loop, and everything the session tells
// them goes through a thread-safe port whose wake-up is posted to the call's
// loop. Nothing blocks a loop thread.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/forwarder.h"
#include "mcp_sse_bridge/jsonrpc.h"

namespace msb {

class EventLoop;
class Metrics;
class StandaloneStream;
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
    kOpening,  // connect, endpoint, replayed initialize: calls queue
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
  };

  // `on_end` runs on the owner loop once the session has failed or closed.
  // `cfg` and `metrics` must outlive the session.
  SessionUpstream(EventLoop& owner, const UpstreamConfig& cfg, Metrics& metrics, Params p,
                  std::function<void(SessionUpstream*)> on_end);
  ~SessionUpstream();

  // Starts opening on the owner loop. Any thread; once.
  void start();

  // Runs one client request on this session; the coroutine runs on `loop`
  // (the caller's). Ends with the response, the session's failure (at once,
  // with the stream's error kind and phase), the call's deadline
  // (request_timeout from `arrival`, extended by progress up to
  // max_request_timeout) or the client's departure/cancellation (then
  // notifications/cancelled goes upstream). `*request_sent` says whether the
  // request may have reached the upstream.
  boost::asio::awaitable<CallResult> call(EventLoop& loop, const Message& req, CallSink& sink,
                                          Clock::time_point arrival, bool* request_sent);

  // Makes `s` the session's GET stream; a previous one is ended. Any thread.
  void attach_stream(std::shared_ptr<StandaloneStream> s);
  // The client's answer to a server request forwarded on the GET stream
  // (its id is the bridge id). Any thread.
  void client_answer(Message m);
  // A client notification for the upstream (not initialized/cancelled). Any thread.
  void client_notification(std::string raw);
  // Remembers the log level to replay if the session is opened again. Any thread.
  void set_log_level(std::string params);
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
  };
  struct Write {
    std::string body;
    Deadline deadline;
    std::function<void(const Status&)> done;
  };
  class Running;

  // Owner loop only, below.
  boost::asio::awaitable<void> run(std::shared_ptr<SessionUpstream> self);
  boost::asio::awaitable<bool> open_steps(UpstreamChannel& ch);
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
  std::shared_ptr<StandaloneStream> stream_;
  std::optional<std::string> ping_id_;
  Deadline ping_deadline_ = Deadline::never();
  std::deque<Write> writes_;
  bool writing_ = false;
  Clock::time_point last_used_;
  std::optional<std::string> caps_;  // the client's capabilities (JSON), parsed once

  mutable std::mutex id_mu_;
  std::string upstream_session_id_;  // for logs
};

}  // namespace msb
