// What the bridge checks on a client request before any upstream work, kept
// apart from the HTTP server so that it can be unit-tested and fuzzed:
// Host/Origin (DNS rebinding), bearer auth, Accept / Content-Type /
// MCP-Protocol-Version, and which client headers may reach the upstream.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/jsonrpc.h"

namespace msb {

struct HeaderView {
  std::string_view name;
  std::string_view value;
};

// The request headers the bridge itself reads (Host, Accept, Content-Type,
// Authorization, Origin, Mcp-Session-Id, MCP-Protocol-Version, X-Request-Id,
// Mcp-Method, Mcp-Name): their number by name, case-insensitively; -1 for
// any other name.
int known_header_slot(std::string_view name);
inline constexpr int kKnownHeaders = 10;

// A request's headers in arrival order. index() (RequestReader calls it once
// the head is parsed) records where each known header first appears, so that
// find_header() on them is a lookup instead of a scan of the list. A list
// changed after index() (or never indexed) is scanned.
class HeaderList : public std::vector<HeaderView> {
 public:
  using std::vector<HeaderView>::vector;
  void index();
  // True when index() ran and the list has not grown or shrunk since.
  bool indexed() const { return indexed_size_ == size() && indexed_size_ != 0; }
  // The position + 1 of known header `slot`'s first occurrence; 0 when absent.
  uint16_t first(int slot) const { return first_[static_cast<size_t>(slot)]; }

 private:
  std::array<uint16_t, kKnownHeaders> first_{};
  size_t indexed_size_ = 0;
};

// First value of a header (names compare case-insensitively).
std::optional<std::string_view> find_header(const HeaderList& h, std::string_view name);

// Hop-by-hop, framing, Host, Cookie, the bridge's own (Mcp-Session-Id,
// Accept) and cpp-httplib's pseudo-headers (REMOTE_ADDR...): never upstream.
bool is_never_forwarded(std::string_view name);

// Bearer tokens, kept as SHA-256 digests and compared in constant time
// (every stored digest is compared; no early exit on the first match).
class BearerAuth {
 public:
  explicit BearerAuth(const std::vector<std::string>& tokens);
  bool enabled() const { return !digests_.empty(); }
  enum class Result { kOk, kMissing, kInvalid };
  Result check(std::optional<std::string_view> authorization) const;

 private:
  std::vector<std::array<unsigned char, 32>> digests_;
};

// A request refused before any upstream work.
struct Rejection {
  int status = 400;
  int code = -32000;  // JSON-RPC error code in the body
  std::string message;
  std::vector<std::pair<std::string, std::string>> headers;  // e.g. WWW-Authenticate
  std::string data_json;  // JSON text of error.data (e.g. -32022's supported versions); empty: none
};

class RequestPolicy {
 public:
  explicit RequestPolicy(const Config& cfg);

  // DNS-rebinding and cross-origin guard (spec 2025-11-25: invalid Origin => 403).
  std::optional<Rejection> check_host_origin(const HeaderList& h) const;
  // Bearer auth (401 + WWW-Authenticate); nullopt when auth is off.
  std::optional<Rejection> check_auth(const HeaderList& h) const;
  // MCP-Protocol-Version, when present, must be a session-era version we
  // speak or a modern one (Claude Code keeps sending 2026-07-28 on the
  // session-era requests that follow its fallback, anthropics/claude-code#92835).
  std::optional<Rejection> check_protocol_version(const HeaderList& h) const;
  // POST: Accept (406), Content-Type (415). The protocol version is checked
  // once the body is known (see is_modern_era_request).
  std::optional<Rejection> check_post(const HeaderList& h, bool* accepts_sse) const;
  // The "Name: value\r\n" lines sent upstream: static headers, then the
  // allow-listed client headers. A forwarded value with CR, LF or NUL is a
  // 400, never silently dropped.
  std::optional<Rejection> upstream_headers(const HeaderList& h, std::string* out) const;

  const BearerAuth& auth() const { return auth_; }
  // The --upstream-header / --upstream-headers-file lines, "Name: value\r\n" each.
  const std::string& static_headers() const { return static_lines_; }

 private:
  const Config& cfg_;
  BearerAuth auth_;
  std::string static_lines_;
  bool loopback_;
};

bool is_loopback_name(std::string_view host);
// Session-era versions the bridge serves (initialize + Mcp-Session-Id).
bool is_supported_protocol_version(std::string_view v);
// Versions of the stateless era (2026-07-28): per-request _meta, no session.
bool is_modern_protocol_version(std::string_view v);

// A request in the 2026-07-28 form: no Mcp-Session-Id, not initialize, and
// server/discover, or a version in params._meta, or an MCP-Protocol-Version
// header that the session era does not know. The first two are served by
// the stateless era (StatelessRules::is_stateless decides, first); what is
// left here — a header alone, with no session and no _meta — gets
// modern_era_refusal(), on which dual-era clients send initialize.
bool is_modern_era_request(const HeaderList& h, const Message& m);
// The answer a session-era server gives a modern request, as the 2026-07-28
// spec's backward-compatibility rule expects (transports/streamable-http,
// "Backward Compatibility"): HTTP 400 whose body is not a recognized modern
// JSON-RPC error (not -32020/-32021/-32022), so that dual-era clients (TS SDK
// v2 probeClassifier, python-sdk v2 _probe.py, Claude Code) fall back to
// initialize at once. The caller puts the request's id on it.
Rejection modern_era_refusal(std::string_view requested_version);

}  // namespace msb
