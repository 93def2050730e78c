#include "mcp_sse_bridge/forwarder.h"

#include <poll.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/resolver.h"
#include "mcp_sse_bridge/retry_policy.h"
#include "mcp_sse_bridge/upstream_session.h"

namespace msb {

namespace {

std::atomic<uint64_t> g_internal_ids{0};

// Ids of the bridge's own upstream requests. A string prefix no client
// plausibly uses; the counter keeps them unique per process.
std::string internal_id(std::string_view what) {
  return json_quote("mcp-sse-bridge:" + std::string(what) + ":" +
                    std::to_string(g_internal_ids.fetch_add(1, std::memory_order_relaxed)));
}

std::string make_request(std::string_view id, std::string_view method, std::string_view params) {
  std::string s = R"({"jsonrpc":"2.0","id":)";
  s.append(id).append(R"(,"method":)").append(json_quote(method));
  if (!params.empty()) s.append(R"(,"params":)").append(params);
  s.push_back('}');
  return s;
}

// Returns `raw` (a JSON-RPC message) with its id replaced by `id_json`.
std::optional<std::string> with_id(const std::string& raw, std::string_view id_json) {
  auto j = nlohmann::ordered_json::parse(raw, nullptr, false);
  auto id = nlohmann::ordered_json::parse(id_json, nullptr, false);
  if (j.is_discarded() || !j.is_object() || id.is_discarded()) return std::nullopt;
  j["id"] = std::move(id);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// How one attempt ended.
struct Attempt {
  std::optional<std::string> response;  // the upstream's final response
  std::optional<BridgeError> error;
  bool cancelled = false;
  bool request_sent = false;  // the client's request may have reached the upstream
  std::unique_ptr<UpstreamSession> reusable;  // healthy after a clean exchange
};

class CallRun {
 public:
  CallRun(const UpstreamConfig& cfg, ForwarderStats& stats, const Message& req,
          const ClientSession* session, const std::optional<std::string>& log_level,
          std::string_view headers, CallSink& sink, Clock::time_point start)
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
        keep_waiting_([this] { return sink_.alive(); }) {}

  Deadline deadline() const { return deadline_; }

  // Opens a session and replays the client session onto it: initialize,
  // notifications/initialized, the latest logging/setLevel. Fills a.error.
  bool setup(UpstreamSession& up, Attempt& a) {
    bool ok = setup_steps(up, a);
    if (ok) {
      stats_.sessions_opened.fetch_add(1, std::memory_order_relaxed);
    } else if (a.error && a.error->kind != ErrorKind::kCancelled) {
      stats_.session_failures[static_cast<int>(a.error->phase)].fetch_add(1, std::memory_order_relaxed);
    }
    return ok;
  }

  bool setup_steps(UpstreamSession& up, Attempt& a) {
    auto connect_d = Deadline::earliest(Deadline::after(cfg_.connect_timeout), deadline_);
    if (auto st = up.open(connect_d, cfg_.endpoint_timeout, deadline_, &keep_waiting_); !st) {
      note_error(a, st.error());
      return false;
    }
    if (!session_) return true;  // the request is the client's own initialize
    auto init_d = Deadline::earliest(Deadline::after(cfg_.initialize_timeout), deadline_);
    std::string init_id = internal_id("init");
    auto r = roundtrip(up, make_request(init_id, "initialize", session_->init_params), init_id,
                       init_d, Phase::kInitialize, a);
    if (!r) return false;
    if (r->is_error) {
      a.error = make_error(ErrorKind::kRejected, Phase::kInitialize,
                           "upstream refused the replayed initialize: " + r->raw.substr(0, 300));
      return false;
    }
    if (auto s = up.post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})", init_d,
                         Phase::kInitialize, &keep_waiting_);
        !s) {
      note_error(a, s.error());
      return false;
    }
    if (log_level_) {
      std::string id = internal_id("setLevel");
      if (!roundtrip(up, make_request(id, "logging/setLevel", *log_level_), id, init_d,
                     Phase::kInitialize, a))
        return false;
    }
    return true;
  }

