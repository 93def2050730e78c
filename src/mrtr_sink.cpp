#include "mcp_sse_bridge/mrtr_sink.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/parked_calls.h"

namespace msb {

namespace {

// The client capability a server-to-client request needs; empty for a
// request MRTR cannot carry (inputRequests hold only these three).
std::string_view capability_for(std::string_view method) {
  if (method == "elicitation/create") return "elicitation";
  if (method == "sampling/createMessage") return "sampling";
  if (method == "roots/list") return "roots";
  return {};
}

// A legacy server may name the inputRequests key a server-to-client request
// becomes: params._meta["mcp-sse-bridge/inputKey"] (what a 2026-07-28 server
// would have chosen, so that its clients see stable keys). Taken out of the
// params (empty _meta removed); "" when absent or not a usable key (1-64
// printable ASCII characters).
constexpr std::string_view kInputKeyMeta = "mcp-sse-bridge/inputKey";

std::string take_key_hint(nlohmann::json& params) {
  auto meta = params.find("_meta");
  if (meta == params.end() || !meta->is_object()) return {};
  auto hint = meta->find(kInputKeyMeta);
  if (hint == meta->end()) return {};
  std::string key = hint->is_string() ? hint->get<std::string>() : std::string();
  meta->erase(hint);
  if (meta->empty()) params.erase(meta);
  bool usable = !key.empty() && key.size() <= 64;
  for (unsigned char c : key) usable = usable && c > 0x20 && c < 0x7f;
  return usable ? key : std::string();
}

}  // namespace

// The loop's timers, and the coroutine that runs the forwarder.
struct MrtrSink::Impl {
  explicit Impl(asio::io_context& io) : window(io), park(io) {}
  asio::steady_timer window;  // the collection window of a round
  asio::steady_timer park;    // the park expiry

