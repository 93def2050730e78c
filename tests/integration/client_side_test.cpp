// Integration tests of the client side that real clients depend on (#10):
// no refusal poisons a keep-alive connection, a 2026-07-28 probe falls back
// to initialize in one round trip, and a client can start while the upstream
// is down.
#include "harness.h"

namespace {

using Hdrs = std::vector<std::pair<std::string, std::string>>;

// One HTTP/1.1 request as bytes, keep-alive (no Connection header).
std::string http_request(const std::string& method, const std::string& path, const Hdrs& headers,
                         const std::string& body) {
  std::string r = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (auto& [k, v] : headers) r += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST") r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  return r + "\r\n" + body;
}

Hdrs mcp_headers(const std::string& sid = "", Hdrs extra = {}) {
  Hdrs h = {{"Accept", "application/json, text/event-stream"}, {"Content-Type", "application/json"}};
  if (!sid.empty()) h.emplace_back("Mcp-Session-Id", sid);
  for (auto& kv : extra) h.push_back(kv);
  return h;
}

json body_json(const RawConn::Response& r) {
  auto j = json::parse(r.body, nullptr, false);
  return j.is_discarded() ? json() : j;
}

// A server/discover probe as the TS SDK v2 (auto) and Claude Code send it.
std::string discover_probe(const json& id, const std::string& version = "2026-07-28") {
  return json{{"jsonrpc", "2.0"},
              {"id", id},
              {"method", "server/discover"},
              {"params",
               {{"_meta",
                 {{"io.modelcontextprotocol/protocolVersion", version},
                  {"io.modelcontextprotocol/clientCapabilities", json::object()},
                  {"io.modelcontextprotocol/clientInfo", {{"name", "probe"}, {"version", "1"}}}}}}}}
      .dump();
}

const Hdrs kModernHeaders = {{"MCP-Protocol-Version", "2026-07-28"}, {"Mcp-Method", "server/discover"}};

}  // namespace

