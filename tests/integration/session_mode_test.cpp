// Session mode (--upstream-mode session, issue #13): one upstream SSE session
// per client session, shared by its calls; the standalone GET stream; a
// mid-call drop fails the call at once and the next call opens a new
// upstream session. Every wait is bounded.
#include <future>
#include <set>

#include "harness.h"

namespace {

void session_mode(msb::Config& c) { c.upstream.mode = msb::UpstreamMode::kSession; }

// Session mode, then `more`.
std::function<void(msb::Config&)> session_mode_and(std::function<void(msb::Config&)> more) {
  return [more](msb::Config& c) {
    session_mode(c);
    more(c);
  };
}

// A GET /mcp standalone stream read on a raw socket: SSE `data:` lines are
// collected as they come (small events arrive whole in one chunk).
class GetStream {
 public:
  GetStream(int port, const std::string& sid, const std::string& accept = "text/event-stream")
      : conn_(port) {
    REQUIRE(conn_.connected());
    if (accept == "POST") {  // sid = "SESSION\nBODY": a POST whose SSE response is read as it comes
      auto nl = sid.find('\n');
      std::string body = sid.substr(nl + 1);
      conn_.send("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json, "
                 "text/event-stream\r\nContent-Type: application/json\r\nMcp-Session-Id: " +
                 sid.substr(0, nl) + "\r\nContent-Length: " + std::to_string(body.size()) +
                 "\r\n\r\n" + body);
      return;
    }
    conn_.send("GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: " + accept + "\r\n" +
               (sid.empty() ? std::string() : "Mcp-Session-Id: " + sid + "\r\n") + "\r\n");
  }
  // Reads for up to `within` or until pred(messages) holds.
  bool read_until(const std::function<bool(const std::vector<json>&)>& pred,
                  std::chrono::milliseconds within) {
    auto end = SteadyClock::now() + within;
    while (!pred(messages_)) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - SteadyClock::now());
      if (left.count() <= 0 || closed_) return pred(messages_);
      bool closed = false;
      raw_ += conn_.read_until_close(std::min(left, std::chrono::milliseconds(50)), &closed);
      closed_ = closed_ || closed;
      parse();
    }
    return true;
  }
  // Reads until the response's status line has come, for up to `within`.
  bool read_status(std::chrono::milliseconds within = 2000ms) {
    return read_until([this](auto&) { return status() != 0; }, within);
  }
  int status() const { return raw_.size() >= 12 ? std::atoi(raw_.c_str() + 9) : 0; }
  bool closed() const { return closed_; }
  const std::string& raw() const { return raw_; }
  const std::vector<json>& messages() const { return messages_; }

 private:
  void parse() {
    messages_.clear();
    size_t pos = 0;
    while ((pos = raw_.find("\ndata: ", pos)) != std::string::npos) {
      size_t e = raw_.find('\n', pos + 1);
      if (e == std::string::npos) break;
      auto j = json::parse(raw_.substr(pos + 7, e - pos - 7), nullptr, false);
      if (!j.is_discarded()) messages_.push_back(j);
      pos = e;
    }
  }
  RawConn conn_;
  std::string raw_;
  std::vector<json> messages_;
  bool closed_ = false;
};

bool has_method(const std::vector<json>& ms, const std::string& method) {
  for (auto& m : ms)
    if (m.value("method", "") == method) return true;
  return false;
}

// A 5 s `sleep` call `id` on sid, in flight for `settle` when `fault` strikes:
// its reply (REQUIREd within 5 s of the fault), when the fault struck and how
// long after it the reply came.
struct FaultedCall {
  Reply r;
  SteadyClock::time_point fault_at;
  int64_t ms = 0;
};

FaultedCall call_through_fault(Harness& h, const std::string& sid, const std::string& id,
                               std::chrono::milliseconds settle, const std::function<void()>& fault) {
  auto call = std::async(std::launch::async, [&h, &sid, &id] {
    return h.call_tool(sid, id, "sleep", {{"ms", 5000}});
  });
  std::this_thread::sleep_for(settle);
  FaultedCall f;
  f.fault_at = SteadyClock::now();
  fault();
  REQUIRE(call.wait_for(5s) == std::future_status::ready);
  f.r = call.get();
  f.ms = ms_since(f.fault_at);
  return f;
}

