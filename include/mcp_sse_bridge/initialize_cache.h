// The last initialize result the upstream gave, per compatible request, so
// that a client can start while the upstream is briefly down
// (--serve-stale-initialize): agents that cannot initialize a server at start
// run without its tools for their whole session (DESIGN §5). The stateless
// era's server/discover is built from the same results (StatelessHandler).
//
// Compatible = the same requested protocolVersion and the same headers sent
// upstream (forwarded credentials may select another tenant, whose server
// info must not leak to this one). In memory only, bounded; thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace msb {

class InitializeCache {
 public:
  using Clock = std::chrono::steady_clock;
  explicit InitializeCache(size_t max_entries = 64) : max_(max_entries) {}

  // The cache key of an initialize request.
  static std::string key(std::string_view protocol_version, std::string_view upstream_headers);

  // Takes a successful upstream initialize response and returns its `result`
  // as JSON text, to be stored ("" when it is not one). Unless
  // `keep_subscribe` (session mode, which forwards subscriptions), nothing can
  // deliver resource updates through the bridge: `capabilities.resources.
  // subscribe` is removed from the result and, when present, from `response`
  // (other bytes of the response stay as they were). `*subscribes` (when
  // given): whether the upstream advertised it (the stateless era's
  // subscriptions/listen honours it: server/discover says so).
  static std::string result_of(std::string& response, bool keep_subscribe = false,
                               bool* subscribes = nullptr);

  // Remembers a successful upstream result (the JSON text of `result`) and
  // whether the upstream advertised resources.subscribe.
  void store(const std::string& key, std::string result_json, bool subscribes = false);

  struct Hit {
    std::string result_json;
    std::chrono::milliseconds age;
    bool subscribes = false;
  };
  std::optional<Hit> find(const std::string& key) const;

 private:
  struct Entry {
    std::string result_json;
    Clock::time_point at;
    bool subscribes = false;
  };
  const size_t max_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace msb
