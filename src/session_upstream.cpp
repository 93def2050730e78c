#include "mcp_sse_bridge/session_upstream.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <utility>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/metrics.h"
#include "mcp_sse_bridge/retry_policy.h"
#include "mcp_sse_bridge/standalone_stream.h"
#include "mcp_sse_bridge/upstream_channel.h"

namespace msb {

namespace asio = boost::asio;

namespace {

// A waiting call re-checks its client at least this often (keepalives).
constexpr Millis kPollSlice{1000};
// The reader's housekeeping (ping probe, idle timeout) runs at least this often.
constexpr Millis kReaderSlice{1000};
// Re-opening a held session: at once, then 500 ms doubling up to 15 s.
constexpr Millis kReopenFirst{500};
constexpr Millis kReopenCap{15000};
// A session that stayed up this long resets the backoff (its next drop
// re-opens at once); one that drops sooner (a flapping upstream that accepts
// and closes) keeps backing off.
constexpr Millis kStableAfter{10000};
// Resource subscriptions remembered per session (a hostile client must not
// grow the state without bound).
constexpr size_t kMaxSubscriptions = 256;

double jitter() {
  static thread_local std::mt19937 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

// params.uri of a resources/subscribe or unsubscribe request, or "".
std::string uri_of(const std::string& raw) {
  auto j = nlohmann::json::parse(raw, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("params") || !j["params"].is_object())
    return {};
  auto& u = j["params"];
  return u.contains("uri") && u["uri"].is_string() ? u["uri"].get<std::string>() : std::string();
}

// The log levels, lowest first (RFC 5424 as MCP orders them).
int level_rank(std::string_view l) {
  static constexpr std::string_view kLevels[] = {"debug", "info",     "notice", "warning",
                                                 "error", "critical", "alert",  "emergency"};
  for (int i = 0; i < 8; ++i)
    if (l == kLevels[i]) return i;
  return 0;
}

std::atomic<uint64_t> g_ids{0};
std::atomic<size_t> g_running{0};

// Ids of the bridge's own upstream requests and of forwarded server
// requests: a string prefix no client plausibly uses, unique per process.
std::string own_id(std::string_view what) {
  return json_quote("mcp-sse-bridge:session:" + std::string(what) + ":" +
                    std::to_string(g_ids.fetch_add(1, std::memory_order_relaxed)));
}

std::string_view capability_for(std::string_view method) {
  if (method == "sampling/createMessage") return "sampling";
  if (method == "roots/list") return "roots";
  if (method == "elicitation/create") return "elicitation";
  return {};
}

// A call's waiting point on its own loop: a timer that a wake-up cuts short.
struct Waiter {
  explicit Waiter(asio::io_context& io) : timer(io) {}
  void wake() {
    woken = true;
    timer.cancel();
  }
  asio::steady_timer timer;
  bool woken = false;
};

}  // namespace

// What the session tells one call: messages for it and the session's
// failure. Filled on the owner loop, read on the call's loop; `wake` posts
// to the call's loop. Thread-safe.
struct SessionCallPort {
  explicit SessionCallPort(std::function<void()> w) : wake(std::move(w)) {}
  void push(Message m) {
    {
      std::lock_guard lk(mu);
      inbox.push_back(std::move(m));
    }
    wake();
  }
  void fail(BridgeError e) {
    {
      std::lock_guard lk(mu);
      if (!failure) failure = std::move(e);
    }
    wake();
  }
  const std::function<void()> wake;
  std::mutex mu;
  std::deque<Message> inbox;
  std::optional<BridgeError> failure;
  std::atomic<bool> sent{false};  // the request may have reached the upstream
};

// Counts owner-loop work in progress (open + reader, writer) for stop().
class SessionUpstream::Running {
 public:
  Running() { g_running.fetch_add(1); }
  ~Running() { g_running.fetch_sub(1); }
};

SessionRoute route_upstream_message(const Message& m, size_t calls_in_flight, bool id_is_call,
                                    bool id_is_own, bool token_is_call) {
  switch (m.kind) {
    case MsgKind::kResponse:
      if (id_is_own) return SessionRoute::kOwn;
      return id_is_call ? SessionRoute::kCall : SessionRoute::kDrop;
    case MsgKind::kRequest:
      if (m.method == "ping") return SessionRoute::kAnswerPing;
      return calls_in_flight == 1 ? SessionRoute::kSingleCall : SessionRoute::kStream;
    case MsgKind::kNotification:
      if (m.method == "notifications/progress")
        return token_is_call ? SessionRoute::kCall : SessionRoute::kDrop;
      if (m.method == "notifications/message")
        return calls_in_flight == 1 ? SessionRoute::kSingleCall : SessionRoute::kStream;
      return SessionRoute::kStream;
  }
  return SessionRoute::kDrop;
}

size_t SessionUpstream::running() { return g_running.load(); }

SessionUpstream::SessionUpstream(EventLoop& owner, const UpstreamConfig& cfg, Metrics& metrics,
                                 Params p, std::function<void(SessionUpstream*)> on_end)
    : owner_(owner),
      ex_(owner.io().get_executor()),
      cfg_(cfg),
      metrics_(metrics),
      p_(std::move(p)),
      on_end_(std::move(on_end)),
      last_used_(Clock::now()),
      backoff_(kReopenFirst, kReopenCap) {}

SessionUpstream::~SessionUpstream() {
  // The channel is destroyed on the owner loop (its sockets live there).
  if (ch_) asio::post(ex_, [ch = std::move(ch_)] { ch->abort(); });
}

std::string SessionUpstream::upstream_session_id() const {
  std::lock_guard lk(id_mu_);
  return upstream_session_id_;
}

void SessionUpstream::start() {
  if (started_.exchange(true)) return;
  asio::co_spawn(ex_, run(shared_from_this()), asio::detached);
}

// ---- owner loop: open, read, write ----------------------------------------------

asio::awaitable<void> SessionUpstream::run(std::shared_ptr<SessionUpstream> self) {
  (void)self;  // keeps the session alive while it runs
  Running running;
  // One turn per open: the first, then one per re-open of a held session.
  while (state_.load() == State::kOpening) {
    auto ch = std::make_shared<UpstreamChannel>(ex_, cfg_, p_.headers);
    ch_ = ch;
    std::optional<BridgeError> err;
    try {
      bool opened = co_await open_steps(*ch, &err);
      if (!opened && !err) co_return;  // closed meanwhile
    } catch (const std::exception& e) {
      err = make_error(ErrorKind::kInternal, Phase::kConnect,
                       std::string("session setup: ") + e.what());
    }
    if (err) {
      if (state_.load() != State::kOpening) co_return;  // closed meanwhile
      // A session nobody holds fails (session mode's first open: the
      // client's initialize gets the error). A held one retries after a
      // backoff, the first open too: the listen hub's session is held by
      // its feed from the start, and an upstream down when the first
      // listener came must not leave the feed without a session for good.
      if (!held()) {
        finish(State::kFailed, std::move(*err));
        co_return;
      }
      ch->abort();
      if (ch_ == ch) ch_.reset();
      for (auto& p : pending_) p.port->fail(*err);
      pending_.clear();
      if (p_.on_open_failed) p_.on_open_failed();
      Millis wait = backoff_.next(jitter());
      log::warn(opens_ == 0 ? "opening the held upstream session failed; trying again"
                            : "re-opening the upstream session failed (session mode); trying again",
                {{"session", p_.tag}, {"attempt", std::to_string(backoff_.attempts())},
                 {"in_ms", std::to_string(wait.count())}, {"cause", err->message()}});
      BridgeError cause = *err;
      bool go_on = co_await wait_before_reopen(wait, cause);
      if (!go_on) co_return;
      continue;
    }
    state_.store(State::kReady);
    const auto up_since = Clock::now();
    // Held subscriptions that came after the replay's snapshot.
    for (auto& uri : std::exchange(unsent_, {}))
      if (subscriptions_.count(uri)) send_subscription("resources/subscribe", uri);
    if (p_.on_open) p_.on_open(last_init_);
    if (++opens_ > 1) {
      announce_state_lost();
    } else {
      log::info("upstream session open (session mode)",
                {{"session", p_.tag}, {"upstream_session", upstream_session_id()}});
      warn_pending_ = p_.state_lost;
      tell_state_lost();
    }
    auto waiting = std::move(pending_);
    pending_.clear();
    for (auto& p : waiting) begin(std::move(p));
    co_await read_loop(ch);
    // The reader ends when the session is no longer ready: closed, failed,
    // or dropped while held (kOpening: re-open at once).
    if (ch_ == ch) ch_.reset();
    ch->abort();
    if (state_.load() == State::kOpening) {
      if (Clock::now() - up_since >= kStableAfter) backoff_.reset();
      Millis wait = backoff_.next(jitter());  // zero after a reset: at once
      // A named cause and a plain statement: GCC 12 mishandles temporaries
      // in a co_await inside a short-circuit condition (a double free).
      BridgeError cause = failure_.value_or(BridgeError{});
      if (wait.count() > 0) {
        bool go_on = co_await wait_before_reopen(wait, cause);
        if (!go_on) co_return;
      }
    }
  }
}

asio::awaitable<bool> SessionUpstream::wait_before_reopen(Millis d, const BridgeError& cause) {
  auto until = Deadline::after(d);
  backoff_timer_ = std::make_unique<asio::steady_timer>(ex_);
  while (state_.load() == State::kOpening && pending_.empty() && !until.reached()) {
    if (!held()) {
      backoff_timer_.reset();
      finish(State::kFailed, cause);
      co_return false;
    }
    // Re-checked every slice: a GET stream that went away ends the wait.
    backoff_timer_->expires_at(Deadline::earliest(until, Deadline::after(kReaderSlice)).when());
    (void)co_await backoff_timer_->async_wait(asio::as_tuple(asio::use_awaitable));
  }
  backoff_timer_.reset();
  co_return state_.load() == State::kOpening;
}

asio::awaitable<bool> SessionUpstream::open_steps(UpstreamChannel& ch,
                                                  std::optional<BridgeError>* err) {
  auto fail = [&](BridgeError e) {
    *err = std::move(e);
    return false;
  };
  auto st = co_await ch.open(Deadline::after(cfg_.connect_timeout), cfg_.endpoint_timeout,
                             Deadline::after(cfg_.connect_timeout + cfg_.endpoint_timeout));
  if (!st) co_return fail(st.error());
  {
    std::lock_guard lk(id_mu_);
    upstream_session_id_ = ch.upstream_session_id();
  }
  if (state_.load() != State::kOpening) co_return false;  // closed meanwhile
  auto d = Deadline::after(cfg_.initialize_timeout);
  std::string init_id = own_id("init");
  auto r = co_await roundtrip(ch, make_request(init_id, "initialize", p_.init_params), init_id, d);
  if (!r) co_return fail(r.error());
  last_init_ = r->raw;
  if (opens_ == 0) {
    init_response_ = r->raw;
    init_refused_ = r->is_error;
  }
  if (r->is_error)
    co_return fail(make_error(ErrorKind::kRejected, Phase::kInitialize,
                              "upstream refused the replayed initialize: " + r->raw.substr(0, 300)));
  auto s = co_await ch.post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})",
                            Deadline::after(cfg_.initialize_timeout), Phase::kInitialize);
  if (!s) co_return fail(s.error());
  if (p_.log_level) {
    std::string id = own_id("setLevel");
    auto lr = co_await roundtrip(ch, make_request(id, "logging/setLevel", *p_.log_level), id,
                                 Deadline::after(cfg_.initialize_timeout));
    if (!lr) co_return fail(lr.error());
  }
  // Every remembered subscription, again (a refused one is forgotten). A
  // snapshot: held subscriptions may come and go while this waits (those
  // that come are sent once the session is ready).
  unsent_.clear();
  const std::vector<std::string> replay(subscriptions_.begin(), subscriptions_.end());
  for (const auto& uri : replay) {
    if (!subscriptions_.count(uri)) continue;  // released meanwhile
    std::string id = own_id("subscribe");
    std::string body = make_request(id, "resources/subscribe", R"({"uri":)" + json_quote(uri) + "}");
    auto sr = co_await roundtrip(ch, body, id, Deadline::after(cfg_.initialize_timeout));
    if (!sr) co_return fail(sr.error());
    if (sr->is_error) {
      log::warn("upstream refused a replayed resources/subscribe; forgotten",
                {{"session", p_.tag}, {"uri", uri.substr(0, 200)}, {"answer", sr->raw.substr(0, 200)}});
      subscriptions_.erase(uri);
    }
  }
  co_return state_.load() == State::kOpening;
}