  // One attempt: on `warm` (a pooled, ready session) when given, else on a
  // fresh session set up here.
  Attempt run(std::unique_ptr<UpstreamSession> warm, std::string* upstream_session_id) {
    Attempt a;
    const bool is_warm = warm != nullptr;
    std::unique_ptr<UpstreamSession> owned = std::move(warm);
    if (!owned) {
      if (UpstreamSession::open_count() >= cfg_.max_sessions) {
        a.error = make_error(ErrorKind::kOverloaded, Phase::kConnect,
                             std::to_string(cfg_.max_sessions) +
                                 " upstream sessions open (--max-upstream-sessions)");
        return a;
      }
      owned = std::make_unique<UpstreamSession>(cfg_, std::string(headers_));
    }
    UpstreamSession& up = *owned;
    up.set_watch(sink_.wake_fd(), sink_.client_fd());
    const bool ready = is_warm ? probe_idle(up, a) : setup(up, a);
    *upstream_session_id = up.upstream_session_id();
    if (!ready) return a;
    // The request itself.
    if (auto s = up.post(req_.raw, deadline_, Phase::kRequest, &keep_waiting_); !s) {
      // Connect failures and 404 (session gone, even when the stream's end
      // was seen first) prove the request was not taken.
      auto& e = s.error();
      a.request_sent = !post_failure_proves_not_taken(e);
      note_error(a, e);
      return a;
    }
    a.request_sent = true;
    auto resp = wait_response(up, req_.id, a);
    if (resp) a.response = std::move(resp->raw);
    if (a.cancelled) cancel_upstream(up);
    bool clean = resp && server_requests_.empty();
    for (auto& [bridge_id, upstream_id] : server_requests_) sink_.end_request(bridge_id);
    server_requests_.clear();
    if (clean) {
      up.set_watch(-1, -1);  // the sink's fds die with this call
      a.reusable = std::move(owned);
    }
    return a;
  }

 private:
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
  bool probe_idle(UpstreamSession& up, Attempt& a) {
    if (Clock::now() - up.last_activity() < cfg_.idle_probe_after) return true;
    stats_.pings_sent.fetch_add(1, std::memory_order_relaxed);
    auto d = Deadline::earliest(Deadline::after(cfg_.idle_probe_timeout), deadline_);
    std::string id = internal_id("probe");
    auto r = roundtrip(up, make_request(id, "ping", ""), id, d, Phase::kConnect, a);
    if (r) return true;
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
    return false;
  }

  // Sends one of the bridge's own requests and waits for its response.
  std::optional<Message> roundtrip(UpstreamSession& up, const std::string& body,
                                   const std::string& id, Deadline d, Phase phase, Attempt& a) {
    if (auto s = up.post(body, d, phase, &keep_waiting_); !s) {
      note_error(a, s.error());
      return std::nullopt;
    }
    for (;;) {
      if (!sink_.alive()) {
        a.cancelled = true;
        return std::nullopt;
      }
      auto slice = Deadline::earliest(d, Deadline::after(Forwarder::kPollSlice));
      auto m = up.next_message(slice, phase);
      if (!m) {
        if (m.error().kind == ErrorKind::kCancelled) continue;  // woken: alive() decides
        if (m.error().kind == ErrorKind::kTimeout && !d.reached()) continue;
        a.error = m.error();
        if (a.error->kind == ErrorKind::kTimeout)
          a.error->detail = "no reply to " + std::string(to_string(phase)) + " within " +
                            format_duration(phase == Phase::kInitialize ? cfg_.initialize_timeout
                                                                        : cfg_.request_timeout);
        return std::nullopt;
      }
      if (m->kind == MsgKind::kResponse && m->id == id) return std::move(*m);
      if (!handle_other(up, *m, d, phase, a, /*relay=*/false)) return std::nullopt;
    }
  }

  // Waits for the response to the client's request, relaying what comes
  // before it, probing a silent stream with ping.
  std::optional<Message> wait_response(UpstreamSession& up, const std::string& id, Attempt& a) {
    std::optional<std::string> ping_id;
    Deadline ping_deadline = Deadline::never();
    for (;;) {
      if (!sink_.alive()) {
        a.cancelled = true;
        return std::nullopt;
      }
      auto now = Clock::now();
      if (deadline_.reached()) {
        a.error = make_error(ErrorKind::kTimeout, Phase::kRequest,
                             "no response within " + format_duration(Duration(std::chrono::duration_cast<Millis>(now - start_))) +
                                 " (--request-timeout " + format_duration(cfg_.request_timeout) + ")");
        return std::nullopt;
      }
      if (ping_id && ping_deadline.reached()) {
        a.error = make_error(ErrorKind::kUnresponsive, Phase::kRequest,
                             "stream silent for " +
                                 format_duration(std::chrono::duration_cast<Millis>(now - up.last_activity())) +
                                 " and ping unanswered within " + format_duration(cfg_.ping_timeout));
        return std::nullopt;
      }
      if (!ping_id && cfg_.ping_interval.count() > 0 &&
          now - up.last_activity() >= cfg_.ping_interval) {
        ping_id = internal_id("ping");
        ping_deadline = Deadline::after(cfg_.ping_timeout);
        stats_.pings_sent.fetch_add(1, std::memory_order_relaxed);
        auto s = up.post(make_request(*ping_id, "ping", ""),
                         Deadline::earliest(ping_deadline, deadline_), Phase::kRequest, &keep_waiting_);
        if (!s) {
          note_error(a, s.error());
          if (a.error && a.error->kind == ErrorKind::kTimeout) a.error->kind = ErrorKind::kUnresponsive;
          return std::nullopt;
        }
      }
      auto wake = Deadline::earliest(deadline_, Deadline::after(Forwarder::kPollSlice));
      if (ping_id) wake = Deadline::earliest(wake, ping_deadline);
      else if (cfg_.ping_interval.count() > 0)
        wake = Deadline::earliest(wake, Deadline::at(up.last_activity() + cfg_.ping_interval));
      if (!relay_client_responses(up, a)) return std::nullopt;
      auto m = up.next_message(wake, Phase::kRequest);
      if (!m) {
        // A timeout re-checks the deadlines above; a wake-up asks alive().
        if (m.error().kind == ErrorKind::kTimeout || m.error().kind == ErrorKind::kCancelled) continue;
        a.error = m.error();
        return std::nullopt;
      }
      if (m->kind == MsgKind::kResponse) {
        if (m->id == id) return std::move(*m);
        if (ping_id && m->id == *ping_id) {
          ping_id.reset();
          ping_deadline = Deadline::never();
        }
        continue;  // a stale reply to one of ours
      }
      if (!handle_other(up, *m, deadline_, Phase::kRequest, a, /*relay=*/true)) return std::nullopt;
    }
  }

