// FrontServer: the bridge's composition root. It builds, in the order a
// request flows,
//   Listener (accept, TLS, --max-connections)
//     → ClientConnection (HTTP/1.1 on an event loop; read/idle/write deadlines)
//     → Router (/mcp, /healthz, /readyz, /metrics)
//     → SessionHandler (the session era: initialize, calls, DELETE)
//     → Forwarder (one call: upstream setup, replay, relay; the Deadline)
// and owns their lifecycle: start, graceful drain, stop.
#pragma once

#include <memory>
#include <string>

#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/forwarder.h"

namespace msb {

class FrontServer {
 public:
  explicit FrontServer(Config cfg);
  ~FrontServer();
  FrontServer(const FrontServer&) = delete;
  FrontServer& operator=(const FrontServer&) = delete;

  // Binds the listening sockets. Returns false with a reason on failure.
  bool bind(std::string* why);
  // The bound port (after bind()).
  int port() const;
  // The event loops serving connections, and where the count came from
  // ("2 (--loop-threads)", "2 (2 CPUs in the affinity mask)").
  std::string loops() const;
  // Serves until stop(); blocks the calling thread.
  void run();
  // bind() (unless bound) and serve on the event loops; returns at once.
  bool start(std::string* why);
  // Stops accepting; in-flight calls are answered with a shutting_down error.
  // Idempotent; bounded (a client that stopped reading cannot hold it).
  void stop();
  // Graceful shutdown (SIGTERM): stops accepting connections, turns /readyz
  // to 503, answers new requests on open connections with shutting_down
  // (and Connection: close), lets in-flight calls finish for up to
  // `timeout`, then stop(): the rest are answered with shutting_down.
  // Returns the calls cut short.
  int drain(Duration timeout);
  bool draining() const;

  const Forwarder& forwarder() const;
  const Config& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace msb