// POSTs a setup request and waits for its reply on the stream (upstream pings
// are answered; anything else before the session is ready is dropped).
asio::awaitable<Expected<Message>> SessionUpstream::roundtrip(UpstreamChannel& ch,
                                                              const std::string& body,
                                                              const std::string& id, Deadline d) {
  if (auto s = co_await ch.post(body, d, Phase::kInitialize); !s) co_return s.error();
  const auto timed_out = [&] {
    return "no reply to the replayed setup within --initialize-timeout " + format_duration(cfg_.initialize_timeout);
  };
  for (;;) {
    auto m = co_await ch.next_message(d, Phase::kInitialize);
    if (!m) {
      if (m.error().kind == ErrorKind::kTimeout) m.error().detail = timed_out();
      co_return m.error();
    }
    if (m->kind == MsgKind::kResponse && m->id == id) co_return std::move(*m);
    if (m->kind == MsgKind::kRequest && m->method == "ping") {
      auto s = co_await ch.post(R"({"jsonrpc":"2.0","id":)" + m->id + R"(,"result":{}})", d,
                                Phase::kInitialize);
      if (!s) co_return s.error();
    }
    // Messages keep coming, none of them the reply.
    if (d.reached()) co_return make_error(ErrorKind::kTimeout, Phase::kInitialize, timed_out());
  }
}

