#include "mcp_sse_bridge/forwarder.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <deque>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <vector>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/resolver.h"
#include "mcp_sse_bridge/retry_policy.h"
#include "mcp_sse_bridge/upstream_channel.h"

namespace msb {

namespace asio = boost::asio;

namespace {

// A waiting call re-checks its client at least this often even without a
// wake-up (keepalive comments are written from these checks).
constexpr Millis kPollSlice{1000};

constexpr std::string_view kInitialized = R"({"jsonrpc":"2.0","method":"notifications/initialized"})";

std::atomic<uint64_t> g_internal_ids{0};

// Ids of the bridge's own upstream requests. A string prefix no client
// plausibly uses; the counter keeps them unique per process.
std::string internal_id(std::string_view what) {
  return json_quote("mcp-sse-bridge:" + std::string(what) + ":" +
                    std::to_string(g_internal_ids.fetch_add(1, std::memory_order_relaxed)));
}

using ChannelPtr = std::unique_ptr<UpstreamChannel>;

// The same id text as a string and as a number ("7" and 7).
bool same_value_other_type(std::string_view a, std::string_view b) {
  auto quoted = [](std::string_view q, std::string_view v) {
    return q.size() == v.size() + 2 && q.front() == '"' && q.back() == '"' && q.substr(1, v.size()) == v;
  };
  return quoted(a, b) || quoted(b, a);
}

Deadline shifted(Deadline d, Clock::duration by) {
  return d.is_never() ? d : Deadline::at(d.when() + by);
}

// How one attempt ended.
struct Attempt {
  std::optional<std::string> response;  // the upstream's final response
  std::optional<BridgeError> error;
  bool cancelled = false;
  bool request_sent = false;  // the client's request may have reached the upstream
  ChannelPtr reusable;        // healthy after a clean exchange
};

}  // namespace

// Sessions are keyed by everything that makes them differ: the client
// session (state some servers keep per SSE session never crosses clients),
// the client's initialize params, every header sent upstream (forwarded
// credentials included) and the replayed log level.
struct PoolKey {
  ClientSession session;
  std::string headers;
  std::optional<std::string> log_level;
  std::string id() const { return make_id(session, headers, log_level); }
  // The id without a PoolKey (a warm call needs only this; one allocation).
  // A minted session is told apart by its key, which authenticates its
  // params; a synthesized one (no key) by its id and params.
  static std::string make_id(const ClientSession& s, std::string_view headers,
                             const std::optional<std::string>& log_level) {
    std::string_view params = s.key.empty() ? std::string_view(s.init_params) : std::string_view();
    std::string k;
    k.reserve(1 + s.scope().size() + params.size() + headers.size() + 3 +
              (log_level ? log_level->size() : 0));
    k.push_back(s.key.empty() ? 'p' : 'k');
    k.append(s.scope()).push_back('\0');
    k.append(params).push_back('\0');
    k.append(headers).push_back('\0');
    if (log_level) k.append(*log_level);
    return k;
  }
};

namespace {

// One call on one loop: the state machine of DESIGN §2 for one attempt at a
// time. Runs on the call's loop; every wait is bounded by the call's
// deadline (and a step's own bound), and is woken at once by the client's
// cancellation or departure.
class CallRun {
 public:
  // Where the call is (for logs and the wake-up rule).
  enum class State {
    kSetup,             // opening the upstream session: connect, endpoint, replayed initialize
    kSending,           // POSTing the client's request (or one of the bridge's own)
    kAwaitingResponse,  // waiting on the SSE stream for the response, relaying what precedes it
    kCancelling,        // telling the upstream the client cancelled or left
    kDone,              // finished: response, error or cancellation
  };

  CallRun(const UpstreamConfig& cfg, ForwarderStats& stats, const Message& req,
          const ClientSession* session, const std::optional<std::string>& log_level,
          std::string_view headers, CallSink& sink, Clock::time_point start,
          asio::any_io_executor ex)
      : cfg_(cfg),
        stats_(stats),
        req_(req),
        session_(session),
        log_level_(log_level),
        headers_(headers),
        sink_(sink),
        start_(start),
        deadline_(Deadline::at(start + cfg.request_timeout)),
        hard_deadline_(Deadline::at(start + cfg.max_request_timeout)),
        ex_(std::move(ex)) {}

  Deadline deadline() const { return deadline_; }

  // Emits the wake-up on this call's signal when the call waits for a
  // message (or, urgent, whatever it waits for). Loop thread.
  void wake(bool urgent) {
    woken_ = true;
    // A POST or a connect in progress is only cut for a stop: a routed
    // answer waits until the step ends.
    if (urgent || waiting_message_) sig_->emit(asio::cancellation_type::terminal);
  }
  asio::cancellation_signal& signal() { return *sig_; }
  // The wake-ups go to `s`, the signal the awaiting coroutine was spawned
  // bound to (CallSink::wake_signal), instead of this run's own.
  void use_signal(asio::cancellation_signal* s) { sig_ = s; }

  // Opens a session and replays the client session onto it: initialize,
  // notifications/initialized, the latest logging/setLevel. Fills a.error.
  // `call_follows`: this run's own POST comes next, so notifications/initialized
  // may be pipelined with it (--upstream-pipelining) instead of waited for.
  asio::awaitable<bool> setup(UpstreamChannel& up, Attempt& a, bool call_follows = false) {
    state_ = State::kSetup;
    initialized_pending_ = false;
    bool ok = co_await setup_steps(up, a, call_follows);
    if (ok) {
      stats_.sessions_opened.fetch_add(1, std::memory_order_relaxed);
    } else if (a.error && a.error->kind != ErrorKind::kCancelled) {
      stats_.session_failures[static_cast<int>(a.error->phase)].fetch_add(1, std::memory_order_relaxed);
    }
    co_return ok;
  }

