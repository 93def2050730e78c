#include "mcp_sse_bridge/stateless_handler.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include <atomic>
#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/metrics.h"
#include "mcp_sse_bridge/session_token.h"
#include "mcp_sse_bridge/stateless_sink.h"

namespace msb {

namespace {

using ojson = nlohmann::ordered_json;

// The upstream's "missing client capability" error: HTTP 400 in this era.
constexpr int kMissingCapability = -32021;
constexpr int kMethodNotFound = -32601;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string next_key(std::string_view what) {
  static std::atomic<uint64_t> n{0};
  return "stateless\n" + std::string(what) + "\n" + std::to_string(n.fetch_add(1));
}

// The JSON-RPC error code of a response, 0 when it is not an error. Only
// the error member is parsed (a result may be megabytes).
int error_code_of(const std::string& response) {
  auto e = find_member(response, "error");
  if (e.status == JsonMember::Status::kAbsent) return 0;
  auto j = e.status == JsonMember::Status::kFound
               ? ojson::parse(std::string_view(response).substr(e.begin, e.end - e.begin), nullptr, false)
               : ojson::parse(response, nullptr, false).value("error", ojson());
  if (!j.is_object() || !j.contains("code") || !j["code"].is_number_integer()) return 0;
  return j["code"].get<int>();
}

bool mrtr_method(std::string_view m) {
  return m == "tools/call" || m == "prompts/get" || m == "resources/read";
}

}  // namespace

StatelessHandler::StatelessHandler(Deps d)
    : d_(d),
      parked_(d.cfg.mrtr_max_parked),
      sealer_(d.cfg.session_secret, RequestStateSealer::new_replica_tag()),
      listen_(d.cfg.upstream, d.metrics, d.cfg.keepalive_interval) {}

void StatelessHandler::stop_parked() {
  for (auto& c : parked_.stop()) c->cancel("mcp-sse-bridge is shutting down");
}

// One stateless call, from admission to its answer.
struct StatelessHandler::Call {
  Message msg;  // the request as the upstream gets it (client's id, envelope removed)
  StatelessEnvelope env;
  ClientSession session;  // synthesized: the request's own initialize params
  std::string key;        // in registry_, for wake_all
  MailboxPtr box;
  std::string request_id;
  Clock::time_point arrival;
  bool late = false;  // arrived during the drain: answered shutting_down
  bool sse = false;
  std::string headers;
  HttpResponse base;
};

void StatelessHandler::refuse(Exchange& ex, const Rejection& r, std::string_view id,
                              const HttpResponse& base) {
  HttpResponse res = d_.refusals.answer(r, id);
  for (auto& h : base.headers) res.headers.push_back(h);
  ex.respond(std::move(res));
}

std::string StatelessHandler::upstream_version(const std::string& headers) const {
  auto hit = d_.init_cache.find(InitializeCache::key(kUpstreamVersion, headers));
  if (hit) {
    auto j = ojson::parse(hit->result_json, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("protocolVersion") &&
        j["protocolVersion"].is_string()) {
      std::string v = j["protocolVersion"].get<std::string>();
      if (is_supported_protocol_version(v)) return v;
    }
  }
  return std::string(kUpstreamVersion);
}

void StatelessHandler::handle(std::shared_ptr<Exchange> ex, const HttpRequest& req, Message m,
                              bool accepts_sse, std::string upstream_headers,
                              std::string request_id, HttpResponse base) {
  auto checked = StatelessRules::check(req.headers, m);
  if (auto* r = std::get_if<Rejection>(&checked)) return refuse(*ex, *r, m.id, base);
  auto& env = std::get<StatelessEnvelope>(checked);
  if (m.method == "subscriptions/listen") {
    // Always an SSE stream, acknowledged at once (a client that waits for
    // the acknowledgement must not wait for a JSON body that never comes).
    std::string why;
    auto filter = ListenHub::filter_of(m.raw, &why);
    if (!filter) return refuse(*ex, Rejection{400, -32602, why}, m.id, base);
    const Rejection stopping{503, -32000, "Service Unavailable: the bridge is shutting down"};
    if (d_.life.draining.load()) return refuse(*ex, stopping, m.id, base);
    auto opened = listen_.listen(ex, SseSink::head(HttpResponse(base)), m.id, std::move(*filter),
                                 std::move(upstream_headers));
    if (opened == ListenHub::Opened::kStopped) return refuse(*ex, stopping, m.id, base);  // stopped meanwhile
    if (opened == ListenHub::Opened::kFull) {
      Rejection full{503, -32000,
                     "Service Unavailable: " + std::to_string(d_.cfg.upstream.max_listen_sessions) +
                         " upstream sessions are held for listen streams of other header sets "
                         "(--max-listen-sessions)"};
      full.headers.emplace_back("Retry-After", "5");
      return refuse(*ex, full, m.id, base);
    }
    return;
  }
  auto& io = ex->loop().io();
  if (m.method == "server/discover") {
    boost::asio::co_spawn(io,
                          discover(std::move(ex), std::move(m), accepts_sse,
                                   std::move(upstream_headers), std::move(request_id),
                                   std::move(base)),
                          boost::asio::detached);
    return;
  }
  auto c = std::make_shared<Call>();
  if (!parse_message(env.upstream_request, c->msg))  // it was valid JSON-RPC a moment ago
    return refuse(*ex, Rejection{400, -32600, "Invalid Request"}, m.id, base);
  if (!d_.admission.admit(1)) return refuse(*ex, d_.admission.inflight_refusal(), m.id, base);
  c->session.id = "stateless";  // one marker for the era: the params below tell requests apart
  c->session.tag = "stateless";
  c->session.init_params = StatelessRules::init_params(env, upstream_version(upstream_headers));
  c->env = std::move(env);
  c->key = next_key("call");
  c->box = std::make_shared<CallMailbox>();
  c->request_id = std::move(request_id);
  c->arrival = req.arrival;
  c->late = d_.life.draining.load();
  c->sse = accepts_sse;
  c->headers = std::move(upstream_headers);
  c->base = std::move(base);
  registry_.add_call(c->key, c->box);
  // Closing the response (stream) is the cancellation of this era.
  ex->on_gone([box = c->box] { box->hangup(); });
  if (!c->late && !d_.life.stopping.load() && mrtr_method(c->msg.method) &&
      start_mrtr(ex, c, m, req))
    return;
  Forwarder::spawn_bound(io, [&](boost::asio::cancellation_signal* sig) {
    return run_call(std::move(ex), std::move(c), sig);
  });
}

boost::asio::awaitable<void> StatelessHandler::run_call(std::shared_ptr<Exchange> ex,
                                                        std::shared_ptr<Call> c,
                                                        boost::asio::cancellation_signal* wake) {
  StatelessSink sink(registry_, d_.life, ex, c->box, d_.metrics, d_.cfg.keepalive_interval, c->base,
                     StatelessSink::Options{c->sse, c->msg.progress_token,
                                            c->env.log_level_params.has_value(), &listen_,
                                            c->headers});
  sink.set_wake_signal(wake);
  auto t0 = Clock::now();
  const std::string upstream = d_.cfg.upstream.sse_url.str();
  CallResult r;
  if (d_.life.stopping.load() || c->late) {
    r.error = make_error(ErrorKind::kShuttingDown, Phase::kConnect, "bridge is shutting down");
    r.response = jsonrpc_error_response(c->msg.id, *r.error, 0, upstream);
  } else {
    r = co_await Forwarder::guarded(
        d_.forwarder.call(ex->loop(), c->msg, &c->session, c->env.log_level_params, c->headers,
                          sink, c->arrival),
        c->msg, sink, c->arrival, d_.cfg.upstream.sse_url);
  }
  registry_.remove_call(c->key, c->box);
  d_.admission.release();
  bool gone = r.cancelled && (sink.gone() || c->box->gone.load() || ex->client_gone());
  if (r.cancelled && !gone) {
    // Cut short by the drain: the client is still owed an answer.
    r.error = make_error(ErrorKind::kShuttingDown, Phase::kRequest,
                         "bridge is shutting down; the call was abandoned");
    r.response = jsonrpc_error_response(c->msg.id, *r.error, elapsed_ms(c->arrival), upstream);
    r.cancelled = false;
  }
  d_.metrics.call_done(c->msg.method, r.error ? &*r.error : nullptr, gone, seconds_since(t0));
  auto ms = std::to_string(elapsed_ms(t0));
  if (gone) {
    log::info("stateless call cancelled: the client closed its response",
              {{"request_id", c->request_id}, {"method", c->msg.method}, {"id", c->msg.id},
               {"ms", ms}});
    sink.abandon();
    co_return;
  }
  int status = r.error ? 200 : final_answer(c->msg.method, r.response);
  if (r.error) {
    log::warn("stateless call failed",
              {{"request_id", c->request_id}, {"upstream_session", r.upstream_session},
               {"method", c->msg.method}, {"id", c->msg.id},
               {"outcome", std::string(to_string(r.error->kind))},
               {"phase", std::string(to_string(r.error->phase))}, {"cause", r.error->message()},
               {"ms", ms}, {"attempts", std::to_string(r.attempts)}});
  } else if (log::enabled(log::Level::kInfo)) {
    log::info("stateless call", {{"request_id", c->request_id},
                                 {"upstream_session", r.upstream_session},
                                 {"method", c->msg.method}, {"id", c->msg.id},
                                 {"outcome", "ok"}, {"ms", ms},
                                 {"attempts", std::to_string(r.attempts)}});
  }
  sink.finish(status, r.response);
}

// The upstream's final answer to a stateless call: a result is decorated
// (resultType, cache hints); an upstream's -32021 (missing capability) is a
// 400, its -32601 (a method it does not implement) a 404, as the
// 2026-07-28 transport asks of a server. Returns the HTTP status.
int StatelessHandler::final_answer(std::string_view method, std::string& response) const {
  int code = error_code_of(response);
  if (code == 0)
    response = StatelessRules::decorate_result(method, std::move(response), d_.cfg.cache_ttl_ms,
                                               d_.cfg.cache_scope);
  return code == kMissingCapability ? 400 : code == kMethodNotFound ? 404 : 200;
}

// A round of an MRTR-capable call ends (on the front's loop): input_required
// (no decoration: never ttlMs/cacheScope), the final answer (decorated like
// any stateless result; an upstream -32021 is a 400), or the client's
// departure.
void StatelessHandler::finish_round(const std::shared_ptr<Call>& c,
                                    const std::shared_ptr<StatelessSink>& sink,
                                    Clock::time_point t0, MrtrSink::Outcome o) {
  using Kind = MrtrSink::Outcome::Kind;
  registry_.remove_call(c->key, c->box);
  d_.admission.release();
  auto ms = std::to_string(elapsed_ms(t0));
  if (o.kind == Kind::kCancelled && (sink->gone() || c->box->gone.load() || o.response.empty())) {
    d_.metrics.call_done(c->msg.method, nullptr, true, seconds_since(t0));
    log::info("stateless call cancelled: the client closed its response",
              {{"request_id", c->request_id}, {"method", c->msg.method}, {"ms", ms}});
    sink->abandon();
    return;
  }
  int status = o.kind == Kind::kComplete ? final_answer(c->msg.method, o.response) : 200;
  d_.metrics.call_done(c->msg.method, o.error ? &*o.error : nullptr, false, seconds_since(t0));
  if (o.error) {
    log::warn("stateless call failed",
              {{"request_id", c->request_id}, {"upstream_session", o.upstream_session},
               {"method", c->msg.method}, {"id", c->msg.id},
               {"outcome", std::string(to_string(o.error->kind))},
               {"phase", std::string(to_string(o.error->phase))}, {"cause", o.error->message()},
               {"ms", ms}, {"attempts", std::to_string(o.attempts)},
               {"round", std::to_string(o.round)}});
  } else if (log::enabled(log::Level::kInfo)) {
    bool more = o.kind == Kind::kInputRequired;
    log::info(more ? "stateless call needs client input (input_required)" : "stateless call",
              {{"request_id", c->request_id}, {"upstream_session", o.upstream_session},
               {"method", c->msg.method}, {"id", c->msg.id},
               {"outcome", more ? "input_required" : "ok"}, {"ms", ms},
               {"attempts", std::to_string(o.attempts)}, {"round", std::to_string(o.round)}});
  }
  sink->finish(status, o.response);
}

bool StatelessHandler::start_mrtr(const std::shared_ptr<Exchange>& ex,
                                  const std::shared_ptr<Call>& c, const Message& client_msg,
                                  const HttpRequest& req) {
  auto j = ojson::parse(client_msg.raw, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("params") || !j["params"].is_object())
    return false;
  const auto& params = j["params"];
  std::string state;
  if (params.contains("requestState") && params["requestState"].is_string())
    state = params["requestState"].get<std::string>();
  // Someone else's requestState (an upstream that speaks MRTR itself):
  // passes through unchanged, on the plain path.
  if (!state.empty() && !RequestStateSealer::is_ours(state)) return false;
  // Who may resume the call: a keyed tag of the client's credentials, its
  // Authorization and whatever it forwards upstream (--forward-header: an
  // API key there selects whose upstream session the call runs on).
  std::string creds;
  if (auto a = find_header(req.headers, "Authorization")) creds.append(*a);
  if (!c->headers.empty()) creds.append("\n").append(c->headers);
  std::string principal = sealer_.principal_of(creds);
  auto binding = RequestBinding::of(client_msg.method,
                                    params.dump(-1, ' ', false,
                                                nlohmann::json::error_handler_t::replace),
                                    principal);
  if (!binding) return false;

  auto sink = std::make_shared<StatelessSink>(
      registry_, d_.life, ex, c->box, d_.metrics, d_.cfg.keepalive_interval, c->base,
      StatelessSink::Options{c->sse, c->msg.progress_token, c->env.log_level_params.has_value(),
                             &listen_, c->headers});
  EventLoop* front_loop = &ex->loop();
  auto t0 = Clock::now();
  MrtrSink::OutcomeFn on_outcome = [this, c, sink, front_loop, t0](MrtrSink::Outcome o) {
    boost::asio::post(front_loop->io(), [this, c, sink, t0, o = std::move(o)]() mutable {
      finish_round(c, sink, t0, std::move(o));
    });
  };
  MrtrSink::Front front{sink, front_loop, c->msg.id, c->env.capabilities, std::move(on_outcome),
                        c->msg.progress_token};
  if (!state.empty()) {
    // A retry: the sealed state names the parked call; it resumes there with
    // this request's inputResponses, and this exchange becomes its front.
    auto opened = sealer_.open(state, *binding, RequestStateSealer::now_ms());
    std::shared_ptr<MrtrSink> call;
    auto refusal = opened.refusal;
    if (opened.claims) {
      call = parked_.take(opened.claims->call_key);
      if (!call) refusal = RequestStateSealer::Refusal::kNotParked;
    }
    if (!call) {
      log::warn("MRTR retry refused",
                {{"request_id", c->request_id}, {"method", c->msg.method}, {"id", c->msg.id},
                 {"why", std::string(RequestStateSealer::to_string(refusal))}});
      finish_round(c, sink, t0,
                   MrtrSink::Outcome{MrtrSink::Outcome::Kind::kComplete,
                                     RequestStateSealer::error_response(
                                         c->msg.id, refusal,
                                         format_duration(d_.cfg.mrtr_park_timeout)),
                                     {}, 0});
      return true;
    }
    std::string responses = "{}";
    if (params.contains("inputResponses") && params["inputResponses"].is_object())
      responses = params["inputResponses"].dump(-1, ' ', false,
                                                nlohmann::json::error_handler_t::replace);
    call->resume(std::move(responses), std::move(front));
    return true;
  }
  auto call = MrtrSink::create(ex->loop(), parked_, sealer_, std::move(*binding),
                               MrtrSink::Options{d_.cfg.mrtr_park_timeout});
  call->start(d_.forwarder, c->msg, c->session, c->env.log_level_params, c->headers, c->arrival,
              std::move(front));
  return true;
}

std::string StatelessHandler::discover_answer(std::string_view id, const std::string& init_result,
                                              bool subscribes) const {
  auto init = ojson::parse(init_result, nullptr, false);
  if (init.is_discarded() || !init.is_object()) init = ojson::object();
  ojson res;
  res["resultType"] = "complete";
  res["supportedVersions"] = ojson::parse(StatelessRules::supported_versions_json());
  res["capabilities"] = init.contains("capabilities") && init["capabilities"].is_object()
                            ? init["capabilities"]
                            : ojson::object();
  if (subscribes) {
    if (!res["capabilities"].contains("resources") || !res["capabilities"]["resources"].is_object())
      res["capabilities"]["resources"] = ojson::object();
    res["capabilities"]["resources"]["subscribe"] = true;
  }
  if (init.contains("instructions") && init["instructions"].is_string())
    res["instructions"] = init["instructions"];
  if (init.contains("serverInfo") && init["serverInfo"].is_object())
    res["_meta"]["io.modelcontextprotocol/serverInfo"] = init["serverInfo"];
  res["ttlMs"] = d_.cfg.cache_ttl_ms;
  res["cacheScope"] = d_.cfg.cache_scope;
  return R"({"jsonrpc":"2.0","id":)" + std::string(id) + R"(,"result":)" +
         res.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "}";
}

// server/discover: from the upstream's initialize result, fresh, cached or
// (upstream down) stale; an error with the id when none was ever had.
boost::asio::awaitable<void> StatelessHandler::discover(std::shared_ptr<Exchange> ex, Message m,
                                                        bool sse, std::string headers,
                                                        std::string request_id,
                                                        HttpResponse base) {
  auto t0 = Clock::now();
  const std::string cache_key = InitializeCache::key(kUpstreamVersion, headers);
  auto hit = d_.init_cache.find(cache_key);
  auto box = std::make_shared<CallMailbox>();
  StatelessSink sink(registry_, d_.life, ex, box, d_.metrics, d_.cfg.keepalive_interval, base,
                     StatelessSink::Options{sse, {}, false});
  if (hit && hit->age < d_.cfg.discover_refresh) {
    sink.finish(200, discover_answer(m.id, hit->result_json, hit->subscribes));
    co_return;
  }
  const std::string upstream = d_.cfg.upstream.sse_url.str();
  CallResult r;
  bool admitted = !d_.life.draining.load() && d_.admission.admit(1);
  if (!admitted) {
    r.error = d_.life.draining.load()
                  ? make_error(ErrorKind::kShuttingDown, Phase::kConnect, "bridge is shutting down")
                  : make_error(ErrorKind::kOverloaded, Phase::kConnect,
                               "--max-inflight calls are running; server/discover could not ask "
                               "the upstream");
  } else {
    std::string key = next_key("discover");
    registry_.add_call(key, box);
    ex->on_gone([box] { box->hangup(); });
    static std::atomic<uint64_t> n{0};
    std::string id = json_quote("mcp-sse-bridge:discover:" + std::to_string(n.fetch_add(1)));
    std::string params = R"({"protocolVersion":)" + json_quote(kUpstreamVersion) +
                         R"(,"capabilities":{},"clientInfo":{"name":"mcp-sse-bridge","version":"1"}})";
    Message init;
    parse_message(make_request(id, "initialize", params), init);
    r = co_await Forwarder::guarded(
        d_.forwarder.call(ex->loop(), init, nullptr, std::nullopt, headers, sink, t0), init, sink,
        t0, d_.cfg.upstream.sse_url);
    registry_.remove_call(key, box);
    d_.admission.release();
    if (r.cancelled && (sink.gone() || box->gone.load() || ex->client_gone())) {
      sink.abandon();
      co_return;
    }
    if (r.cancelled) {
      r.cancelled = false;
      r.error = make_error(ErrorKind::kShuttingDown, Phase::kRequest, "bridge is shutting down");
    }
  }
  std::string answer;
  if (!r.error) {
    Message resp;
    if (parse_message(r.response, resp) && resp.kind == MsgKind::kResponse && !resp.is_error) {
      bool subscribes = false;
      std::string result = InitializeCache::result_of(r.response, false, &subscribes);
      if (!result.empty()) {
        d_.init_cache.store(cache_key, result, subscribes);
        answer = discover_answer(m.id, result, subscribes);
      }
    }
    if (answer.empty())
      r.error = make_error(ErrorKind::kRejected, Phase::kInitialize,
                           "upstream refused the initialize that server/discover is built from: " +
                               r.response.substr(0, 300));
  }
  if (answer.empty() && hit &&
      (upstream_unavailable(r.error->kind) || r.error->kind == ErrorKind::kOverloaded)) {
    d_.metrics.stale_initialize();
    log::warn("server/discover answered from the last upstream initialize result: the upstream "
              "cannot be reached",
              {{"request_id", request_id}, {"age_ms", std::to_string(hit->age.count())},
               {"cause", r.error->message()}});
    answer = discover_answer(m.id, hit->result_json, hit->subscribes);
  } else if (answer.empty()) {
    r.error->detail = "server/discover is built from the upstream's initialize result, and none "
                      "could be obtained: " + r.error->detail;
    log::warn("server/discover failed", {{"request_id", request_id}, {"id", m.id},
                                         {"cause", r.error->message()}});
    answer = jsonrpc_error_response(m.id, *r.error, elapsed_ms(t0), upstream);
  }
  sink.finish(200, answer);
}

}  // namespace msb