  static asio::awaitable<void> run(std::shared_ptr<MrtrSink> self, Forwarder* fwd, Message req,
                                   std::optional<ClientSession> session,
                                   std::optional<std::string> log_level, std::string headers,
                                   Clock::time_point arrival) {
    struct Unset {  // the signal dies with this coroutine's spawn, however it ends
      MrtrSink* s;
      ~Unset() { s->wake_signal_ = nullptr; }
    } unset{self.get()};
    auto r = co_await Forwarder::guarded(
        fwd->call(self->loop_, req, session ? &*session : nullptr, std::move(log_level),
                  std::move(headers), *self, arrival),
        req, *self, arrival, fwd->config().sse_url);
    self->finish(std::move(r));
  }
};

std::shared_ptr<MrtrSink> MrtrSink::create(EventLoop& loop, ParkedCalls& parked,
                                           const RequestStateSealer& sealer,
                                           RequestBinding binding, Options o) {
  return std::shared_ptr<MrtrSink>(new MrtrSink(loop, parked, sealer, std::move(binding), o));
}

MrtrSink::MrtrSink(EventLoop& loop, ParkedCalls& parked, const RequestStateSealer& sealer,
                   RequestBinding binding, Options o)
    : loop_(loop),
      parked_(parked),
      sealer_(sealer),
      binding_(std::move(binding)),
      opt_(o),
      impl_(std::make_unique<Impl>(loop.io())) {}

MrtrSink::~MrtrSink() {
  // The timers belong to the call's loop: the last reference may be dropped
  // by a handler on another loop, so they are destroyed on their own.
  if (!loop_.in_loop() && impl_) asio::post(loop_.io(), [impl = std::move(impl_)] {});
}

void MrtrSink::start(Forwarder& forwarder, Message req, std::optional<ClientSession> session,
                     std::optional<std::string> log_level_params, std::string extra_headers,
                     Clock::time_point arrival, Front front) {
  request_id_ = req.id;
  request_progress_token_ = req.progress_token;
  front.progress_token = req.progress_token;  // round 1 is the request itself
  attach(std::move(front));
  Forwarder::spawn_bound(loop_.io(), [&](asio::cancellation_signal* sig) {
    wake_signal_ = sig;
    return Impl::run(shared_from_this(), &forwarder, std::move(req), std::move(session),
                     std::move(log_level_params), std::move(extra_headers), arrival);
  });
}

void MrtrSink::resume(std::string input_responses_json, Front front) {
  asio::post(loop_.io(), [self = shared_from_this(), r = std::move(input_responses_json),
                          f = std::move(front)]() mutable { self->on_resume(std::move(r), std::move(f)); });
}

void MrtrSink::cancel(std::string why) {
  asio::post(loop_.io(), [self = shared_from_this(), w = std::move(why)]() mutable {
    self->on_cancel(std::move(w));
  });
}

// ── fronts ──────────────────────────────────────────────────────────────────

bool MrtrSink::front_local() const { return front_ && front_->loop == &loop_; }

void MrtrSink::attach(Front front) {
  front_ = std::move(front);
  caps_json_ = front_->caps_json;
  ++front_gen_;
  front_gone_ = false;
  poll_in_flight_ = false;
  state_ = State::kAttached;
  if (!front_->sink) return;
  // The front's wake-ups (hang-up, cancellation) wake the call, on its loop.
  std::weak_ptr<MrtrSink> weak = weak_from_this();
  EventLoop* call_loop = &loop_;
  uint64_t gen = front_gen_;
  auto waker = [weak, call_loop, gen](bool urgent) {
    asio::post(call_loop->io(), [weak, gen, urgent] {
      auto self = weak.lock();
      if (!self || self->front_gen_ != gen) return;
      self->wake(urgent);
    });
  };
  if (front_local()) {
    front_->sink->set_waker(waker);
  } else {
    asio::post(front_->loop->io(), [s = front_->sink, waker] { s->set_waker(waker); });
  }
}

void MrtrSink::detach() {
  if (!front_) return;
  if (front_->sink) {
    if (front_local()) front_->sink->set_waker(nullptr);
    else asio::post(front_->loop->io(), [s = front_->sink] { s->set_waker(nullptr); });
  }
  front_.reset();
  ++front_gen_;
}

bool MrtrSink::front_alive() {
  if (!front_ || !front_->sink) return false;
  if (front_local()) return front_->sink->alive();
  if (front_gone_) return false;
  // A front on another loop is asked there; the answer comes back here.
  if (!poll_in_flight_) {
    poll_in_flight_ = true;
    std::weak_ptr<MrtrSink> weak = weak_from_this();
    EventLoop* call_loop = &loop_;
    uint64_t gen = front_gen_;
    asio::post(front_->loop->io(), [s = front_->sink, weak, call_loop, gen] {
      bool ok = s->alive();
      asio::post(call_loop->io(), [weak, gen, ok] {
        auto self = weak.lock();
        if (!self || self->front_gen_ != gen) return;
        self->poll_in_flight_ = false;
        if (!ok && !self->front_gone_) {
          self->front_gone_ = true;
          self->wake(true);
        }
      });
    });
  }
  return !front_gone_;
}

void MrtrSink::give(Outcome::Kind kind, std::string response, std::string state) {
  if (!front_) return;
  auto fn = std::move(front_->on_outcome);
  detach();
  if (!fn) return;
  Outcome o{kind, std::move(response), std::move(state), round_};
  if (kind == Outcome::Kind::kComplete && final_) {
    o.error = final_->error;
    o.attempts = final_->attempts;
    o.upstream_session = final_->upstream_session;
  }
  fn(std::move(o));
}

std::string MrtrSink::error_for_client(std::string_view message) const {
  return jsonrpc_plain_error(front_ ? front_->client_id : request_id_, -32000, message);
}

// ── CallSink (the call's loop) ──────────────────────────────────────────────

bool MrtrSink::deliver(std::string_view json) {
  // While parked there is no stream to carry the call's notifications.
  if (state_ != State::kAttached || !front_ || !front_->sink) return !cancelled_;
  std::string retagged;
  if (!request_progress_token_.empty() && front_->progress_token != request_progress_token_ &&
      json.find("notifications/progress") != std::string_view::npos) {
    // A later round: its client knows the call by its own progressToken.
    auto j = nlohmann::ordered_json::parse(json, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.value("method", "") == "notifications/progress") {
      if (front_->progress_token.empty()) return !front_gone_;  // that client asked for none
      auto t = nlohmann::ordered_json::parse(front_->progress_token, nullptr, false);
      if (j.contains("params") && j["params"].is_object() && !t.is_discarded()) {
        j["params"]["progressToken"] = std::move(t);
        retagged = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        json = retagged;
      }
    }
  }
  if (front_local()) return front_->sink->deliver(json);
  asio::post(front_->loop->io(), [s = front_->sink, j = std::string(json)] { s->deliver(j); });
  return !front_gone_;
}

bool MrtrSink::alive() {
  if (cancelled_) return false;
  if (state_ != State::kAttached) return true;  // parked: bounded by the park timer
  return front_alive();
}

void MrtrSink::set_waker(std::function<void(bool urgent)> w) {
  waker_ = w ? std::make_shared<std::function<void(bool)>>(std::move(w)) : nullptr;
}

void MrtrSink::wake(bool urgent) {
  // Once the call has been told to stop, later wake-ups carry no news, and
  // an urgent one would cut the notifications/cancelled it is sending.
  if (stop_told_) return;
  if (cancelled_ || front_gone_) stop_told_ = true;
  if (auto w = waker_) (*w)(urgent || stop_told_);
}

bool MrtrSink::forward_request(std::string_view method, std::string_view bridge_id,
                               std::string_view json, std::string* why) {
  auto cap = capability_for(method);
  if (cap.empty()) {
    *why = "a 2026-07-28 client can only be asked elicitation/create, sampling/createMessage or "
           "roots/list (MRTR)";
    return false;
  }
  // While parked there is no front: the latest round's client declared
  // what it can be asked (a request arriving now is asked on the retry).
  auto caps = nlohmann::json::parse(front_ ? front_->caps_json : caps_json_, nullptr, false);
  if (caps.is_discarded() || !caps.is_object() || !caps.contains(std::string(cap))) {
    *why = "the client did not declare the '" + std::string(cap) + "' capability";
    return false;
  }
  if (cancelled_ || state_ == State::kDone) {
    *why = "the call is ending";
    return false;
  }
  Pending p{std::string(bridge_id), std::string(method), {}};
  std::string key;
  auto j = nlohmann::json::parse(json, nullptr, false);
  if (!j.is_discarded() && j.is_object() && j.contains("params") && j["params"].is_object()) {
    auto& params = j["params"];
    key = take_key_hint(params);
    p.params = params.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  if (key.empty() || pending_.count(key)) {
    do key = "r" + std::to_string(next_key_++);
    while (pending_.count(key));
  }
  pending_.emplace(std::move(key), std::move(p));
  if (state_ == State::kAttached) open_window();
  return true;  // a request arriving while parked is asked on the retry
}

std::optional<Message> MrtrSink::take_response() {
  if (answers_.empty()) return std::nullopt;
  Message m = std::move(answers_.front());
  answers_.pop_front();
  return m;
}

void MrtrSink::end_request(std::string_view bridge_id) {
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.bridge_id == bridge_id) it = pending_.erase(it);
    else ++it;
  }
}

