// Self-contained client session ids (Mcp-Session-Id).
//
// A session id carries everything the bridge needs to serve the session on
// any replica, after any restart: the client's `initialize` params, compact,
// authenticated with HMAC-SHA256 under a shared secret. No store is needed.
// Format: base64url(payload) "." base64url(mac) — visible ASCII only, as the
// spec requires. DELETE revokes an id on this process (bounded revocation set);
// the revocation is not shared between replicas.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace msb {

struct ClientSession {
  std::string id;           // the token itself
  std::string init_params;  // compact JSON of the client's initialize params
  int64_t issued_at = 0;    // unix seconds
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

  // Verifies an id: nullopt when malformed, tampered, signed with another
  // secret, or revoked here.
  std::optional<ClientSession> verify(std::string_view id) const;

  // Revokes an id on this process. Returns false if it was already revoked.
  bool revoke(std::string_view id);

  // Latest `logging/setLevel` params per session (replayed on each new
  // upstream session). Bounded like the revocation set, each entry to
  // kMaxLogLevelParams bytes (larger params are not remembered).
  static constexpr size_t kMaxLogLevelParams = 256;
  void set_log_level(std::string_view id, std::string params_json);
  std::optional<std::string> log_level(std::string_view id) const;

  size_t revoked_count() const;

 private:
  std::string mac(std::string_view data) const;

  std::string secret_;
  size_t max_entries_;
  mutable std::mutex mu_;
  std::unordered_set<std::string> revoked_;  // keyed by the mac part
  std::deque<std::string> revoked_order_;
  std::unordered_map<std::string, std::string> log_levels_;
  std::deque<std::string> log_level_order_;
};

// Secret material helpers.
std::string random_bytes(size_t n);
std::string base64url_encode(std::string_view in);
std::optional<std::string> base64url_decode(std::string_view in);

}  // namespace msb
