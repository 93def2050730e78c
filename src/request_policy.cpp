#include "mcp_sse_bridge/request_policy.h"

#include <cstring>

#include <arpa/inet.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <cctype>

#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/text_util.h"

namespace msb {

namespace {


// "host:port" / "[v6]:port" / "host" -> host, lower case, no brackets.
std::string host_part(std::string_view hostport) {
  std::string_view h;
  if (!hostport.empty() && hostport.front() == '[') {
    auto rb = hostport.find(']');
    h = hostport.substr(1, rb == std::string_view::npos ? std::string_view::npos : rb - 1);
  } else {
    auto colon = hostport.find(':');
    h = colon == std::string_view::npos ? hostport : hostport.substr(0, colon);
  }
  return lower(h);
}

// Bytes safe to echo in an error message: printable ASCII only, bounded.
std::string printable(std::string_view s, size_t max = 100) {
  std::string o;
  for (char c : s.substr(0, max)) o.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  return o;
}

bool listed(const std::vector<std::string>& list, std::string_view v) {
  for (auto& a : list)
    if (iequals(a, v)) return true;
  return false;
}

// Scheme and host of an Origin value ("https://app.example:8443"), lower case.
std::optional<std::string> origin_host(std::string_view origin) {
  auto sep = origin.find("://");
  if (sep == std::string_view::npos) return std::nullopt;
  std::string_view rest = origin.substr(sep + 3);
  if (rest.find_first_of("/?#@") != std::string_view::npos) return std::nullopt;
  return host_part(rest);
}

}  // namespace

bool is_supported_protocol_version(std::string_view v) {
  return v == "2024-11-05" || v == "2025-03-26" || v == "2025-06-18" || v == "2025-11-25";
}

bool is_modern_protocol_version(std::string_view v) { return v == "2026-07-28"; }

namespace {
constexpr char kSessionEraVersions[] = "2025-11-25, 2025-06-18, 2025-03-26, 2024-11-05";
}

bool is_modern_era_request(const HeaderList& h, const Message& m) {
  if (m.kind != MsgKind::kRequest || m.method == "initialize") return false;
  if (find_header(h, "Mcp-Session-Id")) return false;
  if (m.method == "server/discover" || !m.meta_protocol_version.empty()) return true;
  auto v = find_header(h, "MCP-Protocol-Version");
  return v && !is_supported_protocol_version(*v);
}

Rejection modern_era_refusal(std::string_view requested) {
  std::string req = requested.empty() ? std::string("a stateless-era request") : printable(requested, 64);
  return Rejection{400, -32000,
                   "Bad Request: unsupported protocol version " + req +
                       "; this server speaks the session era of MCP (supported versions: " +
                       kSessionEraVersions + "): send initialize first"};
}

bool is_loopback_name(std::string_view host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  // An IPv4 literal in 127.0.0.0/8 only: a name that merely starts with
  // "127." (127.attacker.example, 127.0.0.1.nip.io) is anyone's, and would
  // open the DNS-rebinding guard.
  if (host.size() > 15 || host.rfind("127.", 0) != 0) return false;
  char buf[16];
  std::memcpy(buf, host.data(), host.size());
  buf[host.size()] = '\0';
  in_addr a{};
  return ::inet_pton(AF_INET, buf, &a) == 1;
}

namespace {

// name == lower (same length), ASCII case-insensitively, 8 bytes at a time.
// `lower` holds only lower-case letters and '-': a byte of `name` ORed with
// 0x20 equals one of those only when it is that letter in either case, or
// '-' (or CR, which no header name holds: the parser refuses it).
bool equals_lower(std::string_view name, std::string_view lower) {
  size_t n = lower.size(), i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t a, b;
    std::memcpy(&a, name.data() + i, 8);
    std::memcpy(&b, lower.data() + i, 8);
    if ((a | 0x2020202020202020ull) != b) return false;
  }
  for (; i < n; ++i)
    if ((name[i] | 0x20) != lower[i]) return false;
  return true;
}

}  // namespace

int known_header_slot(std::string_view name) {
  // By length, then one case-insensitive compare: the names are fixed.
  auto is = [&](std::string_view known, int slot) { return equals_lower(name, known) ? slot : -1; };
  switch (name.size()) {
    case 4: return is("host", 0);
    case 6: return (name[0] | 0x20) == 'a' ? is("accept", 1) : is("origin", 4);
    case 12: return (name[0] | 0x20) == 'c' ? is("content-type", 2) : is("x-request-id", 7);
    case 13: return is("authorization", 3);
    case 14: return is("mcp-session-id", 5);
    case 20: return is("mcp-protocol-version", 6);
    case 10: return is("mcp-method", 8);
    case 8: return is("mcp-name", 9);
    default: return -1;
  }
}

void HeaderList::index() {
  first_.fill(0);
  indexed_size_ = 0;
  if (size() >= UINT16_MAX) return;  // (a head that large is refused first; then: scans)
  for (size_t i = 0; i < size(); ++i) {
    int slot = known_header_slot((*this)[i].name);
    if (slot >= 0 && first_[static_cast<size_t>(slot)] == 0)
      first_[static_cast<size_t>(slot)] = static_cast<uint16_t>(i + 1);
  }
  indexed_size_ = size();
}

std::optional<std::string_view> find_header(const HeaderList& h, std::string_view name) {
  if (h.indexed()) {
    if (int slot = known_header_slot(name); slot >= 0) {
      uint16_t at = h.first(slot);
      if (at == 0) return std::nullopt;
      return h[at - 1u].value;
    }
  }
  for (auto& kv : h)
    if (iequals(kv.name, name)) return kv.value;
  return std::nullopt;
}

