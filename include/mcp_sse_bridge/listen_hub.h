// ListenHub: the 2026-07-28 era's subscriptions/listen streams (spec:
// basic/patterns/subscriptions), in front of a legacy server that has no
// such method.
//
// Each listen request gets a long-lived SSE response (a StandaloneStream:
// head at once, keepalive comments): first
// notifications/subscriptions/acknowledged with the honoured filter and
// _meta["io.modelcontextprotocol/subscriptionId"] = the request's id, then
// only the notification types it asked for, each tagged with that id.
//
// Where the notifications come from (publish()):
//  - an upstream SSE session the hub holds for its listeners, one per
//    upstream profile (the headers sent upstream: credentials may select a
//    tenant), opened with the first listener, re-opened at once and then
//    with capped backoff when it drops (SessionUpstream: held while the hub
//    has listeners), closed with the last listener: it carries what the
//    server broadcasts to every session;
//  - the upstream sessions of stateless calls: a legacy server announces a
//    change on the session whose call caused it (StatelessSink hands those
//    notifications here instead of dropping them).
// Honoured: toolsListChanged, promptsListChanged, resourcesListChanged (as
// asked). resourceSubscriptions are not honoured (left out of the
// acknowledgement, as the spec allows): per-resource updates of a legacy
// server belong to the session that subscribed.
//
// Thread-safe; never blocks (deliveries are posted to each stream's loop).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/http_exchange.h"

namespace msb {

class EventLoop;
class Metrics;
class SessionUpstream;
class StandaloneStream;

class ListenHub {
 public:
  struct Filter {
    bool tools = false, prompts = false, resources = false;  // …ListChanged
  };
  ListenHub(const UpstreamConfig& cfg, Metrics& metrics, Duration keepalive);
  ~ListenHub();
  ListenHub(const ListenHub&) = delete;
  ListenHub& operator=(const ListenHub&) = delete;

  // The filter of a listen request (its JSON text: params.notifications).
  static Filter filter_of(std::string_view request_json);
  // The acknowledgement (the stream's first message) for request `id_json`.
  static std::string acknowledgement(const Filter& f, std::string_view id_json);
  // `json` tagged with the subscription id; "" when `f` does not ask for it.
  static std::string for_listener(std::string_view json, const Filter& f,
                                  std::string_view id_json);

  // Opens a listen stream on `ex` (the connection's loop): SSE head `head`,
  // the acknowledgement, then matching notifications until the client
  // closes it or the bridge stops. `upstream_headers` picks the profile.
  void listen(std::shared_ptr<Exchange> ex, HttpResponse head, std::string id_json, Filter f,
              std::string upstream_headers);
  // A notification from an upstream session (any thread).
  void publish(std::string_view json);
  // Ends every stream and closes the held upstream sessions. Loops must run.
  void stop();
  size_t listeners() const;

 private:
  struct Listener {
    std::shared_ptr<StandaloneStream> stream;
    Filter filter;
    std::string id_json;
    std::string profile;
  };
  struct Profile;
  class Feed;
  void remove(uint64_t key);

  const UpstreamConfig& cfg_;
  Metrics& metrics_;
  Duration keepalive_;
  mutable std::mutex mu_;
  uint64_t next_ = 0;
  bool stopped_ = false;
  std::map<uint64_t, Listener> listeners_;
  std::map<std::string, std::shared_ptr<Profile>> profiles_;  // by upstream headers
};

}  // namespace msb