  // Sends the client's answers to forwarded server requests back upstream,
  // under the upstream's own ids.
  bool relay_client_responses(UpstreamSession& up, Attempt& a) {
    while (auto r = sink_.take_response()) {
      auto it = server_requests_.find(r->id);
      if (it == server_requests_.end()) continue;  // not (or no longer) ours
      auto fixed = with_id(r->raw, it->second);
      sink_.end_request(it->first);
      server_requests_.erase(it);
      if (!fixed) continue;
      if (auto s = up.post(*fixed, deadline_, Phase::kRequest, &keep_waiting_); !s) {
        note_error(a, s.error());
        return false;
      }
    }
    return true;
  }

  // Upstream notifications and requests that are not the awaited response.
  bool handle_other(UpstreamSession& up, Message& m, Deadline d, Phase phase, Attempt& a,
                    bool relay) {
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
          return true;
        }
        reply = jsonrpc_plain_error(m.id, -32601,
                                    "mcp-sse-bridge cannot forward '" + m.method + "': " + why);
      }
      if (auto s = up.post(reply, d, phase, &keep_waiting_); !s) {
        note_error(a, s.error());
        return false;
      }
      return true;
    }
    if (m.kind != MsgKind::kNotification || !relay) return true;
    if (m.method == "notifications/progress" && !req_.progress_token.empty() &&
        m.progress_token == req_.progress_token) {
      // Progress proves the call is alive: extend its deadline, within the cap.
      deadline_ = Deadline::earliest(Deadline::after(cfg_.request_timeout), hard_deadline_);
    }
    if (!sink_.deliver(m.raw)) {
      a.cancelled = true;
      return false;
    }
    return true;
  }

  void cancel_upstream(UpstreamSession& up) {
    std::string n = R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":)" +
                    req_.id + R"J(,"reason":"client went away (mcp-sse-bridge)"}})J";
    (void)up.post(n, Deadline::after(Millis(1000)), Phase::kRequest);
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
  std::map<std::string, std::string> server_requests_;  // bridge id -> upstream id
  // Asked by every upstream wait when woken and every kPollSlice: the client
  // may cancel or leave, the bridge may stop.
  UpstreamSession::KeepWaiting keep_waiting_;
};

}  // namespace