  // One attempt: on `warm` (a pooled, ready session) when given, else on a
  // fresh session set up here.
  asio::awaitable<Attempt> run(ChannelPtr warm, std::string* upstream_session_id) {
    co_await asio::this_coro::throw_if_cancelled(false);  // cancellation is a value here
    Attempt a;
    if (!sink_.alive()) {
      // The client cancelled or left (or the bridge is stopping) before this
      // attempt began: a wake-up that came with set_waker may have been
      // dropped with the cut it recorded, so it is looked at here. Nothing
      // goes upstream; a warm session stays warm.
      a.cancelled = true;
      a.reusable = std::move(warm);
      co_return a;
    }
    const bool is_warm = warm != nullptr;
    ChannelPtr owned = std::move(warm);
    if (!owned) {
      if (UpstreamChannel::open_count() >= cfg_.max_sessions) {
        a.error = make_error(ErrorKind::kOverloaded, Phase::kConnect,
                             std::to_string(cfg_.max_sessions) +
                                 " upstream sessions open (--max-upstream-sessions)");
        co_return a;
      }
      owned = std::make_unique<UpstreamChannel>(ex_, cfg_, std::string(headers_));
    }
    UpstreamChannel& up = *owned;
    // (A warm session that is settled and was active lately is ready as it
    // is: no coroutine for probe_idle's usual answer. Statements, not a
    // conditional expression: g++ 12 ran the co_await of a branch not taken
    // there, a second liveness peek per call.)
    bool ready = true;
    if (!is_warm) ready = co_await setup(up, a, true);
    else if (!idle_ready(up)) ready = co_await probe_idle(up, a);
    *upstream_session_id = up.upstream_session_id();
    if (!ready) {
      co_await settle(up);
      co_return a;
    }
    if (!sink_.alive()) {
      // Gone while the session was set up or probed: the request is not sent.
      a.cancelled = true;
      co_await settle(up);
      co_return a;
    }
    // The request itself.
    state_ = State::kSending;
    if (auto s = co_await post(up, req_.raw, deadline_, Phase::kRequest); !s) {
      // Connect failures and 404 (session gone, even when the stream's end
      // was seen first) prove the request was not taken; so does a pipelined
      // notifications/initialized that failed before it was sent.
      auto& e = s.error();
      a.request_sent = body_taken_ ? *body_taken_ : !post_failure_proves_not_taken(e);
      note_error(a, e);
      co_await settle(up);
      co_return a;
    }
    a.request_sent = true;
    auto resp = co_await wait_response(up, req_.id, a);
    if (resp) a.response = std::move(*resp);
    if (a.cancelled) co_await cancel_upstream(up);
    bool clean = resp && server_requests_.empty();
    for (auto& [bridge_id, upstream_id] : server_requests_) sink_.end_request(bridge_id);
    server_requests_.clear();
    state_ = State::kDone;
    if (clean && !up.failed()) a.reusable = std::move(owned);
    else co_await settle(up);
    co_return a;
  }

 private:
  // Clears a wake-up that has been seen, so that later waits are not cut.
  asio::awaitable<void> rearm() {
    woken_ = false;
    co_await asio::this_coro::reset_cancellation_state();
    co_await asio::this_coro::throw_if_cancelled(false);
  }
  // A channel is only destroyed once nothing waits in it.
  asio::awaitable<void> settle(UpstreamChannel& up) {
    up.abort();
    co_return;
  }

  // A POST that a wake-up does not cut short, unless the client is gone.
  // With notifications/initialized pending (setup), the two are pipelined.
  asio::awaitable<Status> post(UpstreamChannel& up, std::string_view body, Deadline d, Phase phase) {
    auto prev = state_;
    state_ = State::kSending;
    body_taken_.reset();
    for (;;) {
      Status s = Ok{};
      if (initialized_pending_) s = co_await post_after_initialized(up, body, d, phase);
      else s = co_await up.post(body, d, phase);
      if (!s && s.error().kind == ErrorKind::kCancelled && sink_.alive()) {
        co_await rearm();
        // Cut short by a wake-up that was not urgent after all: the POST's
        // connection is gone with it; send again on a fresh one.
        continue;
      }
      state_ = prev;
      co_return s;
    }
  }

  // notifications/initialized and `body` in one write (UpstreamChannel::post_pair).
  // A refused initialized does not stop a call the upstream took (a warning);
  // refused both, it is the error, as when it is sent alone; unanswered, the
  // call's fate is unknown (its phase).
  asio::awaitable<Status> post_after_initialized(UpstreamChannel& up, std::string_view body, Deadline d,
                                                 Phase phase) {
    initialized_pending_ = false;
    auto r = co_await up.post_pair(kInitialized, body, Deadline::earliest(d, initialized_deadline_),
                                   Phase::kInitialize, phase);
    if (r.dropped && !stats_.pipelining_off.exchange(true, std::memory_order_relaxed))
      log::warn("upstream left a pipelined POST unanswered: it does not serve HTTP/1.1 pipelining; "
                "notifications/initialized is waited for from now on (--upstream-pipelining=false "
                "says so from the start)",
                {{"upstream_session", up.upstream_session_id()}});
    if (r.resent)
      log::warn("upstream did not answer a pipelined POST after notifications/initialized; sent again on a fresh connection",
                {{"upstream_session", up.upstream_session_id()}});
    if (r.first) co_return std::move(r.second);
    const BridgeError& e = r.first.error();
    if (e.kind == ErrorKind::kCancelled) {
      initialized_pending_ = true;  // sent again with the body (a wake-up, not a stop)
      co_return e;
    }
    if (!r.second_sent) {
      body_taken_ = false;
      co_return e;
    }
    if (e.kind == ErrorKind::kRejected && r.second) {
      log::warn("upstream refused the replayed notifications/initialized; the call it was pipelined with was accepted",
                {{"cause", e.message()}, {"upstream_session", up.upstream_session_id()}});
      co_return Ok{};
    }
    if (e.kind == ErrorKind::kRejected) {
      // Refused both, the first's error is the call's, but the call went
      // out behind it: only its own failure proves it was not taken, as
      // when it is sent alone (a 5xx, no answer within --post-timeout or a
      // dropped connection leave its fate unknown: no replay).
      body_taken_ = !post_failure_proves_not_taken(r.second.error());
      co_return e;
    }
    co_return std::move(r.second);
  }

