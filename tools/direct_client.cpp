#include "direct_client.h"

#include <chrono>
#include <deque>

#include "blocking_http.h"
#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/sse_parser.h"
#include "mcp_sse_bridge/url.h"
#include "tool_common.h"

namespace msb_tools {

using namespace std::chrono_literals;

// The GET stream and the POST connection, both BlockingHttp: per call one
// send and one recv for the POST's 202, one recv (or more) for the event.
struct DirectClient::Impl {
  explicit Impl(const msb::UpstreamConfig& cfg)
      : url(cfg.sse_url),
        sse(url.host, url.port),
        post_conn(url.host, url.port),
        parser(cfg.max_message_size) {}

  bool open(Deadline d) {
    BlockingHttp::Head h;
    if (!sse.request("GET", url.target, "Accept: text/event-stream\r\nCache-Control: no-cache\r\n",
                     {}, d, h) ||
        h.status != 200)
      return false;
    while (endpoint.empty())
      if (!pump(d)) return false;
    return true;
  }

  // Reads one more piece of the stream and parses it.
  bool pump(Deadline d) {
    piece.clear();
    if (sse.read_body(piece, d) != 0) return false;  // failed, or the stream ended
    return parser.feed(piece, [&](msb::SseEvent& ev) {
      if (ev.type == "endpoint") {
        if (auto u = msb::resolve_url(url, ev.data)) endpoint = u->target;
      } else if (ev.type == "message") {
        inbox.push_back(std::move(ev.data));
      }
    });
  }

  bool post(std::string_view body, Deadline d) {
    BlockingHttp::Head h;
    if (!post_conn.request("POST", endpoint, "Content-Type: application/json\r\n", body, d, h))
      return false;
    reply.clear();
    if (!post_conn.read_full_body(reply, 64 * 1024, d)) return false;
    return h.status >= 200 && h.status <= 299;
  }

  bool wait_for(const std::string& id, Deadline d) {
    for (;;) {
      while (!inbox.empty()) {
        msb::Message m;
        bool ok = msb::parse_message(std::move(inbox.front()), m);
        inbox.pop_front();
        if (ok && m.kind == msb::MsgKind::kResponse && m.id == id) return true;
      }
      if (!pump(d)) return false;
    }
  }

  msb::Url url;
  BlockingHttp sse;
  BlockingHttp post_conn;
  msb::SseParser parser;
  std::string endpoint;  // the POST target
  std::deque<std::string> inbox;
  std::string piece, reply;
};

DirectClient::DirectClient(const msb::UpstreamConfig& cfg) : impl_(std::make_unique<Impl>(cfg)) {}

DirectClient::~DirectClient() = default;

bool DirectClient::initialize() {
  auto all = Deadline::after(10s);
  if (!impl_->open(Deadline::earliest(all, Deadline::after(5s)))) return false;
  if (!impl_->post(kInit, Deadline::earliest(all, Deadline::after(5s)))) return false;
  if (!impl_->wait_for("0", Deadline::earliest(all, Deadline::after(5s)))) return false;
  return impl_->post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})",
                     Deadline::earliest(all, Deadline::after(5s)));
}

bool DirectClient::call(const std::string& body, const std::string& id, Deadline d) {
  return impl_->post(body, d) && impl_->wait_for(id, d);
}

}  // namespace msb_tools