std::string count(Harness& h, const std::string& sid, json id) {
  auto r = h.call_tool(sid, id, "count", json::object());
  if (r.messages.empty()) return "<no reply: " + r.body.substr(0, 200) + ">";
  return text_of(r.last());
}

}  // namespace

TEST_CASE("session mode: calls of one client session share one upstream session, concurrently") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  CHECK(count(h, sid, 1) == "1");
  CHECK(count(h, sid, 2) == "2");
  CHECK(count(h, sid, 3) == "3");
  std::vector<std::future<std::string>> f;
  for (int i = 0; i < 3; ++i)
    f.push_back(std::async(std::launch::async, [&h, &sid, i] { return count(h, sid, 10 + i); }));
  std::set<std::string> got;
  for (auto& x : f) {
    REQUIRE(x.wait_for(10s) == std::future_status::ready);
    got.insert(x.get());
  }
  CHECK(got == std::set<std::string>{"4", "5", "6"});
  // Concurrent calls of different lengths interleave on the same session:
  // each gets its own response.
  auto slow = std::async(std::launch::async, [&h, &sid] {
    return h.call_tool(sid, "slow", "sleep", {{"ms", 300}});
  });
  std::this_thread::sleep_for(50ms);
  auto fast = h.call_tool(sid, "fast", "echo", {{"text", "quick"}});
  REQUIRE(!fast.messages.empty());
  CHECK(fast.last()["id"] == "fast");
  CHECK(text_of(fast.last()) == "quick");
  CHECK(fast.ms < 250);
  REQUIRE(slow.wait_for(10s) == std::future_status::ready);
  auto s = slow.get();
  REQUIRE(!s.messages.empty());
  CHECK(s.last()["id"] == "slow");
  CHECK(text_of(s.last()) == "slept 300 ms");
  CHECK(count(h, sid, 20) == "7");
  // A log message during the only call in flight goes on that call's stream.
  auto lg = h.call_tool(sid, "log", "log", {{"level", "warning"}, {"text", "in the call"}});
  REQUIRE(lg.messages.size() == 2);
  CHECK(lg.messages[0]["method"] == "notifications/message");
  CHECK(lg.messages[0]["params"]["data"] == "in the call");
  CHECK(text_of(lg.last()) == "logged");
  CHECK(h.upstream().premature_requests() == 0);
}

TEST_CASE("session mode: two client sessions have independent upstream sessions") {
  Harness h({}, session_mode);
  std::string a = h.initialize();
  std::string b = h.initialize();
  CHECK(count(h, a, 1) == "1");
  CHECK(count(h, a, 2) == "2");
  CHECK(count(h, b, 1) == "1");
  CHECK(count(h, a, 3) == "3");
  CHECK(count(h, b, 2) == "2");
}

TEST_CASE("session mode: messages outside calls reach the client's GET stream") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  GetStream g(h.port(), sid);
  REQUIRE(g.read_status());
  CHECK(g.status() == 200);
  CHECK(g.raw().find("text/event-stream") != std::string::npos);
  auto r = h.call_tool(sid, 1, "notify_later", {{"ms", 100}, {"text", "after the call"}});
  REQUIRE(!r.messages.empty());
  CHECK(text_of(r.last()) == "scheduled");
  auto t0 = SteadyClock::now();
  CHECK(g.read_until(
      [](auto& ms) {
        return has_method(ms, "notifications/tools/list_changed") &&
               has_method(ms, "notifications/message");
      },
      1000ms));
  CHECK(ms_since(t0) < 1000);
  for (auto& m : g.messages())
    if (m.value("method", "") == "notifications/message") CHECK(m["params"]["data"] == "after the call");
  // A second GET replaces the first, which ends.
  GetStream g2(h.port(), sid);
  REQUIRE(g2.read_status());
  CHECK(g2.status() == 200);
  CHECK(g.read_until([&](auto&) { return g.closed() || g.raw().find("\r\n0\r\n\r\n") != std::string::npos; },
                     1000ms));
  auto r2 = h.call_tool(sid, 2, "notify_later", {{"ms", 50}, {"text", "second"}});
  REQUIRE(!r2.messages.empty());
  CHECK(g2.read_until([](auto& ms) { return has_method(ms, "notifications/tools/list_changed"); },
                      1000ms));
}

