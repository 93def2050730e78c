// libFuzzer target: the client request handling that runs before any
// upstream work: Host/Origin guard, bearer auth, Accept / Content-Type /
// MCP-Protocol-Version checks, the upstream header allow-list, session id
// verification and the body's JSON-RPC parse. Input: header lines
// ("Name: value\n"), a blank line, then the body.
// Checks: nothing crashes; the headers built for the upstream never contain
// a line break inside a value, never a blocked header, and every refusal
// carries a 4xx status.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/request_policy.h"
#include "mcp_sse_bridge/session_token.h"
#include "fuzz_input.h"

namespace {

const msb::Config& config() {
  static const msb::Config cfg = [] {
    msb::Config c;
    c.listen_host = "127.0.0.1";
    c.forward_headers = {"Authorization", "X-Api-Key", "Traceparent", "Cookie", "Host"};
    c.allowed_origins = {"https://app.example.com"};
    c.auth_tokens = {"fuzz-token-0123456789abcdef"};
    c.upstream.static_headers = {"X-Static: yes"};
    return c;
  }();
  return cfg;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const msb::RequestPolicy policy(config());
  static msb::SessionTokens tokens("fuzz-secret-0123456789abcdef", 1000);
  auto [h, body] = fuzz::split_request(
      std::string_view(reinterpret_cast<const char*>(data), size));

  auto check = [](const std::optional<msb::Rejection>& r) {
    if (r && (r->status < 400 || r->status > 499 || r->message.empty())) std::abort();
  };
  check(policy.check_host_origin(h));
  check(policy.check_auth(h));
  bool sse = false;
  check(policy.check_post(h, &sse));
  std::string up;
  auto r = policy.upstream_headers(h, &up);
  check(r);
  if (!r) {
    std::string_view rest = up;
    while (!rest.empty()) {
      size_t end = rest.find("\r\n");
      if (end == std::string_view::npos) std::abort();  // every line ends in CRLF
      std::string_view line = rest.substr(0, end);
      if (line.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) std::abort();
      std::string_view name = line.substr(0, line.find(':'));
      if (msb::is_never_forwarded(name)) std::abort();
      rest.remove_prefix(end + 2);
    }
  }
  if (auto sid = msb::find_header(h, "Mcp-Session-Id")) (void)tokens.verify(std::string(*sid));
  (void)msb::parse_body(std::move(body));
  return 0;
}
