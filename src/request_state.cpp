#include "mcp_sse_bridge/request_state.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/session_token.h"

namespace msb {

namespace {

constexpr std::string_view kPrefix = "msb1.";
// Domain separation: the session secret also signs session ids; a state's
// MAC covers this label so neither can be passed off as the other.
constexpr std::string_view kLabel = "mcp-sse-bridge requestState v1\n";

std::string hex(const unsigned char* p, size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

}  // namespace

std::optional<RequestBinding> RequestBinding::of(std::string_view method,
                                                 std::string_view params_json,
                                                 std::string principal) {
  auto p = params_json.empty() ? nlohmann::json::object()
                               : nlohmann::json::parse(params_json, nullptr, false);
  if (p.is_discarded() || !p.is_object()) return std::nullopt;
  RequestBinding b;
  b.method = std::string(method);
  const char* name_key = method == "resources/read" ? "uri" : "name";
  if (auto it = p.find(name_key); it != p.end() && it->is_string()) b.name = it->get<std::string>();
  p.erase("_meta");
  p.erase("inputResponses");
  p.erase("requestState");
  // nlohmann::json (not ordered_json) keeps object keys sorted: the dump is
  // canonical for any key order the client used.
  std::string canon = p.dump();
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(canon.data()), canon.size(), d);
  b.digest = hex(d, sizeof d);
  b.principal = std::move(principal);
  return b;
}

RequestStateSealer::RequestStateSealer(std::string secret, std::string replica)
    : secret_(std::move(secret)), replica_(std::move(replica)) {
  if (secret_.empty()) throw std::invalid_argument("requestState secret must not be empty");
}

std::string RequestStateSealer::mac(std::string_view data) const {
  std::string msg;
  msg.reserve(kLabel.size() + data.size());
  msg.append(kLabel).append(data);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret_.data(), static_cast<int>(secret_.size()),
       reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string RequestStateSealer::principal_of(std::string_view credentials) const {
  if (credentials.empty()) return {};
  // (A sealed body is base64url: it never starts with this label's ':'.)
  std::string m = mac(std::string("principal:").append(credentials));
  return hex(reinterpret_cast<const unsigned char*>(m.data()), 16);
}

std::string RequestStateSealer::seal(const RequestStateClaims& c) const {
  nlohmann::ordered_json j;
  j["k"] = c.call_key;
  j["r"] = c.replica;
  j["m"] = c.binding.method;
  j["n"] = c.binding.name;
  j["d"] = c.binding.digest;
  j["p"] = c.binding.principal;
  j["o"] = c.round;
  j["e"] = c.expires_ms;
  std::string body = base64url_encode(j.dump());
  return std::string(kPrefix) + body + "." + base64url_encode(mac(body));
}

RequestStateSealer::Opened RequestStateSealer::open(std::string_view state,
                                                    const RequestBinding& retry,
                                                    int64_t now_ms) const {
  Opened out;
  if (!is_ours(state) || state.size() > kMaxStateLength) return out;  // kMalformed
  state.remove_prefix(kPrefix.size());
  auto dot = state.find('.');
  if (dot == std::string_view::npos) return out;
  std::string_view body = state.substr(0, dot);
  auto given = base64url_decode(state.substr(dot + 1));
  std::string expected = mac(body);
  if (!given || given->size() != expected.size() ||
      CRYPTO_memcmp(given->data(), expected.data(), expected.size()) != 0) {
    out.refusal = Refusal::kTampered;
    return out;
  }
  // Authentic from here on: a malformed body is a bug, reported as such.
  auto text = base64url_decode(body);
  auto j = text ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
  if (j.is_discarded() || !j.is_object()) return out;
  RequestStateClaims c;
  try {
    c.call_key = j.at("k").get<std::string>();
    c.replica = j.at("r").get<std::string>();
    c.binding.method = j.at("m").get<std::string>();
    c.binding.name = j.at("n").get<std::string>();
    c.binding.digest = j.at("d").get<std::string>();
    c.binding.principal = j.at("p").get<std::string>();
    c.round = j.at("o").get<int>();
    c.expires_ms = j.at("e").get<int64_t>();
  } catch (const nlohmann::json::exception&) {
    return out;
  }
  if (now_ms >= c.expires_ms) {
    out.refusal = Refusal::kExpired;
    return out;
  }
  if (c.replica != replica_) {
    out.refusal = Refusal::kOtherReplica;
    return out;
  }
  if (!(c.binding == retry)) {
    out.refusal = Refusal::kOtherRequest;
    return out;
  }
  out.claims = std::move(c);
  return out;
}

bool RequestStateSealer::is_ours(std::string_view state) {
  return state.substr(0, kPrefix.size()) == kPrefix;
}

std::string RequestStateSealer::new_replica_tag() {
  auto r = random_bytes(6);
  return hex(reinterpret_cast<const unsigned char*>(r.data()), r.size());
}

int64_t RequestStateSealer::now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view RequestStateSealer::to_string(Refusal r) {
  switch (r) {
    case Refusal::kMalformed: return "malformed";
    case Refusal::kTampered: return "tampered";
    case Refusal::kExpired: return "expired";
    case Refusal::kOtherReplica: return "other_replica";
    case Refusal::kOtherRequest: return "other_request";
    case Refusal::kNotParked: return "not_parked";
  }
  return "malformed";
}

std::string RequestStateSealer::error_response(std::string_view raw_id, Refusal r,
                                               std::string_view park_timeout) {
  std::string msg;
  switch (r) {
    case Refusal::kMalformed:
      msg = "requestState is not one this bridge issued (malformed)";
      break;
    case Refusal::kTampered:
      msg = "requestState failed verification (modified, or issued under another secret)";
      break;
    case Refusal::kExpired:
      msg = "requestState expired: the call waited for input longer than --mrtr-park-timeout " +
            std::string(park_timeout);
      break;
    case Refusal::kOtherReplica:
      msg = "requestState belongs to another bridge replica, or to this bridge before a restart: "
            "the call that waited for input is not here";
      break;
    case Refusal::kOtherRequest:
      msg = "requestState was issued for a different request (method, name or arguments differ)";
      break;
    case Refusal::kNotParked:
      msg = "requestState refers to no call waiting for input (already resumed, expired or "
            "cancelled)";
      break;
  }
  msg += "; send the request again without inputResponses and requestState to start over";
  nlohmann::ordered_json e;
  e["jsonrpc"] = "2.0";
  e["id"] = nullptr;
  e["error"]["code"] = -32602;
  e["error"]["message"] = msg;
  e["error"]["data"]["bridge"]["kind"] = "request_state";
  e["error"]["data"]["bridge"]["reason"] = std::string(to_string(r));
  // The id is re-emitted verbatim (never null for a request that had one).
  auto s = e.dump();
  return with_id(s, raw_id.empty() ? "null" : raw_id).value_or(s);
}

}  // namespace msb
