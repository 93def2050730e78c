// Listener: accepts client connections on every event loop (one
// SO_REUSEPORT socket per loop, so the kernel spreads connections and no
// connection crosses a thread), applies --max-connections (above it: 503 +
// Retry-After at once, then close), and starts a ClientConnection (TLS when
// configured). Keeps each loop's connections for drain and stop.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "mcp_sse_bridge/http_exchange.h"

namespace msb {

class EventLoops;
class Metrics;
class TlsContext;
struct ConnLimits;

class Listener {
 public:
  Listener(EventLoops& loops, const ConnLimits& limits, int max_connections, RequestHandler& handler,
           Metrics* metrics, std::shared_ptr<const TlsContext> tls);
  ~Listener();

  // Binds host:port (0 = any free port) on every loop. False with a reason.
  bool bind(const std::string& host, int port, std::string* why);
  int port() const { return port_; }
  // Starts accepting (the loops must be running or about to run).
  void start();
  // Closes the listening sockets; waits (bounded) until every loop did.
  void stop_accepting();
  // Closes idle connections now and the others after their current response.
  void drain();
  // Closes every connection now (their calls see the client gone).
  void close_all();
  int64_t connections() const { return connections_.load(); }

 private:
  struct PerLoop;
  EventLoops& loops_;
  const ConnLimits& limits_;
  const int max_connections_;
  RequestHandler& handler_;
  Metrics* metrics_;
  std::shared_ptr<const TlsContext> tls_;
  std::vector<std::unique_ptr<PerLoop>> per_loop_;
  std::atomic<int64_t> connections_{0};
  int port_ = -1;
};

}  // namespace msb
