#include "mcp_sse_bridge/listen_hub.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/session_upstream.h"
#include "mcp_sse_bridge/standalone_stream.h"

namespace msb {

namespace {

using ojson = nlohmann::ordered_json;
constexpr const char* kSubscriptionId = "io.modelcontextprotocol/subscriptionId";

std::string dump(const ojson& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// What a listener must have asked for to get a notification: its method and,
// for notifications/resources/updated, params.uri.
struct Wanted {
  std::string method, uri;
};

// The notification in `j` (a parsed message), or nullopt when it is not one a
// listen stream carries.
std::optional<Wanted> wanted_of(const ojson& j) {
  if (!j.is_object() || !j.contains("method") || !j["method"].is_string() || j.contains("id"))
    return std::nullopt;
  Wanted w{j["method"].get<std::string>(), {}};
  if (w.method == "notifications/resources/updated") {
    if (!j.contains("params") || !j["params"].is_object() || !j["params"].contains("uri") ||
        !j["params"]["uri"].is_string())
      return std::nullopt;
    w.uri = j["params"]["uri"].get<std::string>();
  }
  return w;
}

bool wants(const ListenHub::Filter& f, const Wanted& w) {
  if (w.method == "notifications/tools/list_changed") return f.tools;
  if (w.method == "notifications/prompts/list_changed") return f.prompts;
  if (w.method == "notifications/resources/list_changed") return f.resources;
  if (w.method == "notifications/resources/updated")
    return std::binary_search(f.uris.begin(), f.uris.end(), w.uri);
  return false;
}

// `j` (a notification) tagged with the subscription id, as text.
std::string tagged(ojson& j, std::string_view id_json) {
  if (!j.contains("params") || !j["params"].is_object()) j["params"] = ojson::object();
  j["params"]["_meta"][kSubscriptionId] = ojson::parse(id_json, nullptr, false);
  return dump(j);
}

}  // namespace

// The held upstream session's stream sink for one profile: what the session
// carries outside calls goes to that profile's listeners; its opens and its
// end tell the hub what the upstream supports.
class ListenHub::Feed : public SessionStreamSink {
 public:
  Feed(ListenHub& hub, std::string profile) : hub_(hub), profile_(std::move(profile)) {}
  bool deliver(std::string json) override {
    if (!open_.load()) return false;
    hub_.publish(profile_, json);
    return true;
  }
  void end() override { open_.store(false); }
  bool open() const override { return open_.load(); }  // held while the hub uses it
  // The held session (re-)opened / ended (its owner loop).
  void opened(const std::string& init_response) {
    if (open_.load()) hub_.on_open(profile_, this, init_response);
  }
  // Not guarded by open_: the session ends its stream (end()) before it
  // reports the end, and the hub must still acknowledge the listeners that
  // waited for it. on_end ignores a feed the hub no longer uses.
  void ended() { hub_.on_end(profile_, this); }