  asio::awaitable<Expected<Message>> next_message(UpstreamChannel& up, Deadline d, Phase phase) {
    // A wake-up seen, or a cut recorded, while the call was not waiting.
    // (Read here, not in a coroutine of its own: this runs per message; no
    // co_await inside `||`: see run() on g++ 12.)
    bool woken = woken_;
    if (!woken) woken = (co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none;
    if (woken) {
      co_await rearm();
      co_return Expected<Message>(make_error(ErrorKind::kCancelled, phase, "woken"));
    }
    waiting_message_ = true;
    auto m = co_await up.next_message(d, phase);
    waiting_message_ = false;
    if (!m && m.error().kind == ErrorKind::kCancelled) co_await rearm();
    co_return m;
  }

  asio::awaitable<bool> setup_steps(UpstreamChannel& up, Attempt& a, bool call_follows) {
    auto connect_d = Deadline::earliest(Deadline::after(cfg_.connect_timeout), deadline_);
    if (auto st = co_await up.open(connect_d, cfg_.endpoint_timeout, deadline_); !st) {
      note_error(a, st.error());
      co_return false;
    }
    if (!session_) co_return true;  // the request is the client's own initialize
    auto init_d = Deadline::earliest(Deadline::after(cfg_.initialize_timeout), deadline_);
    std::string init_id = internal_id("init");
    auto r = co_await roundtrip(up, make_request(init_id, "initialize", session_->init_params),
                                init_id, init_d, Phase::kInitialize, a);
    if (!r) co_return false;
    if (r->is_error) {
      a.error = make_error(ErrorKind::kRejected, Phase::kInitialize,
                           "upstream refused the replayed initialize: " + r->raw.substr(0, 300));
      co_return false;
    }
    if (call_follows && cfg_.pipelining && !stats_.pipelining_off.load(std::memory_order_relaxed) &&
        up.can_pipeline()) {
      // Not waited for: it goes out in the same write as the next POST on
      // this session (logging/setLevel or the call), on the same kept-alive
      // connection, so the upstream still receives it first (post()).
      initialized_pending_ = true;
      initialized_deadline_ = init_d;
    } else if (auto s = co_await post(up, kInitialized, init_d, Phase::kInitialize); !s) {
      note_error(a, s.error());
      co_return false;
    }
    if (log_level_) {
      std::string id = internal_id("setLevel");
      if (!co_await roundtrip(up, make_request(id, "logging/setLevel", *log_level_), id, init_d,
                              Phase::kInitialize, a))
        co_return false;
    }
    co_return true;
  }

  // Records a failed step; a wait that was told to stop is a cancellation
  // (the client left or cancelled, or the bridge is stopping), not an error.
  void note_error(Attempt& a, const BridgeError& e) {
    if (e.kind == ErrorKind::kCancelled) {
      a.cancelled = true;
      return;
    }
    a.error = e;
  }

  // A pooled session that has been silent for --idle-probe-after may sit on
  // a path that died meanwhile (a NAT or proxy forgot the flow): prove it
  // alive with a ping before the call is sent on it. Failing here is phase
  // kConnect with nothing sent, so the call moves to a fresh session.
  bool idle_ready(UpstreamChannel& up) {
    state_ = State::kSetup;
    return up.idle_settled() && Clock::now() - up.last_activity() < cfg_.idle_probe_after;
  }
  asio::awaitable<bool> probe_idle(UpstreamChannel& up, Attempt& a) {
    state_ = State::kSetup;
    if (!co_await up.refresh_idle()) {
      a.error = make_error(ErrorKind::kClosed, Phase::kConnect, "warm session ended while idle");
      co_return false;
    }
    if (Clock::now() - up.last_activity() < cfg_.idle_probe_after) co_return true;
    stats_.pings_sent.fetch_add(1, std::memory_order_relaxed);
    auto d = Deadline::earliest(Deadline::after(cfg_.idle_probe_timeout), deadline_);
    std::string id = internal_id("probe");
    auto r = co_await roundtrip(up, make_request(id, "ping", ""), id, d, Phase::kConnect, a);
    if (r) co_return true;
    if (a.error) {
      a.error->phase = Phase::kConnect;
      if (a.error->kind == ErrorKind::kTimeout) {
        a.error->kind = ErrorKind::kUnresponsive;
        a.error->detail = "warm session silent for " +
                          format_duration(std::chrono::duration_cast<Millis>(Clock::now() - up.last_activity())) +
                          " did not answer a ping within " + format_duration(cfg_.idle_probe_timeout);
      }
      log::info("warm upstream session failed its liveness ping; using a fresh one",
                {{"cause", a.error->message()}});
    }
    co_return false;
  }

  // Sends one of the bridge's own requests and waits for its response.
  asio::awaitable<std::optional<Message>> roundtrip(UpstreamChannel& up, const std::string& body,
                                                    const std::string& id, Deadline d, Phase phase,
                                                    Attempt& a) {
    if (auto s = co_await post(up, body, d, phase); !s) {
      note_error(a, s.error());
      co_return std::nullopt;
    }
    const auto no_reply = [&] {
      return "no reply to " + std::string(to_string(phase)) + " within " +
             format_duration(phase == Phase::kInitialize ? cfg_.initialize_timeout : cfg_.request_timeout);
    };
    for (;;) {
      if (!sink_.alive()) {
        a.cancelled = true;
        co_return std::nullopt;
      }
      auto slice = Deadline::earliest(d, Deadline::after(kPollSlice));
      auto m = co_await next_message(up, slice, phase);
      if (!m) {
        if (m.error().kind == ErrorKind::kCancelled) continue;  // woken: alive() decides
        if (m.error().kind == ErrorKind::kTimeout && !d.reached()) continue;
        a.error = m.error();
        if (a.error->kind == ErrorKind::kTimeout) a.error->detail = no_reply();
        co_return std::nullopt;
      }
      if (m->kind == MsgKind::kResponse && m->id == id) co_return std::move(*m);
      if (!co_await handle_other(up, *m, d, phase, a, /*relay=*/false)) co_return std::nullopt;
      if (d.reached()) {  // messages keep coming, none of them the reply
        a.error = make_error(ErrorKind::kTimeout, phase, no_reply());
        co_return std::nullopt;
      }
    }
  }

  // Waits for the response to the client's request, relaying what comes
  // before it, probing a silent stream with ping. Returns the response's text
  // (all the caller keeps of it: no Message moved through the coroutine).
  asio::awaitable<std::optional<std::string>> wait_response(UpstreamChannel& up, const std::string& id,
                                                        Attempt& a) {
    state_ = State::kAwaitingResponse;
    std::optional<std::string> ping_id;
    Deadline ping_deadline = Deadline::never();
    for (;;) {
      if (!sink_.alive()) {
        a.cancelled = true;
        co_return std::nullopt;
      }
      if (auto w = sink_.client_wait(); w != client_wait_) {
        // Time spent waiting on the client (MRTR rounds) does not count.
        deadline_ = shifted(deadline_, w - client_wait_);
        hard_deadline_ = shifted(hard_deadline_, w - client_wait_);
        client_wait_ = w;
      }
      if (drain_wait_ != Clock::duration::zero()) {
        // Time spent waiting for the client to read (backpressure) is not
        // the upstream's: neither its deadline nor its ping's counts it.
        deadline_ = Deadline::earliest(shifted(deadline_, drain_wait_), hard_deadline_);
        ping_deadline = shifted(ping_deadline, drain_wait_);
        drain_wait_ = Clock::duration::zero();
      }
      auto now = Clock::now();
      if (deadline_.reached()) {
        a.error = make_error(ErrorKind::kTimeout, Phase::kRequest,
                             "no response within " +
                                 format_duration(Duration(std::chrono::duration_cast<Millis>(now - start_))) +
                                 " (--request-timeout " + format_duration(cfg_.request_timeout) + ")");
        co_return std::nullopt;
      }
      if (ping_id && ping_deadline.reached()) {
        a.error = make_error(ErrorKind::kUnresponsive, Phase::kRequest,
                             "stream silent for " +
                                 format_duration(std::chrono::duration_cast<Millis>(now - up.last_activity())) +
                                 " and ping unanswered within " + format_duration(cfg_.ping_timeout));
        co_return std::nullopt;
      }
      if (!ping_id && cfg_.ping_interval.count() > 0 &&
          now - up.last_activity() >= cfg_.ping_interval) {
        ping_id = internal_id("ping");
        ping_deadline = Deadline::after(cfg_.ping_timeout);
        stats_.pings_sent.fetch_add(1, std::memory_order_relaxed);
        auto s = co_await post(up, make_request(*ping_id, "ping", ""),
                               Deadline::earliest(ping_deadline, deadline_), Phase::kRequest);
        state_ = State::kAwaitingResponse;
        if (!s) {
          note_error(a, s.error());
          if (a.error && a.error->kind == ErrorKind::kTimeout) a.error->kind = ErrorKind::kUnresponsive;
          co_return std::nullopt;
        }
      }
      auto wake = Deadline::earliest(deadline_, Deadline::after(kPollSlice));
      if (ping_id) wake = Deadline::earliest(wake, ping_deadline);
      else if (cfg_.ping_interval.count() > 0)
        wake = Deadline::earliest(wake, Deadline::at(up.last_activity() + cfg_.ping_interval));
      if (auto r = sink_.take_response()) {  // (an `if`, not `&&`: see run() on g++ 12)
        if (!co_await relay_client_responses(up, a, std::move(r))) co_return std::nullopt;
      }
      state_ = State::kAwaitingResponse;
      auto m = co_await next_message(up, wake, Phase::kRequest);
      if (!m) {
        // A timeout re-checks the deadlines above; a wake-up asks alive().
        if (m.error().kind == ErrorKind::kTimeout || m.error().kind == ErrorKind::kCancelled) continue;
        a.error = m.error();
        co_return std::nullopt;
      }
      if (m->kind == MsgKind::kResponse) {
        if (m->id == id) co_return std::move(m->raw);
        if (same_value_other_type(m->id, id)) {
          // A server that turned 7 into "7": the answer is ours but would
          // never match, and the call would wait out its deadline.
          a.error = make_error(ErrorKind::kProtocol, Phase::kRequest,
                               "the upstream answered request " + id.substr(0, 64) + " with id " +
                                   m->id.substr(0, 64) + " (a JSON-RPC id keeps its type)");
          co_return std::nullopt;
        }
        if (ping_id && m->id == *ping_id) {
          ping_id.reset();
          ping_deadline = Deadline::never();
        }
        continue;  // a stale reply to one of ours
      }
      if (!co_await handle_other(up, *m, deadline_, Phase::kRequest, a, /*relay=*/true))
        co_return std::nullopt;
    }
  }

  // Sends the client's answers to forwarded server requests back upstream,
  // under the upstream's own ids.
  // `r`: the first, already taken (a coroutine is entered only when there is one).
  asio::awaitable<bool> relay_client_responses(UpstreamChannel& up, Attempt& a, std::optional<Message> r) {
    for (; r; r = sink_.take_response()) {
      auto it = server_requests_.find(r->id);
      if (it == server_requests_.end()) continue;  // not (or no longer) ours
      auto fixed = with_id(r->raw, it->second);
      sink_.end_request(it->first);
      server_requests_.erase(it);
      if (!fixed) continue;
      if (auto s = co_await post(up, *fixed, deadline_, Phase::kRequest); !s) {
        note_error(a, s.error());
        co_return false;
      }
    }
    co_return true;
  }

  // Upstream notifications and requests that are not the awaited response.
  asio::awaitable<bool> handle_other(UpstreamChannel& up, Message& m, Deadline d, Phase phase,
                                     Attempt& a, bool relay) {
    if (m.kind == MsgKind::kRequest) {
      std::string reply;
      if (m.method == "ping") {
        reply = R"({"jsonrpc":"2.0","id":)" + m.id + R"(,"result":{}})";
      } else {
        // Upstream sessions number their requests from 0: give the client an
        // id unique across all calls, and map its answer back.
        std::string bridge_id = internal_id("s2c");
        std::string why = "the bridge is still setting up the upstream session";
        auto rewritten = with_id(m.raw, bridge_id);
        if (relay && rewritten && sink_.forward_request(m.method, bridge_id, *rewritten, &why)) {
          stats_.server_requests.fetch_add(1, std::memory_order_relaxed);
          server_requests_.emplace(bridge_id, m.id);
          co_return true;
        }
        reply = jsonrpc_plain_error(m.id, -32601,
                                    "mcp-sse-bridge cannot forward '" + m.method + "': " + why);
      }
      if (auto s = co_await post(up, reply, d, phase); !s) {
        note_error(a, s.error());
        co_return false;
      }
      co_return true;
    }
    if (m.kind != MsgKind::kNotification || !relay) co_return true;
    if (m.method == "notifications/progress" && !req_.progress_token.empty() &&
        m.progress_token == req_.progress_token) {
      // Progress proves the call is alive: extend its deadline, within the cap.
      deadline_ = Deadline::earliest(Deadline::after(cfg_.request_timeout), hard_deadline_);
    }
    if (!sink_.deliver(m.raw)) {
      a.cancelled = true;
      co_return false;
    }
    if (sink_.congested()) co_return co_await wait_client_drain(a);
    co_return true;
  }

  // Backpressure: the client reads slower than the upstream streams to it
  // (a flood of notifications), so the upstream is not read until the
  // client's queue drains, which lets the upstream's socket fill and slow
  // its writer instead of growing the bridge's memory. The time spent
  // waiting on the client does not count against the upstream's
  // --request-timeout (the deadline moves by it), only against the call's
  // hard cap; woken by the call's cancellation (hang-up, cancel, stop). A
  // client that stops reading altogether is cut by --client-write-timeout.
  asio::awaitable<bool> wait_client_drain(Attempt& a) {
    asio::steady_timer t(ex_);
    auto t0 = Clock::now();
    while (sink_.congested() && !hard_deadline_.reached()) {
      if (!sink_.alive()) {
        a.cancelled = true;
        co_return false;
      }
      t.expires_at(std::min(Clock::now() + kDrainPoll, hard_deadline_.when()));
      auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      if (ec) break;  // cancelled: the main loop asks the sink why
    }
    drain_wait_ += Clock::now() - t0;  // wait_response() moves its deadlines by it
    co_return true;
  }
  static constexpr auto kDrainPoll = std::chrono::milliseconds(5);

  asio::awaitable<void> cancel_upstream(UpstreamChannel& up) {
    state_ = State::kCancelling;
    co_await rearm();
    std::string n = R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":)" +
                    req_.id + R"J(,"reason":"client went away (mcp-sse-bridge)"}})J";
    (void)co_await up.post(n, Deadline::after(Millis(1000)), Phase::kRequest);
  }

  const UpstreamConfig& cfg_;
  ForwarderStats& stats_;
  const Message& req_;
  const ClientSession* session_;
  const std::optional<std::string>& log_level_;
  std::string_view headers_;
  CallSink& sink_;
  Clock::time_point start_;
  Deadline deadline_;
  Deadline hard_deadline_;
  asio::any_io_executor ex_;
  State state_ = State::kSetup;
  bool waiting_message_ = false;
  bool woken_ = false;
  // notifications/initialized goes out with the next POST (setup, pipelining).
  bool initialized_pending_ = false;
  Deadline initialized_deadline_ = Deadline::never();
  // Whether the last post()'s body may have been taken by the upstream, when
  // that is not what its returned error says: a pipelined
  // notifications/initialized failed ahead of it (before it was sent, or
  // refused while the body's own fate is what counts).
  std::optional<bool> body_taken_;
  Clock::duration client_wait_{};  // sink_.client_wait() already added to the deadlines
  Clock::duration drain_wait_{};   // waited on a congested client, not yet added to them
  asio::cancellation_signal own_sig_;
  asio::cancellation_signal* sig_ = &own_sig_;
  std::map<std::string, std::string> server_requests_;  // bridge id -> upstream id
};

// The pool's stand-in for a client: alive until the pool stops.
class PoolSink : public CallSink {
 public:
  explicit PoolSink(const bool& stopping) : stopping_(stopping) {}
  bool deliver(std::string_view) override { return alive(); }
  bool alive() override { return !stopping_; }

