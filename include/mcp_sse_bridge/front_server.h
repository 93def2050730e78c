// FrontServer: the client side. Serves MCP Streamable HTTP (revisions
// 2025-03-26, 2025-06-18, 2025-11-25) on one endpoint and hands each client
// request to the Forwarder.
//
// cpp-httplib is hidden behind this class: it is the only bridge translation
// unit that includes httplib.h.
#pragma once

#include <memory>
#include <string>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/forwarder.h"
#include "mcp_sse_bridge/request_policy.h"

namespace msb {

class FrontServer {
 public:
  explicit FrontServer(Config cfg);
  ~FrontServer();
  FrontServer(const FrontServer&) = delete;
  FrontServer& operator=(const FrontServer&) = delete;

  // Binds the listening socket. Returns false with a reason on failure.
  bool bind(std::string* why);
  // The bound port (after bind()).
  int port() const;
  // Serves until stop(); blocks the calling thread.
  void run();
  // bind() + run() on a background thread; returns once accepting (bounded by 5 s).
  bool start(std::string* why);
  // Stops accepting; in-flight calls are answered with a shutting_down error.
  // Joins the background thread if start() made one. Idempotent.
  void stop();
  // Graceful shutdown (SIGTERM): stops accepting connections, turns /readyz
  // to 503, answers new requests on open connections with shutting_down,
  // lets in-flight calls finish for up to `timeout`, then stop(): the rest
  // are answered with shutting_down. Returns the calls cut short.
  int drain(Duration timeout);
  bool draining() const;

  const Forwarder& forwarder() const;
  const Config& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace msb
