#include "mcp_sse_bridge/response_sink.h"

#include <boost/asio/post.hpp>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/metrics.h"

namespace msb {

using namespace std::string_view_literals;

namespace {

// The client capability a server-to-client request needs, if any.
std::string_view capability_for(std::string_view method) {
  if (method == "sampling/createMessage") return "sampling";
  if (method == "roots/list") return "roots";
  if (method == "elicitation/create") return "elicitation";
  return {};
}

// Appends `json` as the value of one SSE `data:` line. A line break inside a
// JSON text can only be whitespace between tokens (inside a string it must be
// escaped), and a legacy server may send a message over several `data:`
// lines (pretty-printed), which its parser joins with '\n': written raw, the
// break would end the field and the client's parser would dispatch a cut
// message. Each CR or LF becomes a space, which leaves valid JSON equal.
void append_data_line(std::string& out, std::string_view json) {
  size_t from = out.size();
  out.append(json);
  for (size_t i = out.find_first_of("\r\n", from); i != std::string::npos; i = out.find_first_of("\r\n", i + 1))
    out[i] = ' ';
}

}  // namespace

ResponseSink::ResponseSink(CallRegistry& registry, const Lifecycle& life,
                           std::shared_ptr<Exchange> ex, MailboxPtr box,
                           const ClientSession* session)
    : registry_(registry), life_(life), ex_(std::move(ex)), box_(std::move(box)), session_(session) {}

ResponseSink::~ResponseSink() {
  box_->set_notify(nullptr);
  for (auto& id : routes_) registry_.remove_route(id);
}

void ResponseSink::set_waker(std::function<void(bool urgent)> w) {
  if (!w) {
    box_->set_notify(nullptr);
    waker_.reset();
    return;
  }
  waker_ = std::make_shared<std::function<void(bool)>>(std::move(w));
  // The mailbox may be told from any thread (a cancellation arriving on
  // another connection): the wake-up runs on this call's loop.
  std::weak_ptr<std::function<void(bool)>> weak = waker_;
  auto ex = ex_->loop().io().get_executor();
  box_->set_notify([ex, weak](bool urgent) {
    boost::asio::post(ex, [weak, urgent] {
      if (auto f = weak.lock()) (*f)(urgent);
    });
  });
  // Something may have come before the waker was in place.
  if (box_->cancelled.load() || box_->gone.load()) (*waker_)(true);
}

bool ResponseSink::alive() {
  if (gone_ || box_->cancelled.load() || life_.stopping.load()) return false;
  if (box_->gone.load() || ex_->client_gone()) gone_ = true;
  return !gone_;
}

void ResponseSink::end_request(std::string_view bridge_id) {
  std::string key = route_key(bridge_id);
  registry_.remove_route(key);
  routes_.erase(key);
}

bool ResponseSink::admit_request(std::string_view method, std::string_view bridge_id,
                                 std::string* why) {
  auto cap = capability_for(method);
  if (!cap.empty()) {
    if (!caps_) {
      auto j = session_ ? nlohmann::json::parse(session_->init_params, nullptr, false)
                        : nlohmann::json();
      caps_ = (!j.is_discarded() && j.is_object() && j.contains("capabilities") &&
               j["capabilities"].is_object())
                  ? j["capabilities"]
                  : nlohmann::json::object();
    }
    if (!caps_->contains(std::string(cap))) {
      *why = "the client did not declare the '" + std::string(cap) + "' capability";
      return false;
    }
  }
  std::string key = route_key(bridge_id);
  registry_.add_route(key, box_);
  routes_.insert(key);
  return true;
}

std::string ResponseSink::route_key(std::string_view bridge_id) const {
  std::string key(session_ ? session_->scope() : std::string_view());
  return key.append(1, '\n').append(bridge_id);
}

SseSink::SseSink(CallRegistry& registry, const Lifecycle& life, std::shared_ptr<Exchange> ex,
                 MailboxPtr box, const ClientSession* session, Metrics& metrics, Duration keepalive)
    : ResponseSink(registry, life, std::move(ex), std::move(box), session),
      metrics_(metrics),
      keepalive_(keepalive),
      last_write_(Clock::now()) {}

bool SseSink::alive() {
  if (!ResponseSink::alive()) return false;
  if (keepalive_.count() > 0 && Clock::now() - last_write_ >= keepalive_) {
    metrics_.keepalive_sent();
    return write_raw(": keepalive\n\n");
  }
  return true;
}

bool SseSink::forward_request(std::string_view method, std::string_view bridge_id,
                              std::string_view json, std::string* why) {
  if (!admit_request(method, bridge_id, why)) return false;
  if (!write_event(json)) {
    *why = "the client went away";
    return false;
  }
  return true;
}

std::string SseSink::event(std::string_view json) {
  std::string ev;
  ev.reserve(json.size() + 24);
  ev.append("event: message\ndata: "sv);
  append_data_line(ev, json);
  ev.append("\n\n"sv);
  return ev;
}

HttpResponse SseSink::head(HttpResponse base) {
  base.status = 200;
  base.content_type = "text/event-stream";
  base.set_header("Cache-Control", "no-cache");
  base.set_header("X-Accel-Buffering", "no");
  return base;
}

bool SseSink::write_event(std::string_view json) {
  // Large messages go out in kSlice chunks, so that no copy is large.
  if (json.size() <= kSlice) return write_raw(event(json));
  if (!write_raw("event: message\ndata: ")) return false;
  for (size_t off = 0; off < json.size(); off += kSlice) {
    std::string slice;
    append_data_line(slice, json.substr(off, kSlice));
    if (!write_raw(std::move(slice))) return false;
  }
  return write_raw("\n\n");
}

bool SseSink::write_raw(std::string s) {
  if (gone_) return false;
  if (!ex_->write(std::move(s))) gone_ = true;
  last_write_ = Clock::now();
  return !gone_;
}

}  // namespace msb
