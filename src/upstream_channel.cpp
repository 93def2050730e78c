#include "mcp_sse_bridge/upstream_channel.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>

namespace msb {

namespace {

constexpr auto kTok = asio::as_tuple(asio::use_awaitable);
constexpr size_t kMaxPostReplyBody = 64 * 1024;
std::atomic<size_t> g_open_channels{0};

BridgeError with_phase(BridgeError e, Phase p) {
  e.phase = p;
  return e;
}

// A wait on the SSE stream that reached its deadline.
BridgeError stream_timeout(Phase p) { return make_error(ErrorKind::kTimeout, p, "waiting on the SSE stream"); }

TcpOptions tcp_options(const UpstreamConfig& cfg) {
  return TcpOptions{cfg.tcp_keepalive, cfg.tcp_user_timeout, cfg.connect_timeout};
}

BridgeError from_exception(const std::exception& e, Phase phase) {
  if (auto* se = dynamic_cast<const boost::system::system_error*>(&e);
      se && se->code() == asio::error::operation_aborted)
    return make_error(ErrorKind::kCancelled, phase, "cancelled");
  return make_error(ErrorKind::kInternal, phase, std::string("upstream channel: ") + e.what());
}

// open(): when the stream side fails, the POST connection opened alongside
// is cancelled at once; when it succeeds, the POST side finishes on its own.
struct CancelPostOnStreamFailure {
  asio::cancellation_type operator()(std::exception_ptr ex,
                                     const std::optional<BridgeError>& stream_error) const {
    return ex || stream_error ? asio::cancellation_type::terminal : asio::cancellation_type::none;
  }
  asio::cancellation_type operator()(std::exception_ptr, bool /*post_connected*/) const {
    return asio::cancellation_type::none;
  }
};

}  // namespace

UpstreamChannel::UpstreamChannel(asio::any_io_executor ex, const UpstreamConfig& cfg,
                                 std::string extra_headers)
    : ex_(ex),
      cfg_(cfg),
      extra_headers_(std::move(extra_headers)),
      post_headers_("Content-Type: application/json\r\n" + extra_headers_),
      sse_(ex, &cfg.tls_options, tcp_options(cfg)),
      post_(ex, &cfg.tls_options, tcp_options(cfg)),
      parser_(cfg.max_message_size),
      last_rx_(Clock::now()) {
  g_open_channels.fetch_add(1, std::memory_order_relaxed);
}

UpstreamChannel::~UpstreamChannel() {
  abort();
  g_open_channels.fetch_sub(1, std::memory_order_relaxed);
}

size_t UpstreamChannel::open_count() { return g_open_channels.load(std::memory_order_relaxed); }

void UpstreamChannel::abort() {
  aborted_ = true;
  if (!failed_) failed_ = make_error(ErrorKind::kClosed, Phase::kConnect, "upstream session aborted");
  sse_.close();
  post_.close();
}

std::string UpstreamChannel::upstream_session_id() const {
  auto q = endpoint_.target.find('?');
  return q == std::string::npos ? std::string() : endpoint_.target.substr(q + 1);
}

// ---- open ---------------------------------------------------------------------

asio::awaitable<Status> UpstreamChannel::open(Deadline connect_deadline, Duration endpoint_timeout,
                                              Deadline outer) {
  try {
    co_return co_await open_impl(connect_deadline, endpoint_timeout, outer);
  } catch (const std::exception& e) {
    sse_.close();
    post_.close();
    co_return from_exception(e, have_endpoint_ ? Phase::kEndpoint : Phase::kConnect);
  }
}

asio::awaitable<Status> UpstreamChannel::open_impl(Deadline connect_deadline,
                                                   Duration endpoint_timeout, Deadline outer) {
  if (failed_) co_return *failed_;
  // The GET (connect, head, `endpoint`) and the POST connection side by side:
  // the first POST (initialize) then finds its connection ready.
  auto [order, stream_ex, stream_error, post_ex, post_connected] =
      co_await asio::experimental::make_parallel_group(
          asio::co_spawn(ex_, open_stream(connect_deadline, endpoint_timeout, outer), asio::deferred),
          asio::co_spawn(ex_, preconnect_post(connect_deadline), asio::deferred))
          .async_wait(CancelPostOnStreamFailure{}, kTok);
  (void)order;
  (void)post_connected;
  (void)post_ex;
  if (stream_ex) {
    sse_.close();
    post_.close();
    co_return make_error(ErrorKind::kInternal, Phase::kConnect, "upstream channel: open failed unexpectedly");
  }
  if (stream_error) co_return *stream_error;
  co_return Ok{};
}

// Its failure is not open()'s: post() connects again and reports what it finds.
asio::awaitable<bool> UpstreamChannel::preconnect_post(Deadline d) {
  co_await asio::this_coro::throw_if_cancelled(false);  // this child's own entry point
  auto st = co_await post_.connect(cfg_.sse_url, d);
  co_return st.ok();
}

asio::awaitable<std::optional<BridgeError>> UpstreamChannel::open_stream(Deadline connect_deadline,
                                                                         Duration endpoint_timeout,
                                                                         Deadline outer) {
  co_await asio::this_coro::throw_if_cancelled(false);  // this child's own entry point
  auto fail = [&](BridgeError e) {
    sse_.close();
    return std::optional<BridgeError>(std::move(e));
  };
  const std::string headers =
      "Accept: text/event-stream\r\nCache-Control: no-cache\r\n" + extra_headers_;
  auto head = co_await sse_.request(cfg_.sse_url, "GET", cfg_.sse_url.target, headers, {},
                                    connect_deadline);
  if (!head) co_return fail(with_phase(head.error(), Phase::kConnect));
  if (head->status != 200) {
    // Read a little of the body for the log/error: servers often say why.
    auto body = co_await sse_.read_full_body(
        4096, Deadline::earliest(connect_deadline, Deadline::after(Millis(200))));
    std::string detail = "SSE GET answered HTTP " + std::to_string(head->status);
    if (body && !body->empty()) detail += ": " + body->substr(0, 200);
    co_return fail(make_error(ErrorKind::kRejected, Phase::kConnect, detail, head->status));
  }
  std::string ctype = head->header("content-type");
  if (ctype.rfind("text/event-stream", 0) != 0)
    co_return fail(make_error(ErrorKind::kRejected, Phase::kConnect,
                              "SSE GET answered Content-Type '" + ctype + "', not text/event-stream",
                              head->status));
  last_rx_ = Clock::now();
  const auto endpoint_deadline = Deadline::earliest(Deadline::after(endpoint_timeout), outer);
  // The first event must be `endpoint`; messages before it are kept.
  while (!have_endpoint_) {
    const bool late = endpoint_deadline.reached();  // as in next_message()
    auto st = co_await read_more(endpoint_deadline, Phase::kEndpoint);
    if (st && late && !have_endpoint_)
      st = stream_timeout(Phase::kEndpoint);
    if (!st) {
      if (st.error().kind == ErrorKind::kTimeout)
        st.error().detail =
            "no `endpoint` event within " + format_duration(endpoint_timeout) + " of connecting";
      co_return fail(st.error());
    }
  }
  co_return std::nullopt;
}

// ---- the SSE stream -------------------------------------------------------------

void UpstreamChannel::on_event(SseEvent& ev, Phase phase) {
  if (failed_) return;
  if (ev.type == "endpoint") {
    if (have_endpoint_) return;  // a second endpoint is ignored
    // Its target goes into every POST's request line: a hostile one of
    // megabytes (the event limit is --max-message-size) would ride along
    // with each call.
    if (ev.data.size() > kMaxEndpointBytes) {
      failed_ = make_error(ErrorKind::kProtocol, Phase::kEndpoint,
                           "`endpoint` URI of " + std::to_string(ev.data.size()) + " bytes (at most " +
                               std::to_string(kMaxEndpointBytes) + ")");
      return;
    }
    auto url = resolve_url(cfg_.sse_url, ev.data);
    if (!url) {
      failed_ = make_error(ErrorKind::kProtocol, Phase::kEndpoint,
                           "unusable `endpoint` URI '" + ev.data.substr(0, 200) + "'");
      return;
    }
    if (!cfg_.allow_foreign_endpoint && !same_origin(*url, cfg_.sse_url)) {
      failed_ = make_error(ErrorKind::kEndpointRefused, Phase::kEndpoint,
                           "`endpoint` " + url->origin() + " is not on the origin of " +
                               cfg_.sse_url.origin() + " (--allow-foreign-endpoint)");
      return;
    }
    endpoint_ = *url;
    have_endpoint_ = true;
    return;
  }
  if (ev.type != "message") return;
  Message m;
  std::string why;
  if (!parse_message(std::move(ev.data), m, &why)) {
    failed_ = make_error(ErrorKind::kProtocol, phase, "upstream sent an invalid message: " + why);
    return;
  }
  inbox_.push_back(std::move(m));
}

asio::awaitable<Status> UpstreamChannel::read_more(Deadline d, Phase phase) {
  if (failed_) co_return with_phase(*failed_, phase);
  reading_ = true;
  body_.clear();
  auto r = co_await sse_.read_body(body_, d);
  reading_ = false;
  if (failed_) co_return with_phase(*failed_, phase);  // aborted meanwhile
  if (r) {
    if (!body_.empty()) {
      last_rx_ = Clock::now();
      bool ok = parser_.feed(body_, [&](SseEvent& ev) { on_event(ev, phase); });
      if (!ok && !failed_)
        failed_ = make_error(ErrorKind::kProtocol, phase,
                             "SSE event larger than --max-message-size (" +
                                 std::to_string(cfg_.max_message_size) + " bytes)");
    }
    if (!failed_ && *r) failed_ = make_error(ErrorKind::kClosed, phase, "SSE stream ended");
    if (failed_) {
      sse_.close();
      co_return with_phase(*failed_, phase);
    }
    co_return Ok{};
  }
  const BridgeError& e = r.error();
  if (e.kind == ErrorKind::kTimeout)
    co_return stream_timeout(phase);
  if (e.kind == ErrorKind::kCancelled)
    co_return make_error(ErrorKind::kCancelled, phase, "cancelled while waiting on the SSE stream");
  // The stream ended (cleanly or not): every waiter fails now. kUnresponsive
  // (ETIMEDOUT) means the peer or the path vanished without a FIN or RST.
  std::string detail = sse_.peer_closed() ? std::string("SSE stream ended") : "SSE stream failed: " + e.detail;
  failed_ = make_error(e.kind == ErrorKind::kUnresponsive ? ErrorKind::kUnresponsive : ErrorKind::kClosed,
                       phase, detail);
  sse_.close();
  co_return *failed_;
}

asio::awaitable<Expected<Message>> UpstreamChannel::next_message(Deadline d, Phase phase) {
  // (One coroutine: a wrapper with the try would cost a frame per call.)
  try {
    while (inbox_.empty()) {
      // Past the deadline, one look at what is there already (an answer
      // that came just in time), then the timeout: a stream kept busy with
      // comments cannot hold the wait past it.
      const bool late = d.reached();
      auto st = co_await read_more(d, phase);
      if (!st) co_return st.error();
      if (late && inbox_.empty()) co_return stream_timeout(phase);
    }
    Message m = std::move(inbox_.front());
    inbox_.pop_front();
    co_return m;
  } catch (const std::exception& e) {
    reading_ = false;
    co_return from_exception(e, phase);
  }
}

bool UpstreamChannel::idle_settled() {
  return !failed_ && inbox_.empty() && (reading_ || !sse_.maybe_readable());
}

asio::awaitable<bool> UpstreamChannel::refresh_idle() {
  try {
    // Bounded: a chatty idle stream cannot pin the loop. A zero deadline: what
    // is not there yet is not waited for.
    for (int i = 0; i < 64 && !failed_ && !reading_ && sse_.maybe_readable(); ++i) {
      auto st = co_await read_more(Deadline::after(Millis(0)), Phase::kConnect);
      if (!st) break;  // timeout = nothing more pending, or failure (failed_ set)
    }
  } catch (const std::exception&) {
    reading_ = false;
  }
  if (failed_) co_return false;
  // Notifications that arrived before the call are not the call's to relay;
  // requests (an upstream ping) still want an answer.
  if (!inbox_.empty()) {  // (no deque built for an empty inbox: the usual case)
    std::deque<Message> keep;
    for (auto& m : inbox_)
      if (m.kind == MsgKind::kRequest) keep.push_back(std::move(m));
    inbox_.swap(keep);
  }
  co_return true;
}

// ---- POST -------------------------------------------------------------------------

asio::awaitable<Status> UpstreamChannel::post(std::string_view json, Deadline d, Phase phase) {
  // (One coroutine: a wrapper with the try would cost a frame per call.)
  try {
    if (aborted_) co_return with_phase(*failed_, phase);
    if (!have_endpoint_)
      co_return make_error(ErrorKind::kInternal, phase, "POST before the upstream session was open");
    auto head = co_await post_.request(endpoint_, "POST", endpoint_.target, post_headers_, json, d,
                                       cfg_.post_timeout);
    if (!head) co_return post_error(head.error(), phase, "");
    // A 2xx's body ("Accepted") says nothing: on a plain connection it is
    // not waited for (servers such as cpp-httplib write it apart from the
    // head, a wake-up more per POST); the next POST skips it (it is there by
    // then) or replaces the connection. (Checked here, before
    // finish_post: the usual case costs no coroutine frame.)
    if (accepted_at_head(head->status)) co_return Ok{};
    auto st = co_await finish_post(head->status, d, phase);
    co_return st;
  } catch (const std::exception& e) {
    post_.close();
    co_return from_exception(e, phase);
  }
}


bool UpstreamChannel::accepted_at_head(int status) const {
  return status >= 200 && status <= 299 && !endpoint_.tls();
}

BridgeError UpstreamChannel::post_error(BridgeError e, Phase phase, std::string_view how) const {
  e.phase = phase;
  e.detail = "POST " + endpoint_.target + std::string(how) + ": " + e.detail;
  if (e.kind == ErrorKind::kUnresponsive) e.detail += " (--post-timeout)";
  return e;
}

asio::awaitable<Status> UpstreamChannel::finish_post(int status, Deadline d, Phase phase) {
  auto body = co_await post_.read_full_body(kMaxPostReplyBody, Deadline::within(d, cfg_.post_timeout));
  if (!body && body.error().kind == ErrorKind::kCancelled) co_return with_phase(body.error(), phase);
  if (status < 200 || status > 299) {
    // (No temporaries inside the co_await: GCC 12 destroys them twice.)
    std::string text;
    if (body) text = std::move(*body);
    auto e = co_await refused(status, text, phase);
    co_return e;
  }
  // A broken reply body after a 2xx only costs the keep-alive connection
  // (read_full_body closed it).
  co_return Ok{};
}

asio::awaitable<BridgeError> UpstreamChannel::refused(int status, const std::string& body, Phase phase) {
  // A 404 usually means the session died with its stream: say so if the
  // stream has ended (a look without waiting, unless a reader is on it).
  if (status == 404 && !failed_ && !reading_ && sse_.maybe_readable())
    (void)co_await read_more(Deadline::after(Millis(0)), phase);
  if (status == 404 && failed_ && failed_->kind == ErrorKind::kClosed) {
    auto e = with_phase(*failed_, phase);
    e.detail += "; POST " + endpoint_.target + " answered HTTP 404";
    e.http_status = 404;
    co_return e;
  }
  std::string detail = "POST " + endpoint_.target + " answered HTTP " + std::to_string(status);
  if (status == 404) detail += " (upstream session gone)";
  if (!body.empty()) detail += ": " + body.substr(0, 200);
  co_return make_error(ErrorKind::kRejected, phase, detail, status);
}

bool UpstreamChannel::can_pipeline() const { return have_endpoint_ && !aborted_ && post_.can_pipeline(endpoint_); }

asio::awaitable<UpstreamChannel::PostPair> UpstreamChannel::post_pair(std::string_view first,
                                                                      std::string_view second,
                                                                      Deadline d, Phase first_phase,
                                                                      Phase second_phase) {
  PostPair out;
  auto one_by_one = [&]() -> asio::awaitable<void> {
    // As without pipelining: the second only once the first was taken.
    auto s1 = co_await post(first, d, first_phase);
    out.first = std::move(s1);
    if (!out.first) co_return;
    out.second_sent = true;
    auto s2 = co_await post(second, d, second_phase);
    out.second = std::move(s2);
  };
  try {
    if (aborted_ || !have_endpoint_) {
      co_await one_by_one();
      co_return out;
    }
    auto r = co_await post_.request_pair(endpoint_, "POST", endpoint_.target, post_headers_, first,
                                         second, d, cfg_.post_timeout);
    if (!r.sent) {  // not pipelined, or nothing answered on a stale connection
      co_await one_by_one();
      co_return out;
    }
    out.pipelined = true;
    out.second_sent = true;
    auto fix = [&](BridgeError e, Phase phase) { return post_error(std::move(e), phase, " (pipelined)"); };
    if (!r.first) {
      // Unanswered: the second's fate is as unknown as the first's.
      out.first = fix(r.first.error(), first_phase);
      out.second = fix(r.second.error(), second_phase);
      co_return out;
    }
    if (r.first->status >= 200 && r.first->status <= 299) out.first = Ok{};
    else {
      auto e = co_await refused(r.first->status, r.first_body, first_phase);
      out.first = std::move(e);
    }
    if (r.second_unanswered) {
      // The upstream did not take it (it closed the connection, or said it
      // would, after the first): once more on a fresh connection.
      out.resent = true;
      out.dropped = r.first->keep_alive;
      auto s2 = co_await post(second, d, second_phase);
      out.second = std::move(s2);
      co_return out;
    }
    if (!r.second) {
      const auto k = r.second.error().kind;
      out.dropped = k == ErrorKind::kUnresponsive || k == ErrorKind::kTimeout;
      out.second = fix(r.second.error(), second_phase);
      co_return out;
    }
    const int status = r.second->status;
    if (accepted_at_head(status)) {
      out.second = Ok{};  // its body is skipped before the next request, as after post()
      co_return out;
    }
    auto st = co_await finish_post(status, d, second_phase);
    out.second = std::move(st);
    co_return out;
  } catch (const std::exception& e) {
    post_.close();
    if (!out.first.ok() || !out.second_sent) out.first = from_exception(e, first_phase);
    out.second = from_exception(e, second_phase);
    co_return out;
  }
}


}  // namespace msb
