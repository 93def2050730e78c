// HttpHead: the status line and headers of one upstream HTTP/1.1 response,
// as UpstreamConnection::request() returns them, and the bound on its size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "mcp_sse_bridge/text_util.h"

namespace msb {

struct HttpHead {
  int status = 0;
  // The headers as "name\0value\0" pairs, names lower-cased, in arrival
  // order, in one buffer (the parser admits no NUL in a name or a value).
  std::string fields;
  bool chunked = false;
  std::optional<uint64_t> content_length;
  bool keep_alive = true;
  int version = 11;  // 10 or 11 (HTTP/1.0, HTTP/1.1)

  void add(std::string_view name, std::string_view value) {
    for (char c : name) fields.push_back(ascii_lower(c));
    fields.push_back('\0');
    fields.append(value).push_back('\0');
  }
  // The first value of the header `lower_name`; "" when absent.
  std::string header(std::string_view lower_name) const {
    std::string_view rest = fields;
    while (!rest.empty()) {
      size_t n = rest.find('\0');
      size_t v = rest.find('\0', n + 1);
      if (n == std::string_view::npos || v == std::string_view::npos) break;
      if (rest.substr(0, n) == lower_name) return std::string(rest.substr(n + 1, v - n - 1));
      rest.remove_prefix(v + 1);
    }
    return {};
  }
};

// A response head larger than this is a protocol error.
inline constexpr size_t kMaxHeadBytes = 64 * 1024;

}  // namespace msb