bool SessionUpstream::idle(Clock::time_point now) const {
  return calls_.empty() && pending_.empty() && !(stream_ && stream_->open()) &&
         now - last_used_ >= cfg_.session_idle_timeout;
}

asio::awaitable<void> SessionUpstream::read_loop(std::shared_ptr<UpstreamChannel> ch) {
  while (state_.load() == State::kReady) {
    auto now = Clock::now();
    if (ping_id_ && ping_deadline_.reached()) {
      drop(make_error(ErrorKind::kUnresponsive, Phase::kRequest,
                        "stream silent for " +
                            format_duration(std::chrono::duration_cast<Millis>(now - ch->last_activity())) +
                            " and ping unanswered within " + format_duration(cfg_.ping_timeout)));
      co_return;
    }
    // Probed whether or not a call waits: an idle session's dead path is
    // found before the next call (or, when held, re-opened before it).
    if (!ping_id_ && cfg_.ping_interval.count() > 0 &&
        now - ch->last_activity() >= cfg_.ping_interval) {
      ping_id_ = own_id("ping");
      ping_deadline_ = Deadline::after(cfg_.ping_timeout);
      enqueue(make_request(*ping_id_, "ping", ""), ping_deadline_);
    }
    if (stream_ && !stream_->open()) {
      stream_.reset();
      last_used_ = now;
    }
    if (idle(now)) {
      finish(State::kClosed, make_error(ErrorKind::kClosed, Phase::kRequest,
                                        "upstream session closed after --session-idle-timeout"));
      co_return;
    }
    auto wake = Deadline::after(kReaderSlice);
    if (ping_id_) wake = Deadline::earliest(wake, ping_deadline_);
    else if (cfg_.ping_interval.count() > 0)
      wake = Deadline::earliest(wake, Deadline::at(ch->last_activity() + cfg_.ping_interval));
    // The idle deadline only counts while nothing uses the session: with a
    // GET stream open past it, it would be in the past on every turn.
    if (calls_.empty() && pending_.empty() && !(stream_ && stream_->open()))
      wake = Deadline::earliest(wake, Deadline::at(last_used_ + cfg_.session_idle_timeout));
    // A wake-up already due must not make this loop spin without yielding.
    if (wake.reached()) wake = Deadline::after(Millis(1));
    auto m = co_await ch->next_message(wake, Phase::kRequest);
    if (state_.load() != State::kReady) co_return;
    if (!m) {
      if (m.error().kind == ErrorKind::kTimeout || m.error().kind == ErrorKind::kCancelled) continue;
      drop(m.error());
      co_return;
    }
    dispatch(*m);
  }
}

