// The last initialize result the upstream gave, per compatible request, so
// that a client can start while the upstream is briefly down
// (--serve-stale-initialize): agents that cannot initialize a server at start
// run without its tools for their whole session (DESIGN §5).
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

  // Remembers a successful upstream result (the JSON text of `result`).
  void store(const std::string& key, std::string result_json);

  struct Hit {
    std::string result_json;
    std::chrono::milliseconds age;
  };
  std::optional<Hit> find(const std::string& key) const;

 private:
  struct Entry {
    std::string result_json;
    Clock::time_point at;
  };
  const size_t max_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
};

}  // namespace msb