TEST_CASE("session mode: GET needs a session and text/event-stream; keepalives flow") {
  Harness h({}, session_mode_and([](msb::Config& c) { c.keepalive_interval = 100ms; }));
  std::string sid = h.initialize();
  GetStream none(h.port(), "");
  REQUIRE(none.read_status());
  CHECK(none.status() == 400);
  GetStream json_only(h.port(), sid, "application/json");
  REQUIRE(json_only.read_status());
  CHECK(json_only.status() == 406);
  GetStream g(h.port(), sid);
  CHECK(g.read_until([&](auto&) { return g.raw().find(": keepalive") != std::string::npos; }, 1000ms));
}

TEST_CASE("session mode: an upstream drop mid-call fails the call at once; the next call opens a new session") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  CHECK(count(h, sid, 1) == "1");
  CHECK(count(h, sid, 2) == "2");
  auto f = call_through_fault(h, sid, "long", 200ms, [&] { h.upstream().kill_streams(); });
  CHECK(f.ms < 1500);
  check_bridge_error(f.r, "long", "upstream_closed", "request");
  // A new upstream session: its counter starts again (state lost, counted).
  CHECK(count(h, sid, 3) == "1");
  CHECK(count(h, sid, 4) == "2");
  CHECK(series(scrape(h.port()), "mcp_bridge_session_state_lost_total") >= 1);
}

TEST_CASE("session mode: DELETE closes the upstream session; an unknown valid session gets a fresh one") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  CHECK(count(h, sid, 1) == "1");
  REQUIRE(wait_for([&] { return h.upstream().open_streams() == 1; }, 2000ms));
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_read_timeout(kClientTimeout);
  auto d = cli.Delete("/mcp", {{"Mcp-Session-Id", sid}});
  REQUIRE(d);
  CHECK(d->status == 200);
  CHECK(wait_for([&] { return h.upstream().open_streams() == 0; }, 1000ms));
  CHECK(h.call_tool(sid, 2, "count", json::object()).status == 404);
}

TEST_CASE("session mode: a call waiting on an opening session when DELETE comes is not retried onto a new one") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  CHECK(count(h, sid, 1) == "1");
  // The upstream restarts (the session is gone) and opens new sessions slowly.
  h.restart_upstream();
  h.faults().delay_endpoint_ms = 300;  // (below the tests' --endpoint-timeout)
  Reply r;
  std::thread caller([&] { r = h.call_tool(sid, 2, "count", json::object()); });
  REQUIRE(wait_for([&] { return h.upstream().open_streams() == 1; }, 2000ms));  // opening, for the call
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_read_timeout(kClientTimeout);
  auto d = cli.Delete("/mcp", {{"Mcp-Session-Id", sid}});
  REQUIRE(d);
  CHECK(d->status == 200);
  caller.join();
  // The call ends with an error; nothing reopens the deleted session upstream.
  REQUIRE(!r.messages.empty());
  CHECK(r.last().contains("error"));
  auto sessions = [&] { return series(scrape(h.port()), "mcp_bridge_upstream_sessions"); };
  CHECK(wait_for([&] { return h.upstream().open_streams() == 0 && sessions() == 0; }, 3000ms));
  std::this_thread::sleep_for(500ms);  // past a reopen's endpoint delay
  CHECK(h.upstream().open_streams() == 0);
  CHECK(sessions() == 0);
}

