#include "bridge_client.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "mcp_sse_bridge/upstream_connection.h"
#include "mcp_sse_bridge/url.h"
#include "tool_common.h"

namespace msb_tools {

namespace asio = boost::asio;

namespace {

struct Reply {
  int status = 0;  // 0: no response head
  std::string session_id;
  std::string body;
  bool body_ok = false;
  bool done = false;
};

// One POST and, on a 200, its whole body.
asio::awaitable<void> exchange(msb::UpstreamConnection* conn, const msb::Url* origin,
                               std::string headers, const std::string* body, msb::Deadline d,
                               size_t max, Reply* out) {
  auto head = co_await conn->request(*origin, "POST", origin->target, headers, *body, d);
  if (head) {
    out->status = head->status;
    out->session_id = head->header("mcp-session-id");
    if (head->status == 200) {
      auto b = co_await conn->read_full_body(max, d);
      if (b) {
        out->body = std::move(*b);
        out->body_ok = true;
      }
    }
  }
  out->done = true;
}

std::string headers_for(const std::string& sid) {
  std::string h =
      "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n";
  if (!sid.empty()) h += "Mcp-Session-Id: " + sid + "\r\n";
  return h;
}

}  // namespace

struct BridgeClient::Impl {
  explicit Impl(int port)
      : origin(*msb::parse_url("http://127.0.0.1:" + std::to_string(port) + "/mcp")),
        conn(io.get_executor(), nullptr) {}

  // Runs one exchange on this thread until it is done (not until the
  // io_context is out of work: a timer may stay armed between requests).
  Reply post(const std::string& sid, const std::string& body, msb::Deadline d, size_t max) {
    Reply r;
    io.restart();
    asio::co_spawn(io, exchange(&conn, &origin, headers_for(sid), &body, d, max, &r),
                   asio::detached);
    while (!r.done && io.run_one() > 0) {
    }
    return r;
  }

  asio::io_context io{1};
  msb::Url origin;
  msb::UpstreamConnection conn;
};

BridgeClient::BridgeClient(int port) : impl_(std::make_unique<Impl>(port)) {}
BridgeClient::~BridgeClient() = default;

bool BridgeClient::initialize() {
  Reply r = impl_->post("", kInit, msb::Deadline::after(std::chrono::seconds(10)), 1 << 20);
  if (r.status != 200) return false;
  sid_ = r.session_id;
  return r.body_ok && !sid_.empty();
}

std::string BridgeClient::call(const std::string& body, msb::Deadline d, size_t max) {
  Reply r = impl_->post(sid_, body, d, max);
  if (r.status != 200 || !r.body_ok) return {};
  // Last `data:` line of the SSE body.
  std::string& s = r.body;
  auto pos = s.rfind("\ndata: ");
  if (pos == std::string::npos) return s.rfind("data: ", 0) == 0 ? s.substr(6) : s;
  auto end = s.find('\n', pos + 7);
  return s.substr(pos + 7, end == std::string::npos ? std::string::npos : end - pos - 7);
}

}  // namespace msb_tools