 private:
  const bool& stopping_;
};

}  // namespace

// Warm sessions of one loop: opened and initialized ahead of the calls that
// will use them (connect + `endpoint` + initialize round trips paid in the
// background), on the loop that will use them. A session serves one call at
// a time; with reuse on, it returns after a clean call. A session that died
// while idle, or sat idle longer than max_idle_age, is closed, never handed
// out. Fillers are coroutines (at most --pool-fillers at once per loop).
// Loop thread only.
class WarmPool : public std::enable_shared_from_this<WarmPool> {
 public:
  WarmPool(EventLoop& loop, const UpstreamConfig& cfg, ForwarderStats& fstats, PoolStats& stats,
           std::atomic<size_t>& idle_total)
      : loop_(loop), cfg_(cfg), fstats_(fstats), stats_(stats), idle_total_(idle_total),
        sweep_(loop.io()) {}

  // O(1) in the number of buckets: only key_id's own bucket is expired here
  // (what is handed out is never past its age); the others are the sweep's.
  ChannelPtr take(const std::string& key_id) {
    auto it = buckets_.find(key_id);
    if (it == buckets_.end() || it->second.idle.empty()) return nullptr;
    expire_bucket(it->second, Clock::now());
    while (!it->second.idle.empty()) {
      Entry e = std::move(it->second.idle.front());
      it->second.idle.pop_front();
      drop_idle_count();
      if (e.ch->failed()) {
        stats_.dead.fetch_add(1, std::memory_order_relaxed);
        e.ch->abort();
        continue;
      }
      return std::move(e.ch);
    }
    return nullptr;
  }

