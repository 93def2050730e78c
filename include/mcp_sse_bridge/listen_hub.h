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
// Profiles. Listeners are grouped by the headers the bridge sends upstream
// for them (credentials may select a tenant): a notification reaches only the
// listeners of the profile whose upstream session carried it, never another
// profile's.
//
// Where the notifications come from (publish()):
//  - an upstream SSE session the hub holds for the listeners of a profile,
//    opened with its first listener, re-opened at once and then with capped
//    backoff when it drops (SessionUpstream: held while the hub has
//    listeners), closed with the last listener: it carries what the server
//    broadcasts to every session, and the resources/updated of the
//    subscriptions the hub holds on it;
//  - the upstream sessions of stateless calls: a legacy server announces a
//    list change on the session whose call caused it (StatelessSink hands
//    those notifications here, with the call's profile).
//
// Honoured: toolsListChanged, promptsListChanged, resourcesListChanged (as
// asked) and resourceSubscriptions when the upstream advertises
// resources.subscribe in its answer to the held session's initialize: the
// held session subscribes each URI once for all listeners of the profile
// (the first listener that asks subscribes it, the last that leaves
// unsubscribes it), and SessionUpstream replays them when it re-opens.
// notifications/resources/updated goes only to the listeners that asked for
// its URI. While the held session has never answered its initialize, the
// acknowledgement of a listener that asks for URIs waits for it (the SSE
// head is sent at once; the wait is bounded by the session's connect,
// endpoint and initialize timeouts); an upstream without resources.subscribe
// or that cannot be reached gets resourceSubscriptions left out of the
// acknowledgement (as the spec allows), with a log line saying why.
//
// Thread-safe; never blocks (deliveries are posted to each stream's loop).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/http_exchange.h"

namespace msb {

class EventLoop;
class Metrics;
class SessionUpstream;
class StandaloneStream;

class ListenHub {
 public:
  // Resource URIs one listen request may name (as session mode's
  // subscriptions per session).
  static constexpr size_t kMaxUris = 256;
  // Distinct URIs held upstream for one profile; a listener's URIs beyond it
  // are left out of its acknowledgement.
  static constexpr size_t kMaxProfileUris = 4096;

  struct Filter {
    bool tools = false, prompts = false, resources = false;  // …ListChanged
    std::vector<std::string> uris;  // resourceSubscriptions: sorted, unique
  };
  ListenHub(const UpstreamConfig& cfg, Metrics& metrics, Duration keepalive);
  ~ListenHub();
  ListenHub(const ListenHub&) = delete;
  ListenHub& operator=(const ListenHub&) = delete;

  // The filter of a listen request (its JSON text: params.notifications).
  // nullopt, with *why, when resourceSubscriptions is not an array of
  // strings or names more than kMaxUris URIs (the caller answers -32602).
  static std::optional<Filter> filter_of(std::string_view request_json, std::string* why);
  // The acknowledgement (the stream's first message) for request `id_json`:
  // `f` as honoured (its uris when not empty).
  static std::string acknowledgement(const Filter& f, std::string_view id_json);
  // The listen request's response that closes its stream gracefully:
  // result {resultType: complete, _meta: {subscriptionId}}.
  static std::string closing_response(std::string_view id_json);
  // `json` tagged with the subscription id; "" when `f` does not ask for it.
  static std::string for_listener(std::string_view json, const Filter& f,
                                  std::string_view id_json);
  // Whether an initialize response advertises capabilities.resources.subscribe.
  static bool advertises_subscribe(std::string_view init_response);

  // Opens a listen stream on `ex` (the connection's loop): SSE head `head`,
  // the acknowledgement, then matching notifications until the client
  // closes it or the bridge stops. `upstream_headers` picks the profile.
  // kStopped once the hub has stopped, kFull when the stream needs an
  // upstream session of its own and --max-listen-sessions are held (nothing
  // written in either case: the caller answers).
  enum class Opened { kOk, kStopped, kFull };
  Opened listen(std::shared_ptr<Exchange> ex, HttpResponse head, std::string id_json, Filter f,
              std::string upstream_headers);
  // A notification from an upstream session of profile `upstream_headers`
  // (any thread): to that profile's listeners only.
  void publish(std::string_view upstream_headers, std::string_view json);
  // Ends every stream and closes the held upstream sessions. Loops must run.
  void stop();
  size_t listeners() const;

 private:
  struct Listener {
    std::shared_ptr<StandaloneStream> stream;
    Filter filter;  // as honoured once acknowledged (uris: those held for it)
    std::string id_json;
    std::string profile;
    bool acked = false;  // nothing is delivered before the acknowledgement
  };
  struct Profile;
  class Feed;
  // mu_ held: acknowledges listener `l` of `p`: its URIs honoured when the
  // upstream subscribes (held upstream, counted), else left out (logged).
  void acknowledge(Profile& p, Listener& l);
  void on_open(const std::string& profile, const Feed* feed, const std::string& init_response);
  void on_end(const std::string& profile, const Feed* feed);
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