void SessionUpstream::enqueue(std::string body, Deadline d, std::function<void(const Status&)> done) {
  writes_.push_back(Write{std::move(body), d, std::move(done)});
  if (writing_) return;
  writing_ = true;
  asio::co_spawn(ex_, writer(shared_from_this()), asio::detached);
}

// One POST at a time (the channel has one POST connection), in order.
asio::awaitable<void> SessionUpstream::writer(std::shared_ptr<SessionUpstream> self) {
  (void)self;  // keeps the session alive while it runs
  Running running;
  while (!writes_.empty()) {
    Write w = std::move(writes_.front());
    writes_.pop_front();
    Status s = make_error(ErrorKind::kClosed, Phase::kRequest, "upstream session closed");
    if (failure_) s = *failure_;
    if (auto ch = ch_; ch && state_.load() == State::kReady) {
      try {
        s = co_await ch->post(w.body, w.deadline, Phase::kRequest);
      } catch (const std::exception& e) {
        s = make_error(ErrorKind::kInternal, Phase::kRequest, e.what());
      }
    }
    if (w.done) w.done(s);
  }
  writing_ = false;
}

// ---- owner loop: calls ---------------------------------------------------------

void SessionUpstream::begin(Pending p) {
  last_used_ = Clock::now();
  auto st = state_.load();
  if (st == State::kOpening) {
    pending_.push_back(std::move(p));
    if (backoff_timer_) backoff_timer_->cancel();  // a call needs it: try now
    return;
  }
  if (st != State::kReady) {
    p.port->fail(failure_ ? *failure_
                          : make_error(ErrorKind::kClosed, Phase::kConnect, "upstream session closed"));
    return;
  }
  if (p.open_only) {  // the client's initialize: the open answered it
    if (auto r = with_id(init_response_, p.id)) answer_call(p.port, *r);
    else p.port->fail(make_error(ErrorKind::kProtocol, Phase::kInitialize, "bad initialize answer"));
    return;
  }
  if (calls_.count(p.id)) {
    p.port->fail(make_error(ErrorKind::kRejected, Phase::kRequest,
                            "a request with id " + p.id.substr(0, 100) +
                                " is already in flight on this client session"));
    return;
  }
  if (!note_subscription(p)) return;
  calls_[p.id] = p.port;
  if (!p.token.empty()) tokens_[p.token] = p.id;
  p.port->sent.store(true);
  std::weak_ptr<SessionUpstream> weak = weak_from_this();
  auto port = p.port;
  std::string id = p.id;
  int opens = opens_;
  enqueue(std::move(p.raw), p.deadline, [weak, port, id, opens](const Status& s) {
    if (s) return;
    auto self = weak.lock();
    const BridgeError& e = s.error();
    if (post_failure_proves_not_taken(e)) port->sent.store(false);
    port->fail(e);
    if (!self) return;
    self->end_call(port, id);
    // The session is gone (404) or its stream ended: every call fails (not
    // a session re-opened since this POST was queued).
    if ((e.kind == ErrorKind::kClosed || e.http_status == 404) && self->opens_ == opens)
      self->drop(e);
  });
}