  // make_key() builds the PoolKey of key_id, needed only when its bucket is gone.
  template <class MakeKey>
  void give_back(const std::string& key_id, ChannelPtr ch, MakeKey&& make_key) {
    if (stopping_ || idle_total_.load() >= cfg_.pool.size || ch->failed()) {
      ch->abort();
      return;
    }
    auto [it, fresh] = buckets_.try_emplace(key_id);
    if (fresh) {
      it->second.key = make_key();
      stats_.keys.fetch_add(1, std::memory_order_relaxed);
    }
    auto& b = it->second;
    b.idle.push_back(Entry{std::move(ch), Clock::now()});
    add_idle_count();
    stats_.reused.fetch_add(1, std::memory_order_relaxed);
    schedule_sweep();
  }

  // Asks for one more ready session for key (bounded by the per-key and
  // total limits).
  void want(const PoolKey& key) {
    if (stopping_ || cfg_.pool.size == 0) return;
    auto& b = bucket(key);
    if (idle_total_.load() + pending_ >= cfg_.pool.size) return;
    if (b.idle.size() + static_cast<size_t>(b.pending) >= 2) return;
    ++b.pending;
    ++pending_;
    work_.push_back(key.id());
    while (fillers_ < cfg_.pool.fillers && !work_.empty()) {
      ++fillers_;
      asio::co_spawn(loop_.io(), filler(shared_from_this()), asio::detached);
    }
  }