TEST_CASE("refusals never poison a keep-alive connection: each refusal, then a valid request on it") {
  Harness h({}, [](msb::Config& c) {
    c.auth_tokens = {kToken};
    c.max_body_size = 64 * 1024;
    c.max_calls_per_session = 1;
    c.max_inflight = 1;
    c.upstream.request_timeout = 8000ms;
  });
  const std::pair<std::string, std::string> auth = {"Authorization", "Bearer " + kToken};
  auto valid_init = http_request("POST", "/mcp", mcp_headers("", {auth}), init_body());
  // Two client sessions: one holds the only call slot (429 / 503 below).
  auto open_session = [&] {
    RawConn c(h.port());
    REQUIRE(c.connected());
    REQUIRE(c.send(valid_init));
    auto r = c.read_response(10s);
    REQUIRE(r.status == 200);
    REQUIRE(!r.header("Mcp-Session-Id").empty());
    return r.header("Mcp-Session-Id");
  };
  std::string busy_sid = open_session();
  std::string other_sid = open_session();
  std::string call = R"({"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}})";
  std::string big(100 * 1024, ' ');  // above --max-body-size, within the drain bound
  big.replace(0, call.size(), call);

  struct Case {
    const char* what;
    std::string request;
    int status;
  };
  std::vector<Case> cases = {
      {"stateless probe, unsupported version", http_request("POST", "/mcp", mcp_headers("", {auth, {"MCP-Protocol-Version", "2030-01-01"}, kModernHeaders[1]}), discover_probe(7, "2030-01-01")), 400},
      {"no session id", http_request("POST", "/mcp", mcp_headers("", {auth}), call), 400},
      {"unknown MCP-Protocol-Version", http_request("POST", "/mcp", mcp_headers(other_sid, {auth, {"MCP-Protocol-Version", "1999-01-01"}}), call), 400},
      {"malformed JSON", http_request("POST", "/mcp", mcp_headers(other_sid, {auth}), "{\"jsonrpc\":"), 400},
      {"no bearer token", http_request("POST", "/mcp", mcp_headers(other_sid), call), 401},
      {"foreign Origin", http_request("POST", "/mcp", mcp_headers(other_sid, {auth, {"Origin", "http://evil.example"}}), call), 403},
      {"unknown session", http_request("POST", "/mcp", mcp_headers("abc.def", {auth}), call), 404},
      {"unknown path", http_request("POST", "/nope", mcp_headers("", {auth}), call), 404},
      {"GET without a stream", http_request("GET", "/mcp", {{"Accept", "text/event-stream"}, auth}, ""), 405},
      {"Accept text/html", http_request("POST", "/mcp", mcp_headers(other_sid, {auth, {"Accept", "text/html"}}), call), 406},
      {"body above --max-body-size", http_request("POST", "/mcp", mcp_headers(other_sid, {auth}), big), 413},
      {"Content-Type text/plain", http_request("POST", "/mcp", {{"Accept", "application/json"}, {"Content-Type", "text/plain"}, {"Mcp-Session-Id", other_sid}, auth}, call), 415},
  };
  // "Accept text/html" above adds a second Accept header after the first:
  // make it the only one.
  cases[9].request = http_request("POST", "/mcp", {{"Accept", "text/html"}, {"Content-Type", "application/json"}, {"Mcp-Session-Id", other_sid}, auth}, call);

  // `then_health`: follow with GET /healthz instead of initialize (while the
  // only call slot is held, initialize itself would get 503).
  auto run = [&](const Case& c, bool then_health = false) {
    INFO("refusal: " << std::string(c.what));
    RawConn conn(h.port());
    REQUIRE(conn.connected());
    REQUIRE(conn.send(c.request));
    auto r = conn.read_response(10s);
    CHECK(r.status == c.status);
    // The body is read and dropped, so the same connection serves the next
    // request (the fallback initialize of a client that reuses it).
    CHECK(r.header("Connection") != "close");
    if (then_health) {
      REQUIRE(conn.send(http_request("GET", "/healthz", {}, "")));
      CHECK(conn.read_response(10s).status == 200);
      return;
    }
    REQUIRE(conn.send(valid_init));
    auto next = conn.read_response(10s);
    CHECK(next.status == 200);
    CHECK(!next.header("Mcp-Session-Id").empty());
  };
  for (auto& c : cases) run(c);

  // 429 and 503 while a call holds the only slot.
  std::thread held([&] {
    auto r = h.post(R"({"jsonrpc":"2.0","id":"held","method":"tools/call","params":{"name":"sleep","arguments":{"ms":2500}}})",
                    busy_sid, true, {auth});
    CHECK(r.status == 200);
  });
  CHECK(wait_for([&] { return series(scrape(h.port(), {auth}), "mcp_bridge_inflight_calls") == 1; }, 3000ms));
  run({"call above --max-calls-per-session", http_request("POST", "/mcp", mcp_headers(busy_sid, {auth}), call), 429}, true);
  run({"call above --max-inflight", http_request("POST", "/mcp", mcp_headers(other_sid, {auth}), call), 503}, true);
  held.join();

  // A body that cannot be drained within the bound, and a GET carrying a
  // body (never read by the HTTP layer), close the connection instead.
  {
    RawConn conn(h.port());
    REQUIRE(conn.connected());
    std::string huge = http_request("POST", "/mcp", mcp_headers(other_sid, {auth}), std::string(3 << 20, 'x'));
    std::thread sender([&] { conn.send(huge); });
    auto r = conn.read_response(10s);
    sender.join();
    CHECK(r.status == 413);
    CHECK(r.header("Connection") == "close");
    CHECK(conn.peer_closed(5000ms));
  }
  {
    RawConn conn(h.port());
    REQUIRE(conn.connected());
    REQUIRE(conn.send(http_request("GET", "/mcp", {{"Accept", "text/event-stream"}, auth}, "hello") + valid_init));
    auto r = conn.read_response(10s);
    CHECK(r.status == 405);
    CHECK(r.header("Connection") == "close");
    CHECK(conn.peer_closed(5000ms));
  }
  // Every refusal is counted by status.
  std::string m = scrape(h.port(), {auth});
  CHECK(series(m, R"(mcp_bridge_http_refused_total{code="400"})") >= 4);
  for (int code : {401, 403, 404, 405, 406, 413, 415, 429, 503})
    CHECK_MESSAGE(series(m, "mcp_bridge_http_refused_total{code=\"" + std::to_string(code) + "\"}") >= 1,
                  "refusal " << code << " not counted");
}