void SessionUpstream::end_call(const std::shared_ptr<SessionCallPort>& port, const std::string& id) {
  last_used_ = Clock::now();
  for (auto it = pending_.begin(); it != pending_.end(); ++it)
    if (it->port == port) {
      pending_.erase(it);
      return;
    }
  auto it = calls_.find(id);
  if (it == calls_.end() || it->second != port) return;
  calls_.erase(it);
  subscribing_.erase(id);
  for (auto t = tokens_.begin(); t != tokens_.end();)
    t = t->second == id ? tokens_.erase(t) : std::next(t);
}

void SessionUpstream::cancel_call(const std::shared_ptr<SessionCallPort>& port,
                                  const std::string& id, const std::string& reason) {
  bool registered = calls_.count(id) && calls_[id] == port;
  end_call(port, id);
  if (!registered || state_.load() != State::kReady) return;
  enqueue(R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":)" + id +
              R"(,"reason":)" + json_quote(reason) + "}}",
          Deadline::after(Millis(1000)));
}

void SessionUpstream::dispatch(Message& m) {
  bool id_is_call = m.kind == MsgKind::kResponse && calls_.count(m.id) > 0;
  bool id_is_own = m.kind == MsgKind::kResponse &&
                   ((ping_id_ && m.id == *ping_id_) || own_subscribing_.count(m.id) > 0);
  bool token_is_call = m.kind == MsgKind::kNotification && !m.progress_token.empty() &&
                       tokens_.count(m.progress_token) > 0;
  switch (route_upstream_message(m, calls_.size(), id_is_call, id_is_own, token_is_call)) {
    case SessionRoute::kOwn:
      if (auto own = own_subscribing_.find(m.id); own != own_subscribing_.end()) {
        if (m.is_error && !own->second.empty() && subscriptions_.erase(own->second))
          log::warn("upstream refused a held resources/subscribe; forgotten",
                    {{"session", p_.tag}, {"uri", own->second.substr(0, 200)},
                     {"answer", m.raw.substr(0, 200)}});
        own_subscribing_.erase(own);
        return;
      }
      ping_id_.reset();
      ping_deadline_ = Deadline::never();
      return;
    case SessionRoute::kCall:
      if (auto sub = subscribing_.find(m.id); id_is_call && sub != subscribing_.end()) {
        if (!m.is_error) subscriptions_.insert(sub->second);
        subscribing_.erase(sub);
      }
      if (id_is_call) calls_[m.id]->push(std::move(m));
      else calls_[tokens_[m.progress_token]]->push(std::move(m));
      return;
    case SessionRoute::kAnswerPing:
      enqueue(R"({"jsonrpc":"2.0","id":)" + m.id + R"(,"result":{}})",
              Deadline::after(cfg_.post_timeout));
      return;
    case SessionRoute::kDrop:
      log::debug("upstream message for no call dropped", {{"session", p_.tag}, {"method", m.method}});
      return;
    case SessionRoute::kSingleCall:
    case SessionRoute::kStream:
      break;
  }
  bool single = route_upstream_message(m, calls_.size(), id_is_call, id_is_own, token_is_call) ==
                SessionRoute::kSingleCall;
  if (m.kind == MsgKind::kRequest) {
    // Upstream sessions number their requests from 0: the client sees an id
    // unique in this process, and its answer is mapped back.
    std::string bridge_id = own_id("s2c");
    auto rewritten = with_id(m.raw, bridge_id);
    if (!rewritten) return;
    server_requests_[bridge_id] = m.id;
    if (single) {
      Message fwd = m;
      fwd.id = bridge_id;
      fwd.raw = std::move(*rewritten);
      calls_.begin()->second->push(std::move(fwd));
      return;
    }
    to_stream_or_refuse(m.method, bridge_id, *rewritten, "no call and no GET stream can take it");
    return;
  }
  if (single) {
    calls_.begin()->second->push(std::move(m));
    return;
  }
  if (stream_ && stream_->deliver(m.raw)) return;
  metrics_.unattributed_dropped();
  log::debug("upstream notification dropped: no GET stream",
             {{"session", p_.tag}, {"method", m.method}});
}