TEST_CASE("session mode: an initialize whose client left does not leave its upstream session open") {
  Harness h({}, session_mode);
  h.faults().delay_endpoint_ms = 400;  // (below the tests' --endpoint-timeout)
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(h.port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::string body = init_body();
  std::string req = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json, text/event-stream\r\n"
                    "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\n\r\n" + body;
  REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
  REQUIRE(wait_for([&] { return h.upstream().open_streams() == 1; }, 2000ms));
  ::close(fd);  // the client gives up while the session opens
  // Its upstream session is closed, not kept until --session-idle-timeout.
  auto sessions = [&] { return series(scrape(h.port()), "mcp_bridge_upstream_sessions"); };
  std::this_thread::sleep_for(1000ms);  // past the endpoint delay: the session would be open
  CHECK(wait_for([&] { return h.upstream().open_streams() == 0 && sessions() == 0; }, 3000ms));
}

TEST_CASE("session mode: a client cancellation sends notifications/cancelled upstream and ends the call") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  auto call = std::async(std::launch::async, [&h, &sid] {
    return h.call_tool(sid, 77, "sleep", {{"ms", 3000}});
  });
  std::this_thread::sleep_for(200ms);
  auto c = h.post(R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":77}})", sid);
  CHECK(c.status == 202);
  REQUIRE(call.wait_for(2s) == std::future_status::ready);
  CHECK(wait_for([&] { return h.upstream().cancellations() >= 1; }, 1000ms));
  CHECK(h.upstream().last_cancelled_id() == "77");
  // The session stays usable.
  CHECK(count(h, sid, 78) == "1");
}

TEST_CASE("session mode: a session with no calls and no GET stream is closed after --session-idle-timeout") {
  Harness h({}, session_mode_and([](msb::Config& c) { c.upstream.session_idle_timeout = 300ms; }));
  std::string sid = h.initialize();
  CHECK(count(h, sid, 1) == "1");
  CHECK(wait_for([&] { return h.upstream().open_streams() == 0; }, 2000ms));
  CHECK(count(h, sid, 2) == "1");  // a fresh upstream session
  // An open GET stream keeps the session past the idle timeout, and the
  // session's loop keeps serving (the idle deadline once made it spin).
  {
    GetStream g(h.port(), sid);
    REQUIRE(g.read_status());
    std::this_thread::sleep_for(700ms);
    CHECK(h.upstream().open_streams() == 1);
    auto t0 = SteadyClock::now();
    CHECK(count(h, sid, 3) == "2");
    CHECK(ms_since(t0) < 500);
  }
  // Once the stream is gone, the idle timeout applies again.
  CHECK(wait_for([&] { return h.upstream().open_streams() == 0; }, 3000ms));
}

TEST_CASE("session mode: stop ends calls in flight and GET streams, bounded") {
  auto h = std::make_unique<Harness>(example::Options{}, session_mode);
  std::string sid = h->initialize();
  GetStream g(h->port(), sid);
  REQUIRE(g.read_status());
  auto call = std::async(std::launch::async, [&h, &sid] {
    return h->call_tool(sid, "x", "sleep", {{"ms", 8000}});
  });
  std::this_thread::sleep_for(200ms);
  auto t0 = SteadyClock::now();
  h->bridge().stop();
  CHECK(ms_since(t0) < 4000);
  REQUIRE(call.wait_for(3s) == std::future_status::ready);
  auto r = call.get();
  if (!r.messages.empty()) CHECK(r.last()["error"]["data"]["bridge"]["kind"] == "shutting_down");
  CHECK(g.read_until([&](auto&) { return g.closed(); }, 2000ms));
}

namespace {

std::string initialize_with_roots(Harness& h) {
  json init = {{"jsonrpc", "2.0"},
               {"id", 0},
               {"method", "initialize"},
               {"params",
                {{"protocolVersion", "2025-06-18"},
                 {"capabilities", {{"roots", {{"listChanged", true}}}}},
                 {"clientInfo", {{"name", "roots-test"}, {"version", "1"}}}}}};
  auto r = h.post(init.dump(), "");
  REQUIRE(r.status == 200);
  REQUIRE(!r.session_id.empty());
  CHECK(h.post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})", r.session_id).status == 202);
  return r.session_id;
}

const json* find_method(const std::vector<json>& ms, const std::string& method) {
  for (auto& m : ms)
    if (m.value("method", "") == method) return &m;
  return nullptr;
}

json roots_answer(const json& id) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", {{"roots", {{{"uri", "file:///work/x"}, {"name", "x"}}}}}}};
}

}  // namespace

