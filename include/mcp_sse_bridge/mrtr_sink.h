// MrtrSink: the CallSink of a stateless (2026-07-28) call that may need its
// client's input. A legacy upstream asks mid-call with a server-to-client
// request (elicitation/create, sampling/createMessage, roots/list); the
// 2026-07-28 era has no such requests, only MRTR (basic/patterns/mrtr): the
// call's response becomes `{resultType:"input_required", inputRequests,
// requestState}`, the upstream call stays parked (its upstream session open,
// waiting), and the client's retry resumes it: each inputResponse goes
// upstream as the JSON-RPC response to the server's request, and the call
// continues — possibly to another input_required (several rounds).
//
// ─── Integration guide (for the stateless HTTP handler) ─────────────────────
// Only tools/call, prompts/get and resources/read may use MRTR; other
// methods keep the plain CallSink (server requests refused).
//
// First request (no requestState, or one that is not ours —
// RequestStateSealer::is_ours() false: pass it through unchanged):
//   auto binding = RequestBinding::of(method, params_json, principal);
//   auto m = MrtrSink::create(loop, parked, sealer, *binding, opts);
//   m->start(forwarder, req, session, log_level, headers, arrival,
//            MrtrSink::Front{front_sink, &loop, req.id, caps_json, on_outcome});
// `front_sink` is the round's client-facing sink (SseSink/JsonSink-like:
// deliver() writes the call's notifications, alive() tells a hang-up); it
// is used on `&loop` only. on_outcome(Outcome) is called once per round, on
// the CALL's loop (post it to the front's loop: notifications for a front on
// another loop are posted there, so a posted outcome follows them):
//   kInputRequired: write o.response (already carries the round's id and the
//                   sealed requestState; no ttlMs/cacheScope on it) and END
//                   the response. The call stays parked.
//   kComplete:      o.response is the final JSON-RPC response (result or
//                   error) with the round's id; add `resultType` as for any
//                   stateless result, write it, end the response.
//   kCancelled:     the client went away or the bridge stops; write
//                   o.response if the client is still there.
// Retry (params.requestState is ours):
//   auto opened = sealer.open(state, *RequestBinding::of(method, params, principal),
//                             RequestStateSealer::now_ms());
//   if (!opened.claims) → write RequestStateSealer::error_response(id,
//                          opened.refusal, park_timeout_text), end.
//   auto m = parked.take(opened.claims->call_key);
//   if (!m) → error_response(id, Refusal::kNotParked, …), end.
//   m->resume(input_responses_json, MrtrSink::Front{…the retry's sink, loop,
//             id, caps, on_outcome});      // any thread: posts to m's loop
// then wait for on_outcome exactly as for the first request.
//
// Behaviour:
// - Collection: the first server request of a round opens a window of
//   Options::collect_window (25 ms); every request that arrives within it
//   joins the same input_required. A tool that asks several things at once
//   sends them back to back, and the user expects one prompt for all of
//   them; 25 ms is invisible next to a human answering, and a tool that asks
//   sequentially (waits for answer 1 before asking 2) gets one round each,
//   as it would directly.
// - Capabilities: a request whose capability the round's
//   clientCapabilities lack (elicitation/create → elicitation,
//   sampling/createMessage → sampling, roots/list → roots), or any other
//   server request, is refused: the forwarder answers it upstream with an
//   error and the tool continues with its own fallback.
// - Keys: "r1", "r2", … unless the legacy server names one in the request's
//   params._meta["mcp-sse-bridge/inputKey"] (removed before the client sees
//   the params; ignored when unusable or already pending).
// - Retry: keys answered in inputResponses go upstream; unknown keys are
//   ignored; keys missing (or whose value is not an object) are asked again
//   in a new input_required with the same keys, together with any request
//   the upstream made while the call was parked.
// - Parking is bounded by Options::park_timeout (--mrtr-park-timeout): on
//   expiry the call takes itself out of ParkedCalls, the forwarder sends
//   notifications/cancelled upstream and closes the upstream session. A
//   full ParkedCalls (--mrtr-max-parked) answers the client with an error
//   and cancels the call. Time parked does not count against the call's
//   --request-timeout (CallSink::client_wait()).
// - Progress: the upstream reports progress under the first request's
//   progressToken; a later round's notifications/progress are re-tagged with
//   that round's Front::progress_token, or dropped when it has none.
// - If the call ends while parked (the upstream died, or answered without
//   waiting), the result is kept and the retry gets it (with its own id).
// - Another replica: the sealed replica tag makes the retry fail with
//   −32602 "requestState belongs to another bridge replica…, send the
//   request again without inputResponses and requestState": a parked call
//   is an open upstream session in one process's memory and cannot move;
//   telling the client to start over is immediate and honest, while a hang
//   or a silent fresh call (the tool's side effects twice) would not be.
//
// Threads: the CallSink side runs on the call's loop (the forwarder's);
// resume() and cancel() may be called from any thread. A front on another
// loop is driven by posting to its loop (notifications, hang-up polls).
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/forwarder.h"
#include "mcp_sse_bridge/request_state.h"

namespace msb {

class EventLoop;
class ParkedCalls;

class MrtrSink : public CallSink, public std::enable_shared_from_this<MrtrSink> {
 public:
  struct Options {
    Duration park_timeout{120000};  // --mrtr-park-timeout: a parked call waits this long for its retry
    Duration collect_window{25};    // server requests this close together share one input_required
  };