 private:
  ListenHub& hub_;
  const std::string profile_;
  std::atomic<bool> open_{true};
};

struct ListenHub::Profile {
  std::shared_ptr<SessionUpstream> upstream;
  std::shared_ptr<Feed> feed;
  std::set<uint64_t> members;  // its listeners
  // The upstream's latest initialize answer advertises resources.subscribe;
  // unknown until the held session first opens.
  std::optional<bool> subscribe;
  // Its held session's last open failed (it backs off and retries): a
  // listener coming meanwhile is acknowledged at once, as those waiting then
  // were, not after the next attempt (up to the backoff's 15 s later).
  bool unreachable = false;
  std::map<std::string, size_t> uris;  // held upstream -> acknowledged listeners that asked
};

ListenHub::ListenHub(const UpstreamConfig& cfg, Metrics& metrics, Duration keepalive)
    : cfg_(cfg), metrics_(metrics), keepalive_(keepalive) {}

ListenHub::~ListenHub() = default;

std::optional<ListenHub::Filter> ListenHub::filter_of(std::string_view request_json,
                                                      std::string* why) {
  Filter f;
  auto j = ojson::parse(request_json, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("params") || !j["params"].is_object())
    return f;
  const auto& p = j["params"];
  if (!p.contains("notifications") || !p["notifications"].is_object()) return f;
  const auto& n = p["notifications"];
  auto flag = [&](const char* k) { return n.contains(k) && n[k].is_boolean() && n[k].get<bool>(); };
  f.tools = flag("toolsListChanged");
  f.prompts = flag("promptsListChanged");
  f.resources = flag("resourcesListChanged");
  if (!n.contains("resourceSubscriptions") || n["resourceSubscriptions"].is_null()) return f;
  const auto& subs = n["resourceSubscriptions"];
  if (!subs.is_array()) {
    *why = "params.notifications.resourceSubscriptions must be an array of resource URIs";
    return std::nullopt;
  }
  for (const auto& u : subs) {
    if (!u.is_string()) {
      *why = "params.notifications.resourceSubscriptions must contain only strings (resource URIs)";
      return std::nullopt;
    }
    f.uris.push_back(u.get<std::string>());
  }
  std::sort(f.uris.begin(), f.uris.end());
  f.uris.erase(std::unique(f.uris.begin(), f.uris.end()), f.uris.end());
  if (f.uris.size() > kMaxUris) {
    *why = "params.notifications.resourceSubscriptions names " + std::to_string(f.uris.size()) +
           " resource URIs; mcp-sse-bridge honours at most " + std::to_string(kMaxUris) +
           " per subscriptions/listen request (open another listen stream for more)";
    return std::nullopt;
  }
  return f;
}

std::string ListenHub::acknowledgement(const Filter& f, std::string_view id_json) {
  ojson n = ojson::object();
  if (f.tools) n["toolsListChanged"] = true;
  if (f.prompts) n["promptsListChanged"] = true;
  if (f.resources) n["resourcesListChanged"] = true;
  if (!f.uris.empty()) n["resourceSubscriptions"] = f.uris;
  ojson m;
  m["jsonrpc"] = "2.0";
  m["method"] = "notifications/subscriptions/acknowledged";
  m["params"]["notifications"] = std::move(n);
  m["params"]["_meta"][kSubscriptionId] = ojson::parse(id_json, nullptr, false);
  return dump(m);
}

std::string ListenHub::closing_response(std::string_view id_json) {
  ojson m;
  m["jsonrpc"] = "2.0";
  m["id"] = ojson::parse(id_json, nullptr, false);
  m["result"]["resultType"] = "complete";
  m["result"]["_meta"][kSubscriptionId] = m["id"];
  return dump(m);
}

std::string ListenHub::for_listener(std::string_view json, const Filter& f,
                                    std::string_view id_json) {
  auto j = ojson::parse(json, nullptr, false);
  if (j.is_discarded()) return {};
  auto w = wanted_of(j);
  if (!w || !wants(f, *w)) return {};
  return tagged(j, id_json);
}

bool ListenHub::advertises_subscribe(std::string_view init_response) {
  auto j = nlohmann::json::parse(init_response, nullptr, false);
  auto ptr = nlohmann::json::json_pointer("/result/capabilities/resources/subscribe");
  return !j.is_discarded() && j.is_object() && j.contains(ptr) && j[ptr].is_boolean() &&
         j[ptr].get<bool>();
}

ListenHub::Opened ListenHub::listen(std::shared_ptr<Exchange> ex, HttpResponse head, std::string id_json,
                                    Filter f, std::string upstream_headers) {
  auto stream = std::make_shared<StandaloneStream>(ex, keepalive_, metrics_);
  uint64_t key;
  std::shared_ptr<SessionUpstream> fresh, replaced;
  std::shared_ptr<Feed> old_feed;
  {
    std::lock_guard lk(mu_);
    if (stopped_) return Opened::kStopped;  // nothing written: the caller refuses it
    // Each profile holds an upstream session, which calls need too: a
    // client choosing forwarded headers (a tenant key each) must not take
    // them all.
    if (!profiles_.count(upstream_headers) && profiles_.size() >= cfg_.max_listen_sessions)
      return Opened::kFull;
    key = next_++;
    auto& l = listeners_.emplace(key, Listener{stream, std::move(f), id_json, upstream_headers})
                  .first->second;
    auto& p = profiles_[upstream_headers];
    if (!p) p = std::make_shared<Profile>();
    p->members.insert(key);
    if (!p->upstream || !p->upstream->usable()) {
      // The held upstream session of this profile (its own initialize: no
      // client capabilities: it asks nothing of anyone).
      auto feed = std::make_shared<Feed>(*this, upstream_headers);
      std::weak_ptr<Feed> wf = feed;
      SessionUpstream::Params sp{
          "listen", "listen",
          R"({"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcp-sse-bridge listen","version":"1"}})",
          upstream_headers, std::nullopt, false,
          [wf](const std::string& init) {
            if (auto fd = wf.lock()) fd->opened(init);
          },
          // The upstream is down: the listeners waiting for its
          // capabilities are acknowledged without them; the session keeps
          // trying, and its notifications flow once it opens.
          [wf] {
            if (auto fd = wf.lock()) fd->ended();
          }};
      fresh = std::make_shared<SessionUpstream>(ex->loop(), cfg_, metrics_, std::move(sp),
                                                [wf](SessionUpstream*) {
                                                  if (auto fd = wf.lock()) fd->ended();
                                                });
      fresh->attach_stream(feed);
      // The profile's subscriptions, on the new session (replayed by it from now on).
      for (auto& [uri, n] : p->uris) fresh->hold_subscription(uri);
      replaced = std::exchange(p->upstream, fresh);
      old_feed = std::exchange(p->feed, feed);
    }
    // Lists alone, or the upstream's support known: acknowledged now (under
    // the lock, so that no notification overtakes it). Else when the held
    // session opens or fails.
    if (l.filter.uris.empty() || p->subscribe || p->unreachable) acknowledge(*p, l);
  }
  // The acknowledgement was posted to this loop: it follows the head.
  stream->start(std::move(head), [this, key] { remove(key); });
  if (old_feed) old_feed->end();
  if (replaced) replaced->close(make_error(ErrorKind::kClosed, Phase::kRequest, "replaced"));
  if (fresh) {
    fresh->start();
    log::info("listen: holding an upstream session for subscriptions/listen streams");
  }
  return Opened::kOk;
}

void ListenHub::acknowledge(Profile& p, Listener& l) {
  if (!l.filter.uris.empty()) {
    if (!p.subscribe.value_or(false)) {
      log::info(p.subscribe ? "listen: resourceSubscriptions not honoured (left out of the "
                              "acknowledgement): the upstream does not advertise resources.subscribe"
                            : "listen: resourceSubscriptions not honoured (left out of the "
                              "acknowledgement): the upstream could not be reached to learn "
                              "whether it supports resources/subscribe",
                {{"subscription", l.id_json.substr(0, 100)},
                 {"uris", std::to_string(l.filter.uris.size())}});
      l.filter.uris.clear();
    } else {
      std::vector<std::string> kept;
      for (auto& uri : l.filter.uris) {
        auto it = p.uris.find(uri);
        if (it != p.uris.end()) {
          ++it->second;
        } else if (p.uris.size() < kMaxProfileUris) {
          p.uris.emplace(uri, 1);
          p.upstream->hold_subscription(uri);  // the first listener that asks
        } else {
          continue;
        }
        kept.push_back(uri);
      }
      if (kept.size() < l.filter.uris.size())
        log::warn("listen: some resourceSubscriptions not honoured (left out of the "
                  "acknowledgement): the upstream session of these listeners already holds "
                  "the most subscriptions mcp-sse-bridge keeps",
                  {{"subscription", l.id_json.substr(0, 100)},
                   {"left_out", std::to_string(l.filter.uris.size() - kept.size())},
                   {"max", std::to_string(kMaxProfileUris)}});
      l.filter.uris = std::move(kept);
    }
  }
  l.acked = true;
  l.stream->deliver(acknowledgement(l.filter, l.id_json));
}

void ListenHub::on_open(const std::string& profile, const Feed* feed,
                        const std::string& init_response) {
  std::lock_guard lk(mu_);
  auto pit = profiles_.find(profile);
  if (pit == profiles_.end() || pit->second->feed.get() != feed) return;
  Profile& p = *pit->second;
  bool sub = advertises_subscribe(init_response);
  if (p.subscribe.value_or(false) && !sub && !p.uris.empty())
    log::warn("listen: the upstream no longer advertises resources.subscribe; the subscriptions "
              "held for listeners may be refused",
              {{"uris", std::to_string(p.uris.size())}});
  p.subscribe = sub;
  p.unreachable = false;
  for (auto k : p.members)
    if (auto it = listeners_.find(k); it != listeners_.end() && !it->second.acked)
      acknowledge(p, it->second);
}

void ListenHub::on_end(const std::string& profile, const Feed* feed) {
  std::lock_guard lk(mu_);
  auto pit = profiles_.find(profile);
  if (pit == profiles_.end() || pit->second->feed.get() != feed) return;
  Profile& p = *pit->second;
  if (!p.subscribe) p.unreachable = true;  // (known support outlives an outage: kept)
  // The held session could not open: the listeners still waiting are
  // acknowledged with what the bridge can honour without it.
  for (auto k : p.members)
    if (auto it = listeners_.find(k); it != listeners_.end() && !it->second.acked)
      acknowledge(p, it->second);
}

void ListenHub::remove(uint64_t key) {
  std::shared_ptr<Profile> idle;
  {
    std::lock_guard lk(mu_);
    auto it = listeners_.find(key);
    if (it == listeners_.end()) return;
    Listener& l = it->second;
    auto pit = profiles_.find(l.profile);
    if (pit != profiles_.end()) {
      Profile& p = *pit->second;
      p.members.erase(key);
      if (p.members.empty()) {
        idle = pit->second;  // its session closes: nothing to unsubscribe
        profiles_.erase(pit);
      } else if (l.acked) {
        for (auto& uri : l.filter.uris) {
          auto u = p.uris.find(uri);
          if (u == p.uris.end() || --u->second > 0) continue;
          p.uris.erase(u);
          if (p.upstream) p.upstream->release_subscription(uri);  // the last listener that asked
        }
      }
    }
    listeners_.erase(it);
  }
  if (idle) {
    if (idle->feed) idle->feed->end();
    if (idle->upstream)
      idle->upstream->close(make_error(ErrorKind::kClosed, Phase::kRequest,
                                       "the last subscriptions/listen stream closed"));
  }
}

void ListenHub::publish(std::string_view upstream_headers, std::string_view json) {
  auto j = ojson::parse(json, nullptr, false);
  if (j.is_discarded()) return;
  auto w = wanted_of(j);
  if (!w) return;
  // Who gets it, under the lock; the tagging (a dump each) after it.
  std::vector<std::pair<std::shared_ptr<StandaloneStream>, std::string>> out;
  {
    std::lock_guard lk(mu_);
    auto pit = profiles_.find(std::string(upstream_headers));
    if (pit == profiles_.end()) return;
    for (auto k : pit->second->members) {
      auto it = listeners_.find(k);
      if (it == listeners_.end() || !it->second.acked || !wants(it->second.filter, *w)) continue;
      out.emplace_back(it->second.stream, it->second.id_json);
    }
  }
  for (auto& [s, id] : out) s->deliver(tagged(j, id));
}

void ListenHub::stop() {
  std::map<uint64_t, Listener> ls;
  std::map<std::string, std::shared_ptr<Profile>> ps;
  {
    std::lock_guard lk(mu_);
    stopped_ = true;
    ls.swap(listeners_);
    ps.swap(profiles_);
  }
  // Each stream ends with its request's response, as the 2026-07-28
  // subscriptions pattern asks of a graceful closure (a stream that just
  // stops reads to the client as a failure, DESIGN §2.3).
  for (auto& [k, l] : ls) l.stream->end_with(closing_response(l.id_json));
  for (auto& [h, p] : ps) {
    if (p->feed) p->feed->end();
    if (p->upstream)
      p->upstream->close(make_error(ErrorKind::kShuttingDown, Phase::kRequest,
                                    "mcp-sse-bridge is shutting down"));
  }
}

size_t ListenHub::listeners() const {
  std::lock_guard lk(mu_);
  return listeners_.size();
}

}  // namespace msb