TEST_CASE("session mode: a server request during the only call goes on its stream; the answer goes back upstream") {
  Harness h({}, session_mode);
  std::string sid = initialize_with_roots(h);
  GetStream call(h.port(), sid + "\n" + R"({"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":"roots","arguments":{}}})", "POST");
  REQUIRE(call.read_until([](auto& ms) { return find_method(ms, "roots/list") != nullptr; }, 2000ms));
  json req = *find_method(call.messages(), "roots/list");
  REQUIRE(req["id"].is_string());
  CHECK(req["id"].get<std::string>().rfind("mcp-sse-bridge:", 0) == 0);  // not the upstream's id
  CHECK(h.post(roots_answer(req["id"]).dump(), sid).status == 202);
  REQUIRE(call.read_until([](auto& ms) { return !ms.empty() && ms.back().contains("result"); }, 2000ms));
  std::string got = text_of(call.messages().back());
  CHECK(got.find("file:///work/x") != std::string::npos);
  CHECK(got.find(R"("id":"srv-)") != std::string::npos);  // mapped back to the upstream's id
}

TEST_CASE("session mode: a server request with two calls in flight goes to the GET stream; the answer goes back upstream") {
  Harness h({}, session_mode);
  std::string sid = initialize_with_roots(h);
  GetStream g(h.port(), sid);
  REQUIRE(g.read_status());
  auto slow = std::async(std::launch::async, [&h, &sid] {
    return h.call_tool(sid, "s", "sleep", {{"ms", 1500}});
  });
  std::this_thread::sleep_for(150ms);
  auto roots = std::async(std::launch::async, [&h, &sid] {
    return h.call_tool(sid, "r", "roots", json::object());
  });
  REQUIRE(g.read_until([](auto& ms) { return find_method(ms, "roots/list") != nullptr; }, 2000ms));
  json req = *find_method(g.messages(), "roots/list");
  CHECK(h.post(roots_answer(req["id"]).dump(), sid).status == 202);
  REQUIRE(roots.wait_for(5s) == std::future_status::ready);
  auto r = roots.get();
  REQUIRE(!r.messages.empty());
  CHECK(r.last()["id"] == "r");
  std::string got = text_of(r.last());
  CHECK(got.find("file:///work/x") != std::string::npos);
  CHECK(got.find(R"("id":"srv-)") != std::string::npos);
  REQUIRE(slow.wait_for(5s) == std::future_status::ready);
  CHECK(text_of(slow.get().last()) == "slept 1500 ms");
}

TEST_CASE("session mode: a silent upstream with a call in flight is probed with ping and fails the call") {
  Harness h({}, session_mode);  // --ping-interval 400ms, --ping-timeout 300ms
  std::string sid = h.initialize();
  CHECK(count(h, sid, 1) == "1");
  auto f = call_through_fault(h, sid, "quiet", 150ms, [&] { h.upstream().silence_sessions(); });
  CHECK(f.ms < 1500);
  check_bridge_error(f.r, "quiet", "upstream_unresponsive", "request");
  CHECK(count(h, sid, 2) == "1");  // a new upstream session
}

TEST_CASE("call mode (the default): GET is 405 and calls do not share an upstream session") {
  Harness h;
  std::string sid = h.initialize();
  GetStream g(h.port(), sid);
  REQUIRE(g.read_status());
  CHECK(g.status() == 405);
  CHECK(count(h, sid, 1) == "1");  // the test config has no warm pool: one session per call
  CHECK(count(h, sid, 2) == "1");
}

namespace {

json rpc(json id, const std::string& method, json params) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}};
}

bool has_update(const std::vector<json>& ms, const std::string& uri, size_t from = 0) {
  for (size_t i = from; i < ms.size(); ++i)
    if (ms[i].value("method", "") == "notifications/resources/updated" &&
        ms[i]["params"].value("uri", "") == uri)
      return true;
  return false;
}

const json* state_lost_warning(const std::vector<json>& ms) {
  for (auto& m : ms)
    if (m.value("method", "") == "notifications/message" &&
        m["params"].value("logger", "") == "mcp-sse-bridge" &&
        m["params"].value("level", "") == "warning")
      return &m;
  return nullptr;
}

