#include "bridge_client.h"

#include "blocking_http.h"
#include "tool_common.h"

namespace msb_tools {

namespace {

std::string headers_for(const std::string& sid) {
  std::string h =
      "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n";
  if (!sid.empty()) h += "Mcp-Session-Id: " + sid + "\r\n";
  return h;
}

}  // namespace

struct BridgeClient::Impl {
  explicit Impl(int port) : conn("127.0.0.1", port) {}
  BlockingHttp conn;
};

BridgeClient::BridgeClient(int port) : impl_(std::make_unique<Impl>(port)) {}
BridgeClient::~BridgeClient() = default;

bool BridgeClient::initialize() {
  BlockingHttp::Head h;
  auto d = msb::Deadline::after(std::chrono::seconds(10));
  if (!impl_->conn.request("POST", "/mcp", headers_for(""), kInit, d, h) || h.status != 200)
    return false;
  std::string body;
  if (!impl_->conn.read_full_body(body, 1 << 20, d)) return false;
  sid_ = h.session_id;
  return !sid_.empty();
}

std::string BridgeClient::call(const std::string& body, msb::Deadline d, size_t max) {
  BlockingHttp::Head h;
  if (!impl_->conn.request("POST", "/mcp", headers_for(sid_), body, d, h)) return {};
  std::string s;
  if (!impl_->conn.read_full_body(s, max, d) || h.status != 200) return {};
  // Last `data:` line of the SSE body.
  auto pos = s.rfind("\ndata: ");
  if (pos == std::string::npos) return s.rfind("data: ", 0) == 0 ? s.substr(6) : s;
  auto end = s.find('\n', pos + 7);
  return s.substr(pos + 7, end == std::string::npos ? std::string::npos : end - pos - 7);
}

}  // namespace msb_tools
