#include "mcp_sse_bridge/initialize_cache.h"

#include <openssl/sha.h>

#include <nlohmann/json.hpp>

namespace msb {

std::string InitializeCache::key(std::string_view protocol_version, std::string_view upstream_headers) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(upstream_headers.data()), upstream_headers.size(), d);
  std::string k(protocol_version.substr(0, 64));
  k.push_back('\n');
  k.append(reinterpret_cast<const char*>(d), sizeof d);
  return k;
}

std::string InitializeCache::result_of(std::string& response, bool keep_subscribe,
                                       bool* subscribes) {
  auto j = nlohmann::ordered_json::parse(response, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("result") || !j["result"].is_object())
    return {};
  auto p = nlohmann::ordered_json::json_pointer("/result/capabilities/resources");
  if (subscribes)
    *subscribes = j.contains(p) && j[p].is_object() && j[p].contains("subscribe") &&
                  j[p]["subscribe"].is_boolean() && j[p]["subscribe"].get<bool>();
  if (!keep_subscribe && j.contains(p) && j[p].is_object() && j[p].contains("subscribe")) {
    j[p].erase("subscribe");
    response = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return j["result"].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void InitializeCache::store(const std::string& key, std::string result_json, bool subscribes) {
  std::lock_guard lk(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end() && entries_.size() >= max_) {
    auto oldest = entries_.begin();
    for (auto e = entries_.begin(); e != entries_.end(); ++e)
      if (e->second.at < oldest->second.at) oldest = e;
    entries_.erase(oldest);
  }
  entries_[key] = Entry{std::move(result_json), Clock::now(), subscribes};
}

std::optional<InitializeCache::Hit> InitializeCache::find(const std::string& key) const {
  std::lock_guard lk(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::nullopt;
  return Hit{it->second.result_json,
             std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - it->second.at),
             it->second.subscribes};
}

}  // namespace msb
