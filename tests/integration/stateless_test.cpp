// Integration tests of the stateless era (MCP 2026-07-28, #15) on the same
// /mcp endpoint as the session era, in front of the example legacy SSE
// server: server/discover (fresh, cached while the upstream is down, an
// error when never cached), calls as JSON and as a per-request SSE stream,
// the header and _meta rules, logLevel gating, capabilities never shared
// between requests, failure and cancellation with the request's id.
#include "harness.h"

using namespace itest;

namespace {

using Hdrs = std::vector<std::pair<std::string, std::string>>;

json meta(json caps = json::object(), json extra = json::object()) {
  json m = {{"io.modelcontextprotocol/protocolVersion", "2026-07-28"},
            {"io.modelcontextprotocol/clientCapabilities", std::move(caps)},
            {"io.modelcontextprotocol/clientInfo", {{"name", "stateless-test"}, {"version", "1"}}}};
  for (auto& [k, v] : extra.items()) m[k] = v;
  return m;
}

json request(json id, const std::string& method, json params) {
  return {{"jsonrpc", "2.0"}, {"id", std::move(id)}, {"method", method}, {"params", std::move(params)}};
}

// The headers a conforming 2026-07-28 client sends with `body`.
httplib::Headers modern_headers(const json& body) {
  httplib::Headers h = {{"MCP-Protocol-Version", "2026-07-28"},
                        {"Mcp-Method", body["method"].get<std::string>()}};
  const json& p = body["params"];
  if (p.contains("name")) h.emplace("Mcp-Name", p["name"].get<std::string>());
  if (p.contains("uri")) h.emplace("Mcp-Name", p["uri"].get<std::string>());
  return h;
}

Reply send(Harness& h, const json& body, bool sse = false, httplib::Headers headers = {}) {
  if (headers.empty()) headers = modern_headers(body);
  return h.post(body.dump(), "", sse, headers);
}

json discover(json id = 1) { return request(std::move(id), "server/discover", {{"_meta", meta()}}); }

json tool_call(json id, const std::string& tool, json args, json m = meta()) {
  return request(std::move(id), "tools/call", {{"name", tool}, {"arguments", std::move(args)}, {"_meta", std::move(m)}});
}

// One HTTP/1.1 request as bytes, keep-alive.
std::string http_request(const json& body, const Hdrs& headers, bool sse) {
  std::string b = body.dump();
  std::string r = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
  r += sse ? "Accept: application/json, text/event-stream\r\n" : "Accept: application/json\r\n";
  for (auto& [k, v] : headers) r += k + ": " + v + "\r\n";
  return r + "Content-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b;
}

Hdrs raw_headers(const json& body) {
  Hdrs out;
  for (auto& [k, v] : modern_headers(body)) out.emplace_back(k, v);
  return out;
}

// A field of a message by JSON pointer, "" when absent (a failed CHECK,
// never an abort on a missing key).
std::string at(const json& j, const std::string& pointer) {
  return j.value(json::json_pointer(pointer), std::string());
}

json body_of_json(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  return j.is_discarded() ? json() : j;
}

}  // namespace

