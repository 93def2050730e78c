#include "mcp_sse_bridge/stateless_sink.h"

#include "mcp_sse_bridge/listen_hub.h"

namespace msb {

StatelessSink::StatelessSink(CallRegistry& registry, const Lifecycle& life,
                             std::shared_ptr<Exchange> ex, MailboxPtr box, Metrics& metrics,
                             Duration keepalive, HttpResponse base, Options o)
    : SseSink(registry, life, std::move(ex), std::move(box), nullptr, metrics, keepalive),
      base_(std::move(base)),
      opt_(std::move(o)),
      keepalive_(keepalive),
      created_(Clock::now()) {}

void StatelessSink::start() {
  if (started_) return;
  started_ = true;
  ex_->start_stream(SseSink::head(base_));
}

bool StatelessSink::deliver(std::string_view json) {
  Message m;
  if (!parse_message(std::string(json), m) || m.kind != MsgKind::kNotification) return alive();
  bool about_this_request =
      (m.method == "notifications/progress" && !opt_.progress_token.empty() &&
       m.progress_token == opt_.progress_token) ||
      (m.method == "notifications/message" && opt_.logs);
  // A change the legacy server announced on this call's session belongs to
  // the subscriptions/listen streams of the same upstream profile (never
  // another tenant's).
  if (!about_this_request && opt_.listen && m.method.ends_with("/list_changed"))
    opt_.listen->publish(opt_.profile, json);
  if (!about_this_request || !opt_.sse) return alive();
  if (!ResponseSink::alive()) return false;
  start();
  return write_event(json);
}

bool StatelessSink::alive() {
  if (!opt_.sse) return ResponseSink::alive();
  // A long quiet call: the stream starts so that its keepalive comments
  // keep proxies and client idle timers from cutting it.
  if (!started_ && keepalive_.count() > 0 && Clock::now() - created_ >= keepalive_ &&
      ResponseSink::alive())
    start();
  return started_ ? SseSink::alive() : ResponseSink::alive();
}

bool StatelessSink::forward_request(std::string_view method, std::string_view bridge_id,
                                    std::string_view json, std::string* why) {
  (void)bridge_id, (void)json;
  *why = "a 2026-07-28 client cannot receive server-to-client requests (" + std::string(method) +
         "); mcp-sse-bridge does not translate them to input_required results yet";
  return false;
}

void StatelessSink::finish(int status, const std::string& response) {
  if (started_) {
    if (response.size() <= kSlice) {
      ex_->end(event(response));
    } else {
      write_event(response);
      ex_->end();
    }
    return;
  }
  HttpResponse r = base_;
  if (opt_.sse && status == 200) {
    r = SseSink::head(std::move(r));
    r.body = event(response);
  } else {
    r.status = status;
    r.content_type = "application/json";
    r.body = response;
  }
  ex_->respond(std::move(r));
}

void StatelessSink::abandon() {
  if (started_) {
    ex_->end();
    return;
  }
  HttpResponse r;
  r.status = 500;
  r.close = true;
  ex_->respond(std::move(r));
}

}  // namespace msb
