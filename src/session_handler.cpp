#include "mcp_sse_bridge/session_handler.h"


#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/metrics.h"
#include "mcp_sse_bridge/response_sink.h"
#include "mcp_sse_bridge/standalone_stream.h"
#include "mcp_sse_bridge/text_util.h"

namespace msb {

namespace {

constexpr char kSessionHeader[] = "Mcp-Session-Id";

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// X-Request-Id: the client's when it is short and plain, else a new one.
std::string request_id_for(const HeaderList& h) {
  std::string_view v = find_header(h, "X-Request-Id").value_or("");
  bool ok = !v.empty() && v.size() <= 64;
  for (unsigned char c : v)
    if (!(std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == ':')) ok = false;
  if (ok) return std::string(v);
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = [] {
    uint64_t x = 0;
    std::string r = random_bytes(8);
    std::memcpy(&x, r.data(), 8);
    return x;
  }();
  uint64_t n = counter.fetch_add(1, std::memory_order_relaxed) ^ salt;
  std::string out(16, '0');  // 16 hex digits (no snprintf: this runs per request)
  for (int i = 15; i >= 0; --i, n >>= 4) out[i] = "0123456789abcdef"[n & 15];
  return out;
}

std::string params_too_large(std::string_view id, size_t bytes) {
  return jsonrpc_plain_error(
      id, -32602,
      "Invalid params: the initialize params (" + std::to_string(bytes) +
          " bytes) are too large to be carried in a session id; send at most about 20 KiB");
}

}  // namespace

SessionHandler::SessionHandler(Deps d) : d_(d), sessions_(d.cfg.upstream, d.metrics) {}

void SessionHandler::refuse(Exchange& ex, const Rejection& r, std::string_view id,
                            HttpResponse* base, const std::vector<std::string>* batch_ids) {
  HttpResponse res = batch_ids && !batch_ids->empty() ? d_.refusals.answer(r, *batch_ids)
                                                      : d_.refusals.answer(r, id);
  if (base)
    for (auto& h : base->headers) res.headers.push_back(h);
  ex.respond(std::move(res));
}

// The MCP endpoint's guards, in order: Host/Origin (403), then auth (401).
bool SessionHandler::guard(const HttpRequest& req, Exchange& ex) {
  auto r = d_.policy.check_host_origin(req.headers);
  if (!r) r = d_.policy.check_auth(req.headers);
  if (!r) return true;
  refuse(ex, *r);
  return false;
}

void SessionHandler::handle(std::shared_ptr<Exchange> ex, HttpRequest&& req) {
  if (!guard(req, *ex)) return;
  if (req.method == "POST") return handle_post(std::move(ex), req);
  if (req.method == "DELETE") return handle_delete(*ex, req);
  if (req.method == "GET" && session_mode()) return handle_get(std::move(ex), req);
  if (req.method == "GET") {
    Rejection r{405, -32000,
                "Method Not Allowed: this bridge has no standalone server-to-client stream "
                "(GET); use POST"};
    r.headers.emplace_back("Allow", "POST, DELETE");
    return refuse(*ex, r);
  }
  Rejection r{405, -32000, "Method Not Allowed: " + req.method.substr(0, 20) + "; use POST"};
  r.headers.emplace_back("Allow", "GET, POST, DELETE");
  refuse(*ex, r);
}

std::shared_ptr<const ClientSession> SessionHandler::require_session(const HeaderList& h, Exchange& ex,
                                                             std::string_view id,
                                                             HttpResponse* base,
                                                             const std::vector<std::string>* batch_ids) {
  auto sid = find_header(h, kSessionHeader);
  if (!sid) {
    refuse(ex, Rejection{400, -32000, "Bad Request: Mcp-Session-Id header is required"}, id, base,
           batch_ids);
    return nullptr;
  }
  auto s = d_.tokens.verify(*sid);
  if (!s) {
    refuse(ex,
           Rejection{404, -32001,
                     "Session not found: unknown, expired or terminated Mcp-Session-Id; "
                     "send initialize again"},
           id, base, batch_ids);
    return nullptr;
  }
  return s;
}

void SessionHandler::handle_delete(Exchange& ex, const HttpRequest& req) {
  if (auto r = d_.policy.check_protocol_version(req.headers)) return refuse(ex, *r);
  auto s = require_session(req.headers, ex);
  if (!s) return;
  d_.tokens.revoke(s->id);
  if (session_mode()) sessions_.close(s->id);
  log::info("client session terminated", {{"session", s->tag}});
  HttpResponse res;
  res.status = 200;
  ex.respond(std::move(res));
}

// Session mode: the client session's standalone stream, carrying the
// upstream messages that belong to no call.
void SessionHandler::handle_get(std::shared_ptr<Exchange> ex, const HttpRequest& req) {
  const auto& h = req.headers;
  if (auto r = d_.policy.check_protocol_version(h)) return refuse(*ex, *r);
  if (!icontains(find_header(h, "Accept").value_or(""), "text/event-stream"))
    return refuse(*ex, Rejection{406, -32000,
                                 "Not Acceptable: the standalone stream (GET) needs Accept: "
                                 "text/event-stream"});
  std::string upstream_headers;
  if (auto r = d_.policy.upstream_headers(h, &upstream_headers)) return refuse(*ex, *r);
  auto session = require_session(h, *ex);
  if (!session) return;
  if (d_.life.draining.load())
    return refuse(*ex, Rejection{503, -32000, "Service Unavailable: the bridge is shutting down"});
  BridgeError err;
  auto up = sessions_.acquire(ex->loop(), *session, upstream_headers,
                              d_.tokens.log_level(session->id), false, &err);
  if (!up) return refuse(*ex, Rejection{503, -32000, "Service Unavailable: " + err.message()});
  HttpResponse base;
  base.set_header("X-Request-Id", request_id_for(h));
  auto stream = std::make_shared<StandaloneStream>(ex, d_.cfg.keepalive_interval, d_.metrics);
  stream->start(SseSink::head(std::move(base)), nullptr);
  up->attach_stream(std::move(stream));
  log::info("standalone stream opened", {{"session", session->tag}});
}

void SessionHandler::handle_post(std::shared_ptr<Exchange> ex, HttpRequest& req) {
  const auto& h = req.headers;
  // Every call of this request (a batch shares it) is bounded from its arrival.
  const auto arrival = req.arrival;
  // Content negotiation first: these are the client's mistakes, not the upstream's.
  bool accepts_sse = false;
  if (auto r = d_.policy.check_post(h, &accepts_sse)) return refuse(*ex, *r);
  std::string upstream_headers;
  if (auto r = d_.policy.upstream_headers(h, &upstream_headers)) return refuse(*ex, *r);
  std::string request_id = request_id_for(h);
  HttpResponse base;
  base.set_header("X-Request-Id", request_id);
  auto parsed = parse_body(std::move(req.body));
  if (!parsed.ok) {
    Rejection r{400, parsed.error_code, parsed.error_message};
    if (parsed.batch) return refuse(*ex, r, "", &base, &parsed.error_ids);
    return refuse(*ex, r, parsed.error_ids.empty() ? std::string() : parsed.error_ids.front(), &base);
  }
  // Refusals from here on name the request's id where there is one.
  const Message* single =
      !parsed.batch && parsed.messages.front().kind == MsgKind::kRequest ? &parsed.messages.front()
                                                                         : nullptr;
  std::string id = single ? single->id : std::string();
  // A batch's refusals answer each of its requests by id.
  std::vector<std::string> batch_ids;
  if (parsed.batch)
    for (auto& m : parsed.messages)
      if (m.kind == MsgKind::kRequest) batch_ids.push_back(m.id);
  // The stateless era (2026-07-28): a version in params._meta, or
  // server/discover, without a session.
  if (single && StatelessRules::is_stateless(h, *single)) {
    // Session mode exists for servers that keep state per SSE session; the
    // stateless era has no session to keep it in. Such requests get the
    // session era's answer, on which dual-era clients (Claude Code, the SDK
    // v2 in auto) send initialize and get a client session.
    if (session_mode()) {
      Rejection r = modern_era_refusal(single->meta_protocol_version);
      r.message += " (--upstream-mode session serves the session era only: the 2026-07-28 era "
                   "has no session to keep the upstream's per-session state in)";
      return refuse(*ex, r, id, &base);
    }
    return d_.stateless.handle(std::move(ex), req, std::move(parsed.messages.front()), accepts_sse,
                               std::move(upstream_headers), std::move(request_id), std::move(base));
  }
  // A request with only a 2026-07-28 (or unknown) MCP-Protocol-Version
  // header and no session: the session era's answer that makes a dual-era
  // client fall back to initialize.
  if (single && is_modern_era_request(h, *single)) {
    std::string_view v = find_header(h, "MCP-Protocol-Version").value_or("");
    return refuse(*ex, modern_era_refusal(v), id, &base);
  }
  if (auto r = d_.policy.check_protocol_version(h)) return refuse(*ex, *r, id, &base, &batch_ids);
  // initialize opens a client session; it must stand alone.
  for (auto& m : parsed.messages) {
    if (m.kind == MsgKind::kRequest && m.method == "initialize") {
      if (parsed.batch)
        return refuse(*ex,
                      Rejection{400, -32600,
                                "Invalid Request: initialize must not be part of a batch"},
                      "", &base);
      return handle_initialize(std::move(ex), std::move(parsed.messages.front()), accepts_sse,
                               std::move(upstream_headers), std::move(request_id), std::move(base));
    }
  }
  // Only notifications and responses: 202 whatever the session (DESIGN
  // §2.4: python-sdk v1 ends the whole client session on any other answer;
  // a 2026-07-28 client has no session at all). Without a valid one there
  // is nothing to deliver them to: dropped.
  const bool any_request = std::any_of(parsed.messages.begin(), parsed.messages.end(),
                                       [](const Message& m) { return m.kind == MsgKind::kRequest; });
  if (!any_request) {
    auto sid = find_header(h, kSessionHeader);
    if (!sid || !d_.tokens.verify(*sid)) {
      log::debug("notifications or responses without a valid session: accepted and dropped");
      base.status = 202;
      return ex->respond(std::move(base));
    }
  }
  auto session = require_session(h, *ex, id, &base, &batch_ids);
  if (!session) return;

  std::vector<PendingCall> calls;
  calls.reserve(parsed.messages.size());
  for (auto& m : parsed.messages) {
    if (m.kind == MsgKind::kRequest) {
      std::string key;
      key.reserve(session->scope().size() + 1 + m.id.size());
      key.append(session->scope()).append(1, '\n').append(m.id);
      calls.push_back(PendingCall{std::move(m), std::move(key), nullptr, true, request_id, arrival,
                                  d_.life.draining.load()});
      continue;
    }
    if (m.kind == MsgKind::kNotification && m.method == "notifications/cancelled" &&
        !m.cancel_id.empty()) {
      if (registry_.cancel(std::string(session->scope()) + "\n" + m.cancel_id))
        log::info("client cancelled a call", {{"id", m.cancel_id}});
    } else if (m.kind == MsgKind::kResponse) {
      // An answer to a server-to-client request forwarded by one of this
      // session's calls.
      std::string rid = m.id;
      if (registry_.route(std::string(session->scope()) + "\n" + rid, m)) continue;
      // Session mode: an answer to a request forwarded on the GET stream.
      if (auto up = session_mode() ? sessions_.find(session->id) : nullptr)
        up->client_answer(std::move(m));
      else
        log::debug("client response matches no forwarded request", {{"id", rid}});
    } else if (m.kind == MsgKind::kNotification && session_mode() &&
               m.method != "notifications/initialized" && m.method != "notifications/cancelled") {
      // Session mode: other client notifications (roots/list_changed, …)
      // belong to the live upstream session, if there is one.
      if (auto up = sessions_.find(session->id)) up->client_notification(std::move(m.raw));
    }
    // notifications/initialized is the bridge's to send upstream (per
    // upstream session); other client notifications have no upstream
    // session to go to in per-call mode.
  }
  if (calls.empty()) {
    base.status = 202;  // always, even when the upstream is dead (DESIGN §2.4)
    return ex->respond(std::move(base));
  }
  // Admission. The refusal names the (first) request's id so that the
  // client's pending request gets it.
  int n = static_cast<int>(calls.size());
  std::string first_id = calls.size() == 1 ? calls.front().msg.id : "";
  if (!d_.admission.admit_session(session->scope(), n))
    return refuse(*ex, d_.admission.session_refusal(), first_id, &base, &batch_ids);
  if (!d_.admission.admit(n)) {
    for (int i = 0; i < n; ++i) d_.admission.release_session(session->scope());
    return refuse(*ex, d_.admission.inflight_refusal(), first_id, &base, &batch_ids);
  }
  for (auto& c : calls) {
    c.mailbox = std::make_shared<CallMailbox>();
    registry_.add_call(c.key, c.mailbox);
  }
  // A client that hangs up ends its calls at once. (A single call, the
  // common case, captures its mailbox alone: no vector, no heap function.)
  if (calls.size() == 1) {
    ex->on_gone([box = calls.front().mailbox] { box->hangup(); });
  } else {
    std::vector<MailboxPtr> boxes;
    boxes.reserve(calls.size());
    for (auto& c : calls) boxes.push_back(c.mailbox);
    ex->on_gone([boxes = std::move(boxes)] {
      for (auto& b : boxes) b->hangup();
    });
  }
  if (accepts_sse) {
    // A quick answer then leaves with its head in one write.
    HttpResponse head = SseSink::head(base);
    head.defer_head = true;
    ex->start_stream(std::move(head));
  }
  // The calls run on this connection's loop, as one coroutine whose sinks
  // carry its wake signal (Forwarder::spawn_bound).
  auto& io = ex->loop().io();
  Forwarder::spawn_bound(io, [&](boost::asio::cancellation_signal* sig) {
    return run_calls(std::move(ex), std::move(calls), std::move(session), std::move(upstream_headers),
                     accepts_sse, parsed.batch, std::move(base), sig);
  });
}

// On the connection's loop: runs the calls of one POST in order and answers them.
boost::asio::awaitable<void> SessionHandler::run_calls(std::shared_ptr<Exchange> ex,
                                                       std::vector<PendingCall> calls,
                                                       std::shared_ptr<const ClientSession> sp,
                                                       std::string headers,
                                                       bool sse, bool batch, HttpResponse base,
                                                       boost::asio::cancellation_signal* wake) {
  EventLoop& loop = ex->loop();
  const ClientSession& session = *sp;
  std::vector<std::string> out;
  std::string tail;  // SSE: the last call's event, sent with the stream's end
  bool gone = false;
  try {
    for (auto& c : calls) {
      if (sse) {
        SseSink s(registry_, d_.life, ex, c.mailbox, &session, d_.metrics, d_.cfg.keepalive_interval);
        s.set_wake_signal(wake);
        CallResult r = co_await run_call(loop, c, session, headers, s);
        if (s.gone()) {
          gone = true;
          break;
        }
        if (r.cancelled) {
          if (s.client_cancelled()) continue;  // client asked: no response is owed
          if (!d_.life.stopping.load()) {
            gone = true;
            break;
          }
          r.response = shutdown_answer(c);
        }
        if (&c == &calls.back() && r.response.size() <= SseSink::kSlice) {
          tail = SseSink::event(r.response);
        } else if (!s.write_event(r.response)) {
          gone = true;
          break;
        }
      } else {
        JsonSink s(registry_, d_.life, ex, c.mailbox, &session);
        s.set_wake_signal(wake);
        CallResult r = co_await run_call(loop, c, session, headers, s);
        if (s.gone()) {
          gone = true;
          break;
        }
        if (r.cancelled) {
          if (s.client_cancelled()) continue;
          r.response = shutdown_answer(c);
        }
        out.push_back(std::move(r.response));
      }
    }
  } catch (const std::exception& e) {
    log::error("response failed with an exception", {{"what", e.what()}});
    gone = true;
  }
  for (auto& c : calls) release(c);  // those never run
  if (sse) {
    ex->end(std::move(tail));
    co_return;
  }
  if (gone) {
    // Nobody to answer (or an internal failure): end the exchange closed.
    HttpResponse r;
    r.status = 500;
    r.close = true;
    ex->respond(std::move(r));
    co_return;
  }
  if (out.empty()) {
    base.status = 202;
    ex->respond(std::move(base));
    co_return;
  }
  std::string body;
  if (batch) {
    body = "[";
    for (size_t i = 0; i < out.size(); ++i) body.append(i ? "," : "").append(out[i]);
    body += "]";
  } else {
    body = std::move(out.front());
  }
  base.status = 200;
  base.content_type = "application/json";
  base.body = std::move(body);
  ex->respond(std::move(base));
}

// Answers requests the bridge serves itself; returns nullopt for the rest.
std::optional<std::string> SessionHandler::local_answer(const Message& m, const ClientSession& s) {
  if (m.method == "ping") return R"({"jsonrpc":"2.0","id":)" + m.id + R"(,"result":{}})";
  // Session mode forwards them (SessionUpstream remembers and replays them).
  if (!session_mode() && (m.method == "resources/subscribe" || m.method == "resources/unsubscribe"))
    return jsonrpc_plain_error(
        m.id, -32601,
        m.method + " is not supported through mcp-sse-bridge: resource updates need a "
                   "standalone server-to-client stream (GET), and upstream sessions here "
                   "live only for one call");
  if (m.method == "logging/setLevel") {
    // Only a valid level is remembered (and replayed), in a normal form:
    // hostile params must not grow the per-session state.
    static constexpr std::string_view kLevels[] = {"debug", "info",     "notice", "warning",
                                                   "error", "critical", "alert",  "emergency"};
    // Per-call upstream sessions live for one call: the level matters only
    // as the state replayed on every later session, so the bridge answers it
    // itself (and so a client that sets it right after initialize still
    // connects while the upstream is down).
    auto j = nlohmann::json::parse(m.raw, nullptr, false);
    if (!j.is_discarded() && j.contains("params") && j["params"].is_object() &&
        j["params"].contains("level") && j["params"]["level"].is_string()) {
      std::string level = j["params"]["level"].get<std::string>();
      for (auto l : kLevels)
        if (level == l) {
          d_.tokens.set_log_level(s.id, R"({"level":")" + level + R"("})");
          return R"({"jsonrpc":"2.0","id":)" + m.id + R"(,"result":{}})";
        }
    }
    return jsonrpc_plain_error(m.id, -32602,
                               "Invalid params: logging/setLevel needs params.level, one of "
                               "debug, info, notice, warning, error, critical, alert, emergency");
  }
  return std::nullopt;
}

// Gives back a call's admission (global and per session) once.
void SessionHandler::release(PendingCall& c) {
  if (!c.counted) return;
  c.counted = false;
  registry_.remove_call(c.key, c.mailbox);
  d_.admission.release();
  d_.admission.release_session(std::string_view(c.key).substr(0, c.key.find('\n')));
}

// The call on the upstream session of the client session (session mode) or
// on a per-call one, through Forwarder::guarded: no exception escapes.
boost::asio::awaitable<CallResult> SessionHandler::call_guarded(
    EventLoop& loop, const Message& m, const ClientSession* s, std::optional<std::string> log_level,
    std::string headers, CallSink& sink, Clock::time_point arrival) {
  auto call = s && session_mode()
                  ? sessions_.call(loop, m, *s, std::move(headers), std::move(log_level), sink, arrival)
                  : d_.forwarder.call(loop, m, s, std::move(log_level), std::move(headers), sink,
                                      arrival);
  return Forwarder::guarded(std::move(call), m, sink, arrival, d_.cfg.upstream.sse_url);
}

// Runs one call to completion (or cancellation) and logs it.
boost::asio::awaitable<CallResult> SessionHandler::run_call(EventLoop& loop, PendingCall& c,
                                                           const ClientSession& s,
                                                           const std::string& headers,
                                                           CallSink& sink) {
  auto t0 = Clock::now();
  CallResult r;
  auto local = local_answer(c.msg, s);
  // Session mode: logging/setLevel, once remembered, also goes to the live
  // upstream session (which filters its log messages by it).
  if (local && session_mode() && c.msg.method == "logging/setLevel" &&
      local->find("\"error\"") == std::string::npos) {
    if (auto up = sessions_.find(s.id))
      if (auto lvl = d_.tokens.log_level(s.id)) up->set_log_level(*lvl);
    local.reset();
  }
  if (local) {
    r.response = std::move(*local);
  } else if (d_.life.stopping.load() || c.late) {
    BridgeError e = make_error(ErrorKind::kShuttingDown, Phase::kConnect, "bridge is shutting down");
    r.error = e;
    r.response = jsonrpc_error_response(c.msg.id, e, 0, d_.cfg.upstream.sse_url.str());
  } else {
    r = co_await call_guarded(loop, c.msg, &s, d_.tokens.log_level(s.id), headers, sink, c.arrival);
  }
  release(c);
  auto ms = elapsed_ms(t0);
  // Cut short by the drain, not by the client: the client is answered with
  // shutting_down (shutdown_answer), so count and log it as that.
  if (r.cancelled && !c.mailbox->cancelled.load() && d_.life.stopping.load())
    r.error = make_error(ErrorKind::kShuttingDown, Phase::kRequest,
                         "bridge is shutting down; the call was abandoned");
  bool client_cancelled = r.cancelled && !r.error;
  d_.metrics.call_done(c.msg.method, r.error ? &*r.error : nullptr, client_cancelled, seconds_since(t0));
  std::string outcome =
      client_cancelled ? "cancelled" : r.error ? std::string(to_string(r.error->kind)) : "ok";
  if (r.error) {
    log::warn("call failed",
              {{"request_id", c.request_id}, {"session", s.tag},
               {"upstream_session", r.upstream_session}, {"method", c.msg.method},
               {"id", c.msg.id}, {"outcome", outcome}, {"phase", std::string(to_string(r.error->phase))},
               {"cause", r.error->message()}, {"ms", std::to_string(ms)},
               {"attempts", std::to_string(r.attempts)}});
  } else if (log::enabled(log::Level::kInfo)) {
    log::info("call", {{"request_id", c.request_id}, {"session", s.tag},
                       {"upstream_session", r.upstream_session}, {"method", c.msg.method},
                       {"id", c.msg.id}, {"outcome", outcome}, {"ms", std::to_string(ms)},
                       {"attempts", std::to_string(r.attempts)}});
  }
  co_return r;
}

// A call that ended "cancelled" because the bridge is stopping still owes
// the client an answer.
std::string SessionHandler::shutdown_answer(const PendingCall& c) {
  BridgeError e = make_error(ErrorKind::kShuttingDown, Phase::kRequest,
                             "bridge is shutting down; the call was abandoned");
  return jsonrpc_error_response(c.msg.id, e, 0, d_.cfg.upstream.sse_url.str());
}

void SessionHandler::handle_initialize(std::shared_ptr<Exchange> ex, Message init, bool accepts_sse,
                                       std::string headers, std::string request_id,
                                       HttpResponse base) {
  auto j = nlohmann::ordered_json::parse(init.raw, nullptr, false);
  if (j.is_discarded() || !j.contains("params") || !j["params"].is_object())
    return refuse(*ex, Rejection{400, -32602, "Invalid params: initialize needs a params object"},
                  init.id, &base);
  std::string params = j["params"].dump();
  std::string version;
  if (j["params"].contains("protocolVersion") && j["params"]["protocolVersion"].is_string())
    version = j["params"]["protocolVersion"].get<std::string>();
  // initialize holds an upstream session like any call: it counts against
  // --max-inflight, and the drain waits for it.
  if (!d_.admission.admit(1))
    return refuse(*ex, d_.admission.inflight_refusal(), init.id, &base);
  bool late = d_.life.draining.load();
  auto& io = ex->loop().io();
  boost::asio::co_spawn(io,
                        initialize_call(std::move(ex), std::move(init), std::move(params),
                                        std::move(version), accepts_sse, std::move(headers),
                                        std::move(request_id), late, std::move(base)),
                        boost::asio::detached);
}

boost::asio::awaitable<void> SessionHandler::initialize_call(
    std::shared_ptr<Exchange> exp, Message init, std::string params, std::string version,
    bool accepts_sse, std::string headers, std::string request_id, bool late, HttpResponse base) {
  // Admitted by handle_initialize; given back however this ends, and before
  // the answer is sent: a client that sends its next request as soon as it
  // reads the answer must find the slot free.
  struct Release {
    Admission& a;
    bool done = false;
    void operator()() {
      if (!done) a.release();
      done = true;
    }
    ~Release() { (*this)(); }
  } release_slot{d_.admission};
  Exchange& ex = *exp;
  auto box = std::make_shared<CallMailbox>();
  JsonSink sink(registry_, d_.life, exp, box, nullptr);
  ex.on_gone([box] { box->hangup(); });
  auto t0 = Clock::now();
  CallResult r;
  // Session mode: the client session is minted first, and the open of its
  // own upstream session answers this initialize (one upstream connect).
  std::string sid;
  std::shared_ptr<const ClientSession> minted;
  if (session_mode()) {
    sid = d_.tokens.mint(params);
    if (!sid.empty()) minted = d_.tokens.verify(sid);
  }
  if (d_.life.stopping.load() || late) {
    r.error = make_error(ErrorKind::kShuttingDown, Phase::kConnect, "bridge is shutting down");
    r.response = jsonrpc_error_response(init.id, *r.error, 0, d_.cfg.upstream.sse_url.str());
  } else if (session_mode() && !minted) {
    r.error = make_error(ErrorKind::kInternal, Phase::kInitialize, "initialize params too large");
    r.response = params_too_large(init.id, params.size());
  } else {
    r = co_await call_guarded(ex.loop(), init, minted.get(), std::nullopt, headers,
                              sink, Clock::now());
  }
  if (r.cancelled) {
    d_.metrics.call_done("initialize", nullptr, true, seconds_since(t0));
    if (sink.gone()) {
      // The client left: nobody will ever use this session id, so its
      // upstream session (session mode) must not stay open until idle.
      if (minted) sessions_.close(minted->id);
      HttpResponse gone;
      gone.close = true;
      release_slot();
      ex.respond(std::move(gone));
      co_return;
    }
    r.error = make_error(ErrorKind::kShuttingDown, Phase::kRequest, "bridge is shutting down");
    r.response = jsonrpc_error_response(init.id, *r.error, elapsed_ms(t0), d_.cfg.upstream.sse_url.str());
    r.cancelled = false;
  } else {
    d_.metrics.call_done("initialize", r.error ? &*r.error : nullptr, false, seconds_since(t0));
  }
  Message m;
  bool ok = !r.error && parse_message(r.response, m) && m.kind == MsgKind::kResponse && !m.is_error;
  std::string cache_key = InitializeCache::key(version, headers);
  if (ok) {
    // (Whether the upstream advertises resources.subscribe is kept with it:
    // server/discover reads the same entry, and says so to 2026-07-28
    // clients, whose subscriptions/listen honours it.)
    bool subscribes = false;
    if (std::string result = InitializeCache::result_of(r.response, session_mode(), &subscribes);
        !result.empty())
      d_.init_cache.store(cache_key, std::move(result), subscribes);
  } else if (r.error && d_.cfg.serve_stale_initialize && upstream_unavailable(r.error->kind)) {
    // The client gets a session now; its calls fail fast while the upstream
    // is down and work once it is back, with no reconnect.
    if (auto hit = d_.init_cache.find(cache_key)) {
      d_.metrics.stale_initialize();
      log::warn("initialize answered from the last upstream initialize result: the upstream "
                "cannot be reached",
                {{"request_id", request_id},
                 {"age_ms", std::to_string(hit->age.count())},
                 {"cause", r.error->message()},
                 {"ms", std::to_string(elapsed_ms(t0))}});
      r.response = R"({"jsonrpc":"2.0","id":)" + init.id + R"(,"result":)" + hit->result_json + "}";
      r.error.reset();
      ok = true;
    }
  }
  if (!session_mode()) sid = ok ? d_.tokens.mint(params) : std::string();
  if (ok && sid.empty()) {
    ok = false;
    r.error = make_error(ErrorKind::kInternal, Phase::kInitialize, "initialize params too large");
    r.response = params_too_large(init.id, params.size());
  }
  if (!ok && minted) {
    sessions_.close(minted->id);  // the client never learns this session id
  } else if (ok && !session_mode()) {
    // (Verified here: the session is then cached for the client's first call.)
    if (auto s = d_.tokens.verify(sid)) d_.forwarder.prewarm(ex.loop(), *s, headers, std::nullopt);
  }
  if (ok) {
    base.set_header(kSessionHeader, sid);
    log::info("client session initialized",
              {{"request_id", request_id}, {"session", session_tag(sid)},
               {"upstream_session", r.upstream_session}, {"ms", std::to_string(elapsed_ms(t0))}});
  } else {
    log::warn("initialize failed",
              {{"request_id", request_id}, {"upstream_session", r.upstream_session},
               {"phase", r.error ? std::string(to_string(r.error->phase)) : "request"},
               {"cause", r.error ? r.error->message() : r.response.substr(0, 300)},
               {"ms", std::to_string(elapsed_ms(t0))}});
  }
  base.status = 200;
  if (accepts_sse) {
    base.content_type = "text/event-stream";
    base.body = SseSink::event(r.response);
  } else {
    base.content_type = "application/json";
    base.body = std::move(r.response);
  }
  release_slot();
  ex.respond(std::move(base));
}

}  // namespace msb
