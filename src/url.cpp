#include "mcp_sse_bridge/url.h"
#include "mcp_sse_bridge/text_util.h"

#include <algorithm>
#include <cctype>
#include <vector>

namespace msb {

namespace {
int default_port(std::string_view scheme) { return scheme == "https" ? 443 : 80; }
bool set_why(std::string* why, const char* w) {
  if (why) *why = w;
  return false;
}

// RFC 3986 5.2.4 remove_dot_segments on a path (no query).
std::string remove_dots(std::string_view path) {
  std::vector<std::string_view> out;
  bool absolute = !path.empty() && path.front() == '/';
  size_t i = absolute ? 1 : 0;
  bool trailing = false;
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view seg = path.substr(i, j - i);
    trailing = false;
    if (seg == ".") {
      trailing = true;
    } else if (seg == "..") {
      if (!out.empty()) out.pop_back();
      trailing = true;
    } else {
      out.push_back(seg);
    }
    i = j + 1;
  }
  std::string r = absolute ? "/" : "";
  for (size_t k = 0; k < out.size(); ++k) {
    if (k) r += '/';
    r += out[k];
  }
  if (trailing && (r.empty() || r.back() != '/')) r += '/';
  return r.empty() ? "/" : r;
}
}  // namespace

std::string Url::origin() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return scheme + "://" + h + ":" + std::to_string(port);
}

std::string Url::host_header() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != default_port(scheme)) h += ":" + std::to_string(port);
  return h;
}

std::optional<Url> parse_url(std::string_view s, std::string* why) {
  Url u;
  auto sep = s.find("://");
  if (sep == std::string_view::npos) return set_why(why, "not an absolute URL (no scheme://)"), std::nullopt;
  u.scheme = lower(s.substr(0, sep));
  if (u.scheme != "http" && u.scheme != "https")
    return set_why(why, "scheme must be http or https"), std::nullopt;
  for (char c : s)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      return set_why(why, "URL contains whitespace or control characters"), std::nullopt;
  std::string_view rest = s.substr(sep + 3);
  if (auto hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  size_t auth_end = rest.find_first_of("/?");
  std::string_view auth = rest.substr(0, auth_end);
  std::string_view target = auth_end == std::string_view::npos ? "" : rest.substr(auth_end);
  if (auth.find('@') != std::string_view::npos)
    return set_why(why, "userinfo in URLs is not supported"), std::nullopt;
  std::string_view host, port;
  if (!auth.empty() && auth.front() == '[') {
    auto rb = auth.find(']');
    if (rb == std::string_view::npos) return set_why(why, "unterminated IPv6 literal"), std::nullopt;
    host = auth.substr(1, rb - 1);
    std::string_view after = auth.substr(rb + 1);
    if (!after.empty()) {
      if (after.front() != ':') return set_why(why, "junk after IPv6 literal"), std::nullopt;
      port = after.substr(1);
    }
  } else {
    auto colon = auth.rfind(':');
    host = auth.substr(0, colon);
    if (colon != std::string_view::npos) port = auth.substr(colon + 1);
  }
  if (host.empty()) return set_why(why, "empty host"), std::nullopt;
  u.host = lower(host);
  if (!port.empty()) {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos)
      return set_why(why, "invalid port"), std::nullopt;
    int p = std::stoi(std::string(port));
    if (p < 1 || p > 65535) return set_why(why, "port out of range"), std::nullopt;
    u.port = p;
  } else {
    u.port = default_port(u.scheme);
  }
  if (target.empty()) {
    u.target = "/";
  } else if (target.front() == '?') {
    u.target = "/" + std::string(target);
  } else {
    u.target = std::string(target);
  }
  return u;
}

std::optional<Url> resolve_url(const Url& base, std::string_view ref) {
  if (ref.find("://") != std::string_view::npos && ref.find("://") < ref.find_first_of("/?"))
    return parse_url(ref);
  if (ref.substr(0, 2) == "//") return parse_url(base.scheme + ":" + std::string(ref));
  for (char c : ref)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return std::nullopt;
  if (auto hash = ref.find('#'); hash != std::string_view::npos) ref = ref.substr(0, hash);
  Url u = base;
  std::string_view base_path = std::string_view(base.target).substr(0, base.target.find('?'));
  if (ref.empty()) return u;
  if (ref.front() == '?') {
    u.target = std::string(base_path) + std::string(ref);
    return u;
  }
  std::string_view path = ref.substr(0, ref.find('?'));
  std::string_view query = ref.size() > path.size() ? ref.substr(path.size()) : "";
  std::string merged;
  if (path.front() == '/') {
    merged = std::string(path);
  } else {
    auto slash = base_path.rfind('/');
    merged = std::string(base_path.substr(0, slash + 1)) + std::string(path);
  }
  u.target = remove_dots(merged) + std::string(query);
  return u;
}

std::string redact_query(std::string_view url) {
  auto q = url.find_first_of("?#");
  if (q == std::string_view::npos) return std::string(url);
  std::string out(url.substr(0, q));
  if (url[q] == '?') out += "?REDACTED";
  return out;
}

bool same_origin(const Url& a, const Url& b) {
  return a.scheme == b.scheme && a.host == b.host && a.port == b.port;
}

}  // namespace msb