TEST_CASE("stateless discover: built from the upstream's initialize, then from the cache") {
  Harness h({}, [](msb::Config& c) {
    c.cache_ttl_ms = 1234;
    c.cache_scope = "public";
  });
  auto r = send(h, discover("d-1"));
  REQUIRE(r.status == 200);
  CHECK(r.content_type.rfind("application/json", 0) == 0);
  REQUIRE(r.messages.size() == 1);
  const json& res = r.last()["result"];
  CHECK(r.last()["id"] == "d-1");
  CHECK(res["resultType"] == "complete");
  REQUIRE(res["supportedVersions"].is_array());
  CHECK(res["supportedVersions"][0] == "2026-07-28");
  for (auto v : {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"})
    CHECK_MESSAGE(std::find(res["supportedVersions"].begin(), res["supportedVersions"].end(), v) !=
                      res["supportedVersions"].end(), v);
  CHECK(res["capabilities"].contains("tools"));
  CHECK(res["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "example-legacy-server");
  CHECK(res["ttlMs"] == 1234);
  CHECK(res["cacheScope"] == "public");
  CHECK(h.upstream().sessions_opened() == 1);
  // Within --discover-refresh the upstream is not asked again.
  auto again = send(h, discover(2));
  REQUIRE(again.status == 200);
  CHECK(again.last()["id"] == 2);
  CHECK(again.last()["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "example-legacy-server");
  CHECK(h.upstream().sessions_opened() == 1);
  // As SSE when the client accepts it: one event, the stream ends.
  auto sse = send(h, discover(3), true);
  CHECK(sse.content_type.rfind("text/event-stream", 0) == 0);
  REQUIRE(sse.messages.size() == 1);
  CHECK(at(sse.last(), "/result/resultType") == "complete");
}

TEST_CASE("stateless discover: answered from the cache while the upstream is down, refreshed when back") {
  Harness h({}, [](msb::Config& c) { c.discover_refresh = 1ms; });
  REQUIRE(send(h, discover(1)).status == 200);
  h.stop_upstream();
  std::this_thread::sleep_for(5ms);  // past --discover-refresh: the upstream is asked, and fails
  auto r = send(h, discover("down"));
  REQUIRE(r.status == 200);
  REQUIRE(r.messages.size() == 1);
  CHECK(r.last()["id"] == "down");
  REQUIRE(r.last().contains("result"));
  CHECK(r.last()["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "example-legacy-server");
  CHECK(r.ms < 2000);
  h.restart_upstream();
  auto back = send(h, discover("back"));
  REQUIRE(back.last().contains("result"));
  CHECK(h.upstream().sessions_opened() == 1);  // the new upstream was asked
}

TEST_CASE("stateless discover: an error with the id when the upstream was never reached") {
  Harness h;
  h.stop_upstream();
  auto r = send(h, discover("never"));
  REQUIRE(r.transport_ok);
  CHECK(r.status == 200);
  REQUIRE(r.messages.size() == 1);
  CHECK(r.last()["id"] == "never");
  REQUIRE(r.last().contains("error"));
  CHECK(r.last()["error"]["code"] == -32000);
  CHECK(r.last()["error"]["message"].get<std::string>().find("server/discover") != std::string::npos);
  CHECK(r.ms < 3000);
}

TEST_CASE("stateless calls: JSON and SSE answers, resultType on every result, cache hints on lists") {
  Harness h({}, [](msb::Config& c) { c.cache_ttl_ms = 60000; });
  auto call = send(h, tool_call(7, "echo", {{"text", "hi"}}));
  REQUIRE(call.status == 200);
  CHECK(call.content_type.rfind("application/json", 0) == 0);
  CHECK(call.last()["id"] == 7);
  CHECK(text_of(call.last()) == "hi");
  CHECK(at(call.last(), "/result/resultType") == "complete");
  CHECK_FALSE(call.last()["result"].contains("ttlMs"));
  CHECK(h.upstream().premature_requests() == 0);  // initialize + initialized went first

  auto list = send(h, request("l", "tools/list", {{"_meta", meta()}}));
  REQUIRE(list.status == 200);
  CHECK(list.last()["result"]["tools"].size() == 18);  // the example server's tools (bridge_test.cpp lists them)
  CHECK(at(list.last(), "/result/resultType") == "complete");
  CHECK(list.last().value(json::json_pointer("/result/ttlMs"), 0) == 60000);
  CHECK(at(list.last(), "/result/cacheScope") == "private");

  // SSE: progress for this request's token, then the result; the stream
  // head says X-Accel-Buffering: no.
  json m = meta();
  m["progressToken"] = "p1";
  json body = tool_call("s", "sleep", {{"ms", 300}}, m);
  RawConn conn(h.port());
  REQUIRE(conn.connected());
  REQUIRE(conn.send(http_request(body, raw_headers(body), true)));
  auto resp = conn.read_response(10s);
  REQUIRE(resp.status == 200);
  CHECK(resp.header("Content-Type").rfind("text/event-stream", 0) == 0);
  CHECK(resp.header("X-Accel-Buffering") == "no");
  auto msgs = parse_sse_messages(resp.body);
  REQUIRE(msgs.size() >= 2);
  CHECK(msgs.front()["method"] == "notifications/progress");
  CHECK(msgs.front()["params"]["progressToken"] == "p1");
  CHECK(msgs.back()["id"] == "s");
  CHECK(at(msgs.back(), "/result/resultType") == "complete");
  // The connection stays usable for the next request.
  json next = tool_call("after", "echo", {{"text", "again"}});
  REQUIRE(conn.send(http_request(next, raw_headers(next), false)));
  auto r2 = conn.read_response(10s);
  CHECK(r2.status == 200);
  CHECK(text_of(body_of_json(r2.body)) == "again");
}

TEST_CASE("stateless upstream errors: in-band with the id; a missing client capability (-32021) is a 400, an unknown method 404") {
  Harness h;
  auto plain = send(h, tool_call("e1", "fail", {{"code", -32602}, {"message", "bad args"}}));
  CHECK(plain.status == 200);
  REQUIRE(plain.messages.size() == 1);
  CHECK(plain.last()["id"] == "e1");
  CHECK(plain.last()["error"]["code"] == -32602);
  CHECK_FALSE(plain.last().contains("result"));
  auto cap = send(h, tool_call("e2", "fail", {{"code", -32021}, {"message", "needs sampling"}}), true);
  CHECK(cap.status == 400);
  CHECK(cap.content_type.rfind("application/json", 0) == 0);
  REQUIRE(cap.messages.size() == 1);
  CHECK(cap.last()["id"] == "e2");
  CHECK(cap.last()["error"]["code"] == -32021);
  // A method the upstream does not implement: 404 with -32601 (2026-07-28,
  // streamable-http), JSON or SSE alike while nothing was streamed.
  for (bool sse : {false, true}) {
    CAPTURE(sse);
    json complete = request("c1", "completion/complete",
                            {{"ref", {{"type", "ref/prompt"}, {"name", "p"}}},
                             {"argument", {{"name", "a"}, {"value", "x"}}},
                             {"_meta", meta()}});
    auto missing = send(h, complete, sse);
    CHECK(missing.status == 404);
    REQUIRE(missing.messages.size() == 1);
    CHECK(missing.last()["id"] == "c1");
    CHECK(missing.last()["error"]["code"] == -32601);
  }
}

TEST_CASE("stateless refusals: header rules, _meta, version, method; each with its id, counted, connection kept") {
  Harness h;
  json call = tool_call(11, "echo", {{"text", "x"}});
  struct Case {
    const char* what;
    json body;
    Hdrs headers;
    int status;
    int code;
  };
  Hdrs ok = raw_headers(call);
  auto without = [&](const std::string& name) {
    Hdrs out;
    for (auto& kv : ok)
      if (kv.first != name) out.push_back(kv);
    return out;
  };
  auto with = [&](const std::string& name, const std::string& value) {
    Hdrs out = without(name);
    out.emplace_back(name, value);
    return out;
  };
  json old = tool_call(12, "echo", {{"text", "x"}},
                       meta(json::object(), {{"io.modelcontextprotocol/protocolVersion", "2030-01-01"}}));
  json no_caps = call;
  no_caps["params"]["_meta"].erase("io.modelcontextprotocol/clientCapabilities");
  json ping = request(13, "ping", {{"_meta", meta()}});
  std::vector<Case> cases = {
      {"no Mcp-Method", call, without("Mcp-Method"), 400, -32020},
      {"Mcp-Method differs", call, with("Mcp-Method", "tools/list"), 400, -32020},
      {"no Mcp-Name", call, without("Mcp-Name"), 400, -32020},
      {"Mcp-Name differs", call, with("Mcp-Name", "add"), 400, -32020},
      {"MCP-Protocol-Version differs", call, with("MCP-Protocol-Version", "2025-11-25"), 400, -32020},
      {"no MCP-Protocol-Version", call, without("MCP-Protocol-Version"), 400, -32020},
      {"unsupported version", old, with("MCP-Protocol-Version", "2030-01-01"), 400, -32022},
      {"no clientCapabilities", no_caps, ok, 400, -32602},
      {"ping (not in this era)", ping, raw_headers(ping), 404, -32601},
  };
  double before = series(scrape(h.port()), R"(mcp_bridge_http_refused_total{code="400"})");
  RawConn conn(h.port());
  REQUIRE(conn.connected());
  int n400 = 0;
  for (auto& c : cases) {
    CAPTURE(c.what);
    REQUIRE(conn.send(http_request(c.body, c.headers, true)));
    auto r = conn.read_response(10s);
    CHECK(r.status == c.status);
    CHECK(r.header("Content-Type").rfind("application/json", 0) == 0);
    auto e = json::parse(r.body, nullptr, false);
    REQUIRE(!e.is_discarded());
    CHECK(e["id"] == c.body["id"]);
    CHECK(e["error"]["code"] == c.code);
    if (c.code == -32022) {
      CHECK(e["error"]["data"]["requested"] == "2030-01-01");
      CHECK(e["error"]["data"]["supported"][0] == "2026-07-28");
    }
    if (c.status == 400) ++n400;
    // The same keep-alive connection serves a valid request next.
    REQUIRE(conn.send(http_request(call, ok, false)));
    auto good = conn.read_response(10s);
    CHECK(good.status == 200);
    CHECK(text_of(body_of_json(good.body)) == "x");
  }
  CHECK(h.upstream().sessions_opened() == static_cast<int>(cases.size()));  // the valid calls only
  double after = series(scrape(h.port()), R"(mcp_bridge_http_refused_total{code="400"})");
  CHECK(after - std::max(before, 0.0) == n400);
}

TEST_CASE("stateless logLevel: without it no notifications/message reaches the client; with it they do") {
  Harness h;
  auto log_call = [&](json id, json m) {
    return send(h, tool_call(std::move(id), "log", {{"level", "warning"}, {"text", "hello log"}}, std::move(m)), true);
  };
  auto count_logs = [](const Reply& r) {
    int n = 0;
    for (auto& m : r.messages) n += m.value("method", "") == "notifications/message";
    return n;
  };
  auto none = log_call(1, meta());
  REQUIRE(none.status == 200);
  CHECK(count_logs(none) == 0);
  CHECK(text_of(none.last()) == "logged");  // the upstream did emit it (its default level: debug)

  auto wanted = log_call(2, meta(json::object(), {{"io.modelcontextprotocol/logLevel", "info"}}));
  REQUIRE(wanted.status == 200);
  CHECK(count_logs(wanted) == 1);
  CHECK(wanted.messages.front()["params"]["data"] == "hello log");
  CHECK(wanted.last()["id"] == 2);

  // The level goes upstream as logging/setLevel: "error" filters a warning there.
  auto filtered = log_call(3, meta(json::object(), {{"io.modelcontextprotocol/logLevel", "error"}}));
  CHECK(count_logs(filtered) == 0);
  CHECK(text_of(filtered.last()) == "filtered");
}

TEST_CASE("stateless capabilities: each request's own, never another's (warm pool keyed by them)") {
  Harness h({}, [](msb::Config& c) {
    c.upstream.pool.size = 8;
    c.upstream.pool.reuse = true;
  });
  json sampling = {{"sampling", json::object()}};
  json none = json::object();
  auto caps_seen = [&](json id, const json& caps) {
    auto r = send(h, tool_call(std::move(id), "init_params", json::object(), meta(caps)));
    REQUIRE(r.status == 200);
    auto p = json::parse(text_of(r.last()), nullptr, false);
    REQUIRE(!p.is_discarded());
    CHECK(p["clientInfo"]["name"] == "stateless-test");
    return p["capabilities"];
  };
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    CHECK(caps_seen("a", sampling) == sampling);
    CHECK(caps_seen("b", none) == none);
    // Let the pool fill for both keys, so that a wrong key would hand out
    // a session initialized with the other request's capabilities.
    std::this_thread::sleep_for(150ms);
  }
  // The pool served calls (so the keying above was exercised).
  CHECK(h.bridge().forwarder().pool_stats().hits.load() >= 2);
}

TEST_CASE("stateless failure: upstream killed mid-call -> error with the id, fast") {
  Harness h;
  std::optional<Reply> r;
  std::thread t([&] { r = send(h, tool_call("dies", "sleep", {{"ms", 5000}})); });
  REQUIRE(wait_for([&] { return h.upstream().open_streams() >= 1; }, 3000ms));
  std::this_thread::sleep_for(200ms);
  auto t0 = SteadyClock::now();
  h.upstream().kill_streams();
  t.join();
  auto ms = ms_since(t0);
  REQUIRE(r);
  check_bridge_error(*r, "dies", "upstream_closed");
  CHECK(ms < 1000);
  CHECK_FALSE(r->last().contains("result"));
}

TEST_CASE("stateless cancellation: closing the SSE response stream cancels the call upstream") {
  // No pings: nothing but the hang-up's wake-up (or the wait's 1 s poll
  // slice) cuts the quiet call's wait below.
  Harness h({}, [](msb::Config& c) { c.upstream.ping_interval = 0ms; });
  json m = meta();
  m["progressToken"] = "tok";
  json body = tool_call("cancel-me", "sleep", {{"ms", 4000}}, m);
  RawConn conn(h.port());
  REQUIRE(conn.connected());
  REQUIRE(conn.send(http_request(body, raw_headers(body), true)));
  bool closed = false;
  std::string got = conn.read_until_close(500ms, &closed);
  CHECK(got.find("text/event-stream") != std::string::npos);  // the stream had started
  CHECK(got.find("notifications/progress") != std::string::npos);
  CHECK_FALSE(closed);
  conn.reset();
  REQUIRE(wait_for([&] { return h.upstream().cancellations() >= 1; }, 2000ms));
  CHECK(h.upstream().last_cancelled_id() == "\"cancel-me\"");
  CHECK(wait_for([&] { return h.upstream().open_streams() == 0; }, 2000ms));

  // A quiet call (nothing written yet, so no failed write reveals the
  // departure): the hang-up alone cancels it.
  json quiet = tool_call("quiet", "sleep", {{"ms", 4000}});
  RawConn conn2(h.port());
  REQUIRE(conn2.connected());
  REQUIRE(conn2.send(http_request(quiet, raw_headers(quiet), true)));
  REQUIRE(wait_for([&] { return h.upstream().open_streams() >= 1; }, 3000ms));
  std::this_thread::sleep_for(200ms);
  auto t0 = SteadyClock::now();
  conn2.reset();
  REQUIRE(wait_for([&] { return h.upstream().last_cancelled_id() == "\"quiet\""; }, 2000ms));
  // At once: the hang-up wakes the call's wait (its spawn's signal), not
  // the wait's 1 s poll slice.
  CHECK(ms_since(t0) < 400);
}

TEST_CASE("subscriptions/listen: acknowledged at once, then only the asked-for changes, tagged; closed with the last listener") {
  Harness h;
  json listen = request("sub-1", "subscriptions/listen",
                        {{"_meta", meta()},
                         {"notifications", {{"toolsListChanged", true}, {"resourceSubscriptions", {"file:///x"}}}}});
  RawConn conn(h.port());
  REQUIRE(conn.connected());
  int streams_before = h.upstream().open_streams();
  auto t0 = SteadyClock::now();
  REQUIRE(conn.send(http_request(listen, raw_headers(listen), true)));
  bool closed = false;
  std::string got = conn.read_until_close(300ms, &closed);
  CHECK_FALSE(closed);
  CHECK(got.find("text/event-stream") != std::string::npos);
  auto ack_at = got.find("notifications/subscriptions/acknowledged");
  REQUIRE(ack_at != std::string::npos);
  // The honoured filter: tools list changes, and the resource subscription
  // (the example server advertises resources.subscribe; listen_test.cpp has
  // the rest).
  CHECK(got.find(R"("notifications":{"toolsListChanged":true,"resourceSubscriptions":["file:///x"]})") !=
        std::string::npos);
  CHECK(got.find(R"("io.modelcontextprotocol/subscriptionId":"sub-1")") != std::string::npos);
  CHECK(ms_since(t0) < 1500);  // acknowledged at once (the read window is 300 ms)
  // The hub holds an upstream session for its listeners.
  REQUIRE(wait_for([&] { return h.upstream().open_streams() > streams_before; }, 3000ms));
  std::this_thread::sleep_for(100ms);  // its initialize replayed
  // A server-wide change: the asked-for type arrives tagged, the other not.
  h.upstream().broadcast("notifications/prompts/list_changed");
  h.upstream().broadcast("notifications/tools/list_changed");
  auto t1 = SteadyClock::now();
  got = conn.read_until_close(1000ms, &closed);
  CHECK_FALSE(closed);
  CHECK(got.find("notifications/tools/list_changed") != std::string::npos);
  CHECK(got.find("notifications/prompts/list_changed") == std::string::npos);
  CHECK(got.find(R"("io.modelcontextprotocol/subscriptionId":"sub-1")") != std::string::npos);
  (void)t1;  // the change arrived within the 1 s read window
  // The last listener leaves: the held upstream session closes.
  conn.reset();
  CHECK(wait_for([&] { return h.upstream().open_streams() <= streams_before; }, 3000ms));
}

TEST_CASE("both eras on one endpoint: a session-era client is served as before next to stateless calls") {
  Harness h;
  auto stateless = send(h, tool_call(1, "echo", {{"text", "modern"}}));
  CHECK(text_of(stateless.last()) == "modern");
  std::string sid = h.initialize();
  auto legacy = h.call_tool(sid, 2, "echo", {{"text", "legacy"}});
  CHECK(text_of(legacy.last()) == "legacy");
  CHECK_FALSE(legacy.last()["result"].contains("resultType"));  // session-era results untouched
  // The session-era request carrying MCP-Protocol-Version: 2026-07-28 stays
  // in the session era (Claude Code after its fallback).
  json req = {{"jsonrpc", "2.0"}, {"id", 3}, {"method", "tools/call"},
              {"params", {{"name", "echo"}, {"arguments", {{"text", "cc"}}}}}};
  auto cc = h.post(req.dump(), sid, true, {{"MCP-Protocol-Version", "2026-07-28"}});
  CHECK(text_of(cc.last()) == "cc");
  CHECK_FALSE(cc.last()["result"].contains("resultType"));
}

TEST_CASE("stateless MRTR: a retry is bound to the credentials it forwards; another tenant's key cannot resume the call") {
  Harness h({}, [](msb::Config& c) { c.forward_headers = {"X-Api-Key"}; });
  json caps = {{"elicitation", json::object()}};
  json call = tool_call(1, "ask_name", json::object(), meta(caps));
  httplib::Headers ha = modern_headers(call);
  ha.emplace("X-Api-Key", "tenant-a-key-0123456789");
  auto r1 = send(h, call, false, ha);
  REQUIRE(r1.status == 200);
  REQUIRE(!r1.messages.empty());
  json res = r1.last()["result"];
  REQUIRE(res.value("resultType", "") == "input_required");
  std::string state = res["requestState"];
  REQUIRE(res["inputRequests"].is_object());
  std::string key = res["inputRequests"].begin().key();
  auto retry = [&](json id, const std::string& api_key) {
    json p = {{"name", "ask_name"},
              {"arguments", json::object()},
              {"_meta", meta(caps)},
              {"requestState", state},
              {"inputResponses", {{key, {{"action", "accept"}, {"content", {{"name", "Ada"}}}}}}}};
    json body = request(std::move(id), "tools/call", p);
    httplib::Headers hh = modern_headers(body);
    if (!api_key.empty()) hh.emplace("X-Api-Key", api_key);
    return send(h, body, false, hh);
  };
  // Another tenant's key, and none at all: refused with the id, the call
  // stays parked for its owner.
  auto other = retry(2, "tenant-b-key-0123456789");
  REQUIRE(!other.messages.empty());
  CHECK(other.last()["id"] == 2);
  CHECK(other.last().contains("error"));
  auto none = retry(3, "");
  REQUIRE(!none.messages.empty());
  CHECK(none.last().contains("error"));
  // Its owner resumes it.
  auto mine = retry(4, "tenant-a-key-0123456789");
  REQUIRE(!mine.messages.empty());
  CHECK(mine.last()["id"] == 4);
  CHECK(text_of(mine.last()) == "hello Ada");
}
