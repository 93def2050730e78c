// Self-contained client session ids (Mcp-Session-Id).
//
// A session id carries everything the bridge needs to serve the session on
// any replica, after any restart: the client's `initialize` params, compact,
// authenticated with HMAC-SHA256 under a shared secret. No store is needed.
// Format: base64url(payload) "." base64url(mac) — visible ASCII only, as the
// spec requires. DELETE revokes an id on this process (bounded revocation set);
// the revocation is not shared between replicas.
//
// verify() remembers the ids it accepted (bounded, see kCacheEntries), so a
// session's later requests cost a hash lookup, not an HMAC, two base64
// decodes and a JSON parse; revoke() forgets the id at once.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "mcp_sse_bridge/text_util.h"

namespace msb {

struct ClientSession {
  std::string id;           // the token itself
  std::string init_params;  // compact JSON of the client's initialize params
  int64_t issued_at = 0;    // unix seconds
  std::string tag;          // short non-reversible tag of the id, for logs
  // The id's MAC part (43 bytes): it authenticates the whole id, initialize
  // params included, so it tells minted sessions apart as well as the id
  // does, at a tenth of the bytes to copy and hash. Empty for a session the
  // bridge synthesized (the 2026-07-28 era's), whose id is only a marker.
  std::string key;

  // What per-session maps (calls, admission, the warm pool) key this session
  // by: `key`, or the id where there is no key.
  std::string_view scope() const { return key.empty() ? std::string_view(id) : std::string_view(key); }
};

class SessionTokens {
 public:
  // `secret` must be non-empty. `max_revoked` bounds the revocation set (and
  // the per-session state map); the oldest entries are forgotten first.
  SessionTokens(std::string secret, size_t max_revoked);

  // Mints a new session id for these initialize params (compact JSON object
  // text). Returns "" when the id would be longer than verify() accepts
  // (about 24 KiB of params): the client must be told, not given an id that
  // every later request would find unknown.
  std::string mint(std::string_view init_params_json);

  // Verifies an id: null when malformed, tampered, signed with another
  // secret, or revoked here. Shared and immutable: a session's requests do
  // not copy its id and params.
  std::shared_ptr<const ClientSession> verify(std::string_view id) const;

  // Revokes an id on this process. Returns false if it was already revoked.
  bool revoke(std::string_view id);

  // Latest `logging/setLevel` params per session (replayed on each new
  // upstream session). Bounded like the revocation set, each entry to
  // kMaxLogLevelParams bytes (larger params are not remembered).
  static constexpr size_t kMaxLogLevelParams = 256;
  void set_log_level(std::string_view id, std::string params_json);
  std::optional<std::string> log_level(std::string_view id) const;

  size_t revoked_count() const;

  // Bounds of verify()'s cache of accepted ids: when either is passed the
  // cache starts over (ids longer than kCacheMaxId are not cached).
  static constexpr size_t kCacheEntries = 4096;
  static constexpr size_t kCacheBytes = 8 << 20;
  static constexpr size_t kCacheMaxId = 8 << 10;

 private:
  std::string mac(std::string_view data) const;
  std::shared_ptr<const ClientSession> verify_uncached(std::string_view id) const;

  std::string secret_;
  size_t max_entries_;
  mutable std::mutex mu_;
  std::unordered_set<std::string> revoked_;  // keyed by the mac part
  std::deque<std::string> revoked_order_;
  std::unordered_map<std::string, std::string, StringHash, std::equal_to<>> log_levels_;
  std::deque<std::string> log_level_order_;

  // Hashes an id by its last 43 bytes, the MAC of a minted one (uniformly
  // spread; verify() caches no other): a tenth of the bytes of a whole id,
  // hashed on every request.
  struct MacHash {
    using is_transparent = void;
    size_t operator()(std::string_view id) const {
      return std::hash<std::string_view>{}(id.substr(id.size() > 43 ? id.size() - 43 : 0));
    }
  };
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::shared_ptr<const ClientSession>, MacHash, std::equal_to<>>
      cache_;
  mutable size_t cache_bytes_ = 0;
  uint64_t revocations_ = 0;  // under cache_mu_: a verify that raced a revoke does not cache
};

// Secret material helpers.
std::string random_bytes(size_t n);
std::string base64url_encode(std::string_view in);
std::optional<std::string> base64url_decode(std::string_view in);
// Standard base64 (RFC 4648 §4, '=' padding), e.g. an `=?base64?…?=` header value.
std::optional<std::string> base64_decode(std::string_view in);
// A short, non-reversible tag of a session id for logs (the id itself is a
// credential-like token): 12 hex digits of its SHA-256.
std::string session_tag(std::string_view id);

}  // namespace msb