Clock::duration MrtrSink::client_wait() {
  if (state_ == State::kParked) return waited_ + (Clock::now() - parked_since_);
  return waited_;
}

// ── rounds ──────────────────────────────────────────────────────────────────

void MrtrSink::open_window() {
  if (window_open_) return;
  window_open_ = true;
  impl_->window.expires_after(opt_.collect_window);
  std::weak_ptr<MrtrSink> weak = weak_from_this();
  impl_->window.async_wait([weak](const boost::system::error_code& ec) {
    auto self = weak.lock();
    if (!self) return;
    self->window_open_ = false;
    if (!ec) self->end_round();
  });
}

// Answers the round's client with input_required for every unanswered
// server request, and parks the call.
void MrtrSink::end_round() {
  if (state_ != State::kAttached || pending_.empty() || !front_ || cancelled_) return;
  park_key_ = parked_.park(shared_from_this());
  if (park_key_.empty()) {
    give(Outcome::Kind::kComplete,
         error_for_client("too many calls are waiting for client input (--mrtr-max-parked " +
                          std::to_string(parked_.max_parked()) + "); try again later"));
    state_ = State::kDone;
    cancelled_ = true;
    cancel_why_ = "not parked: --mrtr-max-parked reached";
    wake(true);
    return;
  }
  ++round_;
  RequestStateClaims c;
  c.call_key = park_key_;
  c.replica = sealer_.replica();
  c.binding = binding_;
  c.round = round_;
  c.expires_ms = RequestStateSealer::now_ms() + opt_.park_timeout.count();
  std::string state = sealer_.seal(c);
  nlohmann::ordered_json result;
  result["resultType"] = "input_required";
  auto& reqs = result["inputRequests"] = nlohmann::ordered_json::object();
  for (auto& [key, p] : pending_) {
    nlohmann::ordered_json r;
    r["method"] = p.method;
    if (!p.params.empty()) r["params"] = nlohmann::ordered_json::parse(p.params, nullptr, false);
    reqs[key] = std::move(r);
  }
  result["requestState"] = state;
  nlohmann::ordered_json resp;
  resp["jsonrpc"] = "2.0";
  resp["id"] = nullptr;
  resp["result"] = std::move(result);
  std::string text = resp.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text = with_id(text, front_->client_id).value_or(text);
  state_ = State::kParked;
  parked_since_ = Clock::now();
  impl_->park.expires_after(opt_.park_timeout);
  std::weak_ptr<MrtrSink> weak = weak_from_this();
  impl_->park.async_wait([weak](const boost::system::error_code& ec) {
    if (auto self = weak.lock(); self && !ec) self->on_park_expiry();
  });
  log::debug("call waits for client input (MRTR)",
             {{"method", binding_.method}, {"name", binding_.name}, {"round", std::to_string(round_)},
              {"requests", std::to_string(pending_.size())}});
  give(Outcome::Kind::kInputRequired, std::move(text), std::move(state));
}

