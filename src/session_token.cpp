#include "mcp_sse_bridge/session_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace msb {

namespace {
constexpr size_t kMaxTokenLength = 32 * 1024;
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}
}  // namespace

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return out;
}

std::string base64url_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  auto byte = [&](size_t k) { return static_cast<unsigned char>(in[k]); };
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out += kAlphabet[v >> 18 & 63];
    out += kAlphabet[v >> 12 & 63];
    out += kAlphabet[v >> 6 & 63];
    out += kAlphabet[v & 63];
  }
  if (in.size() - i == 1) {
    uint32_t v = byte(i) << 16;
    out += kAlphabet[v >> 18 & 63];
    out += kAlphabet[v >> 12 & 63];
  } else if (in.size() - i == 2) {
    uint32_t v = byte(i) << 16 | byte(i + 1) << 8;
    out += kAlphabet[v >> 18 & 63];
    out += kAlphabet[v >> 12 & 63];
    out += kAlphabet[v >> 6 & 63];
  }
  return out;
}

namespace {

// Decodes base64 in `alphabet` (64 characters); '=' padding is accepted only
// when `padded` (standard base64), and then only at the end.
std::optional<std::string> base64_decode_with(std::string_view in, const char* alphabet, bool padded) {
  std::array<int8_t, 256> table{};
  table.fill(-1);
  for (int k = 0; k < 64; ++k) table[static_cast<unsigned char>(alphabet[k])] = static_cast<int8_t>(k);
  if (padded) {
    if (in.size() % 4 != 0) return std::nullopt;
    for (int k = 0; k < 2 && !in.empty() && in.back() == '='; ++k) in.remove_suffix(1);
  }
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    int v = table[c];
    if (v < 0) return std::nullopt;
    acc = acc << 6 | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>(acc >> bits & 0xFF);
    }
  }
  // Non-canonical trailing bits would let two ids decode alike.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

}  // namespace

std::optional<std::string> base64url_decode(std::string_view in) {
  return base64_decode_with(in, kAlphabet, false);
}

std::optional<std::string> base64_decode(std::string_view in) {
  static constexpr char kStd[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  return base64_decode_with(in, kStd, true);
}

SessionTokens::SessionTokens(std::string secret, size_t max_revoked)
    : secret_(std::move(secret)), max_entries_(max_revoked ? max_revoked : 1) {
  if (secret_.empty()) throw std::invalid_argument("session secret must not be empty");
}

std::string SessionTokens::mac(std::string_view data) const {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string SessionTokens::mint(std::string_view init_params_json) {
  nlohmann::ordered_json payload;
  payload["v"] = 1;
  payload["iat"] = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  payload["n"] = hex(random_bytes(8));
  payload["p"] = nlohmann::ordered_json::parse(init_params_json);
  std::string body = base64url_encode(payload.dump());
  std::string id = body + "." + base64url_encode(mac(body));
  // An id verify() would refuse is no id: the caller answers with an error.
  return id.size() > kMaxTokenLength ? std::string() : id;
}

std::string session_tag(std::string_view id) {
  unsigned char d[32];
  SHA256(reinterpret_cast<const unsigned char*>(id.data()), id.size(), d);
  return hex(std::string_view(reinterpret_cast<const char*>(d), 6));
}

std::shared_ptr<const ClientSession> SessionTokens::verify(std::string_view id) const {
  uint64_t revocations;
  {
    std::lock_guard lk(cache_mu_);
    if (auto it = cache_.find(id); it != cache_.end()) return it->second;
    revocations = revocations_;
  }
  auto s = verify_uncached(id);
  if (!s || id.size() > kCacheMaxId) return s;
  std::lock_guard lk(cache_mu_);
  if (revocations != revocations_) return s;  // it may have been revoked meanwhile
  if (cache_.size() >= kCacheEntries || cache_bytes_ >= kCacheBytes) {
    cache_.clear();
    cache_bytes_ = 0;
  }
  if (cache_.emplace(s->id, s).second) cache_bytes_ += 2 * s->id.size() + s->init_params.size() + 64;
  return s;
}

std::shared_ptr<const ClientSession> SessionTokens::verify_uncached(std::string_view id) const {
  if (id.empty() || id.size() > kMaxTokenLength) return nullptr;
  auto dot = id.find('.');
  if (dot == std::string_view::npos) return nullptr;
  std::string_view body = id.substr(0, dot);
  auto given = base64url_decode(id.substr(dot + 1));
  if (!given) return nullptr;
  std::string expected = mac(body);
  if (given->size() != expected.size() ||
      CRYPTO_memcmp(given->data(), expected.data(), expected.size()) != 0)
    return nullptr;
  {
    std::lock_guard lk(mu_);
    if (revoked_.count(std::string(id.substr(dot + 1)))) return nullptr;
  }
  auto json = base64url_decode(body);
  if (!json) return nullptr;
  auto payload = nlohmann::ordered_json::parse(*json, nullptr, false);
  if (payload.is_discarded() || !payload.is_object() || payload.value("v", 0) != 1 ||
      !payload.contains("p") || !payload["p"].is_object())
    return nullptr;
  auto s = std::make_shared<ClientSession>();
  s->id = std::string(id);
  s->init_params = payload["p"].dump();
  s->issued_at = payload.value("iat", int64_t{0});
  s->tag = session_tag(id);
  s->key = std::string(id.substr(dot + 1));
  return s;
}

bool SessionTokens::revoke(std::string_view id) {
  auto dot = id.find('.');
  std::string key(dot == std::string_view::npos ? id : id.substr(dot + 1));
  bool fresh;
  {
    std::lock_guard lk(mu_);
    fresh = revoked_.insert(key).second;
    if (fresh) {
      revoked_order_.push_back(key);
      if (revoked_order_.size() > max_entries_) {
        revoked_.erase(revoked_order_.front());
        revoked_order_.pop_front();
      }
    }
    log_levels_.erase(key);
  }
  // After the revocation is recorded: a verify() that checked the set before
  // it sees the count move and does not cache what it found.
  std::lock_guard ck(cache_mu_);
  ++revocations_;
  if (auto it = cache_.find(id); it != cache_.end()) {
    cache_bytes_ -= std::min(cache_bytes_, 2 * it->second->id.size() + it->second->init_params.size() + 64);
    cache_.erase(it);
  }
  return fresh;
}

namespace {
// Per-session state is keyed by the id's MAC part (43 bytes), not the id
// itself (up to 32 KiB).
std::string_view state_key(std::string_view id) {
  auto dot = id.find('.');
  return dot == std::string_view::npos ? id.substr(0, 64) : id.substr(dot + 1, 64);
}
}  // namespace

void SessionTokens::set_log_level(std::string_view id, std::string params_json) {
  if (params_json.size() > kMaxLogLevelParams) return;  // the caller validated it; never grow
  std::lock_guard lk(mu_);
  auto [it, inserted] = log_levels_.insert_or_assign(std::string(state_key(id)), std::move(params_json));
  if (inserted) {
    log_level_order_.push_back(it->first);
    if (log_level_order_.size() > max_entries_) {
      log_levels_.erase(log_level_order_.front());
      log_level_order_.pop_front();
    }
  }
}

std::optional<std::string> SessionTokens::log_level(std::string_view id) const {
  std::lock_guard lk(mu_);
  auto it = log_levels_.find(state_key(id));
  if (it == log_levels_.end()) return std::nullopt;
  return it->second;
}

size_t SessionTokens::revoked_count() const {
  std::lock_guard lk(mu_);
  return revoked_.size();
}

}  // namespace msb