bool is_never_forwarded(std::string_view name) {
  static constexpr std::string_view kBlocked[] = {
      "host", "connection", "keep-alive", "proxy-connection", "proxy-authorization",
      "proxy-authenticate", "transfer-encoding", "content-length", "content-type", "te",
      "trailer", "upgrade", "cookie", "set-cookie", "accept", "accept-encoding",
      "mcp-session-id", "mcp-protocol-version", "last-event-id", "expect", "remote_addr",
      "remote_port", "local_addr", "local_port"};
  for (auto b : kBlocked)
    if (iequals(name, b)) return true;
  return false;
}

BearerAuth::BearerAuth(const std::vector<std::string>& tokens) {
  for (auto& t : tokens) {
    std::array<unsigned char, 32> d{};
    SHA256(reinterpret_cast<const unsigned char*>(t.data()), t.size(), d.data());
    digests_.push_back(d);
  }
}

BearerAuth::Result BearerAuth::check(std::optional<std::string_view> authorization) const {
  if (!authorization) return Result::kMissing;
  std::string_view v = *authorization;
  if (v.size() < 7 || !iequals(v.substr(0, 7), "bearer ")) return Result::kInvalid;
  v.remove_prefix(7);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  // Hashing first makes the comparison independent of the token's length
  // and content; every digest is compared.
  std::array<unsigned char, 32> d{};
  SHA256(reinterpret_cast<const unsigned char*>(v.data()), v.size(), d.data());
  int match = 0;
  for (auto& want : digests_) match |= CRYPTO_memcmp(want.data(), d.data(), d.size()) == 0;
  return match ? Result::kOk : Result::kInvalid;
}

RequestPolicy::RequestPolicy(const Config& cfg)
    : cfg_(cfg), auth_(cfg.auth_tokens), loopback_(is_loopback_name(cfg.listen_host)) {
  for (auto& h : cfg.upstream.static_headers) {
    auto colon = h.find(':');
    std::string_view value = std::string_view(h).substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    static_lines_.append(h, 0, colon).append(": ").append(value).append("\r\n");
  }
}

std::optional<Rejection> RequestPolicy::check_host_origin(const HeaderList& h) const {
  if (loopback_ || !cfg_.allowed_hosts.empty()) {
    std::string_view host = find_header(h, "Host").value_or("");
    bool ok = (loopback_ && is_loopback_name(host_part(host))) || listed(cfg_.allowed_hosts, host) ||
              listed(cfg_.allowed_hosts, host_part(host));
    if (!ok)
      return Rejection{403, -32000,
                       "Forbidden: Host '" + printable(host) + "' is not allowed (--allowed-host)"};
  }
  if (auto origin = find_header(h, "Origin")) {
    auto oh = origin_host(*origin);
    bool ok = listed(cfg_.allowed_origins, *origin) || (loopback_ && oh && is_loopback_name(*oh));
    if (!ok)
      return Rejection{403, -32000,
                       "Forbidden: Origin '" + printable(*origin) +
                           "' is not allowed (--allowed-origin)"};
  }
  return std::nullopt;
}

std::optional<Rejection> RequestPolicy::check_auth(const HeaderList& h) const {
  if (!auth_.enabled()) return std::nullopt;
  auto r = auth_.check(find_header(h, "Authorization"));
  if (r == BearerAuth::Result::kOk) return std::nullopt;
  Rejection rej{401, -32000, "Unauthorized: a valid 'Authorization: Bearer <token>' is required"};
  rej.headers.emplace_back("WWW-Authenticate",
                           r == BearerAuth::Result::kMissing
                               ? R"(Bearer realm="mcp-sse-bridge")"
                               : R"(Bearer realm="mcp-sse-bridge", error="invalid_token")");
  return rej;
}

std::optional<Rejection> RequestPolicy::check_protocol_version(const HeaderList& h) const {
  auto v = find_header(h, "MCP-Protocol-Version");
  if (!v || is_supported_protocol_version(*v) || is_modern_protocol_version(*v)) return std::nullopt;
  return Rejection{400, -32000,
                   "Bad Request: unsupported MCP-Protocol-Version '" + printable(*v, 64) +
                       "' (supported: " + kSessionEraVersions + ")"};
}

std::optional<Rejection> RequestPolicy::check_post(const HeaderList& h, bool* accepts_sse) const {
  std::string_view accept = find_header(h, "Accept").value_or("");
  *accepts_sse = icontains(accept, "text/event-stream");
  // (JSON is looked for only when it decides: most clients list both.)
  if (!*accepts_sse && !(accept.empty() || icontains(accept, "application/json") ||
                         icontains(accept, "*/*") || icontains(accept, "application/*")))
    return Rejection{406, -32000,
                     "Not Acceptable: Accept must list application/json and/or text/event-stream"};
  if (!istarts_with(find_header(h, "Content-Type").value_or(""), "application/json"))
    return Rejection{415, -32000, "Unsupported Media Type: Content-Type must be application/json"};
  return std::nullopt;
}

std::optional<Rejection> RequestPolicy::upstream_headers(const HeaderList& h, std::string* out) const {
  *out = static_lines_;
  for (auto& name : cfg_.forward_headers) {
    if (is_never_forwarded(name)) continue;
    for (auto& kv : h) {
      if (!iequals(kv.name, name)) continue;
      if (kv.value.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos)
        return Rejection{400, -32000,
                         "Bad Request: header " + printable(name, 64) +
                             " contains CR, LF or NUL"};
      out->append(name).append(": ").append(kv.value).append("\r\n");
    }
  }
  return std::nullopt;
}

}  // namespace msb
