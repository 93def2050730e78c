#include "mcp_sse_bridge/upstream_session.h"

#include <atomic>
#include <cerrno>

#include "mcp_sse_bridge/log.h"

namespace msb {

namespace {
constexpr size_t kMaxPostReplyBody = 64 * 1024;
std::atomic<size_t> g_open_sessions{0};

BridgeError with_phase(BridgeError e, Phase p) {
  e.phase = p;
  return e;
}

TcpOptions tcp_options(const UpstreamConfig& cfg) {
  return TcpOptions{cfg.tcp_keepalive, cfg.tcp_user_timeout, cfg.connect_timeout};
}
}  // namespace

UpstreamSession::UpstreamSession(const UpstreamConfig& cfg, std::string extra_headers)
    : cfg_(cfg),
      extra_headers_(std::move(extra_headers)),
      sse_(cfg.sse_url, cfg.tls, tcp_options(cfg)),
      parser_(cfg.max_message_size),
      last_rx_(Clock::now()) {
  g_open_sessions.fetch_add(1, std::memory_order_relaxed);
}

UpstreamSession::~UpstreamSession() {
  abort();
  g_open_sessions.fetch_sub(1, std::memory_order_relaxed);
}

size_t UpstreamSession::open_count() { return g_open_sessions.load(std::memory_order_relaxed); }

void UpstreamSession::abort() {
  sse_.shutdown();
  if (post_) post_->shutdown();
}

std::string UpstreamSession::upstream_session_id() const {
  auto q = endpoint_.target.find('?');
  return q == std::string::npos ? std::string() : endpoint_.target.substr(q + 1);
}

Status UpstreamSession::open(Deadline connect_deadline, Duration endpoint_timeout,
                             Deadline outer, const KeepWaiting* keep_waiting) {
  std::string headers =
      "Accept: text/event-stream\r\nCache-Control: no-cache\r\n" + extra_headers_;
  auto head = sse_.send("GET", cfg_.sse_url.target, headers, {}, connect_deadline, Millis(0),
                        keep_waiting);
  if (!head) return with_phase(head.error(), Phase::kConnect);
  if (head->status != 200) {
    // Read a little of the body for the log/error: servers often say why.
    auto body = sse_.read_full_body(4096, Deadline::earliest(connect_deadline, Deadline::after(Millis(200))));
    std::string detail = "SSE GET answered HTTP " + std::to_string(head->status);
    if (body && !body->empty()) detail += ": " + body->substr(0, 200);
    return make_error(ErrorKind::kRejected, Phase::kConnect, detail, head->status);
  }
  std::string ctype = head->header("content-type");
  if (ctype.rfind("text/event-stream", 0) != 0)
    return make_error(ErrorKind::kRejected, Phase::kConnect,
                      "SSE GET answered Content-Type '" + ctype + "', not text/event-stream",
                      head->status);
  last_rx_ = Clock::now();
  auto endpoint_deadline = Deadline::earliest(Deadline::after(endpoint_timeout), outer);
  // The first event must be `endpoint`; messages before it are kept.
  while (!have_endpoint_) {
    auto st = read_more(endpoint_deadline, Phase::kEndpoint);
    if (!st && st.error().kind == ErrorKind::kCancelled && !failed_) {
      // Woken: the owner decides whether this wait goes on.
      if (keep_waiting && (*keep_waiting)()) continue;
      return st;
    }
    if (!st) {
      if (st.error().kind == ErrorKind::kTimeout)
        st.error().detail = "no `endpoint` event within " +
                            format_duration(endpoint_timeout) + " of connecting";
      return st;
    }
    if (failed_) return *failed_;
  }
  return Ok{};
}

Status UpstreamSession::read_more(Deadline d, Phase phase) {
  if (failed_) return with_phase(*failed_, phase);
  bool finished = false;
  body_.clear();
  Io r = sse_.read_body(body_, &finished, d);
  if (r == Io::kTimeout) return make_error(ErrorKind::kTimeout, phase, "waiting on the SSE stream");
  if (r == Io::kWoken) return make_error(ErrorKind::kCancelled, phase, "woken");
  if (r == Io::kOk && !finished) {
    last_rx_ = Clock::now();
    bool ok = parser_.feed(body_, [&](SseEvent& ev) {
      if (failed_) return;
      if (ev.type == "endpoint") {
        if (have_endpoint_) return;  // a second endpoint is ignored
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
    });
    if (!ok && !failed_)
      failed_ = make_error(ErrorKind::kProtocol, phase,
                           "SSE event larger than --max-message-size (" +
                               std::to_string(cfg_.max_message_size) + " bytes)");
    if (failed_) {
      sse_.close();
      return with_phase(*failed_, phase);
    }
    return Ok{};
  }
  // The stream ended (cleanly or not): every waiter fails now.
  std::string detail = r == Io::kOk || r == Io::kEof ? "SSE stream ended"
                                                      : "SSE stream failed: " + sse_.last_error();
  // ETIMEDOUT on a read: TCP keepalive probes or sent data went
  // unacknowledged (--upstream-tcp-keepalive / --upstream-tcp-user-timeout):
  // the peer or the path vanished without a FIN or RST.
  bool vanished = r == Io::kError && sse_.last_errno() == ETIMEDOUT;
  if (vanished) detail += " (the upstream stopped acknowledging: the host or the path to it is down)";
  failed_ = make_error(vanished ? ErrorKind::kUnresponsive : ErrorKind::kClosed, phase, detail);
  sse_.close();
  return *failed_;
}

Expected<Message> UpstreamSession::next_message(Deadline d, Phase phase) {
  while (inbox_.empty()) {
    auto st = read_more(d, phase);
    if (!st) return st.error();
  }
  Message m = std::move(inbox_.front());
  inbox_.pop_front();
  return m;
}

Status UpstreamSession::post(std::string_view json, Deadline d, Phase phase,
                             const KeepWaiting* keep_waiting) {
  if (!post_) post_ = std::make_unique<HttpConnection>(endpoint_, cfg_.tls, tcp_options(cfg_));
  std::string headers = "Content-Type: application/json\r\n" + extra_headers_;
  auto head = post_->send("POST", endpoint_.target, headers, json, d, cfg_.post_timeout, keep_waiting);
  if (!head) {
    auto e = with_phase(head.error(), phase);
    e.detail = "POST " + endpoint_.target + ": " + e.detail;
    if (e.kind == ErrorKind::kUnresponsive) e.detail += " (--post-timeout)";
    return e;
  }
  auto body = post_->read_full_body(
      kMaxPostReplyBody,
      cfg_.post_timeout.count() > 0 ? Deadline::earliest(d, Deadline::after(cfg_.post_timeout)) : d);
  if (head->status < 200 || head->status > 299) {
    // A 404 usually means the session died with its stream: say so if the
    // stream has ended.
    if (head->status == 404 && !failed_) (void)read_more(Deadline::after(Millis(0)), phase);
    if (head->status == 404 && failed_ && failed_->kind == ErrorKind::kClosed) {
      auto e = with_phase(*failed_, phase);
      e.detail += "; POST " + endpoint_.target + " answered HTTP 404";
      e.http_status = 404;
      return e;
    }
    std::string detail = "POST " + endpoint_.target + " answered HTTP " + std::to_string(head->status);
    if (head->status == 404) detail += " (upstream session gone)";
    if (body && !body->empty()) detail += ": " + body->substr(0, 200);
    return make_error(ErrorKind::kRejected, phase, detail, head->status);
  }
  if (!body) {
    // The message was accepted (2xx); a broken reply body only costs the
    // keep-alive connection.
    post_->close();
  }
  return Ok{};
}

}  // namespace msb

namespace msb {

bool UpstreamSession::refresh_idle() {
  for (int i = 0; i < 64 && !failed_; ++i) {  // bounded: a chatty idle stream cannot pin us
    auto st = read_more(Deadline::after(Millis(0)), Phase::kConnect);
    if (!st) break;  // timeout = nothing more pending, or failure (failed_ set)
  }
  if (failed_) return false;
  // Notifications that arrived before the call are not the call's to relay;
  // requests (an upstream ping) still want an answer.
  std::deque<Message> keep;
  for (auto& m : inbox_)
    if (m.kind == MsgKind::kRequest) keep.push_back(std::move(m));
  inbox_.swap(keep);
  return true;
}

}  // namespace msb
