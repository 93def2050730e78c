// libFuzzer target: the SSE parser on hostile streams, sliced at arbitrary
// points (the first byte chooses the slice size), with a small event limit
// so that the over-limit path is reached too. Checks the invariants a caller
// relies on: every event's data is within the limit, and a failed parser
// stays failed.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "mcp_sse_bridge/sse_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t slice = 1 + data[0] % 17;
  const size_t limit = 256 + (size > 1 ? data[1] : 0) * 8;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  msb::SseParser p(limit);
  bool failed = false;
  for (size_t off = 0; off < in.size(); off += slice) {
    bool ok = p.feed(in.substr(off, slice), [&](msb::SseEvent& ev) {
      if (ev.data.size() > limit) std::abort();
    });
    if (failed && ok) std::abort();  // failure is sticky
    failed = !ok;
  }
  return 0;
}
