// The client side of one running call (the Forwarder's CallSink), written
// onto the request's Exchange: as SSE events (SseSink: notifications,
// forwarded server requests, keepalive comments, the response) or as one
// JSON body (JsonSink: notifications dropped, no server requests).
// Cancellation, hang-up and routed client answers come through the call's
// mailbox, which wakes the call on its loop. Loop thread only.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/admission.h"
#include "mcp_sse_bridge/call_registry.h"
#include "mcp_sse_bridge/forwarder.h"
#include "mcp_sse_bridge/http_exchange.h"

namespace msb {

class Metrics;

class ResponseSink : public CallSink {
 public:
  ResponseSink(CallRegistry& registry, const Lifecycle& life, std::shared_ptr<Exchange> ex,
               MailboxPtr box, const ClientSession* session);
  ~ResponseSink() override;
  bool alive() override;
  void set_waker(std::function<void(bool urgent)> w) override;
  std::optional<Message> take_response() override { return box_->pop(); }
  void end_request(std::string_view bridge_id) override;
  bool gone() const { return gone_; }
  bool client_cancelled() const { return box_->cancelled.load(); }
  // See CallSink::wake_signal; `s` must outlive the call.
  void set_wake_signal(boost::asio::cancellation_signal* s) { wake_signal_ = s; }
  boost::asio::cancellation_signal* wake_signal() override { return wake_signal_; }
  bool congested() override { return ex_->queued_bytes() > Exchange::kCongested; }

 protected:
  // Checks the capability a server request needs against the client's
  // initialize params, and registers the route for the client's answer.
  bool admit_request(std::string_view method, std::string_view bridge_id, std::string* why);
  std::string route_key(std::string_view bridge_id) const;

  CallRegistry& registry_;
  const Lifecycle& life_;
  std::shared_ptr<Exchange> ex_;
  MailboxPtr box_;
  const ClientSession* session_;
  std::optional<nlohmann::json> caps_;
  std::set<std::string> routes_;
  bool gone_ = false;
  std::shared_ptr<std::function<void(bool)>> waker_;
  boost::asio::cancellation_signal* wake_signal_ = nullptr;
};

// The response is a text/event-stream (its head already sent).
class SseSink : public ResponseSink {
 public:
  SseSink(CallRegistry& registry, const Lifecycle& life, std::shared_ptr<Exchange> ex,
          MailboxPtr box, const ClientSession* session, Metrics& metrics, Duration keepalive);
  bool deliver(std::string_view json) override { return write_event(json); }
  bool alive() override;
  bool forward_request(std::string_view method, std::string_view bridge_id, std::string_view json,
                       std::string* why) override;
  bool write_event(std::string_view json);

  // Messages larger than this are written in slices of this size.
  static constexpr size_t kSlice = 1 << 20;
  // One SSE `message` event carrying `json` (at most kSlice bytes) on one
  // `data:` line: line breaks in it (whitespace in valid JSON) become spaces.
  static std::string event(std::string_view json);
  // The head of an SSE response: 200, text/event-stream, no caching, and
  // X-Accel-Buffering: no (so that proxies such as nginx do not hold events).
  static HttpResponse head(HttpResponse base);

 private:
  bool write_raw(std::string s);  // taken by value: the event is moved, not copied
  Metrics& metrics_;
  Duration keepalive_;
  Clock::time_point last_write_;
};

// The response is one application/json body.
class JsonSink : public ResponseSink {
 public:
  using ResponseSink::ResponseSink;
  bool deliver(std::string_view) override { return alive(); }
  bool forward_request(std::string_view, std::string_view, std::string_view,
                       std::string* why) override {
    *why = "the client did not accept text/event-stream for this call";
    return false;
  }
};

}  // namespace msb