// The upstream changes resource `uri`; "notified N" (N subscribed sessions).
std::string touch(Harness& h, const std::string&, json, const std::string& uri) {
  return "notified " + std::to_string(h.upstream().touch_resource(uri));
}

}  // namespace

TEST_CASE("session mode: initialize goes over the client session's own upstream session (one connect)") {
  Harness h({}, session_mode_and([](msb::Config& c) { c.serve_stale_initialize = false; }));
  std::string sid = h.initialize();
  CHECK(h.upstream().sessions_opened() == 1);
  CHECK(count(h, sid, 1) == "1");
  CHECK(count(h, sid, 2) == "2");
  CHECK(h.upstream().sessions_opened() == 1);
  CHECK(h.upstream().premature_requests() == 0);
  // The upstream unreachable: the client gets the error with its id, and no
  // session id.
  h.faults().sse_status = 503;
  auto r = h.post(init_body(), "");
  CHECK(r.status == 200);
  CHECK(r.session_id.empty());
  REQUIRE(!r.messages.empty());
  CHECK(r.last().contains("error"));
  h.faults().sse_status = 0;
  CHECK(count(h, sid, 3) == "3");  // the first session is untouched
}

TEST_CASE("session mode: resources/subscribe is forwarded; updates flow to the GET stream until unsubscribe") {
  Harness h({}, session_mode);
  auto init = h.post(init_body(), "");
  REQUIRE(init.status == 200);
  REQUIRE(!init.messages.empty());
  // Session mode keeps the upstream's resources.subscribe (call mode strips it).
  const json::json_pointer subscribe_cap("/result/capabilities/resources/subscribe");
  REQUIRE(init.last().contains(subscribe_cap));
  CHECK(init.last()[subscribe_cap] == true);
  std::string sid = h.initialize();
  GetStream g(h.port(), sid);
  REQUIRE(g.read_status());
  auto sub = h.post(rpc(1, "resources/subscribe", {{"uri", "example://a"}}).dump(), sid);
  REQUIRE(!sub.messages.empty());
  CHECK(sub.last()["id"] == 1);
  CHECK(sub.last().contains("result"));
  CHECK(touch(h, sid, 2, "example://a") == "notified 1");
  auto t0 = SteadyClock::now();
  CHECK(g.read_until([](auto& ms) { return has_update(ms, "example://a"); }, 1000ms));
  CHECK(ms_since(t0) < 1000);
  CHECK(touch(h, sid, 3, "example://b") == "notified 0");  // not subscribed
  auto un = h.post(rpc(4, "resources/unsubscribe", {{"uri", "example://a"}}).dump(), sid);
  REQUIRE(!un.messages.empty());
  CHECK(un.last().contains("result"));
  size_t seen = g.messages().size();
  CHECK(touch(h, sid, 5, "example://a") == "notified 0");
  CHECK_FALSE(g.read_until([&](auto& ms) { return has_update(ms, "example://a", seen); }, 300ms));
}

TEST_CASE("session mode: call mode still refuses resources/subscribe and strips the capability") {
  Harness h;
  auto init = h.post(init_body(), "");
  REQUIRE(!init.messages.empty());
  CHECK(init.last().contains(json::json_pointer("/result/capabilities/resources")));
  CHECK_FALSE(init.last().contains(json::json_pointer("/result/capabilities/resources/subscribe")));
  std::string sid = h.initialize();
  auto sub = h.post(rpc(1, "resources/subscribe", {{"uri", "example://a"}}).dump(), sid);
  REQUIRE(!sub.messages.empty());
  CHECK(sub.last()["error"]["code"] == -32601);
}

