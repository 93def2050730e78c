#include "mcp_sse_bridge/listen_hub.h"

#include <nlohmann/json.hpp>

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

// The filter flag a notification needs; nullptr when no listener takes it.
bool ListenHub_wants(const ListenHub::Filter& f, std::string_view method) {
  if (method == "notifications/tools/list_changed") return f.tools;
  if (method == "notifications/prompts/list_changed") return f.prompts;
  if (method == "notifications/resources/list_changed") return f.resources;
  return false;
}

}  // namespace

// The held upstream session of one profile, and the feed it delivers to.
class ListenHub::Feed : public SessionStreamSink {
 public:
  explicit Feed(ListenHub& hub) : hub_(hub) {}
  bool deliver(std::string json) override {
    if (!open_.load()) return false;
    hub_.publish(json);
    return true;
  }
  void end() override { open_.store(false); }
  bool open() const override { return open_.load(); }  // held while the hub uses it

 private:
  ListenHub& hub_;
  std::atomic<bool> open_{true};
};

struct ListenHub::Profile {
  std::shared_ptr<SessionUpstream> upstream;
  std::shared_ptr<Feed> feed;
  size_t listeners = 0;
};

ListenHub::ListenHub(const UpstreamConfig& cfg, Metrics& metrics, Duration keepalive)
    : cfg_(cfg), metrics_(metrics), keepalive_(keepalive) {}

ListenHub::~ListenHub() = default;

ListenHub::Filter ListenHub::filter_of(std::string_view request_json) {
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
  return f;
}

std::string ListenHub::acknowledgement(const Filter& f, std::string_view id_json) {
  ojson n = ojson::object();
  if (f.tools) n["toolsListChanged"] = true;
  if (f.prompts) n["promptsListChanged"] = true;
  if (f.resources) n["resourcesListChanged"] = true;
  ojson m;
  m["jsonrpc"] = "2.0";
  m["method"] = "notifications/subscriptions/acknowledged";
  m["params"]["notifications"] = std::move(n);
  m["params"]["_meta"][kSubscriptionId] = ojson::parse(id_json, nullptr, false);
  return dump(m);
}

std::string ListenHub::for_listener(std::string_view json, const Filter& f,
                                    std::string_view id_json) {
  auto j = ojson::parse(json, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("method") || !j["method"].is_string() ||
      j.contains("id"))
    return {};
  if (!ListenHub_wants(f, j["method"].get<std::string>())) return {};
  if (!j.contains("params") || !j["params"].is_object()) j["params"] = ojson::object();
  j["params"]["_meta"][kSubscriptionId] = ojson::parse(id_json, nullptr, false);
  return dump(j);
}

void ListenHub::listen(std::shared_ptr<Exchange> ex, HttpResponse head, std::string id_json,
                       Filter f, std::string upstream_headers) {
  auto stream = std::make_shared<StandaloneStream>(ex, keepalive_, metrics_);
  uint64_t key;
  std::shared_ptr<Profile> opened;
  {
    std::lock_guard lk(mu_);
    if (stopped_) {
      stream->start(std::move(head), nullptr);
      stream->end();
      return;
    }
    key = next_++;
    listeners_.emplace(key, Listener{stream, f, id_json, upstream_headers});
    auto& p = profiles_[upstream_headers];
    if (!p) p = std::make_shared<Profile>();
    if (p->listeners++ == 0 || !p->upstream || !p->upstream->usable()) opened = p;
  }
  stream->start(std::move(head), [this, key] { remove(key); });
  stream->deliver(acknowledgement(f, id_json));
  if (opened) {
    // The held upstream session of this profile (its own initialize:
    // no client capabilities: it asks nothing of anyone).
    auto feed = std::make_shared<Feed>(*this);
    SessionUpstream::Params sp{
        "listen", "listen",
        R"({"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"mcp-sse-bridge listen","version":"1"}})",
        upstream_headers, std::nullopt, false};
    auto up = std::make_shared<SessionUpstream>(ex->loop(), cfg_, metrics_, std::move(sp),
                                                [](SessionUpstream*) {});
    up->attach_stream(feed);
    {
      std::lock_guard lk(mu_);
      if (opened->upstream) opened->upstream->close(make_error(
          ErrorKind::kClosed, Phase::kRequest, "replaced"));
      if (opened->feed) opened->feed->end();
      opened->upstream = up;
      opened->feed = feed;
    }
    up->start();
    log::info("listen: holding an upstream session for subscriptions/listen streams");
  }
}

void ListenHub::remove(uint64_t key) {
  std::shared_ptr<Profile> idle;
  {
    std::lock_guard lk(mu_);
    auto it = listeners_.find(key);
    if (it == listeners_.end()) return;
    auto pit = profiles_.find(it->second.profile);
    if (pit != profiles_.end() && --pit->second->listeners == 0) {
      idle = pit->second;
      profiles_.erase(pit);
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

void ListenHub::publish(std::string_view json) {
  std::vector<std::pair<std::shared_ptr<StandaloneStream>, std::string>> out;
  {
    std::lock_guard lk(mu_);
    for (auto& [k, l] : listeners_) {
      std::string m = for_listener(json, l.filter, l.id_json);
      if (!m.empty()) out.emplace_back(l.stream, std::move(m));
    }
  }
  for (auto& [s, m] : out) s->deliver(std::move(m));
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
  for (auto& [k, l] : ls) l.stream->end();
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