  struct Outcome {
    enum class Kind {
      kInputRequired,  // the client must answer inputRequests and retry
      kComplete,       // the call's final response (result or error)
      kCancelled,      // the client went away, or the call was cancelled
    };
    Kind kind = Kind::kComplete;
    std::string response;       // JSON-RPC response carrying the round's client id
    std::string request_state;  // kInputRequired: the sealed requestState
    int round = 0;              // kInputRequired: 1 for the first
    // kComplete: the call's own account, for logs and metrics.
    std::optional<BridgeError> error;  // set when the bridge minted the response
    int attempts = 0;
    std::string upstream_session;
  };
  using OutcomeFn = std::function<void(Outcome)>;

  // The client-facing side of one round: one HTTP exchange.
  struct Front {
    std::shared_ptr<CallSink> sink;  // deliver()/alive()/set_waker(), used on `loop` only
    EventLoop* loop = nullptr;       // the front's loop (may differ from the call's)
    std::string client_id;           // the round's request id (JSON text)
    std::string caps_json;           // the round's _meta clientCapabilities (JSON object)
    OutcomeFn on_outcome;            // once per round, on the call's loop
    std::string progress_token;      // the round's params._meta.progressToken (JSON text; "" none)
  };

  // `loop` runs the call (and the forwarder's coroutine); `parked` and
  // `sealer` outlive every call.
  static std::shared_ptr<MrtrSink> create(EventLoop& loop, ParkedCalls& parked,
                                          const RequestStateSealer& sealer,
                                          RequestBinding binding, Options o);
  ~MrtrSink() override;

  // Runs forwarder.call(req, …) on the call's loop with this sink; `front`
  // is round 1. Call on the call's loop.
  void start(Forwarder& forwarder, Message req, std::optional<ClientSession> session,
             std::optional<std::string> log_level_params, std::string extra_headers,
             Clock::time_point arrival, Front front);
  // Resumes a call taken from ParkedCalls with the retry's inputResponses
  // (JSON object text) and the retry's front. Any thread.
  void resume(std::string input_responses_json, Front front);
  // Cancels the call (the upstream gets notifications/cancelled); the
  // current front, if any, gets kCancelled with `why`. Any thread.
  void cancel(std::string why);

  const RequestBinding& binding() const { return binding_; }

  // CallSink (call's loop).
  bool deliver(std::string_view json) override;
  bool alive() override;
  void set_waker(std::function<void(bool urgent)> w) override;
  bool forward_request(std::string_view method, std::string_view bridge_id, std::string_view json,
                       std::string* why) override;
  std::optional<Message> take_response() override;
  void end_request(std::string_view bridge_id) override;
  Clock::duration client_wait() override;
  boost::asio::cancellation_signal* wake_signal() override { return wake_signal_; }

 private:
  // Where the call is, as its client sees it.
  enum class State {
    kAttached,  // a round's front is attached: notifications flow, requests are collected
    kParked,    // input_required answered; waiting in ParkedCalls for the retry
    kDone,      // the outcome was given to a front (or nobody is left to give it to)
  };
  struct Pending {
    std::string bridge_id;  // the forwarder's id for the server request (JSON text)
    std::string method;
    std::string params;  // JSON text; empty when the request had none
  };
  struct Impl;

  MrtrSink(EventLoop& loop, ParkedCalls& parked, const RequestStateSealer& sealer,
           RequestBinding binding, Options o);
  void attach(Front front);
  void detach();
  void on_resume(std::string input_responses_json, Front front);
  void on_cancel(std::string why);
  void open_window();
  void end_round();
  void on_park_expiry();
  void finish(CallResult r);
  void give(Outcome::Kind kind, std::string response, std::string state = {});
  void wake(bool urgent);
  bool front_local() const;
  bool front_alive();
  std::string error_for_client(std::string_view message) const;

  EventLoop& loop_;
  ParkedCalls& parked_;
  const RequestStateSealer& sealer_;
  RequestBinding binding_;
  Options opt_;
  std::unique_ptr<Impl> impl_;  // the loop's timers (keeps Asio out of this header)
  // The forwarder's coroutine's signal (Forwarder::spawn_bound), while it runs.
  boost::asio::cancellation_signal* wake_signal_ = nullptr;

  State state_ = State::kAttached;
  std::optional<CallResult> final_;  // the call's result, once it has one (for give())
  std::optional<Front> front_;
  std::string caps_json_;      // the latest front's client capabilities (kept while parked)
  uint64_t front_gen_ = 0;     // which front a posted reply concerns
  bool front_gone_ = false;    // a remote front reported a hang-up
  bool poll_in_flight_ = false;
  bool cancelled_ = false;
  bool stop_told_ = false;     // the forwarder was woken to find alive() false
  std::string cancel_why_;
  std::optional<CallResult> result_;  // the call ended while parked
  std::string park_key_;
  int round_ = 0;
  int next_key_ = 1;
  std::map<std::string, Pending> pending_;  // unanswered server requests, by inputRequests key
  std::deque<Message> answers_;             // routed to the forwarder by take_response()
  std::shared_ptr<std::function<void(bool)>> waker_;
  Clock::duration waited_{};            // time parked in earlier rounds
  Clock::time_point parked_since_{};
  bool window_open_ = false;
  std::string request_id_;  // the original request's id (the upstream's response carries it)
  std::string request_progress_token_;  // the original request's (the upstream's progress carries it)
};

}  // namespace msb
