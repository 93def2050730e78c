// Listener: accepts client connections on every event loop (one
// SO_REUSEPORT socket per loop), applies --max-connections (above it: 503 +
// Retry-After at once, then close), and starts a ClientConnection (TLS when
// configured) on the loop the LoopBalancer picks (--loop-packing; off: the
// loop that accepted it, as the kernel spread them). With packing, an idle
// plain connection may move to another loop when its next request starts
// (socket and bytes read so far posted to that loop): packed on loop 0 at
// light load, spread under load. Keeps each loop's connections for drain and
// stop.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "mcp_sse_bridge/http_exchange.h"
#include "mcp_sse_bridge/loop_balancer.h"

namespace msb {

class ClientConnection;
class EventLoops;
class NetStream;
class Metrics;
class TlsContext;
struct ConnLimits;

class Listener {
 public:
  Listener(EventLoops& loops, const ConnLimits& limits, int max_connections, RequestHandler& handler,
           Metrics* metrics, std::shared_ptr<const TlsContext> tls, bool pack = true);
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
  // Connections on loop i right now (approximate from other threads).
  int64_t connections_on(int i) const;
  uint64_t moves() const { return moves_.load(std::memory_order_relaxed); }

 private:
  struct PerLoop;
  // Starts serving `s` on p's loop (p's thread).
  void serve_on(PerLoop* p, std::unique_ptr<NetStream> s, std::string first, int served);
  // Moves a descriptor to loop `to` and serves it there (any thread).
  void post_to(int to, int fd, std::string first, int served);
  bool move(PerLoop* p, ClientConnection* c, std::string_view first);
  EventLoops& loops_;
  const ConnLimits& limits_;
  const int max_connections_;
  RequestHandler& handler_;
  Metrics* metrics_;
  std::shared_ptr<const TlsContext> tls_;
  std::vector<std::unique_ptr<PerLoop>> per_loop_;
  std::atomic<int64_t> connections_{0};
  std::atomic<uint64_t> moves_{0};
  std::unique_ptr<LoopBalancer> balancer_;  // null: --loop-packing off, or one loop
  int port_ = -1;
  bool v6_ = false;
};

}  // namespace msb
