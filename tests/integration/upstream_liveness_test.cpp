// Integration tests of upstream liveness (#11): every upstream wait has a
// bound that fits its job and is woken by cancellation; a dead or dying
// upstream session costs the client as little as possible.
#include <netinet/tcp.h>

#include "harness.h"

namespace {

int64_t failures_of(int port, const std::string& kind, const std::string& phase) {
  return static_cast<int64_t>(
      series(scrape(port), "mcp_bridge_failures_total{kind=\"" + kind + "\",phase=\"" + phase + "\"}"));
}

}  // namespace

TEST_CASE("liveness: a POST whose response head never comes fails at --post-timeout, not the request timeout") {
  Harness h({}, [](msb::Config& c) {
    c.upstream.post_timeout = 500ms;
    c.upstream.request_timeout = 5000ms;
  });
  std::string sid = h.initialize();
  h.faults().post_hang = true;
  auto r = h.call_tool(sid, 1, "echo", {{"text", "x"}});
  check_bridge_error(r, 1, "upstream_unresponsive", "request");
  CHECK(r.ms >= 450);
  CHECK(r.ms < 1500);
  CHECK(r.last()["error"]["message"].get<std::string>().find("--post-timeout") != std::string::npos);
  h.faults().post_hang = false;
  check_recovers(h, sid);
}

TEST_CASE("liveness: a client that leaves while a POST hangs ends the call at once") {
  Harness h({}, [](msb::Config& c) {
    c.upstream.post_timeout = 8000ms;
    c.upstream.request_timeout = 8000ms;
  });
  std::string sid = h.initialize();
  h.faults().post_hang = true;
  int fd = raw_post(h.port(), sid,
                    R"({"jsonrpc":"2.0","id":"gone","method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}})");
  REQUIRE(wait_for([&] { return series(scrape(h.port()), "mcp_bridge_inflight_calls") == 1; }, 2000ms));
  std::this_thread::sleep_for(200ms);  // the POST is now waiting for its head
  auto t0 = SteadyClock::now();
  close(fd);
  CHECK(wait_for([&] { return series(scrape(h.port()), "mcp_bridge_inflight_calls") == 0; }, 1500ms));
  CHECK(ms_since(t0) < 1500);
  CHECK(h.bridge().forwarder().stats().cancelled.load() == 1);
  h.faults().post_hang = false;
}

TEST_CASE("liveness: a warm session that went silent is pinged before use; the call moves to a fresh one") {
  Harness h({}, [](msb::Config& c) {
    c.loop_threads = 1;  // the warm pool is per loop
    c.upstream.pool.size = 4;
    c.upstream.idle_probe_after = 100ms;
    c.upstream.idle_probe_timeout = 300ms;
  });
  std::string sid = h.initialize();
  auto first = h.call_tool(sid, 1, "echo", {{"text", "one"}});
  CHECK(text_of(first.last()) == "one");
  REQUIRE(wait_for([&] { return h.bridge().forwarder().pool_stats().idle.load() >= 1; }, 3000ms));
  std::this_thread::sleep_for(200ms);
  int opened = h.upstream().sessions_opened();
  h.upstream().silence_sessions();  // the pooled session's path dies silently
  auto second = h.call_tool(sid, 2, "echo", {{"text", "two"}});
  CHECK(text_of(second.last()) == "two");
  CHECK(second.ms >= 250);   // the probe's bound was spent
  CHECK(second.ms < 2000);
  CHECK(h.upstream().sessions_opened() > opened);
}

TEST_CASE("liveness: a 404 from a session whose stream just ended is retried on a fresh session") {
  Harness h;
  std::string sid = h.initialize();
  h.faults().drop_then_404 = 1;  // the stream ends first, then the POST gets 404
  auto r = h.call_tool(sid, 5, "echo", {{"text", "survived"}});
  CHECK(text_of(r.last()) == "survived");
  CHECK(h.bridge().forwarder().stats().retries.load() == 1);
}

TEST_CASE("liveness: a connect that times out is not retried (the path is dead; a retry doubles the wait)") {
  BlackholeListener hole;
  Harness h({}, [&](msb::Config& c) {
    c.upstream.sse_url = *msb::parse_url("http://127.0.0.1:" + std::to_string(hole.port()) + "/sse");
    c.upstream.connect_timeout = 600ms;
    c.serve_stale_initialize = false;
  });
  auto r = h.post(init_body(), "");
  check_bridge_error(r, 0, "upstream_unreachable", "connect");
  CHECK(r.last()["error"]["message"].get<std::string>().find("--connect-timeout") != std::string::npos);
  CHECK(r.ms >= 550);
  CHECK(r.ms < 1100);  // one connect, not two
  CHECK(h.bridge().forwarder().stats().retries.load() == 0);
}

TEST_CASE("liveness: a client that leaves during setup is a cancellation, not a deadline, and is not retried") {
  Harness h({}, [](msb::Config& c) {
    c.upstream.endpoint_timeout = 4000ms;
    c.upstream.request_timeout = 6000ms;
  });
  std::string sid = h.initialize();
  h.faults().delay_endpoint_ms = 2500;
  int fd = raw_post(h.port(), sid,
                    R"({"jsonrpc":"2.0","id":"early","method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}})");
  REQUIRE(wait_for([&] { return series(scrape(h.port()), "mcp_bridge_inflight_calls") == 1; }, 2000ms));
  std::this_thread::sleep_for(200ms);  // waiting for `endpoint`
  auto t0 = SteadyClock::now();
  close(fd);
  CHECK(wait_for([&] { return series(scrape(h.port()), "mcp_bridge_inflight_calls") == 0; }, 1500ms));
  CHECK(ms_since(t0) < 1500);
  std::string m = scrape(h.port());
  CHECK(series(m, R"(mcp_bridge_upstream_session_failures_total{phase="endpoint"})") == 0);
  CHECK(series(m, R"(mcp_bridge_requests_total{method="tools/call",outcome="cancelled"})") == 1);
  CHECK(failures_of(h.port(), "deadline_exceeded", "endpoint") <= 0);
  CHECK(h.bridge().forwarder().stats().retries.load() == 0);
  h.faults().delay_endpoint_ms = 0;
}

