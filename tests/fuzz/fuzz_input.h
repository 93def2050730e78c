// Shared by the request fuzz targets: the input format "Name: value" header
// lines, a blank line ("\n\n"), then the body.
#pragma once

#include <string>
#include <string_view>

#include "mcp_sse_bridge/request_policy.h"

namespace fuzz {

struct Request {
  msb::HeaderList headers;  // views into the input
  std::string body;
};

inline Request split_request(std::string_view in) {
  Request r;
  size_t split = in.find("\n\n");
  std::string_view head = in.substr(0, split);
  if (split != std::string_view::npos) r.body = std::string(in.substr(split + 2));
  while (!head.empty()) {
    size_t nl = head.find('\n');
    std::string_view line = head.substr(0, nl);
    head.remove_prefix(nl == std::string_view::npos ? head.size() : nl + 1);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    r.headers.push_back({line.substr(0, colon), value});
  }
  return r;
}

}  // namespace fuzz