TEST_CASE("2026-07-28 requests: discover served with its id; a header-only request falls back; session era keeps the modern header") {
  Harness h;
  RawConn conn(h.port());
  REQUIRE(conn.connected());
  REQUIRE(conn.send(http_request("POST", "/mcp", mcp_headers("", kModernHeaders), discover_probe("probe-1"))));
  auto r = conn.read_response(10s);
  CHECK(r.status == 200);
  json d = body_json(r);
  if (d.empty()) d = parse_sse_messages(r.body).empty() ? json() : parse_sse_messages(r.body).back();
  CHECK(d["id"] == "probe-1");
  REQUIRE(d.contains("result"));
  CHECK(d["result"]["supportedVersions"][0] == "2026-07-28");

  // A modern tools/list whose _meta lacks clientCapabilities: refused with
  // its id (-32602), on a connection that stays usable.
  json modern_list = {{"jsonrpc", "2.0"}, {"id", 5}, {"method", "tools/list"},
                      {"params", {{"_meta", {{"io.modelcontextprotocol/protocolVersion", "2026-07-28"}}}}}};
  REQUIRE(conn.send(http_request("POST", "/mcp", mcp_headers("", {kModernHeaders[0], {"Mcp-Method", "tools/list"}}), modern_list.dump())));
  auto r2 = conn.read_response(10s);
  CHECK(r2.status == 400);
  CHECK(body_json(r2)["id"] == 5);
  CHECK(body_json(r2)["error"]["code"] == -32602);

  // Only the MCP-Protocol-Version header (no _meta, no session): the
  // session era's answer, not a recognized modern error, so that a client
  // falls back to initialize.
  json header_only = {{"jsonrpc", "2.0"}, {"id", 6}, {"method", "tools/list"}};
  REQUIRE(conn.send(http_request("POST", "/mcp", mcp_headers("", {kModernHeaders[0]}), header_only.dump())));
  auto r3 = conn.read_response(10s);
  CHECK(r3.status == 400);
  json e = body_json(r3);
  CHECK(e["id"] == 6);  // never null where the id is known
  int code = e["error"]["code"];
  CHECK(code == -32000);  // the session era's refusal: the header alone does not switch eras
  CHECK(code != -32020);
  CHECK(code != -32021);
  CHECK(code != -32022);
  CHECK(e["error"]["message"].get<std::string>().find("initialize") != std::string::npos);

  // Claude Code's fallback: initialize, then session-era requests that still
  // carry MCP-Protocol-Version: 2026-07-28 (anthropics/claude-code#92835).
  const Hdrs modern_version = {{"MCP-Protocol-Version", "2026-07-28"}};
  REQUIRE(conn.send(http_request("POST", "/mcp", mcp_headers("", modern_version), init_body())));
  auto init = conn.read_response(10s);
  REQUIRE(init.status == 200);
  std::string sid = init.header("Mcp-Session-Id");
  REQUIRE(!sid.empty());
  REQUIRE(conn.send(http_request("POST", "/mcp", mcp_headers(sid, modern_version),
                                 R"({"jsonrpc":"2.0","method":"notifications/initialized"})")));
  CHECK(conn.read_response(10s).status == 202);
  REQUIRE(conn.send(http_request("POST", "/mcp", mcp_headers(sid, modern_version),
                                 R"({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"after fallback"}}})")));
  auto call = conn.read_response(10s);
  CHECK(call.status == 200);
  auto msgs = parse_sse_messages(call.body);
  REQUIRE(!msgs.empty());
  CHECK(text_of(msgs.back()) == "after fallback");
  REQUIRE(conn.send(http_request("DELETE", "/mcp", {{"Mcp-Session-Id", sid}, modern_version[0]}, "")));
  CHECK(conn.read_response(10s).status == 200);
}