void MrtrSink::on_park_expiry() {
  if (state_ != State::kParked) return;
  // Losing this race to a retry means the retry owns the call now.
  if (!parked_.take_expired(park_key_)) return;
  log::info("call waited for client input too long (--mrtr-park-timeout): cancelled upstream",
            {{"method", binding_.method}, {"name", binding_.name}});
  waited_ += Clock::now() - parked_since_;
  state_ = State::kDone;
  cancelled_ = true;
  cancel_why_ = "the call waited for client input longer than --mrtr-park-timeout";
  result_.reset();
  wake(true);
}

void MrtrSink::on_resume(std::string input_responses_json, Front front) {
  impl_->park.cancel();
  if (state_ != State::kParked || cancelled_) {
    // Cancelled (bridge stopping) between the take and now.
    front_ = std::move(front);
    give(Outcome::Kind::kCancelled,
         error_for_client(cancel_why_.empty() ? "the call was cancelled" : cancel_why_));
    return;
  }
  waited_ += Clock::now() - parked_since_;
  attach(std::move(front));
  if (result_) {  // the call ended while parked
    CallResult r = std::move(*result_);
    result_.reset();
    finish(std::move(r));
    return;
  }
  auto answers = nlohmann::json::parse(input_responses_json, nullptr, false);
  if (answers.is_discarded() || !answers.is_object()) answers = nlohmann::json::object();
  // Keys the client did not answer (or answered with no object) stay pending
  // and are asked again; keys it invented are ignored.
  for (auto it = pending_.begin(); it != pending_.end();) {
    auto a = answers.find(it->first);
    if (a == answers.end() || !a->is_object()) {
      ++it;
      continue;
    }
    nlohmann::ordered_json resp;
    resp["jsonrpc"] = "2.0";
    resp["id"] = nullptr;
    resp["result"] = *a;
    Message m;
    m.kind = MsgKind::kResponse;
    m.id = it->second.bridge_id;
    m.raw = with_id(resp.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                    it->second.bridge_id)
                .value_or(std::string());
    answers_.push_back(std::move(m));
    it = pending_.erase(it);
  }
  wake(false);
  if (!pending_.empty()) open_window();
}

void MrtrSink::on_cancel(std::string why) {
  if (cancelled_) return;
  cancelled_ = true;
  cancel_why_ = std::move(why);
  if (state_ == State::kParked) {
    (void)parked_.take_expired(park_key_);  // may already be out (stop)
    impl_->park.cancel();
    state_ = State::kDone;
    result_.reset();
  }
  wake(true);
}

void MrtrSink::finish(CallResult r) {
  impl_->window.cancel();
  if (state_ == State::kParked) {
    // The retry (if it comes before the park expiry) gets it.
    if (!cancelled_) result_ = std::move(r);
    return;
  }
  if (state_ == State::kDone || !front_) return;
  state_ = State::kDone;
  if (r.cancelled || r.response.empty()) {
    give(Outcome::Kind::kCancelled,
         error_for_client(cancel_why_.empty() ? "the call was cancelled" : cancel_why_));
    return;
  }
  std::string resp = with_id(r.response, front_->client_id).value_or(r.response);
  final_ = std::move(r);
  give(Outcome::Kind::kComplete, std::move(resp));
}

}  // namespace msb