TEST_CASE("liveness: upstream sockets carry TCP keepalive and TCP_USER_TIMEOUT") {
  // The kernel notices a vanished peer only with these set; the network
  // suite (tests/network) shows the effect on a real path. The bridge's
  // upstream sockets of a warm session (its GET and POST connections) are
  // found among this process's fds by their peer: the upstream's port.
  Harness h({}, [](msb::Config& c) {
    c.loop_threads = 1;
    c.upstream.pool.size = 2;
    c.upstream.tcp_keepalive = 3000ms;
    c.upstream.tcp_user_timeout = 7000ms;
  });
  h.initialize();
  REQUIRE(wait_for([&] { return h.bridge().forwarder().pool_stats().idle.load() >= 1; }, 3000ms));
  const int upstream_port = h.cfg().upstream.sse_url.port;
  int found = 0;
  for (int fd = 0; fd < 65536; ++fd) {
    sockaddr_in peer{};
    socklen_t pl = sizeof peer;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0 || peer.sin_family != AF_INET ||
        ntohs(peer.sin_port) != upstream_port)
      continue;
    ++found;
    int on = 0, idle = 0, cnt = 0;
    unsigned ut = 0;
    socklen_t l = sizeof on;
    ::getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &l);
    l = sizeof idle;
    ::getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, &l);
    l = sizeof cnt;
    ::getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, &l);
    l = sizeof ut;
    ::getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, &l);
    CAPTURE(fd);
    CHECK(on == 1);
    CHECK(idle == 3);
    CHECK(cnt == 3);
    CHECK(ut == 7000);
  }
  CHECK(found >= 2);  // the warm session's GET stream and its POST connection
}

TEST_CASE("deadlines: a batch shares one deadline from the request's arrival") {
  Harness h({}, [](msb::Config& c) {
    c.upstream.request_timeout = 1500ms;
    c.upstream.max_request_timeout = 1500ms;
  });
  std::string sid = h.initialize();
  // Three 1 s calls in one POST, answered in order: without a shared bound
  // they would take 3 s; with it the second is cut at 1.5 s and the third
  // is refused at once.
  std::string batch = R"([{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":1000}}},)"
                      R"({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":1000}}},)"
                      R"({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":1000}}}])";
  auto r = h.post(batch, sid, /*sse=*/false);
  REQUIRE(r.messages.size() == 3);
  CHECK(text_of(r.messages[0]) == "slept 1000 ms");
  CHECK(r.messages[1]["error"]["data"]["bridge"]["kind"] == "deadline_exceeded");
  CHECK(r.messages[2]["error"]["data"]["bridge"]["kind"] == "deadline_exceeded");
  CHECK(r.ms < 2200);
}

TEST_CASE("admission: initialize counts against --max-inflight (503 with its id)") {
  Harness h({}, [](msb::Config& c) {
    c.max_inflight = 1;
    c.upstream.request_timeout = 5000ms;
  });
  std::string sid = h.initialize();
  std::thread held([&] { h.call_tool(sid, "held", "sleep", {{"ms", 1500}}); });
  REQUIRE(wait_for([&] { return series(scrape(h.port()), "mcp_bridge_inflight_calls") == 1; }, 2000ms));
  auto r = h.post(init_body(), "");
  CHECK(r.status == 503);
  REQUIRE(r.messages.size() == 1);
  CHECK(r.last()["id"] == 0);
  held.join();
  CHECK(h.post(init_body(), "").status == 200);
}

TEST_CASE("shutdown is bounded: a client that stopped reading its response does not hold stop()") {
  Harness h({}, [](msb::Config& c) { c.client_write_timeout = 30000ms; });
  std::string sid = h.initialize();
  RawConn stuck(h.port());
  REQUIRE(stuck.connected());
  std::string body = R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"big","arguments":{"bytes":33554432}}})";
  REQUIRE(stuck.send("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json, text/event-stream\r\n"
                     "Content-Type: application/json\r\nMcp-Session-Id: " + sid +
                     "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  // The bridge fills the socket buffers and blocks writing to this client.
  std::this_thread::sleep_for(1500ms);
  auto t0 = SteadyClock::now();
  h.bridge().stop();
  CHECK(ms_since(t0) < 4000);
}

TEST_CASE("limits: a burst of connections above --max-connections: each one is answered 503 at once") {
  Harness h({}, [](msb::Config& c) {
    c.max_connections = 4;
    c.max_inflight = 3;
    c.client_read_timeout = 8000ms;
  });
  auto hold = hold_connections(h.port(), 4);
  // Many at once: refusals are written by the accepting loop, never queued.
  std::vector<std::unique_ptr<RawConn>> burst;
  for (int i = 0; i < 64; ++i) burst.push_back(std::make_unique<RawConn>(h.port()));
  auto t0 = SteadyClock::now();
  int answered = 0;
  auto until = t0 + 3000ms;  // one bound for the whole burst
  for (auto& c : burst) {
    bool closed = false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - SteadyClock::now());
    std::string resp = c->read_until_close(std::max(left, std::chrono::milliseconds(1)), &closed);
    if (resp.rfind("HTTP/1.1 503", 0) == 0 && closed) ++answered;
  }
  CHECK(answered == 64);
}
