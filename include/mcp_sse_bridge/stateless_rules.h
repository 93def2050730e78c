// The rules of the stateless era (MCP 2026-07-28) that need no I/O, kept
// apart from the handler so that they can be unit-tested and fuzzed:
// which request is one, what it must carry (the `_meta` envelope and the
// MCP-Protocol-Version / Mcp-Method / Mcp-Name headers, with the spec's
// error codes), the request sent upstream, the initialize params that stand
// in for the missing handshake, and what every result must carry
// (resultType, ttlMs, cacheScope). Sources: spec 2026-07-28
// basic/transports/streamable-http ("Server Validation"), basic/versioning,
// server/utilities/caching; TS SDK v2's inbound validation ladder.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/request_policy.h"

namespace msb {

// What a valid stateless request carries, as the bridge needs it.
struct StatelessEnvelope {
  std::string protocol_version;  // _meta io.modelcontextprotocol/protocolVersion
  std::string capabilities;      // compact JSON object: …/clientCapabilities
  std::string client_info;       // compact JSON object: …/clientInfo ("" when absent)
  // {"level":"…"} for logging/setLevel upstream, from …/logLevel; absent:
  // the client gets no notifications/message.
  std::optional<std::string> log_level_params;
  // The request as the upstream gets it: the io.modelcontextprotocol/* keys
  // of params._meta removed (a legacy server has no use for them).
  std::string upstream_request;
};

class StatelessRules {
 public:
  // The era's version, and the JSON array of every version the bridge
  // serves (this era's first, then the session era's), for -32022's
  // data.supported and server/discover's supportedVersions.
  static constexpr std::string_view kVersion = "2026-07-28";
  static const std::string& supported_versions_json();

  // Whether a request takes the stateless path: not initialize, no
  // Mcp-Session-Id (a session keeps the session era, whatever
  // MCP-Protocol-Version says: Claude Code sends 2026-07-28 on session-era
  // requests after falling back, anthropics/claude-code#92835), and either
  // a protocol version in params._meta or server/discover (a method only
  // this era has). The MCP-Protocol-Version header alone does not decide.
  static bool is_stateless(const HeaderList& h, const Message& m);

  // Methods this era has that the bridge serves (tools, prompts, resources,
  // completion, server/discover, subscriptions/listen). Anything else —
  // ping, logging/setLevel, resources/subscribe… — is 404 with -32601.
  static bool is_known_method(std::string_view method);
  // Methods whose complete results carry ttlMs and cacheScope.
  static bool is_cacheable_method(std::string_view method);

  // Checks a stateless request, in the order of the TS SDK v2 ladder:
  // protocol version (header present and equal to _meta: -32020; version
  // served: -32022 with data.supported/requested), the envelope (-32602),
  // Mcp-Method and Mcp-Name (-32020), the method (404, -32601). Returns the
  // envelope, or the refusal (status, code, message, data) to send with
  // the request's id.
  static std::variant<StatelessEnvelope, Rejection> check(const HeaderList& h, const Message& m);

  // A header value as the spec carries it: `=?base64?…?=` decoded, anything
  // else as is. nullopt: invalid characters or bad base64.
  static std::optional<std::string> header_value(std::string_view raw);

  // The initialize params that stand in for the handshake on an upstream
  // session serving this request: `upstream_version`, the request's own
  // capabilities and clientInfo (a placeholder name when it sent none:
  // legacy servers require one). Compact JSON.
  static std::string init_params(const StatelessEnvelope& e, std::string_view upstream_version);

  // Returns `response` (a JSON-RPC response text) with what every result
  // of this era carries: resultType ("complete" unless the upstream sent
  // one) and, on complete results of cacheable methods, ttlMs and
  // cacheScope (the upstream's when valid, else these). Errors and
  // unparsable text come back unchanged.
  static std::string decorate_result(std::string_view method, std::string response,
                                     int64_t ttl_ms, std::string_view cache_scope);
};

}  // namespace msb
