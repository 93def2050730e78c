#include "mcp_sse_bridge/stateless_rules.h"

#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/session_token.h"

namespace msb {

namespace {

using ojson = nlohmann::ordered_json;

constexpr char kMetaPrefix[] = "io.modelcontextprotocol/";
constexpr char kProtocolVersionKey[] = "io.modelcontextprotocol/protocolVersion";
constexpr char kCapabilitiesKey[] = "io.modelcontextprotocol/clientCapabilities";
constexpr char kClientInfoKey[] = "io.modelcontextprotocol/clientInfo";
constexpr char kLogLevelKey[] = "io.modelcontextprotocol/logLevel";

constexpr int kHeaderMismatch = -32020;
constexpr int kUnsupportedVersion = -32022;
constexpr int kInvalidParams = -32602;
constexpr int kMethodNotFound = -32601;

// Bytes safe to echo in an error message: printable ASCII only, bounded.
std::string printable(std::string_view s, size_t max = 100) {
  std::string o;
  for (char c : s.substr(0, max)) o.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  return o;
}

std::string dump(const ojson& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool valid_level(std::string_view l) {
  static constexpr std::string_view kLevels[] = {"debug", "info",     "notice", "warning",
                                                 "error", "critical", "alert",  "emergency"};
  for (auto k : kLevels)
    if (l == k) return true;
  return false;
}

Rejection mismatch(std::string message) {
  return Rejection{400, kHeaderMismatch, "Header mismatch: " + std::move(message)};
}

Rejection invalid_params(std::string message) {
  return Rejection{400, kInvalidParams, "Invalid params: " + std::move(message)};
}

// The body field Mcp-Name mirrors for `method`, if any.
const char* name_field(std::string_view method) {
  if (method == "tools/call" || method == "prompts/get") return "name";
  if (method == "resources/read") return "uri";
  return nullptr;
}

}  // namespace

const std::string& StatelessRules::supported_versions_json() {
  static const std::string v =
      R"(["2026-07-28","2025-11-25","2025-06-18","2025-03-26","2024-11-05"])";
  return v;
}

bool StatelessRules::is_stateless(const HeaderList& h, const Message& m) {
  if (m.kind != MsgKind::kRequest) return false;
  if (find_header(h, "Mcp-Session-Id")) return false;
  // initialize opens the session era, unless it says it is a 2026-07-28
  // request: that era removed it, and the client must hear 404 / -32601.
  if (m.method == "initialize") return m.meta_protocol_version == kVersion;
  return !m.meta_protocol_version.empty() || m.method == "server/discover";
}

bool StatelessRules::is_known_method(std::string_view m) {
  return m == "tools/call" || m == "tools/list" || m == "prompts/get" || m == "prompts/list" ||
         m == "resources/list" || m == "resources/templates/list" || m == "resources/read" ||
         m == "completion/complete" || m == "server/discover" || m == "subscriptions/listen";
}

bool StatelessRules::is_cacheable_method(std::string_view m) {
  return m == "tools/list" || m == "prompts/list" || m == "resources/list" ||
         m == "resources/templates/list" || m == "resources/read" || m == "server/discover";
}

std::optional<std::string> StatelessRules::header_value(std::string_view raw) {
  for (unsigned char c : raw)
    if (!(c == '\t' || (c >= 0x20 && c <= 0x7e))) return std::nullopt;
  constexpr std::string_view kOpen = "=?base64?", kClose = "?=";
  if (raw.size() >= kOpen.size() + kClose.size() && raw.substr(0, kOpen.size()) == kOpen &&
      raw.substr(raw.size() - kClose.size()) == kClose)
    return base64_decode(raw.substr(kOpen.size(), raw.size() - kOpen.size() - kClose.size()));
  return std::string(raw);
}

std::variant<StatelessEnvelope, Rejection> StatelessRules::check(const HeaderList& h,
                                                                 const Message& m) {
  auto j = ojson::parse(m.raw, nullptr, false);
  if (j.is_discarded() || !j.is_object())  // parse_body accepted it: cannot happen
    return Rejection{400, -32600, "Invalid Request: not a JSON object"};
  ojson* params = j.contains("params") && j["params"].is_object() ? &j["params"] : nullptr;
  ojson* meta = params && params->contains("_meta") && (*params)["_meta"].is_object()
                    ? &(*params)["_meta"]
                    : nullptr;

  // 1. The protocol version: in _meta, mirrored by the header, one we serve.
  if (!meta || !meta->contains(kProtocolVersionKey) || !(*meta)[kProtocolVersionKey].is_string())
    return invalid_params(
        "a 2026-07-28 request must carry params._meta[\"io.modelcontextprotocol/protocolVersion\"] "
        "and params._meta[\"io.modelcontextprotocol/clientCapabilities\"] (or use initialize for "
        "the session era)");
  std::string version = (*meta)[kProtocolVersionKey].get<std::string>();
  auto header_version = find_header(h, "MCP-Protocol-Version");
  if (!header_version) return mismatch("the MCP-Protocol-Version header is required");
  if (*header_version != version)
    return mismatch("MCP-Protocol-Version header value '" + printable(*header_version, 64) +
                    "' does not match body value '" + printable(version, 64) + "'");
  if (version != kVersion) {
    Rejection r{400, kUnsupportedVersion, "Unsupported protocol version"};
    r.data_json = R"({"supported":)" + supported_versions_json() +
                  R"(,"requested":)" + json_quote(printable(version, 64)) + "}";
    return r;
  }

  // 2. The rest of the envelope.
  StatelessEnvelope env;
  env.protocol_version = version;
  if (!meta->contains(kCapabilitiesKey) || !(*meta)[kCapabilitiesKey].is_object())
    return invalid_params(
        "missing or malformed params._meta[\"io.modelcontextprotocol/clientCapabilities\"] (an "
        "object, {} when the client has none)");
  env.capabilities = dump((*meta)[kCapabilitiesKey]);
  if (meta->contains(kClientInfoKey)) {
    const ojson& ci = (*meta)[kClientInfoKey];
    if (!ci.is_object() || !ci.contains("name") || !ci["name"].is_string() ||
        (ci.contains("version") && !ci["version"].is_string()))
      return invalid_params(
          "params._meta[\"io.modelcontextprotocol/clientInfo\"] must be an object with a string "
          "name and version");
    env.client_info = dump(ci);
  }
  if (meta->contains(kLogLevelKey)) {
    const ojson& l = (*meta)[kLogLevelKey];
    if (!l.is_string() || !valid_level(l.get<std::string>()))
      return invalid_params(
          "params._meta[\"io.modelcontextprotocol/logLevel\"] must be one of debug, info, notice, "
          "warning, error, critical, alert, emergency");
    env.log_level_params = R"({"level":")" + l.get<std::string>() + R"("})";
  }

  // 3. The headers that mirror the body.
  auto method_header = find_header(h, "Mcp-Method");
  if (!method_header) return mismatch("the Mcp-Method header is required");
  if (*method_header != m.method)
    return mismatch("Mcp-Method header value '" + printable(*method_header) +
                    "' does not match body value '" + printable(m.method) + "'");
  if (const char* field = name_field(m.method)) {
    // A body without the field is left to the upstream (invalid params).
    if (params && params->contains(field) && (*params)[field].is_string()) {
      std::string body_value = (*params)[field].get<std::string>();
      auto raw = find_header(h, "Mcp-Name");
      if (!raw) return mismatch("the Mcp-Name header is required for " + m.method);
      auto value = header_value(*raw);
      if (!value)
        return mismatch("Mcp-Name header value '" + printable(*raw) +
                        "' has invalid characters or bad =?base64?…?= encoding");
      if (*value != body_value)
        return mismatch("Mcp-Name header value '" + printable(*value) +
                        "' does not match body value '" + printable(body_value) + "'");
    }
  }

  // 4. The method.
  if (!is_known_method(m.method))
    return Rejection{404, kMethodNotFound,
                     "Method not found: '" + printable(m.method) +
                         "' is not a method of protocol version 2026-07-28"};

  // What goes upstream: the request without this era's envelope.
  for (auto it = meta->begin(); it != meta->end();) {
    if (it.key().rfind(kMetaPrefix, 0) == 0) it = meta->erase(it);
    else ++it;
  }
  if (meta->empty()) params->erase("_meta");
  env.upstream_request = dump(j);
  return env;
}

std::string StatelessRules::init_params(const StatelessEnvelope& e,
                                        std::string_view upstream_version) {
  std::string p = R"({"protocolVersion":)" + json_quote(upstream_version) + R"(,"capabilities":)";
  p += e.capabilities.empty() ? std::string("{}") : e.capabilities;
  p += R"(,"clientInfo":)";
  p += e.client_info.empty()
           ? std::string(R"J({"name":"unnamed 2026-07-28 client (via mcp-sse-bridge)","version":"0"})J")
           : e.client_info;
  p += "}";
  return p;
}

namespace {

// decorate_result without a parse: the members to add, spliced into `response`
// after the result's '{'. False when the text needs a real parse (a member to
// replace rather than add, escaped keys, not the expected shape).
bool decorate_by_splice(std::string_view method, std::string& response, int64_t ttl_ms,
                        std::string_view cache_scope) {
  using S = JsonMember::Status;
  auto res = find_member(response, "result");
  if (res.status != S::kFound || response[res.begin] != '{') return false;
  std::string_view obj(response.data() + res.begin, res.end - res.begin);
  JsonMember found[3];
  if (!find_members(obj, {"resultType", "ttlMs", "cacheScope"}, found)) return false;
  const JsonMember &type = found[0], &ttl = found[1], &scope = found[2];
  std::string add;
  bool complete = true;
  if (type.status == S::kAbsent) {
    add = R"("resultType":"complete")";
  } else {
    std::string_view t = obj.substr(type.begin, type.end - type.begin);
    if (t.empty() || t.front() != '"') return false;  // not a string: replaced
    complete = t == R"("complete")";
  }
  if (complete && StatelessRules::is_cacheable_method(method)) {
    if (ttl.status == S::kFound) {
      std::string_view v = obj.substr(ttl.begin, ttl.end - ttl.begin);
      // A non-negative integer is kept; anything else is replaced.
      if (v.find_first_not_of("0123456789") != std::string_view::npos || v.size() > 18)
        return false;
    } else {
      add += (add.empty() ? "" : ",") + std::string(R"("ttlMs":)") + std::to_string(ttl_ms);
    }
    if (scope.status == S::kFound) {
      std::string_view v = obj.substr(scope.begin, scope.end - scope.begin);
      if (v != R"("public")" && v != R"("private")") return false;
    } else {
      add += (add.empty() ? "" : ",") + std::string(R"("cacheScope":)") + json_quote(cache_scope);
    }
  }
  if (add.empty()) return true;
  if (!type.empty) add += ",";  // `{}`: nothing follows what is added
  response.insert(res.begin + 1, add);
  return true;
}

}  // namespace

std::string StatelessRules::decorate_result(std::string_view method, std::string response,
                                            int64_t ttl_ms, std::string_view cache_scope) {
  if (decorate_by_splice(method, response, ttl_ms, cache_scope)) return response;
  auto j = ojson::parse(response, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("result") || !j["result"].is_object())
    return response;
  ojson& r = j["result"];
  if (!r.contains("resultType") || !r["resultType"].is_string()) r["resultType"] = "complete";
  if (r["resultType"] == "complete" && is_cacheable_method(method)) {
    if (!r.contains("ttlMs") || !r["ttlMs"].is_number_integer() || r["ttlMs"].get<int64_t>() < 0)
      r["ttlMs"] = ttl_ms;
    if (!r.contains("cacheScope") || !(r["cacheScope"] == "public" || r["cacheScope"] == "private"))
      r["cacheScope"] = cache_scope;
  }
  return dump(j);
}

}  // namespace msb