  void stop() {
    stopping_ = true;
    work_.clear();
    for (auto* ch : opening_) ch->abort();
    for (auto& [k, b] : buckets_)
      for (auto& e : b.idle) {
        e.ch->abort();
        drop_idle_count();
      }
    stats_.keys.fetch_sub(static_cast<int64_t>(buckets_.size()), std::memory_order_relaxed);
    buckets_.clear();
    sweep_.cancel();
  }

 private:
  struct Entry {
    ChannelPtr ch;
    Clock::time_point ready_at;
  };
  struct Bucket {
    PoolKey key;
    std::deque<Entry> idle;
    int pending = 0;
  };

  Bucket& bucket(const PoolKey& key) {
    auto [it, fresh] = buckets_.try_emplace(key.id());
    if (fresh) {
      it->second.key = key;
      stats_.keys.fetch_add(1, std::memory_order_relaxed);
      schedule_sweep();  // drops the bucket if it stays empty
    }
    return it->second;
  }
  void add_idle_count() {
    idle_total_.fetch_add(1);
    stats_.idle.fetch_add(1, std::memory_order_relaxed);
  }
  void drop_idle_count() {
    idle_total_.fetch_sub(1);
    stats_.idle.fetch_sub(1, std::memory_order_relaxed);
  }

  // Closes the bucket's sessions idle for max_idle_age or longer (the oldest
  // are at the front).
  void expire_bucket(Bucket& b, Clock::time_point now) {
    auto& q = b.idle;
    while (!q.empty() && now - q.front().ready_at >= cfg_.pool.max_idle_age) {
      q.front().ch->abort();
      q.pop_front();
      drop_idle_count();
      stats_.expired.fetch_add(1, std::memory_order_relaxed);
    }
  }
  // Every bucket (the sweep): expired sessions closed, empty buckets dropped.
  void expire(Clock::time_point now) {
    for (auto it = buckets_.begin(); it != buckets_.end();) {
      expire_bucket(it->second, now);
      if (it->second.idle.empty() && it->second.pending == 0) {
        it = buckets_.erase(it);
        stats_.keys.fetch_sub(1, std::memory_order_relaxed);
      } else {
        ++it;
      }
    }
  }

  // Idle sessions are closed at their max age even when no call comes.
  void schedule_sweep() {
    if (sweeping_ || stopping_) return;
    sweeping_ = true;
    sweep_.expires_after(std::max<Duration>(cfg_.pool.max_idle_age / 4, Duration(50)));
    sweep_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      self->sweep_done(ec);
    });
  }
  void sweep_done(const boost::system::error_code& ec) {
    {
      sweeping_ = false;
      if (ec || stopping_) return;
      expire(Clock::now());
      // Until every bucket is gone: take() leaves emptied buckets to the sweep.
      if (!buckets_.empty()) schedule_sweep();
    }
  }

