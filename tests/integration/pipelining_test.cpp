// Integration tests: a cold upstream session's notifications/initialized is
// pipelined with the next POST (--upstream-pipelining), and every way the
// upstream can mishandle that falls back (see harness.h for the setup).
#include "harness.h"

namespace {

// The POSTs of the upstream session that served the latest tools/call: the
// call and what came before it since that session's initialize.
std::vector<example::PostRecord> last_session(const example::LegacyServer& up) {
  auto log = up.post_log();
  std::vector<example::PostRecord> out;
  int call = -1;
  for (int i = static_cast<int>(log.size()) - 1; i >= 0; --i)
    if (log[i].method == "tools/call") {
      call = i;
      break;
    }
  if (call < 0) return out;
  int first = call;
  while (first > 0 && log[first].method != "initialize") --first;
  out.assign(log.begin() + first, log.begin() + call + 1);
  return out;
}

// Pipelining is opt-in (--upstream-pipelining, default off).
void pipelining_on(msb::Config& c) { c.upstream.pipelining = true; }

std::string describe(const std::vector<example::PostRecord>& log) {
  std::string s;
  for (auto& r : log)
    s += r.method + "@" + std::to_string(r.remote_port) + (r.pipelined ? "(pipelined) " : " ");
  return s;
}

}  // namespace

TEST_CASE("pipelining: a cold call's notifications/initialized and the call go out in one write, initialized first") {
  Harness h({}, pipelining_on);
  std::string sid = h.initialize();
  auto r = h.call_tool(sid, 1, "echo", {{"text", "one write"}});
  CHECK(text_of(r.last()) == "one write");
  auto s = last_session(h.upstream());
  CAPTURE(describe(s));
  REQUIRE(s.size() == 3);
  CHECK(s[0].method == "initialize");
  CHECK(s[1].method == "notifications/initialized");
  CHECK(s[2].method == "tools/call");
  // One connection, in order; the call was already there when initialized
  // was answered (it did not wait for that 202).
  CHECK(s[0].remote_port == s[1].remote_port);
  CHECK(s[1].remote_port == s[2].remote_port);
  CHECK(!s[1].pipelined);
  CHECK(s[2].pipelined);
  CHECK(h.upstream().premature_requests() == 0);

  // A replayed logging/setLevel is the POST that initialized goes out with.
  auto lv = h.post(R"({"jsonrpc":"2.0","id":"lv","method":"logging/setLevel","params":{"level":"info"}})", sid);
  REQUIRE(!lv.messages.empty());
  auto r2 = h.call_tool(sid, 2, "echo", {{"text", "with level"}});
  CHECK(text_of(r2.last()) == "with level");
  s = last_session(h.upstream());
  CAPTURE(describe(s));
  REQUIRE(s.size() == 4);
  CHECK(s[1].method == "notifications/initialized");
  CHECK(s[2].method == "logging/setLevel");
  CHECK(s[2].remote_port == s[1].remote_port);
  CHECK(s[2].pipelined);
  CHECK(!s[3].pipelined);  // the call waited for setLevel's result
  CHECK(h.upstream().premature_requests() == 0);
}

TEST_CASE("pipelining: --upstream-pipelining=false waits for initialized's 202 as before") {
  Harness h({}, [](msb::Config& c) { c.upstream.pipelining = false; });
  std::string sid = h.initialize();
  auto r = h.call_tool(sid, 1, "echo", {{"text", "two writes"}});
  CHECK(text_of(r.last()) == "two writes");
  auto s = last_session(h.upstream());
  CAPTURE(describe(s));
  REQUIRE(s.size() == 3);
  CHECK(s[1].method == "notifications/initialized");
  CHECK(!s[2].pipelined);
}

TEST_CASE("pipelining fallback (a): initialized answered with Connection: close, or the connection closed after it => the call is sent once more on a fresh connection") {
  for (int variant = 0; variant < 2; ++variant) {
    CAPTURE(variant);
    Harness h({}, pipelining_on);
    std::string sid = h.initialize();
    if (variant == 0) h.faults().initialized_conn_close = true;
    else h.faults().initialized_then_close = true;
    auto t0 = SteadyClock::now();
    auto r = h.call_tool(sid, "a", "echo", {{"text", "resent"}});
    REQUIRE(!r.messages.empty());
    CHECK(r.last()["id"] == "a");
    CHECK(text_of(r.last()) == "resent");
    CHECK(ms_since(t0) < 1000);  // no wait for a timeout
    auto s = last_session(h.upstream());
    CAPTURE(describe(s));
    REQUIRE(s.size() == 3);
    CHECK(s[1].method == "notifications/initialized");
    CHECK(s[2].method == "tools/call");  // the dropped copy never reached the handler
    CHECK(s[2].remote_port != s[1].remote_port);
    CHECK(!s[2].pipelined);
    CHECK(h.upstream().premature_requests() == 0);

    // `Connection: close` is an answer (pipelining goes on); a close without
    // it marks an upstream that drops pipelined requests (it stops).
    h.faults().initialized_conn_close = false;
    h.faults().initialized_then_close = false;
    auto r2 = h.call_tool(sid, "a2", "echo", {{"text", "next"}});
    CHECK(text_of(r2.last()) == "next");
    s = last_session(h.upstream());
    CAPTURE(describe(s));
    REQUIRE(s.size() == 3);
    CHECK(s[2].pipelined == (variant == 0));
  }
}