TEST_CASE("session mode: after a drop a held session re-opens at once, replays its state and says so") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  auto lvl = h.post(rpc("lvl", "logging/setLevel", {{"level", "warning"}}).dump(), sid);
  REQUIRE(!lvl.messages.empty());
  CHECK(lvl.last().contains("result"));
  GetStream g(h.port(), sid);
  REQUIRE(g.read_status());
  auto sub = h.post(rpc(1, "resources/subscribe", {{"uri", "example://a"}}).dump(), sid);
  REQUIRE(!sub.messages.empty());
  CHECK(count(h, sid, 2) == "1");
  CHECK(count(h, sid, 3) == "2");
  int opened = h.upstream().sessions_opened();
  auto f = call_through_fault(h, sid, "long", 200ms, [&] { h.upstream().kill_streams(); });
  auto t0 = f.fault_at;
  MESSAGE("mid-call drop failed the call in " << f.ms << " ms");
  CHECK(f.ms < 1500);
  check_bridge_error(f.r, "long", "upstream_closed", "request");
  // Re-opened without a call: the warning reaches the GET stream.
  CHECK(g.read_until([](auto& ms) { return state_lost_warning(ms) != nullptr; }, 2000ms));
  auto reopen_ms = ms_since(t0);
  MESSAGE("state-lost warning on the GET stream " << reopen_ms << " ms after the drop");
  CHECK(reopen_ms < 1500);
  CHECK(h.upstream().sessions_opened() == opened + 1);
  if (auto* w = state_lost_warning(g.messages()))
    CHECK(w->dump().find("upstream_session_reopened") != std::string::npos);
  CHECK(series(scrape(h.port()), "mcp_bridge_session_state_lost_total") == 1);
  // The next call succeeds on the new upstream session (its state is new),
  // the subscription resumed and the log level was replayed.
  t0 = SteadyClock::now();
  CHECK(count(h, sid, 4) == "1");
  CHECK(ms_since(t0) < 500);
  size_t seen = g.messages().size();
  CHECK(touch(h, sid, 5, "example://a") == "notified 1");
  CHECK(g.read_until([&](auto& ms) { return has_update(ms, "example://a", seen); }, 1000ms));
  auto lg = h.call_tool(sid, 6, "log", {{"level", "info"}, {"text", "below warning"}});
  REQUIRE(!lg.messages.empty());
  CHECK(text_of(lg.last()) == "filtered");
  CHECK(h.upstream().premature_requests() == 0);
}

TEST_CASE("session mode: a held session re-opens with backoff while the upstream is down") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  GetStream g(h.port(), sid);
  REQUIRE(g.read_status());
  int opened = h.upstream().sse_requests();
  h.faults().sse_status = 503;
  h.upstream().kill_streams();
  // At once, then 500 ms, then 1 s: about three attempts in 1.2 s, not a storm.
  std::this_thread::sleep_for(1200ms);
  int attempts = h.upstream().sse_requests() - opened;
  MESSAGE("re-open attempts in 1.2 s while the upstream refuses: " << attempts);
  CHECK(attempts >= 2);
  CHECK(attempts <= 4);
  // A call meanwhile does not wait for the backoff: it starts an attempt
  // and fails fast with its error.
  auto t0 = SteadyClock::now();
  auto r = h.call_tool(sid, 1, "count", json::object());
  CHECK(ms_since(t0) < 1000);
  REQUIRE(!r.messages.empty());
  CHECK(r.last().contains("error"));
  h.faults().sse_status = 0;
  // Back without any call. The call above made two attempts (its own and
  // its retry's), so the backoff stands at its 4th wait: 4 s less up to 20 %
  // jitter (0, 0.5, 1, 2, 4 s), then the re-open and its replay. (A 4 s
  // bound failed once in CI: a 3,998 ms wait, re-opened 5 ms too late.)
  CHECK(g.read_until([](auto& ms) { return state_lost_warning(ms) != nullptr; }, 6000ms));
  CHECK(count(h, sid, 2) == "1");
}

TEST_CASE("session mode: a session with no GET stream and no subscription re-opens on the next call") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  CHECK(count(h, sid, 1) == "1");
  int opened = h.upstream().sessions_opened();
  h.upstream().kill_streams();
  std::this_thread::sleep_for(500ms);
  CHECK(h.upstream().sessions_opened() == opened);  // nobody listens: no re-open yet
  CHECK(count(h, sid, 2) == "1");
  CHECK(h.upstream().sessions_opened() == opened + 1);
  CHECK(series(scrape(h.port()), "mcp_bridge_session_state_lost_total") == 1);
}