bool SessionUpstream::client_has_capability(std::string_view method, std::string* why) {
  auto cap = capability_for(method);
  if (cap.empty()) return true;
  if (!caps_) {
    auto j = nlohmann::json::parse(p_.init_params, nullptr, false);
    caps_ = (!j.is_discarded() && j.is_object() && j.contains("capabilities") &&
             j["capabilities"].is_object())
                ? j["capabilities"].dump()
                : "{}";
  }
  auto c = nlohmann::json::parse(*caps_, nullptr, false);
  if (!c.is_discarded() && c.is_object() && c.contains(std::string(cap))) return true;
  *why = "the client did not declare the '" + std::string(cap) + "' capability";
  return false;
}

void SessionUpstream::to_stream_or_refuse(const std::string& method, const std::string& bridge_id,
                                          const std::string& json, std::string why) {
  if (client_has_capability(method, &why) && stream_ && stream_->deliver(json)) return;
  refuse_request(bridge_id, why);
}

void SessionUpstream::refuse_request(const std::string& bridge_id, const std::string& why) {
  auto it = server_requests_.find(bridge_id);
  if (it == server_requests_.end()) return;
  std::string upstream_id = it->second;
  server_requests_.erase(it);
  if (state_.load() != State::kReady) return;
  enqueue(jsonrpc_plain_error(upstream_id, -32601, "mcp-sse-bridge cannot forward it: " + why),
          Deadline::after(cfg_.post_timeout));
}

void SessionUpstream::answer(const Message& m) {
  auto it = server_requests_.find(m.id);
  if (it == server_requests_.end()) {
    log::debug("client answer matches no forwarded request", {{"id", m.id}});
    return;
  }
  auto fixed = with_id(m.raw, it->second);
  server_requests_.erase(it);
  if (fixed && state_.load() == State::kReady) enqueue(std::move(*fixed), Deadline::after(cfg_.post_timeout));
}

// Owner loop: the session ends; everything waiting on it is told at once.
void SessionUpstream::finish(State st, BridgeError e) {
  auto prev = state_.load();
  if (prev == State::kFailed || prev == State::kClosed) return;
  state_.store(st);
  failure_ = e;
  for (auto& [id, port] : calls_) port->fail(e);
  for (auto& p : pending_) {
    // The upstream refused the client's initialize: the client gets that answer.
    std::optional<std::string> refusal;
    if (p.open_only && init_refused_) refusal = with_id(init_response_, p.id);
    if (refusal) answer_call(p.port, *refusal);
    else p.port->fail(e);
  }
  size_t n = calls_.size() + pending_.size();
  calls_.clear();
  tokens_.clear();
  pending_.clear();
  server_requests_.clear();
  subscribing_.clear();
  own_subscribing_.clear();
  if (backoff_timer_) backoff_timer_->cancel();
  // The reader and writer end; they hold the channel until then (so it is
  // destroyed on this loop).
  if (ch_) ch_->abort();
  ch_.reset();
  if (stream_) stream_->end();
  stream_.reset();
  if (st == State::kFailed)
    log::warn("upstream session failed (session mode): its calls fail; the next call opens a new one",
              {{"session", p_.tag}, {"upstream_session", upstream_session_id()},
               {"calls", std::to_string(n)}, {"cause", e.message()}});
  else
    log::info("upstream session closed (session mode)",
              {{"session", p_.tag}, {"upstream_session", upstream_session_id()},
               {"cause", e.detail}});
  if (on_end_) on_end_(this);
}

// Owner loop: the stream is gone. Calls in flight fail at once; a held
// session re-opens (run() sees kOpening), any other fails.
void SessionUpstream::drop(BridgeError e) {
  if (state_.load() != State::kReady) return;
  if (!held()) return finish(State::kFailed, std::move(e));
  state_.store(State::kOpening);
  failure_ = e;
  for (auto& [id, port] : calls_) port->fail(e);
  size_t n = calls_.size();
  calls_.clear();
  tokens_.clear();
  subscribing_.clear();
  own_subscribing_.clear();  // unanswered: their URIs are replayed with the re-open
  // Server requests of the old session cannot be answered any more.
  server_requests_.clear();
  ping_id_.reset();
  ping_deadline_ = Deadline::never();
  if (ch_) ch_->abort();
  log::warn("upstream session dropped (session mode): its calls fail; re-opening it for the "
            "client's GET stream and subscriptions",
            {{"session", p_.tag}, {"upstream_session", upstream_session_id()},
             {"calls", std::to_string(n)}, {"subscriptions", std::to_string(subscriptions_.size())},
             {"cause", e.message()}});
}

bool SessionUpstream::held() const {
  return (stream_ && stream_->open()) || !subscriptions_.empty();
}

