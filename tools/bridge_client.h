// BridgeClient: the tools' Streamable HTTP client (bench, soak, scale), on one
// keep-alive connection to the bridge. Blocking (BlockingHttp: one send and
// one recv per exchange as a rule), so a client costs no thread of its own and
// as little CPU as DirectClient, bench's other side. One thread at a time per client.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "mcp_sse_bridge/deadline.h"

namespace msb_tools {

class BridgeClient {
 public:
  explicit BridgeClient(int port);  // http://127.0.0.1:<port>/mcp
  ~BridgeClient();
  BridgeClient(const BridgeClient&) = delete;
  BridgeClient& operator=(const BridgeClient&) = delete;

  // POSTs initialize (10 s bound); true on 200 with an Mcp-Session-Id.
  bool initialize();
  // POSTs a request; returns the final response text (the last `data:` line
  // of an SSE body, or the JSON body), "" on failure or a non-200. Bounded
  // by d; bodies over `max` bytes fail.
  std::string call(const std::string& body, msb::Deadline d, size_t max = 256 << 20);
  const std::string& sid() const { return sid_; }
  void set_sid(std::string s) { sid_ = std::move(s); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string sid_;
};

}  // namespace msb_tools