TEST_CASE("upstream down at client start: initialize answered from the last upstream result, calls work once it is back") {
  Harness h;
  h.initialize();  // the upstream's initialize result is now known
  h.stop_upstream();
  auto init = h.post(init_body(), "");
  REQUIRE(init.status == 200);
  REQUIRE(init.messages.size() == 1);
  CHECK(init.last()["id"] == 0);
  CHECK(init.last()["result"]["serverInfo"]["name"] == "example-legacy-server");
  std::string sid = init.session_id;
  REQUIRE(!sid.empty());
  CHECK(h.post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})", sid).status == 202);
  // While it is down, calls fail fast with the usual error and their id.
  auto down = h.call_tool(sid, 3, "echo", {{"text", "x"}});
  check_bridge_error(down, 3, "upstream_unreachable");
  CHECK(down.ms < 3000);
  // Back up: the same client session works, no reconnect.
  h.restart_upstream();
  check_recovers(h, sid);
  CHECK(series(scrape(h.port()), "mcp_bridge_initialize_stale_total") == 1);

  // Another protocol version is not compatible with what was cached.
  h.stop_upstream();
  json other = json::parse(init_body());
  other["params"]["protocolVersion"] = "2025-03-26";
  auto miss = h.post(other.dump(), "");
  CHECK(miss.session_id.empty());
  check_bridge_error(miss, 0, "upstream_unreachable");
}

TEST_CASE("upstream down at client start: initialize fails when it was never reached, or with --serve-stale-initialize=false") {
  {
    Harness h;
    h.stop_upstream();
    auto init = h.post(init_body(), "");
    CHECK(init.session_id.empty());
    check_bridge_error(init, 0, "upstream_unreachable");
  }
  {
    Harness h({}, [](msb::Config& c) { c.serve_stale_initialize = false; });
    h.initialize();
    h.stop_upstream();
    auto init = h.post(init_body(), "");
    CHECK(init.session_id.empty());
    check_bridge_error(init, 0, "upstream_unreachable");
    CHECK(series(scrape(h.port()), "mcp_bridge_initialize_stale_total") == 0);
  }
}

TEST_CASE("logging/setLevel is answered by the bridge (valid levels only), also while the upstream is down") {
  Harness h;
  std::string sid = h.initialize();
  h.stop_upstream();
  auto ok = h.post(R"({"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"warning"}})", sid);
  REQUIRE(ok.messages.size() == 1);
  CHECK(ok.last()["id"] == 1);
  CHECK(ok.last()["result"] == json::object());
  // A hostile or wrong level is refused, and never remembered or replayed.
  std::string junk(100000, 'x');
  auto bad = h.post(R"({"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":")" + junk + R"("}})", sid);
  REQUIRE(bad.messages.size() == 1);
  CHECK(bad.last()["error"]["code"] == -32602);
  h.restart_upstream();
  auto r = h.call_tool(sid, 3, "log", {{"level", "info"}, {"text", "quiet"}});
  auto loud = h.call_tool(sid, 4, "log", {{"level", "error"}, {"text", "loud"}});
  // The remembered level (warning) filters the upstream's messages.
  CHECK(r.messages.size() == 1);
  CHECK(loud.messages.size() == 2);
}

TEST_CASE("initialize params too large for a session id get a clear error, never an id that later 404s") {
  Harness h;
  json init = json::parse(init_body());
  init["params"]["capabilities"]["experimental"] = {{"blob", std::string(40000, 'a')}};
  auto r = h.post(init.dump(), "");
  CHECK(r.status == 200);
  CHECK(r.session_id.empty());
  REQUIRE(r.messages.size() == 1);
  CHECK(r.last()["id"] == 0);
  CHECK(r.last()["error"]["code"] == -32602);
  CHECK(r.last()["error"]["message"].get<std::string>().find("too large") != std::string::npos);
}

