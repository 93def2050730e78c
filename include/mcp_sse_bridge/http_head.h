// HttpHead: the status line and headers of one upstream HTTP/1.1 response,
// as UpstreamConnection::request() returns them, and the bound on its size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace msb {

struct HttpHead {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  bool chunked = false;
  std::optional<uint64_t> content_length;
  bool keep_alive = true;

  // The first value of the header `lower_name`; "" when absent.
  std::string header(std::string_view lower_name) const {
    for (auto& [k, v] : headers)
      if (k == lower_name) return v;
    return {};
  }
};

// A response head larger than this is a protocol error.
inline constexpr size_t kMaxHeadBytes = 64 * 1024;

}  // namespace msb
