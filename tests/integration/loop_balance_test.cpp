// Listener + LoopBalancer (--loop-packing) on two real loops: connections are
// packed on loop 0 at light load, idle ones move to loop 1 when loop 0 is
// busy, and come back when the load is light again; every request on a
// moving connection is still answered, in order, on the same socket.
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "mcp_sse_bridge/client_connection.h"
#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/listener.h"
#include "mcp_sse_bridge/request_policy.h"

using namespace std::chrono_literals;

namespace {

// Answers "ok <n>" (n: the request's X-N header) after spinning burn_us on
// its loop: CPU load that the loop's busy meter sees.
struct BurnHandler : msb::RequestHandler {
  std::atomic<int> burn_us{0};
  void handle(std::shared_ptr<msb::Exchange> ex, msb::HttpRequest&& req) override {
    auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(burn_us.load());
    while (std::chrono::steady_clock::now() < until) {
    }
    msb::HttpResponse r;
    r.content_type = "text/plain";
    r.body = "ok " + std::string(msb::find_header(req.headers, "x-n").value_or(""));
    ex->respond(std::move(r));
  }
  msb::HttpResponse refused(int status, std::string_view) override {
    msb::HttpResponse r;
    r.status = status;
    return r;
  }
  bool draining() const override { return false; }
};

// One keep-alive client connection (blocking, 5 s timeouts).
struct Client {
  int fd = -1;
  explicit Client(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ~Client() {
    if (fd >= 0) ::close(fd);
  }
  // One request; true when "ok <n>" came back on this socket.
  bool call(int n) {
    if (fd < 0) return false;
    std::string req = "GET /x HTTP/1.1\r\nHost: t\r\nX-N: " + std::to_string(n) + "\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return false;
    std::string want = "ok " + std::to_string(n), got;
    char buf[4096];
    for (int i = 0; i < 64; ++i) {  // bounded; each recv bounded by SO_RCVTIMEO
      size_t end = got.find("\r\n\r\n");
      if (end != std::string::npos && got.size() >= end + 4 + want.size())
        return got.compare(end + 4, want.size(), want) == 0 && got.size() == end + 4 + want.size();
      ssize_t k = ::recv(fd, buf, sizeof buf, 0);
      if (k <= 0) return false;
      got.append(buf, static_cast<size_t>(k));
    }
    return false;
  }
};

struct Rig {
  msb::EventLoops loops{2};
  msb::ConnLimits limits;
  BurnHandler handler;
  msb::Listener listener;
  explicit Rig(bool pack) : listener(loops, limits, 1000, handler, nullptr, nullptr, pack) {
    std::string why;
    REQUIRE(listener.bind("127.0.0.1", 0, &why));
    loops.start();
    listener.start();
  }
  ~Rig() {
    listener.stop_accepting();
    listener.close_all();
    loops.stop();
  }
};

// Runs `clients` in parallel, each calling until `done()` or `max` passes;
// returns the failed calls.
template <class Done>
int load(std::vector<std::unique_ptr<Client>>& clients, std::atomic<int>& seq, Done done,
         std::chrono::milliseconds max, std::chrono::milliseconds pause = 0ms) {
  std::atomic<int> failed{0};
  auto until = std::chrono::steady_clock::now() + max;
  std::vector<std::thread> ts;
  for (auto& c : clients)
    ts.emplace_back([&, cl = c.get()] {
      while (std::chrono::steady_clock::now() < until && !done()) {
        if (!cl->call(seq.fetch_add(1))) failed.fetch_add(1);
        if (pause.count() > 0) std::this_thread::sleep_for(pause);
      }
    });
  for (auto& t : ts) t.join();
  return failed.load();
}

}  // namespace

TEST_CASE("loop packing: light load on loop 0, busy loop 0 spreads to loop 1, light again packs back") {
  Rig rig(true);
  std::vector<std::unique_ptr<Client>> clients;
  std::atomic<int> seq{0};
  for (int i = 0; i < 8; ++i) {
    clients.push_back(std::make_unique<Client>(rig.listener.port()));
    REQUIRE(clients.back()->call(seq.fetch_add(1)));
  }
  CHECK(rig.listener.connections_on(0) == 8);
  CHECK(rig.listener.connections_on(1) == 0);

  // Loop 0 busy (3 ms of CPU per request, 8 clients): some move to loop 1.
  rig.handler.burn_us = 3000;
  int failed = load(clients, seq, [&] { return rig.listener.connections_on(1) >= 2; }, 5000ms);
  CHECK(failed == 0);
  // A little more load on both, then the counts.
  failed = load(clients, seq, [] { return false; }, 300ms);
  CHECK(failed == 0);
  CHECK(rig.listener.moves() >= 2);
  CHECK(rig.listener.connections_on(1) >= 2);
  CHECK(rig.listener.connections_on(0) + rig.listener.connections_on(1) == 8);
  CHECK(rig.listener.connections() == 8);

  // Light load: loop 1's connections come back to loop 0 at their next request.
  rig.handler.burn_us = 0;
  failed = load(clients, seq, [&] { return rig.listener.connections_on(1) == 0; }, 5000ms, 20ms);
  CHECK(failed == 0);
  CHECK(rig.listener.connections_on(1) == 0);
  CHECK(rig.listener.connections_on(0) == 8);
  CHECK(rig.listener.connections() == 8);
}

TEST_CASE("loop packing off: connections stay on the loop that accepted them") {
  Rig rig(false);
  std::vector<std::unique_ptr<Client>> clients;
  std::atomic<int> seq{0};
  for (int i = 0; i < 8; ++i) {
    clients.push_back(std::make_unique<Client>(rig.listener.port()));
    REQUIRE(clients.back()->call(seq.fetch_add(1)));
  }
  rig.handler.burn_us = 3000;
  CHECK(load(clients, seq, [] { return false; }, 600ms) == 0);
  CHECK(rig.listener.moves() == 0);
  CHECK(rig.listener.connections_on(0) + rig.listener.connections_on(1) == 8);
}
