// Absolute http(s) URLs and RFC 3986 reference resolution, as far as the
// bridge needs them: the SSE URL from the command line and the `endpoint`
// URI a legacy server announces (usually relative, e.g. "/messages/?session_id=ab").
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace msb {

struct Url {
  std::string scheme;  // "http" or "https", lower case
  std::string host;    // lower case; IPv6 without brackets
  int port = 0;        // explicit or the scheme's default
  std::string target;  // path + optional "?query", never empty ("/" at least); no fragment

  std::string origin() const;     // "http://host:port"
  std::string host_header() const;  // "host[:port]" (port omitted when default)
  std::string str() const { return origin() + target; }
  bool tls() const { return scheme == "https"; }
};

// Parses an absolute http:// or https:// URL. Returns nullopt (and a reason in
// *why when given) for anything else: other schemes, userinfo, bad ports, spaces.
std::optional<Url> parse_url(std::string_view s, std::string* why = nullptr);

// Resolves `ref` (absolute URL, "//host/path", "/path", "path", "?query") against base.
std::optional<Url> resolve_url(const Url& base, std::string_view ref);

bool same_origin(const Url& a, const Url& b);

// `url` with its query replaced by "?REDACTED" (and any fragment dropped):
// how the configured upstream URL appears in error replies and logs, since a
// query often carries a credential (`/sse?api_key=...`).
std::string redact_query(std::string_view url);

}  // namespace msb