CallResult Forwarder::call(const Message& req, const ClientSession* session,
                           const std::optional<std::string>& log_level_params,
                           std::string_view extra_headers, CallSink& sink,
                           Clock::time_point arrival) {
  stats_.calls.fetch_add(1, std::memory_order_relaxed);
  auto start = arrival;
  CallRun run(cfg_, stats_, req, session, log_level_params, extra_headers, sink, start);
  CallResult out;
  std::unique_ptr<UpstreamSession> warm;
  std::optional<PoolKey> key;
  if (session && pool_.enabled()) {
    key = PoolKey{session->id, session->init_params, std::string(extra_headers), log_level_params};
    warm = pool_.take(*key);
    // With reuse a session comes back after its call; without, or on a
    // miss, ask for one more for the next call on this key.
    if (!warm || !cfg_.pool.reuse) pool_.want(*key);
  }
  if (run.deadline().reached()) {
    // A later call of a batch whose shared deadline has passed.
    out.error = make_error(ErrorKind::kTimeout, Phase::kConnect,
                           "the request's deadline (--request-timeout " +
                               format_duration(cfg_.request_timeout) +
                               ") passed before this call could start");
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    out.response = jsonrpc_error_response(req.id, *out.error, elapsed_ms(start), cfg_.sse_url.str());
    return out;
  }
  bool warm_failed = false;  // a warm session failed before taking the request
  for (int attempt = 0;; ++attempt) {
    out.attempts = attempt + 1;
    bool was_warm = warm != nullptr;
    Attempt a = run.run(std::move(warm), &out.upstream_session);
    // A pooled session that failed before taking the request is retried on a
    // fresh one without using up a retry: its death while idle must not
    // become the client's error.
    if (was_warm && !a.response && !a.cancelled && !a.request_sent &&
        !run.deadline().reached()) {
      --attempt;
      warm_failed = true;
      stats_.retries.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (a.response) {
      out.response = std::move(*a.response);
      if (key && cfg_.pool.reuse && a.reusable) pool_.give_back(*key, std::move(a.reusable));
      return out;
    }
    if (a.cancelled) {
      stats_.cancelled.fetch_add(1, std::memory_order_relaxed);
      out.cancelled = true;
      return out;
    }
    if (attempt < cfg_.retries && !a.cancelled && a.error && may_retry(*a.error, a.request_sent, req.method) &&
        !run.deadline().reached()) {
      stats_.retries.fetch_add(1, std::memory_order_relaxed);
      log::info("retrying call on a fresh upstream session",
                {{"method", req.method}, {"id", req.id}, {"cause", a.error->message()}});
      continue;
    }
    stats_.failures.fetch_add(1, std::memory_order_relaxed);
    out.error = a.error;
    if (out.error->kind == ErrorKind::kTimeout && out.error->phase == Phase::kConnect &&
        !run.deadline().reached()) {
      // The connect step's own bound passed, not the request's: the host or
      // the path to it is down. Say so, rather than "deadline exceeded".
      out.error->kind = ErrorKind::kUnreachable;
      out.error->detail += " (no answer within --connect-timeout " +
                           format_duration(cfg_.connect_timeout) +
                           ": the upstream host or the path to it is down)";
    }
    if (warm_failed) out.error->detail += "; a warm session had just failed its liveness ping";
    out.response = jsonrpc_error_response(req.id, *out.error, elapsed_ms(start), cfg_.sse_url.str());
    return out;
  }
}

Forwarder::Forwarder(const UpstreamConfig& cfg)
    : cfg_(cfg), pool_(cfg.pool, [this](const PoolKey& k, int stop_fd) { return open_for_pool(k, stop_fd); }) {
  Resolver::shared().set_limits(cfg.resolve_timeout, cfg.resolve_cache_ttl);
}

Forwarder::~Forwarder() { pool_.stop(); }

void Forwarder::stop() { pool_.stop(); }

void Forwarder::prewarm(std::string_view client_session, std::string_view init_params,
                        std::string_view extra_headers,
                        const std::optional<std::string>& log_level_params) {
  pool_.want(PoolKey{std::string(client_session), std::string(init_params),
                     std::string(extra_headers), log_level_params});
}

namespace {
// The pool's stand-in for a client: alive until the pool stops.
class PoolSink : public CallSink {
 public:
  explicit PoolSink(int stop_fd) : stop_fd_(stop_fd) {}
  bool deliver(std::string_view) override { return alive(); }
  // The stop eventfd is never drained: once readable, it stays so.
  bool alive() override {
    pollfd p{stop_fd_, POLLIN, 0};
    return stop_fd_ < 0 || ::poll(&p, 1, 0) == 0;
  }
  int wake_fd() const override { return stop_fd_; }

 private:
  int stop_fd_;
};
}  // namespace

std::unique_ptr<UpstreamSession> Forwarder::open_for_pool(const PoolKey& key, int stop_fd) {
  PoolSink sink(stop_fd);
  Message none;
  ClientSession cs;
  cs.init_params = key.init_params;
  CallRun run(cfg_, stats_, none, &cs, key.log_level, key.headers, sink, Clock::now());
  // The pool never takes the last free upstream sessions from calls.
  if (UpstreamSession::open_count() + cfg_.pool.fillers >= cfg_.max_sessions) return nullptr;
  auto up = std::make_unique<UpstreamSession>(cfg_, key.headers);
  up->set_watch(stop_fd, -1);
  Attempt a;
  if (!run.setup(*up, a)) {
    if (a.error) log::debug("warm session not opened", {{"cause", a.error->message()}});
    return nullptr;
  }
  up->set_watch(-1, -1);
  return up;
}

}  // namespace msb