  // `self` keeps the pool alive while the filler runs.
  asio::awaitable<void> filler(std::shared_ptr<WarmPool> self) {
    (void)self;
    co_await asio::this_coro::throw_if_cancelled(false);
    while (!stopping_ && !work_.empty()) {
      std::string id = std::move(work_.front());
      work_.pop_front();
      auto it = buckets_.find(id);
      if (it == buckets_.end()) {
        --pending_;
        continue;
      }
      PoolKey key = it->second.key;
      ChannelPtr ch;
      // The pool never takes the last free upstream sessions from calls.
      if (UpstreamChannel::open_count() + static_cast<size_t>(cfg_.pool.fillers) < cfg_.max_sessions)
        ch = co_await open(key);
      --pending_;
      auto b = buckets_.find(id);
      if (b != buckets_.end()) --b->second.pending;
      if (!ch) {
        stats_.open_failed.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (stopping_ || b == buckets_.end() || idle_total_.load() >= cfg_.pool.size) {
        ch->abort();
        continue;
      }
      b->second.idle.push_back(Entry{std::move(ch), Clock::now()});
      add_idle_count();
      stats_.opened.fetch_add(1, std::memory_order_relaxed);
      schedule_sweep();
    }
    --fillers_;
  }

  asio::awaitable<ChannelPtr> open(const PoolKey& key) {
    PoolSink sink(stopping_);
    Message none;
    CallRun run(cfg_, fstats_, none, &key.session, key.log_level, key.headers, sink, Clock::now(),
                loop_.io().get_executor());
    auto ch = std::make_unique<UpstreamChannel>(loop_.io().get_executor(), cfg_, key.headers);
    opening_.insert(ch.get());
    Attempt a;
    bool ok = co_await run.setup(*ch, a);
    opening_.erase(ch.get());
    if (!ok) {
      if (a.error) log::debug("warm session not opened", {{"cause", a.error->message()}});
      ch->abort();
      co_return nullptr;
    }
    co_return ch;
  }

  EventLoop& loop_;
  const UpstreamConfig& cfg_;
  ForwarderStats& fstats_;
  PoolStats& stats_;
  std::atomic<size_t>& idle_total_;
  std::unordered_map<std::string, Bucket> buckets_;
  std::deque<std::string> work_;
  std::unordered_set<UpstreamChannel*> opening_;
  size_t pending_ = 0;
  int fillers_ = 0;
  bool stopping_ = false;
  asio::steady_timer sweep_;
  bool sweeping_ = false;
};

asio::awaitable<CallResult> Forwarder::call(EventLoop& loop, const Message& req,
                                            const ClientSession* session,
                                            std::optional<std::string> log_level_params,
                                            std::string extra_headers, CallSink& sink,
                                            Clock::time_point arrival) {
  stats_.calls.fetch_add(1, std::memory_order_relaxed);
  auto start = arrival;
  auto ex = loop.io().get_executor();
  auto run = std::make_shared<CallRun>(cfg_, stats_, req, session, log_level_params, extra_headers,
                                       sink, start, ex);
  asio::cancellation_signal* inline_sig = sink.wake_signal();
  if (inline_sig) {
    // This coroutine must have been spawned bound to that signal
    // (spawn_bound): one whose cancellation state is connected to nothing
    // would never see a wake-up, so it takes the child coroutine instead.
    if (!(co_await asio::this_coro::cancellation_state).slot().is_connected()) {
      inline_sig = nullptr;
    } else {
      // A cut is a value in this coroutine from here on, never an exception:
      // a wake-up that lands before an attempt runs (set_waker below calls
      // it at once for a client already gone) must not throw at the
      // caller's next co_await.
      co_await asio::this_coro::throw_if_cancelled(false);
      run->use_signal(inline_sig);
    }
  }
  // The client's cancellation, departure and routed answers wake the call
  // through its signal (the waker runs on this loop).
  std::weak_ptr<CallRun> weak = run;
  sink.set_waker([weak](bool urgent) {
    if (auto r = weak.lock()) r->wake(urgent);
  });
  CallResult out;
  ChannelPtr warm;
  std::string key_id;
  auto make_key = [&] {
    return PoolKey{*session, extra_headers, log_level_params};
  };
  std::shared_ptr<WarmPool> pool;
  if (session && cfg_.pool.size > 0) pool = pool_for(loop);
  if (pool) {
    key_id = PoolKey::make_id(*session, extra_headers, log_level_params);
    warm = pool->take(key_id);
    if (warm) pool_stats_.hits.fetch_add(1, std::memory_order_relaxed);
    else pool_stats_.misses.fetch_add(1, std::memory_order_relaxed);
    // With reuse a session comes back after its call; without, or on a
    // miss, ask for one more for the next call on this key.
    if (!warm || !cfg_.pool.reuse) pool->want(make_key());
  }
  if (run->deadline().reached()) {
    // A later call of a batch whose shared deadline has passed.
    out.error = make_error(ErrorKind::kTimeout, Phase::kConnect,
                           "the request's deadline (--request-timeout " +
                               format_duration(cfg_.request_timeout) +
                               ") passed before this call could start");
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    out.response = jsonrpc_error_response(req.id, *out.error, elapsed_ms(start), cfg_.sse_url.str());
    sink.set_waker(nullptr);
    co_return out;
  }
  bool warm_failed = false;  // a warm session failed before taking the request
  for (int attempt = 0;; ++attempt) {
    out.attempts = attempt + 1;
    bool was_warm = warm != nullptr;
    Attempt a;
    if (inline_sig) {
      // Inline, in the caller's coroutine: it was spawned bound to the
      // sink's signal, so the call's wake-ups reach the attempt's waits. A
      // cut recorded after an earlier call of that coroutine is dropped (a
      // reset only then: it allocates).
      if ((co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none)
        co_await asio::this_coro::reset_cancellation_state();
      a = co_await run->run(std::move(warm), &out.upstream_session);
    } else {
      // A child coroutine bound to the call's own signal. (An awaitable, not
      // a function object: Boost 1.81's co_spawn destroys a function
      // object's captures after its caller may have resumed.)
      a = co_await asio::co_spawn(ex, run->run(std::move(warm), &out.upstream_session),
                                  asio::bind_cancellation_slot(run->signal().slot(), asio::use_awaitable));
    }
    // A pooled session that failed before taking the request is retried on a
    // fresh one without using up a retry: its death while idle must not
    // become the client's error.
    if (was_warm && !a.response && !a.cancelled && !a.request_sent && !run->deadline().reached()) {
      --attempt;
      warm_failed = true;
      stats_.retries.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    auto keep_or_close = [&] {
      if (pool && cfg_.pool.reuse && a.reusable) pool->give_back(key_id, std::move(a.reusable), make_key);
      else if (a.reusable)
        // Closed once the caller has sent the response (it does so before
        // this runs): the client does not wait for the close.
        asio::post(ex, [ch = std::move(a.reusable)] { ch->abort(); });
    };
    if (a.response) {
      out.response = std::move(*a.response);
      keep_or_close();
      break;
    }
    if (a.cancelled) {
      keep_or_close();  // a session the attempt never used
      stats_.cancelled.fetch_add(1, std::memory_order_relaxed);
      out.cancelled = true;
      break;
    }
    if (attempt < cfg_.retries && a.error && may_retry(*a.error, a.request_sent, req.method) &&
        !run->deadline().reached()) {
      stats_.retries.fetch_add(1, std::memory_order_relaxed);
      log::info("retrying call on a fresh upstream session",
                {{"method", req.method}, {"id", req.id}, {"cause", a.error->message()}});
      continue;
    }
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    out.error = a.error;
    if (!out.error) out.error = make_error(ErrorKind::kInternal, Phase::kRequest, "call ended without a result");
    if (out.error->kind == ErrorKind::kTimeout && out.error->phase == Phase::kConnect &&
        !run->deadline().reached()) {
      // The connect step's own bound passed, not the request's: the host or
      // the path to it is down. Say so, rather than "deadline exceeded".
      out.error->kind = ErrorKind::kUnreachable;
      out.error->detail += " (no answer within --connect-timeout " +
                           format_duration(cfg_.connect_timeout) +
                           ": the upstream host or the path to it is down)";
    }
    if (warm_failed) out.error->detail += "; a warm session had just failed its liveness ping";
    out.response = jsonrpc_error_response(req.id, *out.error, elapsed_ms(start), cfg_.sse_url.str());
    break;
  }
  sink.set_waker(nullptr);
  co_return out;
}

void Forwarder::spawn_bound(asio::io_context& io, asio::awaitable<void> calls,
                            std::shared_ptr<asio::cancellation_signal> wake) {
  auto* sig = wake.get();
  asio::co_spawn(io, std::move(calls),
                 asio::bind_cancellation_slot(sig->slot(), [wake = std::move(wake)](std::exception_ptr) {}));
}

Forwarder::Forwarder(const UpstreamConfig& cfg) : cfg_(cfg) {
  Resolver::shared().set_limits(cfg.resolve_timeout, cfg.resolve_cache_ttl);
}

Forwarder::~Forwarder() = default;

size_t Forwarder::open_sessions() { return UpstreamChannel::open_count(); }

std::shared_ptr<WarmPool> Forwarder::pool_for(EventLoop& loop) {
  std::lock_guard lk(pools_mu_);
  if (pools_stopped_) return nullptr;  // no new pool (and no fillers) after stop()
  auto& p = pools_[&loop];
  if (!p) p = std::make_shared<WarmPool>(loop, cfg_, stats_, pool_stats_, pool_idle_);
  return p;
}

void Forwarder::prewarm(EventLoop& loop, const ClientSession& session, std::string_view extra_headers,
                        const std::optional<std::string>& log_level_params) {
  if (cfg_.pool.size == 0) return;
  if (auto pool = pool_for(loop)) pool->want(PoolKey{session, std::string(extra_headers), log_level_params});
}

void Forwarder::stop() {
  // Each pool stops on its loop; fillers still running hold it until they end.
  std::vector<std::pair<EventLoop*, std::shared_ptr<WarmPool>>> all;
  {
    std::lock_guard lk(pools_mu_);
    pools_stopped_ = true;
    for (auto& [l, p] : pools_) all.emplace_back(l, std::move(p));
    pools_.clear();
  }
  std::vector<std::future<void>> done;
  // By reference: the post takes the pool out of `all`, so that its last
  // reference (and its timer) goes on its own loop, not on this thread.
  for (auto& [l, p] : all) {
    auto pr = std::make_shared<std::promise<void>>();
    done.push_back(pr->get_future());
    if (l->in_loop()) {
      p->stop();
      pr->set_value();
      continue;
    }
    asio::post(l->io(), [p = std::move(p), pr]() mutable {
      p->stop();
      p.reset();
      pr->set_value();
    });
  }
  for (auto& d : done) d.wait_for(std::chrono::seconds(2));
}

asio::awaitable<CallResult> Forwarder::guarded(asio::awaitable<CallResult> call, const Message& m,
                                               CallSink& sink, Clock::time_point arrival,
                                               const Url& upstream) {
  std::string what;
  try {
    co_return co_await std::move(call);
  } catch (const std::exception& e) {
    what = e.what();
  }
  sink.set_waker(nullptr);
  CallResult r;
  r.error = make_error(ErrorKind::kInternal, Phase::kRequest,
                       "internal error in mcp-sse-bridge: " + what);
  r.response = jsonrpc_error_response(m.id, *r.error, elapsed_ms(arrival), upstream.str());
  log::error("call failed with an exception", {{"method", m.method}, {"id", m.id}, {"what", what}});
  co_return r;
}

}  // namespace msb