TEST_CASE("pipelining fallback (b): the connection closes before any answer => both are sent once more, in order") {
  Harness h({}, pipelining_on);
  std::string sid = h.initialize();
  h.faults().initialized_abort = 1;
  auto r = h.call_tool(sid, "b", "echo", {{"text", "both again"}});
  REQUIRE(!r.messages.empty());
  CHECK(r.last()["id"] == "b");
  CHECK(text_of(r.last()) == "both again");
  auto s = last_session(h.upstream());
  CAPTURE(describe(s));
  REQUIRE(s.size() == 4);
  CHECK(s[1].method == "notifications/initialized");  // aborted unanswered
  CHECK(s[2].method == "notifications/initialized");  // resent alone, then the call
  CHECK(s[3].method == "tools/call");
  CHECK(s[2].remote_port != s[1].remote_port);
  CHECK(!s[3].pipelined);  // (on the same connection unless its 202 body came late)
  CHECK(h.upstream().premature_requests() == 0);
}

TEST_CASE("pipelining fallback (c): initialized refused => the call's answer still reaches the client; both refused => the error with the id") {
  Harness h({}, pipelining_on);
  std::string sid = h.initialize();
  h.faults().initialized_status = 500;
  auto r = h.call_tool(sid, "c", "echo", {{"text", "still answered"}});
  REQUIRE(!r.messages.empty());
  CHECK(r.last()["id"] == "c");
  CHECK(text_of(r.last()) == "still answered");
  auto s = last_session(h.upstream());
  CAPTURE(describe(s));
  REQUIRE(s.size() == 3);
  CHECK(s[2].pipelined);

  h.faults().post_status = 503;
  auto calls_before = [&] {
    int n = 0;
    for (auto& r : h.upstream().post_log()) n += r.method == "tools/call";
    return n;
  };
  int before = calls_before();
  auto e = h.call_tool(sid, "c2", "echo", {{"text", "x"}});
  check_bridge_error(e, "c2", "upstream_rejected", "initialize");
  CHECK(e.last()["error"]["data"]["bridge"]["http_status"] == 500);
  CHECK(e.ms < 1000);
  // The call went out behind the refused initialized and got a 503, which
  // does not prove it was not taken: it is not replayed on a fresh session
  // (a tools/call may have run), as when it is sent alone.
  CHECK(calls_before() - before == 1);
  h.faults().post_status = 0;
  h.faults().initialized_status = 0;
  check_recovers(h, sid);
}

TEST_CASE("pipelining: not over a TLS upstream (plain only); a cold call works there") {
  example::LegacyServer up(example::Options{false, 0, 16, kTls + "server.pem", kTls + "server.key"});
  int up_port = up.start("127.0.0.1", 0);
  REQUIRE(up_port > 0);
  msb::Config c = test_config(up_port);
  c.upstream.sse_url = *msb::parse_url("https://127.0.0.1:" + std::to_string(up_port) + "/sse");
  c.upstream.tls_options.ca_file = kTls + "ca.pem";
  std::string why;
  c.upstream.tls = msb::TlsContext::client(c.upstream.tls_options, &why);
  REQUIRE_MESSAGE(c.upstream.tls, why);
  msb::FrontServer bridge(c);
  REQUIRE_MESSAGE(bridge.start(&why), why);
  httplib::Client cli("127.0.0.1", bridge.port());
  cli.set_read_timeout(kClientTimeout);
  auto init = cli.Post("/mcp", {{"Accept", "application/json"}}, init_body(), "application/json");
  REQUIRE(init);
  std::string sid = init->get_header_value("Mcp-Session-Id");
  REQUIRE(!sid.empty());
  auto t0 = SteadyClock::now();
  auto call = cli.Post("/mcp", {{"Accept", "application/json"}, {"Mcp-Session-Id", sid}},
                       R"({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"tls"}}})",
                       "application/json");
  REQUIRE(call);
  CHECK(call->status == 200);
  auto m = json::parse(call->body);
  CHECK(text_of(m) == "tls");
  CHECK(ms_since(t0) < 1000);
  bridge.stop();
  up.stop();
}
