// Integration tests of subscriptions/listen's resourceSubscriptions and
// profiles (#15 item 5), in front of the example legacy SSE server: updates
// for the asked URIs only, tagged; one upstream subscription shared by the
// listeners of a profile (unsubscribed when the last that asked leaves);
// replayed when the upstream restarts; left out of the acknowledgement when
// the upstream has no resources.subscribe; the per-request bound; a list
// change from one tenant's call never reaching another tenant's listener.
// And, skipped by default, the listen latency the README quotes.
#include <algorithm>
#include <cstdio>

#include "harness.h"

using namespace itest;

namespace {

json listen_body(json id, json notifications) {
  return {{"jsonrpc", "2.0"},
          {"id", std::move(id)},
          {"method", "subscriptions/listen"},
          {"params",
           {{"_meta",
             {{"io.modelcontextprotocol/protocolVersion", "2026-07-28"},
              {"io.modelcontextprotocol/clientCapabilities", json::object()},
              {"io.modelcontextprotocol/clientInfo", {{"name", "listen-test"}, {"version", "1"}}}}},
            {"notifications", std::move(notifications)}}}};
}

std::string modern_post(const json& body, const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  std::string b = body.dump();
  std::string r = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  "Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n"
                  "Mcp-Method: " + body["method"].get<std::string>() + "\r\n";
  if (body["params"].contains("name"))
    r += "Mcp-Name: " + body["params"]["name"].get<std::string>() + "\r\n";
  for (auto& [k, v] : extra) r += k + ": " + v + "\r\n";
  return r + "Content-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b;
}

// One subscriptions/listen stream read as a client does: the response head,
// then SSE messages out of the chunked body, each read bounded.
class Listen {
 public:
  Listen(int port, const json& id, json notifications,
         std::vector<std::pair<std::string, std::string>> headers = {})
  {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    std::string req = modern_post(listen_body(id, std::move(notifications)), headers);
    REQUIRE(::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
  }
  ~Listen() { close(); }
  Listen(const Listen&) = delete;
  Listen& operator=(const Listen&) = delete;
  // The next message, or null when none came within `within`.
  json next(std::chrono::milliseconds within) {
    auto end = SteadyClock::now() + within;
    for (;;) {
      if (!messages_.empty()) {
        json m = std::move(messages_.front());
        messages_.erase(messages_.begin());
        return m;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - SteadyClock::now());
      if (left.count() <= 0 || closed_) return nullptr;
      pollfd p{fd_, POLLIN, 0};
      if (fd_ < 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[8192];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;
        continue;
      }
      raw_.append(buf, static_cast<size_t>(n));
      parse();
    }
  }
  // The first message that satisfies `pred` within `within` (others skipped), or null.
  json next_matching(const std::function<bool(const json&)>& pred, std::chrono::milliseconds within) {
    auto end = SteadyClock::now() + within;
    while (SteadyClock::now() < end) {
      json m = next(std::chrono::duration_cast<std::chrono::milliseconds>(end - SteadyClock::now()));
      if (m.is_null()) return m;
      if (pred(m)) return m;
    }
    return nullptr;
  }
  int status() const { return status_; }
  const std::string& head() const { return head_; }
  const std::string& body() const { return body_; }
  // The client goes away (a reset, as a killed client's socket).
  void close() {
    if (fd_ < 0) return;
    linger lg{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    ::close(fd_);
    fd_ = -1;
  }

 private:
  void parse() {
    if (status_ == 0) {
      auto e = raw_.find("\r\n\r\n");
      if (e == std::string::npos) return;
      head_ = raw_.substr(0, e);
      raw_.erase(0, e + 4);
      if (head_.size() >= 12) status_ = std::atoi(head_.c_str() + 9);
      chunked_ = head_.find("Transfer-Encoding: chunked") != std::string::npos;
    }
    if (chunked_) {
      for (;;) {
        auto le = raw_.find("\r\n");
        if (le == std::string::npos) break;
        size_t n = std::strtoul(raw_.c_str(), nullptr, 16);
        if (raw_.size() < le + 2 + n + 2) break;
        body_.append(raw_, le + 2, n);
        raw_.erase(0, le + 2 + n + 2);
      }
    } else {
      body_ += raw_;
      raw_.clear();
    }
    for (;;) {
      auto e = body_.find("\n\n");
      if (e == std::string::npos) break;
      std::string block = body_.substr(0, e);
      body_.erase(0, e + 2);
      std::string data;
      size_t lp = 0;
      while (lp < block.size()) {
        size_t l = block.find('\n', lp);
        if (l == std::string::npos) l = block.size();
        std::string line = block.substr(lp, l - lp);
        lp = l + 1;
        if (line.rfind("data: ", 0) == 0) data += line.substr(6);
      }
      if (data.empty()) continue;  // a keepalive comment
      auto j = json::parse(data, nullptr, false);
      if (!j.is_discarded()) messages_.push_back(std::move(j));
    }
    // A JSON (non-SSE) answer: the whole body is one message.
    if (!chunked_ && head_.find("application/json") != std::string::npos && !body_.empty()) {
      auto j = json::parse(body_, nullptr, false);
      if (!j.is_discarded()) {
        messages_.push_back(std::move(j));
        body_.clear();
      }
    }
  }

  int fd_ = -1;
  std::string raw_, head_, body_;
  int status_ = 0;
  bool chunked_ = false, closed_ = false;
  std::vector<json> messages_;
};

const char* kSubId = "io.modelcontextprotocol/subscriptionId";

bool is_update_for(const json& m, const std::string& uri) {
  return m.value("method", "") == "notifications/resources/updated" && m.contains("params") &&
         m["params"].value("uri", "") == uri;
}

// The acknowledgement, the stream's first message.
json ack_of(Listen& l) {
  json a = l.next(3000ms);
  REQUIRE_MESSAGE(a.is_object(), "no acknowledgement; head: " << l.head());
  CHECK(a["method"] == "notifications/subscriptions/acknowledged");
  return a;
}

}  // namespace

TEST_CASE("listen resourceSubscriptions: updates for the asked URIs only, tagged, within 1 s; one upstream subscription per URI, unsubscribed when its last listener leaves") {
  Harness h;
  Listen l1(h.port(), "one", {{"resourceSubscriptions", {"example://a"}}});
  json a1 = ack_of(l1);
  CHECK(a1["params"]["notifications"] == json{{"resourceSubscriptions", {"example://a"}}});
  CHECK(a1["params"]["_meta"][kSubId] == "one");
  REQUIRE(wait_for([&] { return h.upstream().subscribed("example://a") == 1; }, 3000ms));

  // An update for the asked URI arrives within 1 s, tagged; another URI's does not.
  auto t0 = SteadyClock::now();
  CHECK(h.upstream().touch_resource("example://a") == 1);
  json u = l1.next_matching([](const json& m) { return is_update_for(m, "example://a"); }, 1000ms);
  REQUIRE(u.is_object());
  CHECK(ms_since(t0) < 1000);
  CHECK(u["params"]["_meta"][kSubId] == "one");
  h.upstream().touch_resource("example://b");
  CHECK(l1.next(300ms).is_null());

  // A second listener on the same URI (and another): the held session's
  // subscription to example://a is shared, not sent again.
  Listen l2(h.port(), 2, {{"resourceSubscriptions", {"example://b", "example://a"}}});
  json a2 = ack_of(l2);
  CHECK(a2["params"]["notifications"]["resourceSubscriptions"] == json{"example://a", "example://b"});
  CHECK(a2["params"]["_meta"][kSubId] == 2);
  REQUIRE(wait_for([&] { return h.upstream().subscribed("example://b") == 1; }, 3000ms));
  CHECK(h.upstream().subscribed("example://a") == 1);
  CHECK(h.upstream().subscribe_requests() == 2);  // a once, b once
  h.upstream().touch_resource("example://a");
  json u1 = l1.next_matching([](const json& m) { return is_update_for(m, "example://a"); }, 1000ms);
  json u2 = l2.next_matching([](const json& m) { return is_update_for(m, "example://a"); }, 1000ms);
  REQUIRE(u1.is_object());
  REQUIRE(u2.is_object());
  CHECK(u1["params"]["_meta"][kSubId] == "one");
  CHECK(u2["params"]["_meta"][kSubId] == 2);
  h.upstream().touch_resource("example://b");
  CHECK(l2.next_matching([](const json& m) { return is_update_for(m, "example://b"); }, 1000ms).is_object());
  CHECK(l1.next(300ms).is_null());

  // A lists-only listener keeps the profile's upstream session open.
  Listen l3(h.port(), "lists", {{"toolsListChanged", true}});
  CHECK(ack_of(l3)["params"]["notifications"] == json{{"toolsListChanged", true}});

  // The first listener of example://a leaves: the second still gets it.
  l1.close();
  std::this_thread::sleep_for(200ms);
  CHECK(h.upstream().unsubscribe_requests() == 0);
  CHECK(h.upstream().subscribed("example://a") == 1);
  h.upstream().touch_resource("example://a");
  CHECK(l2.next_matching([](const json& m) { return is_update_for(m, "example://a"); }, 1000ms).is_object());

  // The last listener of both URIs leaves: the upstream gets resources/unsubscribe
  // for each (its held session stays, for the lists-only listener).
  int streams = h.upstream().open_streams();
  l2.close();
  CHECK(wait_for([&] {
    return h.upstream().subscribed("example://a") == 0 && h.upstream().subscribed("example://b") == 0;
  }, 3000ms));
  CHECK(h.upstream().unsubscribe_requests() == 2);
  CHECK(h.upstream().open_streams() == streams);
  CHECK(h.upstream().touch_resource("example://a") == 0);
}

TEST_CASE("listen resourceSubscriptions: replayed when the upstream restarts; updates flow again") {
  Harness h;
  Listen l(h.port(), "r", {{"resourceSubscriptions", {"example://a"}}, {"toolsListChanged", true}});
  json a = ack_of(l);
  CHECK(a["params"]["notifications"]["resourceSubscriptions"] == json{"example://a"});
  REQUIRE(wait_for([&] { return h.upstream().subscribed("example://a") == 1; }, 3000ms));
  h.upstream().touch_resource("example://a");
  REQUIRE(l.next_matching([](const json& m) { return is_update_for(m, "example://a"); }, 1000ms).is_object());

  // A new server process: no session, no subscription, until the bridge's
  // held session re-opens and replays it.
  h.restart_upstream();
  CHECK(h.upstream().subscribed("example://a") == 0);
  REQUIRE(wait_for([&] { return h.upstream().subscribed("example://a") == 1; }, 8000ms));
  auto t0 = SteadyClock::now();
  CHECK(h.upstream().touch_resource("example://a") == 1);
  json u = l.next_matching([](const json& m) { return is_update_for(m, "example://a"); }, 1000ms);
  REQUIRE(u.is_object());
  CHECK(ms_since(t0) < 1000);
  CHECK(u["params"]["_meta"][kSubId] == "r");
  // The list changes the restarted server broadcasts flow too.
  h.upstream().broadcast("notifications/tools/list_changed");
  CHECK(l.next_matching([](const json& m) { return m.value("method", "") == "notifications/tools/list_changed"; },
                        1000ms)
            .is_object());
}

namespace {
// server/discover's capabilities.resources (fresh, then from the cache).
json discover_resources(Harness& h) {
  json d = {{"jsonrpc", "2.0"},
            {"id", "d"},
            {"method", "server/discover"},
            {"params",
             {{"_meta",
               {{"io.modelcontextprotocol/protocolVersion", "2026-07-28"},
                {"io.modelcontextprotocol/clientCapabilities", json::object()}}}}}};
  auto r = h.post(d.dump(), "", false, {{"MCP-Protocol-Version", "2026-07-28"}, {"Mcp-Method", "server/discover"}});
  REQUIRE(r.status == 200);
  REQUIRE(!r.messages.empty());
  return r.last().value(json::json_pointer("/result/capabilities/resources"), json());
}
}  // namespace

TEST_CASE("listen resourceSubscriptions: server/discover advertises resources.subscribe exactly when the upstream does") {
  Harness h;
  CHECK(discover_resources(h) == json{{"subscribe", true}});
  CHECK(discover_resources(h) == json{{"subscribe", true}});  // from the cache
  // A session-era initialize of the same version refreshes the same cache
  // entry: it still says what the upstream advertises.
  h.initialize();
  CHECK(discover_resources(h) == json{{"subscribe", true}});
  example::Options o;
  o.resource_subscribe = false;
  Harness plain(o);
  CHECK(discover_resources(plain) == json::object());
  CHECK(discover_resources(plain) == json::object());
}

TEST_CASE("listen resourceSubscriptions: left out of the acknowledgement when the upstream has no resources.subscribe") {
  example::Options o;
  o.resource_subscribe = false;
  Harness h(o);
  Listen l(h.port(), "n", {{"toolsListChanged", true}, {"resourceSubscriptions", {"example://a"}}});
  json a = ack_of(l);
  CHECK(a["params"]["notifications"] == json{{"toolsListChanged", true}});
  CHECK(a["params"]["_meta"][kSubId] == "n");
  // The stream stays open and carries what was honoured.
  h.upstream().broadcast("notifications/tools/list_changed");
  CHECK(l.next_matching([](const json& m) { return m.value("method", "") == "notifications/tools/list_changed"; },
                        1000ms)
            .is_object());
  CHECK(h.upstream().subscribe_requests() == 0);
  // A later listener is acknowledged at once with the same answer.
  Listen l2(h.port(), "n2", {{"resourceSubscriptions", {"example://a"}}});
  CHECK(ack_of(l2)["params"]["notifications"] == json::object());
}

TEST_CASE("listen resourceSubscriptions: with the upstream down, the listener is acknowledged (URIs left out) within the setup bounds") {
  Harness h;
  h.stop_upstream();  // connections refused: the held session's first open fails
  Listen l(h.port(), "down", {{"toolsListChanged", true}, {"resourceSubscriptions", {"example://a"}}});
  json a = ack_of(l);
  CHECK(a["params"]["notifications"] == json{{"toolsListChanged", true}});
  CHECK(a["params"]["_meta"][kSubId] == "down");
  // The upstream comes back: the held session keeps trying (backoff from
  // 0.5 s) and opens, and the list changes it broadcasts reach the listener
  // that came while it was down.
  h.restart_upstream();
  REQUIRE(wait_for([&] { return h.upstream().open_streams() >= 1; }, 8000ms));
  json u;
  for (int i = 0; i < 40 && !u.is_object(); ++i) {  // the stream opens before its initialize is answered
    h.upstream().broadcast("notifications/tools/list_changed");
    u = l.next_matching([](const json& m) { return m.value("method", "") == "notifications/tools/list_changed"; },
                        250ms);
  }
  CHECK(u.is_object());
}

TEST_CASE("listen resourceSubscriptions: a listener coming while the held session backs off is acknowledged at once") {
  // It waited for the held session's next attempt: seconds once the
  // backoff had grown (up to 15 s).
  Harness h;
  h.stop_upstream();
  Listen a(h.port(), "a", {{"resourceSubscriptions", {"example://a"}}});
  ack_of(a);
  std::this_thread::sleep_for(4000ms);  // attempts at ~0.5, 1.5, 3.5 s; the next ~3 s away
  auto t0 = SteadyClock::now();
  Listen b(h.port(), "b", {{"toolsListChanged", true}, {"resourceSubscriptions", {"example://b"}}});
  json ack = ack_of(b);
  CHECK(ms_since(t0) < 1000);
  CHECK(ack["params"]["notifications"] == json{{"toolsListChanged", true}});  // URIs left out, as for A
}

TEST_CASE("listen resourceSubscriptions: more than 256 URIs, or not strings, is a JSON-RPC error with the id") {
  Harness h;
  json many = json::array();
  for (int i = 0; i < 257; ++i) many.push_back("example://r" + std::to_string(i));
  Listen l(h.port(), "big", {{"resourceSubscriptions", many}});
  json e = l.next(3000ms);
  REQUIRE(e.is_object());
  CHECK(l.status() == 400);
  CHECK(e["id"] == "big");
  CHECK(e["error"]["code"] == -32602);
  CHECK(e["error"]["message"].get<std::string>().find("256") != std::string::npos);
  Listen bad(h.port(), 9, {{"resourceSubscriptions", {"example://a", 1}}});
  json e2 = bad.next(3000ms);
  REQUIRE(e2.is_object());
  CHECK(e2["id"] == 9);
  CHECK(e2["error"]["code"] == -32602);
  CHECK(h.upstream().subscribe_requests() == 0);
}

TEST_CASE("listen profiles: a list change from one tenant's call reaches that tenant's listeners only") {
  Harness h({}, [](msb::Config& c) { c.forward_headers = {"Authorization"}; });
  Listen la(h.port(), "a", {{"toolsListChanged", true}}, {{"Authorization", "Bearer tenant-a"}});
  Listen lb(h.port(), "b", {{"toolsListChanged", true}}, {{"Authorization", "Bearer tenant-b"}});
  ack_of(la);
  ack_of(lb);
  // Tenant A's call makes its upstream session announce a change (the
  // legacy server tells only that session).
  json call = {{"jsonrpc", "2.0"},
               {"id", 1},
               {"method", "tools/call"},
               {"params",
                {{"name", "list_changed"},
                 {"arguments", {{"kind", "tools"}}},
                 {"_meta",
                  {{"io.modelcontextprotocol/protocolVersion", "2026-07-28"},
                   {"io.modelcontextprotocol/clientCapabilities", json::object()}}}}}};
  httplib::Headers hd = {{"MCP-Protocol-Version", "2026-07-28"}, {"Mcp-Method", "tools/call"},
                         {"Mcp-Name", "list_changed"}, {"Authorization", "Bearer tenant-a"}};
  auto r = h.post(call.dump(), "", false, hd);
  REQUIRE(r.status == 200);
  REQUIRE(!r.messages.empty());
  CHECK(text_of(r.last()) == "sent");
  auto is_tools = [](const json& m) { return m.value("method", "") == "notifications/tools/list_changed"; };
  json got = la.next_matching(is_tools, 1000ms);
  REQUIRE(got.is_object());
  CHECK(got["params"]["_meta"][kSubId] == "a");
  CHECK(lb.next_matching(is_tools, 500ms).is_null());
}

TEST_CASE("listen streams end with their request's response when the bridge stops (graceful closure)") {
  // Before, the stream just ended: a client reads that as a dropped
  // subscription on every rolling restart (DESIGN §2.3).
  Harness h;
  Listen a(h.port(), "L1", {{"toolsListChanged", true}});
  Listen b(h.port(), 42, {{"resourcesListChanged", true}});
  ack_of(a);
  ack_of(b);
  std::thread stopper([&] { h.bridge().drain(msb::Duration(2000)); });
  std::vector<json> lasts;
  for (auto* l : {&a, &b})
    lasts.push_back(
        l->next_matching([](const json& m) { return m.contains("result") || m.contains("error"); }, 5000ms));
  stopper.join();
  for (auto& last : lasts) {
    REQUIRE(last.is_object());
    CHECK(last["result"]["resultType"] == "complete");
    CHECK(last["id"] == last["result"]["_meta"][kSubId]);
  }
  CHECK(a.next(100ms).is_null());
}

TEST_CASE("listen profiles: at most --max-listen-sessions upstream sessions for listen streams; calls keep theirs") {
  // Each distinct forwarded-header set held an upstream session, uncapped,
  // inside --max-upstream-sessions: a client choosing a header per listen
  // took every session and each call failed with bridge_overloaded.
  Harness h({}, [](msb::Config& c) {
    c.forward_headers = {"X-Tenant"};
    c.upstream.max_listen_sessions = 2;
    c.upstream.max_sessions = 4;
  });
  Listen t0(h.port(), "t0", {{"toolsListChanged", true}}, {{"X-Tenant", "t0"}});
  Listen t1(h.port(), "t1", {{"toolsListChanged", true}}, {{"X-Tenant", "t1"}});
  ack_of(t0);
  ack_of(t1);
  std::vector<std::unique_ptr<Listen>> more;
  for (int i = 2; i < 6; ++i) {
    std::string tenant = "t" + std::to_string(i);
    more.push_back(std::make_unique<Listen>(h.port(), tenant, json{{"toolsListChanged", true}},
                                            std::vector<std::pair<std::string, std::string>>{{"X-Tenant", tenant}}));
    json refused = more.back()->next(3000ms);
    CHECK(more.back()->status() == 503);
    CHECK(more.back()->head().find("Retry-After: 5") != std::string::npos);
    REQUIRE(refused.is_object());
    CHECK(refused["id"] == tenant);
    CHECK(refused["error"]["message"].get<std::string>().find("--max-listen-sessions") != std::string::npos);
  }
  Listen t0b(h.port(), "t0b", {{"toolsListChanged", true}}, {{"X-Tenant", "t0"}});  // shares t0's session
  ack_of(t0b);
  std::string sid = h.initialize();
  auto call = h.call_tool(sid, 1, "echo", {{"text", "still served"}});
  CHECK(text_of(call.last()) == "still served");
  // A profile whose listeners all left frees its place.
  t1.close();
  bool opened = false;
  for (int i = 0; i < 50 && !opened; ++i) {
    Listen t9(h.port(), "t9", {{"toolsListChanged", true}}, {{"X-Tenant", "t9"}});
    json first = t9.next(1000ms);
    opened = t9.status() == 200 && first.is_object() &&
             first.value("method", "") == "notifications/subscriptions/acknowledged";
    if (!opened) std::this_thread::sleep_for(50ms);
  }
  CHECK(opened);
}

// The figures in the README's subscriptions/listen section. Skipped by
// default; run with:
//   build/tests/integration-tests -tc='listen latency*' --no-skip
TEST_CASE("listen latency: upstream notification to the listener, through the bridge" * doctest::skip()) {
  Harness h;
  Listen l(h.port(), "lat", {{"toolsListChanged", true}, {"resourceSubscriptions", {"example://a"}}});
  ack_of(l);
  REQUIRE(wait_for([&] { return h.upstream().subscribed("example://a") == 1; }, 3000ms));
  auto measure = [&](const char* what, const std::function<void()>& emit,
                     const std::function<bool(const json&)>& match) {
    std::vector<double> us;
    for (int i = 0; i < 60; ++i) {
      auto t0 = SteadyClock::now();
      emit();
      json m = l.next_matching(match, 1000ms);
      REQUIRE(m.is_object());
      double d = std::chrono::duration<double, std::micro>(SteadyClock::now() - t0).count();
      if (i >= 10) us.push_back(d);  // the first ten warm up
      std::this_thread::sleep_for(20ms);
    }
    std::sort(us.begin(), us.end());
    double p50 = us[us.size() / 2], p99 = us[std::min(us.size() - 1, us.size() * 99 / 100)];
    std::printf("listen latency %s: n=%zu median %.0f us p99 %.0f us max %.0f us\n", what, us.size(),
                p50, p99, us.back());
    CHECK(p99 < 1e6);
  };
  measure("tools/list_changed", [&] { h.upstream().broadcast("notifications/tools/list_changed"); },
          [](const json& m) { return m.value("method", "") == "notifications/tools/list_changed"; });
  measure("resources/updated", [&] { h.upstream().touch_resource("example://a"); },
          [](const json& m) { return is_update_for(m, "example://a"); });
}