void SessionUpstream::announce_state_lost() {
  metrics_.session_state_lost();
  log::warn("upstream session re-opened (session mode): server-side session state was lost; "
            "initialize, log level and subscriptions replayed",
            {{"session", p_.tag}, {"upstream_session", upstream_session_id()},
             {"subscriptions", std::to_string(subscriptions_.size())}});
  warn_pending_ = true;
  tell_state_lost();
}

void SessionUpstream::tell_state_lost() {
  if (!warn_pending_ || !stream_ || !stream_->open()) return;
  warn_pending_ = false;
  // Below the client's log level the warning is not sent (it asked not to).
  if (p_.log_level) {
    auto j = nlohmann::json::parse(*p_.log_level, nullptr, false);
    if (!j.is_discarded() && j.is_object() && j.contains("level") && j["level"].is_string() &&
        level_rank(j["level"].get<std::string>()) > level_rank("warning"))
      return;
  }
  nlohmann::ordered_json n = {
      {"jsonrpc", "2.0"},
      {"method", "notifications/message"},
      {"params",
       {{"level", "warning"},
        {"logger", "mcp-sse-bridge"},
        {"data",
         {{"message",
           "the upstream session was lost and a new one was opened: server-side session state "
           "(anything the server kept for this session) is gone; log level and " +
               std::to_string(subscriptions_.size()) + " resource subscription(s) were restored"},
          {"event", "upstream_session_reopened"},
          {"subscriptions", subscriptions_.size()}}}}}};
  stream_->deliver(n.dump());
}

bool SessionUpstream::note_subscription(const Pending& p) {
  bool sub = p.raw.find("resources/subscribe") != std::string::npos;
  bool unsub = p.raw.find("resources/unsubscribe") != std::string::npos;
  if (!sub && !unsub) return true;
  Message m;
  if (!parse_message(p.raw, m) || m.kind != MsgKind::kRequest) return true;
  if (m.method == "resources/unsubscribe") {
    // Forgotten at once: the client wants no more updates, whatever the answer.
    subscriptions_.erase(uri_of(p.raw));
    return true;
  }
  if (m.method != "resources/subscribe") return true;
  std::string uri = uri_of(p.raw);
  if (uri.empty()) return true;  // the upstream answers the bad params
  if (!subscriptions_.count(uri) && subscriptions_.size() + subscribing_.size() >= kMaxSubscriptions) {
    answer_call(p.port, jsonrpc_plain_error(p.id, -32000,
                                            "mcp-sse-bridge keeps at most " +
                                                std::to_string(kMaxSubscriptions) +
                                                " resource subscriptions per session"));
    return false;
  }
  subscribing_[p.id] = std::move(uri);
  return true;
}

void SessionUpstream::send_subscription(std::string_view method, const std::string& uri) {
  std::string id = own_id("held-subscribe");
  own_subscribing_[id] = method == "resources/subscribe" ? uri : std::string();
  enqueue(make_request(id, method, R"({"uri":)" + json_quote(uri) + "}"),
          Deadline::after(cfg_.post_timeout));
}

void SessionUpstream::answer_call(const std::shared_ptr<SessionCallPort>& port,
                                  const std::string& raw) {
  Message m;
  if (parse_message(raw, m)) port->push(std::move(m));
  else port->fail(make_error(ErrorKind::kProtocol, Phase::kRequest, "bad answer"));
}

// ---- any thread -------------------------------------------------------------------

void SessionUpstream::attach_stream(std::shared_ptr<SessionStreamSink> s) {
  asio::post(ex_, [self = shared_from_this(), s = std::move(s)]() mutable {
    if (!self->usable()) {
      s->end();
      return;
    }
    if (self->stream_) self->stream_->end();  // one per session: the newer wins
    self->stream_ = std::move(s);
    self->last_used_ = Clock::now();
    if (self->state_.load() == State::kReady) self->tell_state_lost();
  });
}

void SessionUpstream::client_answer(Message m) {
  asio::post(ex_, [self = shared_from_this(), m = std::move(m)] { self->answer(m); });
}

void SessionUpstream::client_notification(std::string raw) {
  asio::post(ex_, [self = shared_from_this(), raw = std::move(raw)]() mutable {
    if (self->state_.load() == State::kReady)
      self->enqueue(std::move(raw), Deadline::after(self->cfg_.post_timeout));
  });
}

void SessionUpstream::set_log_level(std::string params) {
  asio::post(ex_, [self = shared_from_this(), params = std::move(params)]() mutable {
    self->p_.log_level = std::move(params);
  });
}

void SessionUpstream::hold_subscription(std::string uri) {
  asio::post(ex_, [self = shared_from_this(), uri = std::move(uri)] {
    if (!self->usable() || !self->subscriptions_.insert(uri).second) return;
    if (self->state_.load() == State::kReady) self->send_subscription("resources/subscribe", uri);
    else self->unsent_.insert(uri);
  });
}