TEST_CASE("session mode: an idle upstream session is probed with ping, so a dead path is found before the next call") {
  Harness h({}, session_mode);  // --ping-interval 400ms, --ping-timeout 300ms
  std::string sid = h.initialize();
  CHECK(count(h, sid, 1) == "1");
  h.upstream().silence_sessions();
  // Found dead (and forgotten) within ping interval + timeout (0.7 s; the
  // bound leaves room for sanitizer builds), with no call.
  CHECK(wait_for([&] { return h.upstream().open_streams() == 0; }, 3000ms));
  auto t0 = SteadyClock::now();
  // Straight to a fresh session: a call sent to the dead one would fail
  // (upstream_unresponsive after the probe, not retried) instead of "1".
  CHECK(count(h, sid, 2) == "1");
  CHECK(ms_since(t0) < 1000);
}

TEST_CASE("session mode: a held idle session found dead by the ping is re-opened before the next call") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  GetStream g(h.port(), sid);
  REQUIRE(g.read_status());
  h.upstream().silence_sessions();
  CHECK(g.read_until([](auto& ms) { return state_lost_warning(ms) != nullptr; }, 3000ms));
  auto t0 = SteadyClock::now();
  CHECK(count(h, sid, 1) == "1");  // on the re-opened session, no probe to wait for
  CHECK(ms_since(t0) < 1000);
}

TEST_CASE("session mode: ping interval 0 disables the idle probe") {
  Harness h({}, session_mode_and([](msb::Config& c) { c.upstream.ping_interval = 0ms; }));
  std::string sid = h.initialize();
  CHECK(count(h, sid, 1) == "1");
  h.upstream().silence_sessions();
  std::this_thread::sleep_for(1000ms);
  CHECK(h.upstream().open_streams() == 1);
}

TEST_CASE("session mode: another replica (same secret) opens a fresh upstream session for a session it does not hold") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  CHECK(count(h, sid, 1) == "1");
  CHECK(count(h, sid, 2) == "2");
  msb::FrontServer other(h.cfg());
  std::string why;
  REQUIRE_MESSAGE(other.start(&why), why);
  httplib::Client cli("127.0.0.1", other.port());
  cli.set_read_timeout(kClientTimeout);
  json req = {{"jsonrpc", "2.0"}, {"id", 3}, {"method", "tools/call"},
              {"params", {{"name", "count"}, {"arguments", json::object()}}}};
  auto res = cli.Post("/mcp", {{"Accept", "application/json"}, {"Mcp-Session-Id", sid}}, req.dump(),
                      "application/json");
  REQUIRE(res);
  CHECK(res->status == 200);
  auto j = json::parse(res->body, nullptr, false);
  CHECK(text_of(j) == "1");  // a fresh upstream session: state lost
  CHECK(series(scrape(other.port()), "mcp_bridge_session_state_lost_total") == 1);
  CHECK(series(scrape(h.port()), "mcp_bridge_session_state_lost_total") == 0);
  // The client is told on its GET stream there, once it opens one.
  GetStream g(other.port(), sid);
  CHECK(g.read_until([](auto& ms) { return state_lost_warning(ms) != nullptr; }, 1000ms));
  CHECK(count(h, sid, 4) == "3");  // the first replica's session is untouched
  other.stop();
}

TEST_CASE("session mode: an upstream that accepts and drops at once is not hammered (the backoff carries over)") {
  Harness h({}, session_mode);
  std::string sid = h.initialize();
  GetStream g(h.port(), sid);
  REQUIRE(g.read_status());
  int opened = h.upstream().sse_requests();
  // Every new session is dropped right after its setup (the re-open
  // succeeds, then the stream ends), for 1.2 s.
  h.faults().drop_after_initialized = true;
  h.upstream().kill_streams();
  std::this_thread::sleep_for(1200ms);
  h.faults().drop_after_initialized = false;
  int attempts = h.upstream().sse_requests() - opened;
  MESSAGE("re-open attempts in 1.2 s against an upstream that drops every session: " << attempts);
  CHECK(attempts >= 2);
  CHECK(attempts <= 4);
  CHECK(g.read_until([](auto& ms) { return state_lost_warning(ms) != nullptr; }, 4000ms));
}