TEST_CASE("HEAD is answered with the head only: the next response on the connection is intact") {
  Harness h;
  RawConn c(h.port());
  REQUIRE(c.connected());
  REQUIRE(c.send("HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  // The HEAD answer announces the length of a body it does not send: the
  // bytes after its head are the GET's answer.
  bool closed = false;
  std::string both;
  auto until = SteadyClock::now() + 5000ms;
  while (SteadyClock::now() < until && both.find("ok\n") == std::string::npos && !closed)
    both += c.read_until_close(100ms, &closed);
  auto first = both.find("HTTP/1.1 200");
  REQUIRE(first != std::string::npos);
  auto second = both.find("HTTP/1.1 200", first + 1);
  REQUIRE(second != std::string::npos);
  std::string head_answer = both.substr(first, second - first);
  CHECK(head_answer.find("Content-Length: 3") != std::string::npos);
  CHECK(head_answer.find("ok\n") == std::string::npos);
  CHECK(both.substr(second).find("ok\n") != std::string::npos);
}

TEST_CASE("clients that reset right after sending a request never disturb the bridge") {
  Harness h;
  std::string sid = h.initialize();
  std::string call = R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}})";
  for (int i = 0; i < 60; ++i) {
    RawConn c(h.port());
    REQUIRE(c.connected());
    std::string req = i % 2 ? http_request("GET", "/healthz", {}, "")
                            : http_request("POST", "/mcp", mcp_headers(sid), call);
    c.send(req);
    c.reset();  // RST at once: the answer's write fails
  }
  // Every connection is gone, and the bridge serves as before.
  CHECK(wait_for([&] { return series(scrape(h.port()), "mcp_bridge_client_connections") <= 1; }, 5000ms));
  auto r = h.call_tool(sid, 2, "echo", {{"text", "still here"}});
  CHECK(text_of(r.last()) == "still here");
}

TEST_CASE("initialize gives its --max-inflight slot back before its answer is sent") {
  Harness h({}, [](msb::Config& c) { c.max_inflight = 1; });
  // Back to back, each sent the moment the previous answer is read.
  for (int i = 0; i < 20; ++i) {
    auto r = h.post(init_body(), "");
    CHECK_MESSAGE(r.status == 200, "initialize " << i << " got " << r.status);
  }
}

TEST_CASE("a slow call's SSE head is not held back until its answer (a quick one leaves with it in one write)") {
  Harness h;
  std::string sid = h.initialize();
  RawConn c(h.port());
  REQUIRE(c.connected());
  // Slow: the head is not held back until the answer (2 s away).
  std::string slow = R"({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":2000}}})";
  auto t0 = SteadyClock::now();
  REQUIRE(c.send(http_request("POST", "/mcp", mcp_headers(sid), slow)));
  bool closed = false;
  std::string got;
  auto until = t0 + 1500ms;
  while (SteadyClock::now() < until && got.find("\r\n\r\n") == std::string::npos && !closed)
    got += c.read_until_close(50ms, &closed);
  auto head_ms = std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0).count();
  REQUIRE(got.find("\r\n\r\n") != std::string::npos);
  CHECK(got.rfind("HTTP/1.1 200", 0) == 0);
  CHECK(got.find("text/event-stream") != std::string::npos);
  CHECK(got.find("\"id\":7") == std::string::npos);  // the answer itself is still 2 s away
  CHECK(head_ms < 1000);
  // Then the answer and the stream's end.
  until = SteadyClock::now() + 5000ms;
  while (SteadyClock::now() < until && got.find("0\r\n\r\n") == std::string::npos && !closed)
    got += c.read_until_close(100ms, &closed);
  CHECK(got.find("\"id\":7") != std::string::npos);
  CHECK(got.find("0\r\n\r\n") != std::string::npos);
}