void SessionUpstream::release_subscription(std::string uri) {
  asio::post(ex_, [self = shared_from_this(), uri = std::move(uri)] {
    self->unsent_.erase(uri);
    if (self->subscriptions_.erase(uri) && self->state_.load() == State::kReady)
      self->send_subscription("resources/unsubscribe", uri);
  });
}

void SessionUpstream::close(BridgeError why) {
  asio::post(ex_, [self = shared_from_this(), why = std::move(why)]() mutable {
    self->finish(State::kClosed, std::move(why));
  });
}

// ---- the call's loop ----------------------------------------------------------------

asio::awaitable<CallResult> SessionUpstream::call(EventLoop& loop, const Message& req,
                                                  CallSink& sink, Clock::time_point arrival,
                                                  bool* request_sent) {
  auto self = shared_from_this();
  auto waiter = std::make_shared<Waiter>(loop.io());
  std::weak_ptr<Waiter> ww = waiter;
  auto cex = loop.io().get_executor();
  auto port = std::make_shared<SessionCallPort>([cex, ww] {
    asio::post(cex, [ww] {
      if (auto w = ww.lock()) w->wake();
    });
  });
  // The client's cancellation, departure and answers (the sink posts its
  // waker to this loop).
  sink.set_waker([ww](bool) {
    if (auto w = ww.lock()) w->wake();
  });
  CallResult out;
  out.attempts = 1;
  Deadline deadline = Deadline::at(arrival + cfg_.request_timeout);
  const Deadline hard = Deadline::at(arrival + cfg_.max_request_timeout);
  asio::post(ex_, [self, p = Pending{port, req.id, req.progress_token, req.raw, deadline,
                                     req.method == "initialize"}]() mutable {
    self->begin(std::move(p));
  });
  std::set<std::string> forwarded;  // bridge ids of server requests on this call's stream
  auto cancel = [&](std::string reason) {
    asio::post(ex_, [self, port, id = req.id, reason = std::move(reason)] {
      self->cancel_call(port, id, reason);
    });
  };
  bool done = false;
  while (!done) {
    if (!sink.alive()) {
      out.cancelled = true;
      cancel("client went away (mcp-sse-bridge)");
      break;
    }
    while (auto r = sink.take_response()) {
      if (!forwarded.erase(r->id)) continue;
      sink.end_request(r->id);
      self->client_answer(std::move(*r));
    }
    std::deque<Message> got;
    std::optional<BridgeError> failure;
    {
      std::lock_guard lk(port->mu);
      got.swap(port->inbox);
      failure = port->failure;
    }
    for (auto& m : got) {
      if (done) break;
      if (m.kind == MsgKind::kResponse) {
        out.response = std::move(m.raw);
        done = true;
      } else if (m.kind == MsgKind::kRequest) {
        std::string why;
        if (sink.forward_request(m.method, m.id, m.raw, &why)) {
          forwarded.insert(m.id);
        } else {
          asio::post(ex_, [self, m = std::move(m), why = std::move(why)]() mutable {
            self->to_stream_or_refuse(m.method, m.id, m.raw, why);
          });
        }
      } else {
        if (m.method == "notifications/progress")
          deadline = Deadline::earliest(Deadline::after(cfg_.request_timeout), hard);
        if (!sink.deliver(m.raw)) {
          out.cancelled = true;
          cancel("client went away (mcp-sse-bridge)");
          done = true;
        }
      }
    }
    if (done) break;
    if (failure) {
      out.error = std::move(failure);
      break;
    }
    if (deadline.reached()) {
      out.error = make_error(ErrorKind::kTimeout, Phase::kRequest,
                             "no response within " +
                                 format_duration(std::chrono::duration_cast<Millis>(Clock::now() - arrival)) +
                                 " (--request-timeout " + format_duration(cfg_.request_timeout) + ")");
      cancel("deadline exceeded (mcp-sse-bridge)");
      break;
    }
    if (!waiter->woken) {
      waiter->timer.expires_at(Deadline::earliest(deadline, Deadline::after(kPollSlice)).when());
      (void)co_await waiter->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    waiter->woken = false;
  }
  // A response or failure ends the call's registration (a cancel already did).
  if (!out.cancelled && !(out.error && out.error->kind == ErrorKind::kTimeout))
    asio::post(ex_, [self, port, id = req.id] { self->end_call(port, id); });
  for (auto& b : forwarded) sink.end_request(b);
  sink.set_waker(nullptr);
  *request_sent = port->sent.load();
  out.upstream_session = upstream_session_id();
  if (out.error)
    out.response = jsonrpc_error_response(req.id, *out.error, elapsed_ms(arrival), cfg_.sse_url.str());
  co_return out;
}

}  // namespace msb
