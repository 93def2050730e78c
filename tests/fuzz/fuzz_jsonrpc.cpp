// libFuzzer target: JSON-RPC classification of client bodies (single and
// batch) and of upstream messages, including the on-demand path for large
// messages (inputs are padded past 1 MiB when the first two bytes say so).
// Checks: a parse that succeeds yields messages whose kinds agree with their
// fields, and ids re-emit as valid JSON-RPC error envelopes.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/jsonrpc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 2, size - 2);
  // Two selector bytes (rarely both set by mutation) reach the large-message path.
  if (data[0] == 0xff && data[1] == 0xfe) text.append((1u << 20) + 1, ' ');
  auto r = msb::parse_body(text);
  if (r.ok) {
    if (r.messages.empty()) std::abort();
    for (auto& m : r.messages) {
      if (m.kind == msb::MsgKind::kRequest && (m.id.empty() || m.method.empty())) std::abort();
      if (m.kind == msb::MsgKind::kNotification && !m.id.empty()) std::abort();
      if (m.kind == msb::MsgKind::kRequest) {
        auto env = msb::jsonrpc_plain_error(m.id, -32000, "x");
        msb::Message back;
        if (!msb::parse_message(env, back) || back.kind != msb::MsgKind::kResponse || back.id != m.id)
          std::abort();
      }
    }
  } else if (r.error_code != -32700 && r.error_code != -32600) {
    std::abort();
  }
  // with_id's splice agrees with a parser: same members, the new id.
  if (text.size() < 65536) {
    auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_object()) {
      auto out = msb::with_id(text, "[7]");
      if (!out) std::abort();
      auto back = nlohmann::json::parse(*out, nullptr, false);
      j["id"] = nlohmann::json::array({7});
      if (back.is_discarded() || back != j) std::abort();
    }
  }
  msb::Message m;
  (void)msb::parse_message(std::move(text), m);
  return 0;
}
