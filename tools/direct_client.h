// DirectClient: the floor of tools/bench: a legacy SSE client speaking to
// the upstream itself, keeping one upstream session (a GET stream and a
// keep-alive POST connection). Blocking on BlockingHttp like BridgeClient, so
// that both sides of bench's ratios pay the same (small) client cost; the
// client thread both posts and reads. One thread at a time per client.
#pragma once

#include <memory>
#include <string>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/deadline.h"

namespace msb_tools {

class DirectClient {
 public:
  // `cfg` must outlive the client.
  explicit DirectClient(const msb::UpstreamConfig& cfg);
  ~DirectClient();
  DirectClient(const DirectClient&) = delete;
  DirectClient& operator=(const DirectClient&) = delete;

  // Opens the session (endpoint), POSTs initialize, waits for its response
  // and POSTs notifications/initialized; 5 s per step, 10 s in all.
  bool initialize();
  // POSTs one request and waits (up to d) for the response with this id.
  bool call(const std::string& body, const std::string& id, msb::Deadline d);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace msb_tools
