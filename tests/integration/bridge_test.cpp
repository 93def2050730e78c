// Integration tests: failures, the pool, cancellation, operations, TLS (see
// harness.h for the setup every test shares).
#include "harness.h"


TEST_CASE("happy path: initialize, list, call over SSE and JSON, progress streams first") {
  Harness h;
  std::string sid = h.initialize();
  auto list = h.post(R"({"jsonrpc":"2.0","id":"l","method":"tools/list"})", sid);
  REQUIRE(list.messages.size() == 1);
  // echo add sleep big whoami count touch list_changed notify_later roots init_params fail log,
  // and the asking tools (MRTR): ask_name ask_model ask_roots ask_twice ask_both
  CHECK(list.last()["result"]["tools"].size() == 18);

  auto echo = h.call_tool(sid, 7, "echo", {{"text", "héllo"}});
  CHECK(echo.content_type.rfind("text/event-stream", 0) == 0);
  CHECK(text_of(echo.last()) == "héllo");
  CHECK(echo.last()["id"] == 7);

  auto add = h.call_tool(sid, "a", "add", {{"a", 2}, {"b", 40}}, /*sse=*/false);
  CHECK(add.content_type.rfind("application/json", 0) == 0);
  CHECK(text_of(add.last()) == "42");

  auto sleep = h.call_tool(sid, 9, "sleep", {{"ms", 300}}, true, {{"progressToken", "tok-1"}});
  REQUIRE(sleep.messages.size() == 4);
  for (int i = 0; i < 3; ++i) {
    CHECK(sleep.messages[i]["method"] == "notifications/progress");
    CHECK(sleep.messages[i]["params"]["progressToken"] == "tok-1");
  }
  CHECK(text_of(sleep.last()) == "slept 300 ms");

  auto big = h.call_tool(sid, 10, "big", {{"bytes", 3 << 20}});
  REQUIRE(big.messages.size() == 1);
  CHECK(text_of(big.last()).size() == size_t{3} << 20);

  // Upstream errors pass through untouched.
  auto unknown = h.post(R"({"jsonrpc":"2.0","id":11,"method":"no/such"})", sid);
  CHECK(unknown.last()["error"]["code"] == -32601);
  CHECK(unknown.last()["error"]["message"] == "Method not found: no/such");

  // The bridge answers ping itself.
  auto ping = h.post(R"({"jsonrpc":"2.0","id":12,"method":"ping"})", sid);
  CHECK(ping.last()["result"] == json::object());
  CHECK(h.upstream().premature_requests() == 0);
}

TEST_CASE("an upstream message over several data: lines reaches SSE clients as one whole message") {
  // A legacy server may pretty-print (the SSE parser joins the lines with
  // '\n'): written raw into the client's event, the line break ended the
  // data field and the client parsed a cut message (the call never answered).
  Harness h;
  h.upstream().faults().multiline_data = true;
  std::string sid = h.initialize();
  auto echo = h.call_tool(sid, 7, "echo", {{"text", "two\nlines"}});
  REQUIRE(echo.transport_ok);
  CHECK(echo.content_type.rfind("text/event-stream", 0) == 0);
  CHECK(echo.body.find("\n \"") == std::string::npos);  // no continuation line without `data:`
  REQUIRE(echo.messages.size() == 1);
  CHECK(text_of(echo.last()) == "two\nlines");
  CHECK(echo.last()["id"] == 7);
  auto add = h.call_tool(sid, "a", "add", {{"a", 2}, {"b", 40}}, /*sse=*/false);
  CHECK(text_of(add.last()) == "42");
  auto sleep = h.call_tool(sid, 9, "sleep", {{"ms", 200}}, true, {{"progressToken", "t"}});
  REQUIRE(sleep.messages.size() >= 2);
  CHECK(sleep.messages[0]["method"] == "notifications/progress");
  CHECK(text_of(sleep.last()) == "slept 200 ms");
}

TEST_CASE("python-style upstream (CRLF, /messages/?session_id=) works and is never sent a premature request") {
  example::Options opt;
  opt.python_style = true;
  opt.ping_comment_ms = 100;
  Harness h(opt);
  std::string sid = h.initialize();
  for (int i = 0; i < 5; ++i) {
    auto r = h.call_tool(sid, i, "add", {{"a", i}, {"b", 1}});
    CHECK(text_of(r.last()) == std::to_string(i + 1));
  }
  CHECK(h.upstream().premature_requests() == 0);
  CHECK(h.upstream().sessions_opened() >= 6);  // one per call, plus initialize
}

TEST_CASE("failure: upstream refuses connections, then comes back") {
  Harness h;
  std::string sid = h.initialize();
  h.stop_upstream();
  auto r = h.call_tool(sid, "r1", "echo", {{"text", "x"}});
  check_bridge_error(r, "r1", "upstream_unreachable", "connect");
  CHECK(r.ms < 1000);
  h.restart_upstream();
  check_recovers(h, sid);
}

TEST_CASE("failure: SSE GET answers non-200 or non-SSE") {
  Harness h;
  std::string sid = h.initialize();
  h.faults().sse_status = 503;
  auto r = h.call_tool(sid, 1, "echo", {{"text", "x"}});
  check_bridge_error(r, 1, "upstream_rejected", "connect");
  CHECK(r.last()["error"]["data"]["bridge"]["http_status"] == 503);
  CHECK(r.ms < 1000);
  h.faults().sse_status = 0;
  h.faults().sse_wrong_type = true;
  auto w = h.call_tool(sid, 2, "echo", {{"text", "x"}});
  check_bridge_error(w, 2, "upstream_rejected", "connect");
  CHECK(w.ms < 1000);
  h.faults().sse_wrong_type = false;
  check_recovers(h, sid);
}

TEST_CASE("failure: endpoint never comes => error at --endpoint-timeout") {
  Harness h;
  std::string sid = h.initialize();
  h.faults().no_endpoint = true;
  auto r = h.call_tool(sid, 1, "echo", {{"text", "x"}});
  check_bridge_error(r, 1, "deadline_exceeded", "endpoint");
  // One retry is allowed (nothing reached the upstream): at most two endpoint waits.
  CHECK(r.ms >= 550);
  CHECK(r.ms < 2 * 600 + 500);
  h.faults().no_endpoint = false;
  check_recovers(h, sid);
}

TEST_CASE("failure: stream drops before / after endpoint") {
  Harness h;
  std::string sid = h.initialize();
  h.faults().drop_before_endpoint = true;
  auto r = h.call_tool(sid, 1, "echo", {{"text", "x"}});
  check_bridge_error(r, 1, "upstream_closed", "endpoint");
  CHECK(r.ms < 1000);
  h.faults().drop_before_endpoint = false;
  h.faults().drop_after_endpoint = true;
  auto a = h.call_tool(sid, 2, "echo", {{"text", "x"}});
  check_bridge_error(a, 2, "upstream_closed", "initialize");
  CHECK(a.ms < 1000);
  h.faults().drop_after_endpoint = false;
  check_recovers(h, sid);
}

TEST_CASE("failure: stream drops between events and in the middle of an event, during the call") {
  Harness h;
  std::string sid = h.initialize();
  h.faults().drop_on_call = true;
  auto r = h.call_tool(sid, "d1", "echo", {{"text", "x"}});
  check_bridge_error(r, "d1", "upstream_closed", "request");
  CHECK(r.ms < 1000);
  h.faults().drop_on_call = false;
  h.faults().drop_mid_event = true;
  auto m = h.call_tool(sid, "d2", "echo", {{"text", "x"}});
  check_bridge_error(m, "d2", "upstream_closed", "request");
  CHECK(m.ms < 1000);
  h.faults().drop_mid_event = false;
  check_recovers(h, sid);
}

TEST_CASE("failure: POST answered 4xx / 5xx / 404") {
  Harness h;
  std::string sid = h.initialize();
  for (int status : {400, 404, 500}) {
    CAPTURE(status);
    h.faults().post_status = status;
    auto r = h.call_tool(sid, status, "echo", {{"text", "x"}});
    check_bridge_error(r, status, "upstream_rejected", "request");
    CHECK(r.last()["error"]["data"]["bridge"]["http_status"] == status);
    CHECK(r.ms < 1000);
  }
  h.faults().post_status = 0;
  check_recovers(h, sid);
}

TEST_CASE("failure: POST accepted then nothing (black hole) => error at --request-timeout") {
  Harness h;
  std::string sid = h.initialize();
  h.faults().black_hole = true;
  // The stream stays alive (pings are answered), so only the deadline ends it.
  auto r = h.call_tool(sid, "bh", "echo", {{"text", "x"}});
  check_bridge_error(r, "bh", "deadline_exceeded", "request");
  CHECK(r.ms >= 1900);
  CHECK(r.ms <= 2500);
  h.faults().black_hole = false;
  check_recovers(h, sid);
}

TEST_CASE("failure: half-open stream (silent) is detected by the ping probe") {
  Harness h;
  std::string sid = h.initialize();
  h.faults().half_open = true;
  auto r = h.call_tool(sid, "ho", "echo", {{"text", "x"}});
  check_bridge_error(r, "ho", "upstream_unresponsive", "request");
  // ping-interval 400ms + ping-timeout 300ms, well before the 2s request deadline.
  CHECK(r.ms >= 600);
  CHECK(r.ms < 1500);
  h.faults().half_open = false;
  check_recovers(h, sid);
}

TEST_CASE("failure: an upstream answering 7 as \"7\" fails the call at once, not at its deadline") {
  Harness h({}, [](msb::Config& c) { c.upstream.request_timeout = 5000ms; });
  std::string sid = h.initialize();
  h.faults().id_as_string = true;
  auto r = h.call_tool(sid, 7, "echo", {{"text", "x"}});
  check_bridge_error(r, 7, "upstream_protocol_error", "request");
  CHECK(r.last()["error"]["message"].get<std::string>().find("keeps its type") != std::string::npos);
  CHECK(r.ms < 2500);
  auto s = h.call_tool(sid, "s", "echo", {{"text", "strings are left alone"}});
  CHECK(text_of(s.last()) == "strings are left alone");
}

TEST_CASE("failure: endpoint on another origin is refused (SSRF guard), not retried") {
  Harness h;
  std::string sid = h.initialize();
  h.faults().endpoint_foreign = true;
  int before = h.upstream().sessions_opened();
  auto r = h.call_tool(sid, 1, "echo", {{"text", "x"}});
  check_bridge_error(r, 1, "endpoint_refused", "endpoint");
  CHECK(h.upstream().sessions_opened() - before == 1);
  h.faults().endpoint_foreign = false;
  check_recovers(h, sid);
}

TEST_CASE("upstream restart between calls: the next call just works, same client session") {
  Harness h;
  std::string sid = h.initialize();
  check_recovers(h, sid);
  h.restart_upstream();
  check_recovers(h, sid);
  CHECK(h.upstream().premature_requests() == 0);
}

TEST_CASE("client side: header and body rules") {
  Harness h;
  std::string sid = h.initialize();
  std::string call = R"({"jsonrpc":"2.0","id":1,"method":"tools/list"})";
  // Accept without JSON or SSE: 406.
  {
    httplib::Client cli("127.0.0.1", h.port());
    cli.set_read_timeout(kClientTimeout);
    auto r = cli.Post("/mcp", {{"Accept", "text/html"}, {"Mcp-Session-Id", sid}}, call, "application/json");
    REQUIRE(r);
    CHECK(r->status == 406);
    auto g = cli.Get("/mcp", {{"Accept", "text/event-stream"}, {"Mcp-Session-Id", sid}});
    REQUIRE(g);
    CHECK(g->status == 405);
  }
  CHECK(h.post(call, sid, true, {}, "text/plain").status == 415);
  auto bad = h.post("{\"jsonrpc\":\"2.0\",", sid);
  CHECK(bad.status == 400);
  CHECK(bad.last()["error"]["code"] == -32700);
  auto invalid = h.post(R"({"jsonrpc":"2.0","id":1})", sid);
  CHECK(invalid.status == 400);
  CHECK(invalid.last()["error"]["code"] == -32600);
  CHECK(h.post(call, "").status == 400);                            // missing session id
  CHECK(h.post(call, sid + "x").status == 404);                     // tampered
  CHECK(h.post(call, "abc.def").status == 404);                     // forged
  CHECK(h.post(call, sid, true, {{"MCP-Protocol-Version", "1999-01-01"}}).status == 400);
  CHECK(h.post(call, sid, true, {{"MCP-Protocol-Version", "2025-06-18"}}).status == 200);
  // Notifications and responses: 202, even with the upstream dead.
  h.stop_upstream();
  CHECK(h.post(R"({"jsonrpc":"2.0","method":"notifications/roots/list_changed"})", sid).status == 202);
  CHECK(h.post(R"({"jsonrpc":"2.0","id":"s1","result":{}})", sid).status == 202);
  // DELETE revokes: later requests get 404.
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_read_timeout(kClientTimeout);
  auto d = cli.Delete("/mcp", {{"Mcp-Session-Id", sid}});
  REQUIRE(d);
  CHECK(d->status == 200);
  CHECK(h.post(call, sid).status == 404);
  // Notifications and responses still get 202 with no valid session (the
  // revoked one, none at all: a 2026-07-28 client has none).
  CHECK(h.post(R"({"jsonrpc":"2.0","method":"notifications/roots/list_changed"})", sid).status == 202);
  CHECK(h.post(R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}})", "").status == 202);
  CHECK(h.post(R"({"jsonrpc":"2.0","id":"s2","result":{}})", "").status == 202);
}

TEST_CASE("client side: a chunked POST with a trailer is answered; the trailer is ignored") {
  Harness h;
  std::string sid = h.initialize();
  RawConn c(h.port());
  REQUIRE(c.connected());
  std::string body = R"({"jsonrpc":"2.0","id":"tr","method":"tools/call","params":{"name":"echo","arguments":{"text":"chunked"}}})";
  char size[16];
  std::snprintf(size, sizeof size, "%zx", body.size());
  // A trailer larger than the head: it must not disturb the head's headers
  // (Mcp-Session-Id, Content-Type, Accept are read after the body is in).
  REQUIRE(c.send("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
                 "Content-Type: application/json\r\nMcp-Session-Id: " + sid +
                 "\r\nTransfer-Encoding: chunked\r\n\r\n" + size + "\r\n" + body + "\r\n0\r\nX-Trailer: " +
                 std::string(2000, 't') + "\r\n\r\n"));
  auto r = c.read_response(5s);
  REQUIRE(r.status == 200);
  auto j = json::parse(r.body, nullptr, false);
  REQUIRE(j.is_object());
  CHECK(j["id"] == "tr");
  CHECK(text_of(j) == "chunked");
}

TEST_CASE("oversized request body: 413 with the limit, for chunked bodies too") {
  Harness h({}, [](msb::Config& c) { c.max_body_size = 4096; });
  std::string sid = h.initialize();
  std::string big = R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":")" +
                    std::string(8192, 'x') + "\"}}}";
  CHECK(h.post(big, sid).status == 413);
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_read_timeout(kClientTimeout);
  size_t sent = 0;
  auto r = cli.Post(
      "/mcp", {{"Accept", "application/json, text/event-stream"}, {"Mcp-Session-Id", sid}},
      [&](size_t, httplib::DataSink& sink) {
        if (sent >= big.size()) {
          sink.done();
          return true;
        }
        size_t n = std::min<size_t>(1024, big.size() - sent);
        sink.write(big.data() + sent, n);
        sent += n;
        return true;
      },
      "application/json");
  REQUIRE(r);
  CHECK(r->status == 413);
  CHECK(r->body.find("4096") != std::string::npos);
}

TEST_CASE("session ids are self-contained: a second bridge with the same secret accepts them") {
  Harness h;
  std::string sid = h.initialize();
  msb::Config c2 = h.cfg();
  msb::FrontServer second(c2);
  std::string why;
  REQUIRE(second.start(&why));
  httplib::Client cli("127.0.0.1", second.port());
  cli.set_read_timeout(kClientTimeout);
  auto r = cli.Post("/mcp", {{"Accept", "application/json"}, {"Mcp-Session-Id", sid}},
                    R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}})",
                    "application/json");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body.find("\"3\"") != std::string::npos);
  msb::Config c3 = h.cfg();
  c3.session_secret = "a-different-secret-0123456789";
  msb::FrontServer third(c3);
  REQUIRE(third.start(&why));
  httplib::Client cli3("127.0.0.1", third.port());
  cli3.set_read_timeout(kClientTimeout);
  auto r3 = cli3.Post("/mcp", {{"Accept", "application/json"}, {"Mcp-Session-Id", sid}},
                      R"({"jsonrpc":"2.0","id":1,"method":"tools/list"})", "application/json");
  REQUIRE(r3);
  CHECK(r3->status == 404);
  second.stop();
  third.stop();
}

TEST_CASE("session state: the latest logging/setLevel is replayed on every upstream session") {
  Harness h;
  std::string sid = h.initialize();
  auto set = h.post(R"({"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"error"}})", sid);
  CHECK(set.last()["result"] == json::object());
  auto info = h.call_tool(sid, 2, "log", {{"level", "info"}, {"text", "hidden"}});
  REQUIRE(info.messages.size() == 1);
  CHECK(text_of(info.last()) == "filtered");
  auto err = h.call_tool(sid, 3, "log", {{"level", "error"}, {"text", "shown"}});
  REQUIRE(err.messages.size() == 2);
  CHECK(err.messages[0]["method"] == "notifications/message");
  CHECK(err.messages[0]["params"]["data"] == "shown");
  CHECK(h.upstream().premature_requests() == 0);
}

TEST_CASE("batch of requests: every response arrives, as an array in JSON mode") {
  Harness h;
  std::string sid = h.initialize();
  std::string batch = R"([{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":1}}},)"
                      R"({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}},)"
                      R"({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"b"}}}])";
  auto j = h.post(batch, sid, false);
  REQUIRE(j.messages.size() == 2);
  CHECK(j.body.front() == '[');
  CHECK(text_of(j.messages[0]) == "2");
  CHECK(text_of(j.messages[1]) == "b");
  auto s = h.post(batch, sid, true);
  REQUIRE(s.messages.size() == 2);
  CHECK(s.messages[1]["id"] == 2);
}

TEST_CASE("batch refusals answer each request by its id") {
  Harness h({}, [](msb::Config& c) { c.max_calls_per_session = 1; });
  std::string sid = h.initialize();
  std::string batch = R"([{"jsonrpc":"2.0","id":"x1","method":"tools/list"},)"
                      R"({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}},)"
                      R"({"jsonrpc":"2.0","id":7,"method":"tools/list"}])";
  auto ids_of = [](const std::string& body) {
    std::vector<json> ids;
    auto j = json::parse(body, nullptr, false);
    if (j.is_array())
      for (auto& e : j) ids.push_back(e.contains("error") ? e["id"] : json("no error"));
    return ids;
  };
  const std::vector<json> want{"x1", 7};
  auto none = h.post(batch, "", false);  // no Mcp-Session-Id
  CHECK(none.status == 400);
  CHECK(ids_of(none.body) == want);
  auto unknown = h.post(batch, "not-a-session", false);
  CHECK(unknown.status == 404);
  CHECK(ids_of(unknown.body) == want);
  auto over = h.post(batch, sid, false);  // two calls, one allowed per session
  CHECK(over.status == 429);
  CHECK(ids_of(over.body) == want);
}

TEST_CASE("invalid requests are refused by their id; duplicate members never reach the upstream") {
  Harness h;
  std::string sid = h.initialize();
  auto bad_method = h.post(R"({"jsonrpc":"2.0","id":7,"method":5})", sid, false);
  CHECK(bad_method.status == 400);
  REQUIRE(bad_method.messages.size() == 1);
  CHECK(bad_method.last()["id"] == 7);
  CHECK(bad_method.last()["error"]["code"] == -32600);
  // A batch with one invalid element: each request it could read is answered.
  auto batch = h.post(R"([{"jsonrpc":"2.0","id":11,"method":"tools/list"},5])", sid, false);
  CHECK(batch.status == 400);
  REQUIRE(batch.messages.size() == 1);
  CHECK(batch.last()["id"] == 11);
  CHECK(batch.last()["error"]["message"].get<std::string>().find("element 2") != std::string::npos);
  // The bridge read the first method, a Python or JS server the last: the
  // server ran tools/call while the bridge treated a tools/list (retried it
  // as read-only, logged it as such). Refused, and nothing reached the server.
  size_t posts = h.upstream().post_log().size();
  auto dup = h.post(R"({"jsonrpc":"2.0","id":3,"method":"tools/list","method":"tools/call",)"
                    R"("params":{"name":"echo","arguments":{"text":"x"}}})", sid, false);
  CHECK(dup.status == 400);
  REQUIRE(dup.messages.size() == 1);
  CHECK(dup.last()["id"] == 3);
  CHECK(dup.last()["error"]["message"] == "Invalid Request: duplicate \"method\" member");
  auto dup_id = h.post(R"({"jsonrpc":"2.0","id":1,"method":"tools/list","id":2})", sid, false);
  CHECK(dup_id.status == 400);
  REQUIRE(dup_id.messages.size() == 1);
  CHECK(dup_id.last()["id"].is_null());  // which one was meant is unknowable
  CHECK(h.upstream().post_log().size() == posts);
}

TEST_CASE("keepalive comments on an idle response stream") {
  Harness h({}, [](msb::Config& c) { c.keepalive_interval = 150ms; });
  std::string sid = h.initialize();
  auto r = h.call_tool(sid, 1, "sleep", {{"ms", 700}});
  CHECK(text_of(r.last()) == "slept 700 ms");
  CHECK(r.body.find(": keepalive") != std::string::npos);
}

TEST_CASE("progress extends the request deadline, up to --max-request-timeout") {
  Harness h;  // request-timeout 2s, max 6s
  std::string sid = h.initialize();
  auto r = h.call_tool(sid, 1, "sleep", {{"ms", 3000}}, true, {{"progressToken", 5}});
  CHECK(text_of(r.last()) == "slept 3000 ms");
  // Without a progress token the same call hits the 2 s deadline.
  auto t = h.call_tool(sid, 2, "sleep", {{"ms", 3000}});
  check_bridge_error(t, 2, "deadline_exceeded", "request");
  CHECK(t.ms < 2600);
}

namespace {
// One request with a chosen Host header; returns the raw response (bounded by
// a 10 s receive timeout).
std::string raw_exchange(int port, const std::string& host, const std::string& sid,
                         const std::string& body) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::string req = "POST /mcp HTTP/1.1\r\nHost: " + host +
                    "\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
                    "Connection: close\r\nMcp-Session-Id: " + sid +
                    "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (int i = 0; i < 1000; ++i) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

}  // namespace

TEST_CASE("cancellation: a client that disconnects cancels its upstream call") {
  // No liveness pings: only the wake-up can end the call's wait this early.
  Harness h({}, [](msb::Config& c) { c.upstream.ping_interval = 0ms; });
  std::string sid = h.initialize();
  int fd = raw_post(h.port(), sid,
                    R"({"jsonrpc":"2.0","id":"gone-1","method":"tools/call","params":{"name":"sleep","arguments":{"ms":5000}}})");
  std::this_thread::sleep_for(300ms);  // the call reaches the upstream
  close(fd);
  // At once: the departure wakes the call's wait (which otherwise looks
  // again only after its 1 s poll slice).
  CHECK(wait_for([&] { return h.upstream().cancellations() >= 1; }, 500ms));
  CHECK(h.upstream().last_cancelled_id() == "\"gone-1\"");
  CHECK(h.bridge().forwarder().stats().cancelled.load() == 1);
}

TEST_CASE("cancellation: notifications/cancelled from the client reaches the upstream") {
  // A request timeout far above the asserted bound: only the cancellation can
  // end the call this early.
  // No liveness pings either: they would end the call's wait within 400 ms.
  Harness h({}, [](msb::Config& c) {
    c.upstream.request_timeout = 8000ms;
    c.upstream.max_request_timeout = 8000ms;
    c.upstream.ping_interval = 0ms;
  });
  std::string sid = h.initialize();
  std::thread caller([&] {
    auto r = h.call_tool(sid, 77, "sleep", {{"ms", 6000}});
    // No response is owed for a cancelled request; the stream just ends, at
    // once (the call's wait is woken; its poll slice alone would take 1 s).
    CHECK(r.ms < 900);
    CHECK(r.messages.empty());
  });
  std::this_thread::sleep_for(300ms);
  auto n = h.post(R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":77,"reason":"user"}})", sid);
  CHECK(n.status == 202);
  CHECK(wait_for([&] { return h.upstream().cancellations() >= 1; }, 1500ms));
  caller.join();
}

TEST_CASE("cancellation: a batch's later call cancelled before it starts is never sent upstream") {
  Harness h({}, [](msb::Config& c) {
    c.upstream.ping_interval = 0ms;
    c.upstream.pool.size = 4;
  });
  std::string sid = h.initialize();
  auto tool_calls = [&] {
    int n = 0;
    for (auto& r : h.upstream().post_log()) n += r.method == "tools/call";
    return n;
  };
  // Two warm sessions in the pool (two calls at once, each given back):
  // the later call of the batch finds one ready, so nothing but the cancel
  // itself can keep it from being sent.
  std::thread w1([&] { CHECK(text_of(h.call_tool(sid, "w1", "sleep", {{"ms", 300}}).last()) == "slept 300 ms"); });
  std::thread w2([&] { CHECK(text_of(h.call_tool(sid, "w2", "sleep", {{"ms", 300}}).last()) == "slept 300 ms"); });
  w1.join();
  w2.join();
  int before = tool_calls();
  std::string batch = R"([{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"sleep","arguments":{"ms":600}}},)"
                      R"({"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"echo","arguments":{"text":"b"}}}])";
  std::thread caller([&] {
    auto r = h.post(batch, sid, false);
    // The first call's answer; none is owed for the cancelled one.
    REQUIRE(r.messages.size() == 1);
    CHECK(r.messages[0]["id"] == "a");
  });
  std::this_thread::sleep_for(200ms);  // "a" runs upstream, "b" waits its turn
  auto n = h.post(R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"b","reason":"user"}})", sid);
  CHECK(n.status == 202);
  caller.join();
  CHECK(h.bridge().forwarder().pool_stats().hits.load() >= 2);  // "a" and "b" found warm sessions
  CHECK(tool_calls() - before == 1);  // "a" alone reached the upstream
}

TEST_CASE("DNS-rebinding guard: Host and Origin must be loopback or allowed") {
  Harness h({}, [](msb::Config& c) { c.allowed_origins = {"https://app.example.com"}; });
  std::string sid = h.initialize();
  std::string call = R"({"jsonrpc":"2.0","id":1,"method":"tools/list"})";
  CHECK(h.post(call, sid, true, {{"Origin", "http://evil.example.com"}}).status == 403);
  CHECK(h.post(call, sid, true, {{"Origin", "http://127.0.0.1:9"}}).status == 200);
  CHECK(h.post(call, sid, true, {{"Origin", "https://app.example.com"}}).status == 200);
  std::string evil = raw_exchange(h.port(), "evil.example.com", sid, call);
  CHECK(evil.rfind("HTTP/1.1 403", 0) == 0);
  CHECK(evil.find("evil.example.com") != std::string::npos);
  CHECK(raw_exchange(h.port(), "localhost:1234", sid, call).rfind("HTTP/1.1 200", 0) == 0);
  CHECK(raw_exchange(h.port(), "[::1]", sid, call).rfind("HTTP/1.1 200", 0) == 0);
}


namespace {
void with_pool(msb::Config& c) {
  // The warm pool is per event loop (a warm call crosses no thread): with one
  // loop every connection of the test client finds the same pool.
  c.loop_threads = 1;
  c.upstream.pool.size = 8;
  c.upstream.pool.max_idle_age = 10000ms;
}
}  // namespace

TEST_CASE("warm pool: calls after the first are served by pre-initialized sessions") {
  Harness h({}, with_pool);
  std::string sid = h.initialize();  // initialize asks for a warm session
  REQUIRE(wait_for([&] { return h.bridge().forwarder().pool_stats().idle.load() >= 1; }, 2000ms));
  for (int i = 0; i < 5; ++i) {
    auto r = h.call_tool(sid, i, "add", {{"a", i}, {"b", 1}});
    CHECK(text_of(r.last()) == std::to_string(i + 1));
    // Each call leaves a replacement behind; wait for it so the next one is warm.
    REQUIRE(wait_for([&] { return h.bridge().forwarder().pool_stats().idle.load() >= 1; }, 2000ms));
  }
  CHECK(h.bridge().forwarder().pool_stats().hits.load() == 5);
  CHECK(h.upstream().premature_requests() == 0);
  // setLevel changes the key: the next call cannot use a session set up for the old level.
  auto set = h.post(R"({"jsonrpc":"2.0","id":"lv","method":"logging/setLevel","params":{"level":"error"}})", sid);
  CHECK(set.last()["result"] == json::object());
  auto info = h.call_tool(sid, "f", "log", {{"level", "info"}, {"text", "hidden"}});
  CHECK(text_of(info.last()) == "filtered");
}

TEST_CASE("warm pool: a session that died while idle is discarded, the call still succeeds") {
  Harness h({}, with_pool);
  std::string sid = h.initialize();
  REQUIRE(wait_for([&] { return h.bridge().forwarder().pool_stats().idle.load() >= 1; }, 2000ms));
  h.restart_upstream();  // kills every idle upstream stream
  auto r = h.call_tool(sid, "x", "echo", {{"text", "survived"}});
  REQUIRE(!r.messages.empty());
  CHECK(text_of(r.last()) == "survived");
  CHECK(r.ms < 1000);
}

TEST_CASE("warm pool: idle sessions expire after --pool-max-idle-age") {
  Harness h({}, [](msb::Config& c) {
    c.upstream.pool.size = 4;
    c.upstream.pool.max_idle_age = 300ms;
  });
  h.initialize();
  REQUIRE(wait_for([&] { return h.bridge().forwarder().pool_stats().idle.load() >= 1; }, 2000ms));
  CHECK(wait_for([&] { return h.bridge().forwarder().pool_stats().expired.load() >= 1; }, 3000ms));
  CHECK(h.bridge().forwarder().pool_stats().idle.load() == 0);
}

TEST_CASE("warm pool: the keys of client sessions that stopped calling are dropped, not kept") {
  Harness h({}, [](msb::Config& c) {
    c.loop_threads = 1;
    c.upstream.pool.size = 4;
    c.upstream.pool.reuse = false;  // every call takes its session out for good
    c.upstream.pool.max_idle_age = 300ms;
  });
  auto& stats = h.bridge().forwarder().pool_stats();
  std::vector<std::string> sids;
  for (int i = 0; i < 3; ++i) sids.push_back(h.initialize());
  REQUIRE(wait_for([&] { return stats.idle.load() >= 1; }, 2000ms));
  for (size_t i = 0; i < sids.size(); ++i)
    CHECK(text_of(h.call_tool(sids[i], static_cast<int>(i), "echo", {{"text", "k"}}).last()) == "k");
  CHECK(stats.keys.load() >= 1);
  // No more calls: every bucket's sessions expire and the buckets go with them.
  CHECK(wait_for([&] { return stats.keys.load() == 0; }, 3000ms));
  CHECK(stats.idle.load() == 0);
}

TEST_CASE("warm pool: sessions are never shared across forwarded credentials") {
  Harness h({}, [](msb::Config& c) {
    with_pool(c);
    c.forward_headers = {"Authorization"};
  });
  json init = {{"jsonrpc", "2.0"}, {"id", 0}, {"method", "initialize"},
               {"params", {{"protocolVersion", "2025-06-18"}, {"capabilities", json::object()},
                           {"clientInfo", {{"name", "same"}, {"version", "1"}}}}}};
  auto a = h.post(init.dump(), "", true, {{"Authorization", "Bearer alice"}});
  REQUIRE(!a.session_id.empty());
  // One client session whose credential changes between calls: every call
  // must reach the upstream with its own credential, warm or not.
  for (int round = 0; round < 4; ++round) {
    for (const std::string who : {"Bearer alice", "Bearer bob"}) {
      json req = {{"jsonrpc", "2.0"}, {"id", round}, {"method", "tools/call"},
                  {"params", {{"name", "whoami"}, {"arguments", json::object()}}}};
      auto r = h.post(req.dump(), a.session_id, true, {{"Authorization", who}});
      REQUIRE(!r.messages.empty());
      CHECK(text_of(r.last()) == who);
    }
  }
  CHECK(h.bridge().forwarder().pool_stats().hits.load() >= 4);
  CHECK(h.upstream().premature_requests() == 0);
}

TEST_CASE("admission: above --max-inflight calls get 503 with Retry-After, then work again") {
  Harness h({}, [](msb::Config& c) {
    c.max_inflight = 2;
  });
  std::string sid = h.initialize();
  std::vector<std::thread> slow;
  for (int i = 0; i < 2; ++i)
    slow.emplace_back([&, i] { h.call_tool(sid, 100 + i, "sleep", {{"ms", 1200}}); });
  REQUIRE(wait_for([&] { return h.upstream().open_streams() >= 2; }, 2000ms));
  std::this_thread::sleep_for(100ms);
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_read_timeout(kClientTimeout);
  auto r = cli.Post("/mcp", {{"Accept", "application/json"}, {"Mcp-Session-Id", sid}},
                    R"({"jsonrpc":"2.0","id":9,"method":"tools/list"})", "application/json");
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(r->get_header_value("Retry-After") == "1");
  // Notifications are never refused.
  CHECK(h.post(R"({"jsonrpc":"2.0","method":"notifications/roots/list_changed"})", sid).status == 202);
  for (auto& t : slow) t.join();
  auto ok = h.call_tool(sid, 10, "echo", {{"text", "room again"}});
  CHECK(text_of(ok.last()) == "room again");
}

// ---- Production operability (#5): security rules, limits, TLS, metrics,
// readiness, drain. ---------------------------------------------------------

TEST_CASE("auth: 401 with WWW-Authenticate without or with a wrong token; the token never goes upstream") {
  Harness h({}, [](msb::Config& c) {
    c.auth_tokens = {kToken, "second-token-0123456789abcdef"};
    c.forward_headers = {"X-Api-Key"};
  });
  auto none = h.post(init_body(), "");
  CHECK(none.status == 401);
  REQUIRE(none.messages.size() == 1);
  CHECK(none.last()["error"]["message"].get<std::string>().find("Bearer") != std::string::npos);
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_read_timeout(kClientTimeout);
  auto r = cli.Post("/mcp", {{"Accept", "application/json"}}, init_body(), "application/json");
  REQUIRE(r);
  CHECK(r->status == 401);
  CHECK(r->get_header_value("WWW-Authenticate") == R"(Bearer realm="mcp-sse-bridge")");
  auto wrong = cli.Post("/mcp", {{"Accept", "application/json"}, {"Authorization", "Bearer " + kToken + "x"}},
                        init_body(), "application/json");
  REQUIRE(wrong);
  CHECK(wrong->status == 401);
  CHECK(wrong->get_header_value("WWW-Authenticate").find(R"(error="invalid_token")") != std::string::npos);
  CHECK(h.upstream().sessions_opened() == 0);  // refused before any upstream work

  auto ok = h.post(init_body(), "", true, {{"Authorization", "Bearer second-token-0123456789abcdef"}});
  REQUIRE(ok.status == 200);
  auto call = h.post(R"({"jsonrpc":"2.0","id":1,"method":"tools/list"})", ok.session_id, true,
                     {{"Authorization", "Bearer " + kToken}, {"X-Api-Key", "k1"}});
  CHECK(call.status == 200);
  CHECK(call.last().contains("result"));
  // A valid session id is not a credential on its own.
  auto no_token = h.post(R"({"jsonrpc":"2.0","id":2,"method":"tools/list"})", ok.session_id);
  CHECK(no_token.status == 401);
  CHECK_FALSE(has_header(h.upstream().last_get_headers(), "Authorization"));
  CHECK_FALSE(has_header(h.upstream().last_post_headers(), "Authorization"));
  CHECK(header_value(h.upstream().last_post_headers(), "X-Api-Key") == "k1");
  // Health stays open by default; metrics too.
  auto health = cli.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  int st = 0;
  scrape(h.port(), {}, &st);
  CHECK(st == 200);
}

TEST_CASE("auth: health and metrics can be protected") {
  Harness h({}, [](msb::Config& c) {
    c.auth_tokens = {kToken};
    c.auth_health = true;
    c.auth_metrics = true;
  });
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_read_timeout(kClientTimeout);
  for (auto path : {"/healthz", "/readyz", "/metrics"}) {
    auto r = cli.Get(path);
    REQUIRE(r);
    CHECK_MESSAGE(r->status == 401, path);
    auto ok = cli.Get(path, {{"Authorization", "Bearer " + kToken}});
    REQUIRE(ok);
    CHECK_MESSAGE(ok->status == 200, path);
  }
}

TEST_CASE("headers: only allow-listed client headers reach the upstream, static ones always") {
  Harness h({}, [](msb::Config& c) {
    c.forward_headers = {"X-Api-Key", "Traceparent"};
    c.upstream.static_headers = {"X-Static-Secret: s3cr3t"};
  });
  httplib::Headers extra = {{"X-Api-Key", "key-1"},   {"Traceparent", "00-abc-def-01"},
                            {"Cookie", "session=1"},  {"X-Other", "nope"},
                            {"Proxy-Authorization", "Basic x"}, {"Authorization", "Bearer client"},
                            {"Forwarded", "for=1.2.3.4"}};
  auto init = h.post(init_body(), "", true, extra);
  REQUIRE(init.status == 200);
  auto r = h.post(R"({"jsonrpc":"2.0","id":1,"method":"tools/list"})", init.session_id, true, extra);
  REQUIRE(r.status == 200);
  for (auto hs : {h.upstream().last_get_headers(), h.upstream().last_post_headers()}) {
    CHECK(header_value(hs, "X-Api-Key") == "key-1");
    CHECK(header_value(hs, "Traceparent") == "00-abc-def-01");
    CHECK(header_value(hs, "X-Static-Secret") == "s3cr3t");
    for (auto leak : {"Cookie", "X-Other", "Proxy-Authorization", "Authorization", "Forwarded",
                      "REMOTE_ADDR", "REMOTE_PORT", "LOCAL_ADDR", "LOCAL_PORT", "Mcp-Session-Id"})
      CHECK_MESSAGE(!has_header(hs, leak), leak);
    CHECK(header_value(hs, "Host").find("127.0.0.1") == 0);  // the upstream's own host, not the client's
  }
}

TEST_CASE("headers: a forwarded value with CR or NUL is a 400, never sent upstream") {
  Harness h({}, [](msb::Config& c) { c.forward_headers = {"X-Api-Key"}; });
  std::string sid = h.initialize();
  int opened = h.upstream().sessions_opened();
  for (std::string bad : {std::string("a\rInjected: 1"), std::string("a\0b", 3)}) {
    RawConn c(h.port());
    REQUIRE(c.connected());
    std::string body = R"({"jsonrpc":"2.0","id":1,"method":"tools/list"})";
    c.send("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
           "Content-Type: application/json\r\nMcp-Session-Id: " + sid + "\r\nX-Api-Key: " + bad +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
    bool closed = false;
    std::string resp = c.read_until_close(3000ms, &closed);
    CHECK(resp.rfind("HTTP/1.1 400", 0) == 0);
  }
  CHECK(h.upstream().sessions_opened() == opened);
  CHECK_FALSE(has_header(h.upstream().last_post_headers(), "Injected"));
}

TEST_CASE("limits: more than --max-calls-per-session calls on one session get 429 with the id") {
  Harness h({}, [](msb::Config& c) { c.max_calls_per_session = 1; });
  std::string sid = h.initialize();
  std::thread slow([&] { h.call_tool(sid, 1, "sleep", {{"ms", 800}}); });
  REQUIRE(wait_for([&] { return h.upstream().open_streams() >= 1; }, 2000ms));
  std::this_thread::sleep_for(50ms);
  auto r = h.call_tool(sid, 2, "echo", {{"text", "x"}});
  CHECK(r.status == 429);
  REQUIRE(r.messages.size() == 1);
  CHECK(r.last()["id"] == 2);
  // Another session is not affected.
  std::string other = h.initialize();
  CHECK(text_of(h.call_tool(other, 3, "echo", {{"text", "free"}}).last()) == "free");
  slow.join();
  CHECK(text_of(h.call_tool(sid, 4, "echo", {{"text", "again"}}).last()) == "again");
}

TEST_CASE("limits: a slowloris request head is cut off at --client-read-timeout") {
  Harness h({}, [](msb::Config& c) { c.client_read_timeout = 500ms; });
  RawConn c(h.port());
  REQUIRE(c.connected());
  auto t0 = SteadyClock::now();
  c.send("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n");
  bool closed = false;
  for (int i = 0; i < 30 && !closed; ++i) {  // one header byte every 100 ms, up to 3 s
    c.send("X");
    c.read_until_close(100ms, &closed);
  }
  CHECK(closed);
  CHECK(ms_since(t0) < 1500);
  CHECK(ms_since(t0) >= 400);
  CHECK(series(scrape(h.port()), "mcp_bridge_slow_clients_total") >= 1);
}

TEST_CASE("limits: a large answer to a slow but steady reader is not cut by the idle or the write timeout") {
  // 6 MB, more than the kernel buffers between the two (the client's receive
  // buffer is 64 KB), read at up to ~3 MB/s: the answer takes seconds to
  // leave, and the send queue shrinks in every 300 ms of it.
  for (bool short_idle : {true, false}) {
    CAPTURE(short_idle);
    Harness h({}, [short_idle](msb::Config& c) {
      (short_idle ? c.client_idle_timeout : c.client_write_timeout) = 300ms;
      // Building a 6 MB answer takes the example server longer than the
      // liveness probe's 700 ms in a sanitizer build: neither the probe nor
      // the request deadline is what this test is about.
      c.upstream.ping_interval = 0ms;
      c.upstream.request_timeout = 30000ms;
      c.upstream.max_request_timeout = 30000ms;
    });
    std::string sid = h.initialize();
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    int rcv = 64 * 1024;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(h.port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const size_t bytes = 6'000'000;
    std::string body = R"({"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"big","arguments":{"bytes":)" +
                       std::to_string(bytes) + "}}}";
    std::string req = post_bytes(sid, body);
    REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
    std::string got;
    size_t want = 0;
    std::vector<char> buf(64 * 1024);
    auto t0 = SteadyClock::now();
    for (int i = 0; i < 1500 && (want == 0 || got.size() < want); ++i) {  // bounded: 1,500 x 20 ms
      std::this_thread::sleep_for(20ms);
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) continue;
      ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
      if (n <= 0) break;  // closed: cut short
      got.append(buf.data(), static_cast<size_t>(n));
      if (want == 0) {
        auto e = got.find("\r\n\r\n");
        auto cl = got.find("Content-Length: ");
        if (e != std::string::npos && cl != std::string::npos && cl < e)
          want = e + 4 + std::stoul(got.substr(cl + 16));
      }
    }
    ::close(fd);
    CAPTURE(ms_since(t0));
    CAPTURE(got.substr(0, 600));
    CHECK(want > bytes);
    CHECK(got.size() == want);
  }
}

TEST_CASE("limits: a malformed request pipelined behind a running call: the answers before it, then 400, then close") {
  Harness h({}, [](msb::Config& c) { c.client_read_timeout = 500ms; });
  std::string sid = h.initialize();
  auto post = [&](const std::string& body) { return post_bytes(sid, body); };
  RawConn c(h.port());
  REQUIRE(c.connected());
  // One write: a call that takes longer than --client-read-timeout, a good
  // request, a malformed one.
  c.send(post(R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":1200}}})") +
         post(R"({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"mid"}}})") +
         "GARBAGE\r\n\r\n");
  bool closed = false;
  std::string resp = c.read_until_close(5000ms, &closed);
  CHECK(closed);
  auto slept = resp.find("slept 1200 ms");
  auto mid = resp.find("\"mid\"");
  auto bad = resp.find("HTTP/1.1 400");
  CHECK(slept != std::string::npos);
  CHECK(mid != std::string::npos);
  CHECK(bad != std::string::npos);
  CHECK(slept < mid);
  CHECK(mid < bad);
}

TEST_CASE("limits: requests pipelined behind a running call hold at most ~1 MiB of bodies; past the read-ahead, 429") {
  // Each of 16 pipelined requests could hold --max-body-size before any was
  // admitted (256 MiB per connection at the defaults).
  Harness h({}, [](msb::Config& c) { c.client_read_timeout = 5000ms; });
  std::string sid = h.initialize();
  auto post = [&](const std::string& body) { return post_bytes(sid, body); };
  RawConn c(h.port());
  REQUIRE(c.connected());
  std::string pad(600 * 1024, 'p');
  std::string bytes = post(R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sleep","arguments":{"ms":800}}})");
  for (int i = 2; i <= 7; ++i)
    bytes += post(R"({"jsonrpc":"2.0","id":)" + std::to_string(i) +
                  R"(,"method":"tools/call","params":{"name":"echo","arguments":{"text":"r)" + std::to_string(i) +
                  R"("},"_meta":{"pad":")" + pad + R"("}}})");
  std::thread writer([&] { c.send(bytes); });  // 3.6 MB: the bridge stops taking it
  bool closed = false;
  std::string resp = c.read_until_close(10000ms, &closed);
  writer.join();
  CHECK(closed);
  auto slept = resp.find("slept 800 ms");
  auto r2 = resp.find("\"r2\""), r3 = resp.find("\"r3\"");
  auto refused = resp.find("HTTP/1.1 429");
  CHECK(slept != std::string::npos);
  CHECK(r2 != std::string::npos);  // the first pipelined bodies (1.2 MB) are held and answered
  CHECK(r3 != std::string::npos);
  CHECK(resp.find("\"r5\"") == std::string::npos);  // not parsed: refused with the read-ahead
  REQUIRE(refused != std::string::npos);
  CHECK(slept < refused);
  CHECK(resp.find("Too many pipelined requests") != std::string::npos);
}

TEST_CASE("HTTP/1.0: a streamed answer is not chunked; its body ends with the connection") {
  Harness h;
  std::string sid = h.initialize();
  RawConn c(h.port());
  REQUIRE(c.connected());
  std::string body = R"({"jsonrpc":"2.0","id":"old","method":"tools/call","params":{"name":"echo","arguments":{"text":"one-oh"}}})";
  c.send(post_bytes(sid, body, true, "1.0"));
  bool closed = false;
  std::string resp = c.read_until_close(3000ms, &closed);
  CHECK(closed);
  auto e = resp.find("\r\n\r\n");
  REQUIRE(e != std::string::npos);
  std::string head = resp.substr(0, e), rest = resp.substr(e + 4);
  CAPTURE(head);
  CHECK(head.find("text/event-stream") != std::string::npos);
  CHECK(head.find("Transfer-Encoding") == std::string::npos);
  CHECK(head.find("Content-Length") == std::string::npos);
  CHECK(head.find("Connection: close") != std::string::npos);
  // The body is the SSE stream itself, no chunk sizes around it.
  CHECK(rest.rfind("event: message\n", 0) == 0);
  CHECK(rest.find("one-oh") != std::string::npos);
}

TEST_CASE("limits: a Transfer-Encoding other than chunked is a 400 and the connection closes, no second answer") {
  Harness h;
  std::string sid = h.initialize();
  RawConn c(h.port());
  REQUIRE(c.connected());
  std::string body = R"({"jsonrpc":"2.0","id":1,"method":"tools/list"})";
  c.send("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
         "Mcp-Session-Id: " + sid + "\r\nTransfer-Encoding: gzip\r\n\r\n" + body);
  bool closed = false;
  std::string resp = c.read_until_close(3000ms, &closed);
  CHECK(closed);
  CHECK(resp.rfind("HTTP/1.1 400", 0) == 0);
  CHECK(resp.find("HTTP/1.1", 1) == std::string::npos);  // one answer only
}

TEST_CASE("limits: a chunk extension or trailer that never ends is a 400 at once, not a growing buffer") {
  // Beast bounds neither: the bytes were held (and copied on every read)
  // until --client-read-timeout, ~90 % of a core for one connection.
  Harness h({}, [](msb::Config& c) { c.client_read_timeout = 20000ms; });
  std::string sid = h.initialize();
  for (bool trailer : {false, true}) {
    CAPTURE(trailer);
    RawConn c(h.port());
    REQUIRE(c.connected());
    c.send("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
           "Mcp-Session-Id: " + sid + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
           (trailer ? std::string("2\r\n{}\r\n0\r\nX-T: ") : std::string("1;")));
    auto t0 = SteadyClock::now();
    std::string filler(16 * 1024, 'a');
    bool sent_all = true;
    for (int i = 0; i < 16 && sent_all; ++i) sent_all = c.send(filler);  // 256 KiB, no line end
    bool closed = false;
    std::string resp = c.read_until_close(5000ms, &closed);
    CHECK(closed);
    CHECK(resp.rfind("HTTP/1.1 400", 0) == 0);
    CHECK(resp.find("chunk framing") != std::string::npos);
    CHECK(ms_since(t0) < 5000);
  }
  auto ok = h.call_tool(sid, 1, "echo", {{"text", "still fine"}});
  CHECK(text_of(ok.last()) == "still fine");
}

namespace {

// POSTs a tools/call of `log` repeated `repeat` times with `bytes` of text
// on a raw connection, then reads it at most `per_ms` bytes per ms until
// the call's result, the close, or `within`. Returns what was read.
std::string flood_slowly(RawConn& c, const std::string& sid, int repeat, size_t bytes, std::chrono::milliseconds within,
                         bool* closed, size_t per_ms = 16 * 1024) {
  json req = {{"jsonrpc", "2.0"},
              {"id", 77},
              {"method", "tools/call"},
              {"params", {{"name", "log"}, {"arguments", {{"level", "error"}, {"text", std::string(bytes, 'x')}, {"repeat", repeat}}}}}};
  c.send(post_bytes(sid, req.dump(), true));
  std::string got;
  *closed = false;
  auto end = SteadyClock::now() + within;
  while (SteadyClock::now() < end && got.find(R"("text":"logged")") == std::string::npos) {
    got += c.read_some(per_ms, 100ms, closed);  // at most per_ms bytes per ms (16 KiB: ~16 MB/s)
    
    if (*closed) break;
    std::this_thread::sleep_for(1ms);
  }
  return got;
}

size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + needle.size())) ++n;
  return n;
}

}  // namespace

TEST_CASE("backpressure: an upstream flooding a slow client is read at the client's pace; without it the queue is capped") {
  // 24 MB of notifications against a queue cap of 17 MiB (--max-message-size
  // 1 MiB + 16 MiB): the upstream writes them in ~0.1 s, the client reads
  // far slower. Before, every byte was queued in the bridge (1.7 GB in 4 s
  // for a longer flood).
  // A long request deadline: the sanitizer build takes seconds to read and
  // relay 24 MB (the deadline is not what this test is about).
  auto small_messages = [](msb::Config& c) {
    c.upstream.max_message_size = 1 << 20;
    c.upstream.request_timeout = 30000ms;
    c.upstream.max_request_timeout = 60000ms;
  };
  SUBCASE("call mode: the call stops reading its upstream stream until the client catches up") {
    Harness h({}, small_messages);
    std::string sid = h.initialize();
    RawConn c(h.port());
    REQUIRE(c.connected());
    int rcv = 16 * 1024;
    ::setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    bool closed = false;
    std::string got = flood_slowly(c, sid, 400, 60000, 60000ms, &closed);
    CHECK_FALSE(closed);
    CHECK(count_of(got, "notifications/message") == 400);
    CHECK(got.find(R"("text":"logged")") != std::string::npos);
  }
  SUBCASE("session mode (one upstream stream for the session's calls): the queue cap cuts the slow client") {
    Harness h({}, [&](msb::Config& c) {
      small_messages(c);
      c.upstream.mode = msb::UpstreamMode::kSession;
      // One loop: the session's upstream and the client's connection share
      // it, so writes queue (from another loop a write waits for the
      // socket, which is backpressure of its own).
      c.loop_threads = 1;
    });
    std::string sid = h.initialize();
    RawConn c(h.port());
    REQUIRE(c.connected());
    int rcv = 16 * 1024;
    ::setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    bool closed = false;
    // 48 MB read at ~1 MB/s: the queue passes the cap even where the
    // bridge relays slowly (the sanitizer build: ~8 MB/s).
    std::string got = flood_slowly(c, sid, 800, 60000, 60000ms, &closed, 1024);
    CHECK(closed);
    CHECK(got.find(R"("text":"logged")") == std::string::npos);
    CHECK(got.size() < size_t{20} << 20);
    auto after = h.call_tool(sid, 1, "echo", {{"text", "next"}});  // the bridge serves on
    CHECK(text_of(after.last()) == "next");
  }
}

TEST_CASE("limits: above --max-connections a new connection gets 503 at once, not a wait") {
  Harness h({}, [](msb::Config& c) {
    c.max_connections = 4;
    c.max_inflight = 3;
    c.client_read_timeout = 3000ms;
  });
  auto hold = hold_connections(h.port(), 4);
  RawConn extra(h.port());
  REQUIRE(extra.connected());
  auto t0 = SteadyClock::now();
  bool closed = false;
  std::string resp = extra.read_until_close(2000ms, &closed);
  CHECK(resp.rfind("HTTP/1.1 503", 0) == 0);
  CHECK(resp.find("Retry-After: 1") != std::string::npos);
  CHECK(closed);
  CHECK(ms_since(t0) < 1000);
  hold.clear();
  // Slots free again: served normally.
  CHECK(wait_for([&] {
    httplib::Client cli("127.0.0.1", h.port());
    auto r = cli.Get("/healthz");
    return r && r->status == 200;
  }, 5000ms));
}

namespace {

msb::Config with_front_tls(msb::Config c, bool mtls) {
  c.tls = {kTls + "server.pem", kTls + "server.key", mtls ? kTls + "ca.pem" : ""};
  std::string why;
  c.tls_ctx = msb::TlsContext::server(c.tls, &why);
  REQUIRE_MESSAGE(c.tls_ctx, why);
  return c;
}

}  // namespace

TEST_CASE("tls: the bridge serves HTTPS; plain HTTP to it fails; mTLS needs a client certificate") {
  for (bool mtls : {false, true}) {
    CAPTURE(mtls);
    Harness h({}, [mtls](msb::Config& c) { c = with_front_tls(c, mtls); });
    httplib::SSLClient good("127.0.0.1", h.port(), mtls ? kTls + "client.pem" : "",
                            mtls ? kTls + "client.key" : "");
    good.set_ca_cert_path((kTls + "ca.pem").c_str());
    good.enable_server_certificate_verification(true);
    good.set_read_timeout(kClientTimeout);
    good.set_keep_alive(true);
    auto r = good.Post("/mcp", {{"Accept", "application/json"}}, init_body(), "application/json");
    REQUIRE_MESSAGE(r, httplib::to_string(r.error()));
    CHECK(r->status == 200);
    std::string sid = r->get_header_value("Mcp-Session-Id");
    CHECK(!sid.empty());
    // More requests on the same kept-alive TLS connection, each after one the
    // upstream answered (its answer came while the connection's read was
    // pending): each is answered at once. (The TLS read once went into the
    // connection's request buffer, which the first answer freed: the next
    // request's bytes went to freed memory and it was never answered.)
    for (int i = 0; i < 3; ++i) {
      CAPTURE(i);
      auto t0 = SteadyClock::now();
      auto l = good.Post("/mcp", {{"Accept", "application/json"}, {"Mcp-Session-Id", sid}},
                         R"({"jsonrpc":"2.0","id":)" + std::to_string(10 + i) + R"(,"method":"tools/list"})",
                         "application/json");
      REQUIRE_MESSAGE(l, httplib::to_string(l.error()));
      CHECK(l->status == 200);
      CHECK(l->body.find("\"tools\"") != std::string::npos);
      CHECK(ms_since(t0) < 2000);
    }

    httplib::Client plain("127.0.0.1", h.port());
    plain.set_read_timeout(3s);
    auto p = plain.Get("/healthz");
    CHECK((!p || p->status != 200));

    if (mtls) {
      httplib::SSLClient anon("127.0.0.1", h.port());
      anon.set_ca_cert_path((kTls + "ca.pem").c_str());
      anon.enable_server_certificate_verification(true);
      anon.set_read_timeout(3s);
      auto a = anon.Get("/healthz");
      CHECK((!a || a->status != 200));
    }
  }
}

TEST_CASE("tls: a stalled TLS handshake is cut at --client-read-timeout") {
  Harness h({}, [](msb::Config& c) {
    c = with_front_tls(c, false);
    c.client_read_timeout = 400ms;
  });
  RawConn c(h.port());
  REQUIRE(c.connected());
  auto t0 = SteadyClock::now();
  c.send(std::string("\x16\x03\x01", 3));  // the start of a ClientHello, then nothing
  bool closed = false;
  c.read_until_close(3000ms, &closed);
  CHECK(closed);
  CHECK(ms_since(t0) < 1500);
}

namespace {

// Bridge (plain) in front of an HTTPS example server.
struct TlsUpstream {
  example::LegacyServer up;
  int up_port;
  std::unique_ptr<msb::FrontServer> bridge;

  TlsUpstream(const std::string& host, std::function<void(msb::TlsClientOptions&)> tls)
      : up(example::Options{false, 0, 16, kTls + "server.pem", kTls + "server.key"}) {
    up_port = up.start("127.0.0.1", 0);
    REQUIRE(up_port > 0);
    msb::Config c = test_config(up_port);
    c.upstream.sse_url = *msb::parse_url("https://" + host + ":" + std::to_string(up_port) + "/sse");
    tls(c.upstream.tls_options);
    std::string why;
    c.upstream.tls = msb::TlsContext::client(c.upstream.tls_options, &why);
    REQUIRE_MESSAGE(c.upstream.tls, why);
    bridge = std::make_unique<msb::FrontServer>(c);
    REQUIRE_MESSAGE(bridge->start(&why), why);
  }
  Reply init() {
    httplib::Client cli("127.0.0.1", bridge->port());
    cli.set_read_timeout(kClientTimeout);
    auto t0 = SteadyClock::now();
    auto r = cli.Post("/mcp", {{"Accept", "application/json"}}, init_body(), "application/json");
    Reply out;
    out.ms = ms_since(t0);
    if (!r) return out;
    out.transport_ok = true;
    out.status = r->status;
    out.session_id = r->get_header_value("Mcp-Session-Id");
    out.messages.push_back(json::parse(r->body));
    return out;
  }
};

}  // namespace

TEST_CASE("tls upstream: verified against --upstream-ca; an unknown CA fails fast; insecure connects") {
  {
    TlsUpstream t("127.0.0.1", [](msb::TlsClientOptions& o) { o.ca_file = kTls + "ca.pem"; });
    auto r = t.init();
    REQUIRE(r.status == 200);
    CHECK(r.last()["result"]["serverInfo"]["name"] == "example-legacy-server");
    CHECK(!r.session_id.empty());
  }
  {
    TlsUpstream t("localhost", [](msb::TlsClientOptions& o) { o.ca_file = kTls + "ca.pem"; });
    CHECK(t.init().status == 200);  // name check against the DNS SAN
  }
  {
    TlsUpstream t("127.0.0.1", [](msb::TlsClientOptions& o) { o.ca_file = kTls + "other-ca.pem"; });
    auto r = t.init();
    REQUIRE(r.status == 200);
    REQUIRE(r.messages.size() == 1);
    CHECK(r.last()["error"]["data"]["bridge"]["kind"] == "upstream_protocol_error");
    CHECK(r.last()["error"]["message"].get<std::string>().find("certificate verification failed") !=
          std::string::npos);
    CHECK(r.ms < 1000);
    CHECK(t.up.sessions_opened() == 0);
  }
  {
    TlsUpstream t("127.0.0.1", [](msb::TlsClientOptions& o) { o.insecure = true; });
    CHECK(t.init().status == 200);
  }
}

TEST_CASE("readyz: 200 while the upstream answers, 503 when it is down, cached between probes") {
  Harness h({}, [](msb::Config& c) { c.ready_probe_interval = 300ms; });
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_read_timeout(kClientTimeout);
  auto r = cli.Get("/readyz");
  REQUIRE(r);
  CHECK(r->status == 200);
  int opened = h.upstream().sessions_opened();
  for (int i = 0; i < 5; ++i) CHECK(cli.Get("/readyz")->status == 200);
  CHECK(h.upstream().sessions_opened() <= opened + 1);  // cached: at most one new probe
  h.stop_upstream();
  CHECK(wait_for([&] {
    auto x = cli.Get("/readyz");
    return x && x->status == 503;
  }, 3000ms));
  auto down = cli.Get("/readyz");
  CHECK(down->body.find("not ready") == 0);
  CHECK(cli.Get("/healthz")->status == 200);  // alive all the same
  h.restart_upstream();
  CHECK(wait_for([&] {
    auto x = cli.Get("/readyz");
    return x && x->status == 200;
  }, 3000ms));
}

TEST_CASE("readyz: concurrent first checks share one probe; ready on an endpoint; 503 with the cause when refused") {
  // The interval is long enough that a late thread still finds the answer cached.
  Harness h({}, [](msb::Config& c) { c.ready_probe_interval = 1000ms; });
  h.faults().delay_endpoint_ms = 300;  // the first probe takes a while: the checks overlap
  int opened = h.upstream().sessions_opened();
  std::vector<std::pair<int, std::string>> got(4);
  std::vector<std::thread> ts;
  for (size_t i = 0; i < got.size(); ++i)
    ts.emplace_back([&, i] {
      httplib::Client cli("127.0.0.1", h.port());
      cli.set_connection_timeout(2s);
      cli.set_read_timeout(kClientTimeout);
      if (auto r = cli.Get("/readyz")) got[i] = {r->status, r->body};
    });
  for (auto& t : ts) t.join();
  for (auto& [status, body] : got) {
    CHECK(status == 200);
    CHECK(body == "ready: upstream answered with an endpoint\n");
  }
  CHECK(h.upstream().sessions_opened() == opened + 1);  // one probe for all of them
  h.faults().delay_endpoint_ms = 0;
  h.stop_upstream();
  std::this_thread::sleep_for(1100ms);  // past --ready-probe-interval
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_connection_timeout(2s);
  cli.set_read_timeout(kClientTimeout);
  auto down = cli.Get("/readyz");
  REQUIRE(down);
  CHECK(down->status == 503);
  CHECK(down->body.find("not ready: ") == 0);
  CHECK(down->body.find("refused") != std::string::npos);  // the cause
}

TEST_CASE("readyz: a probe waiting on a silent upstream never holds its loop; then 503 with the cause") {
  Harness h({}, [](msb::Config& c) {
    c.loop_threads = 1;  // every request below is served by the loop running the probe
    c.ready_probe_interval = 100ms;
    c.upstream.endpoint_timeout = 1500ms;
  });
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_connection_timeout(2s);
  cli.set_read_timeout(kClientTimeout);
  auto first = cli.Get("/readyz");
  REQUIRE(first);
  REQUIRE(first->status == 200);
  h.faults().no_endpoint = true;  // the stream opens, `endpoint` never comes
  std::this_thread::sleep_for(150ms);  // past --ready-probe-interval
  int streams = h.upstream().open_streams();
  int status = 0;
  std::string body;
  int64_t probe_ms = 0;
  std::atomic<bool> probe_done{false};
  std::thread probing([&] {
    httplib::Client c2("127.0.0.1", h.port());
    c2.set_connection_timeout(2s);
    c2.set_read_timeout(kClientTimeout);
    auto t0 = SteadyClock::now();
    if (auto r = c2.Get("/readyz")) {
      status = r->status;
      body = r->body;
    }
    probe_ms = ms_since(t0);
    probe_done = true;
  });
  bool waiting = wait_for([&] { return h.upstream().open_streams() > streams; }, 2000ms);
  auto t0 = SteadyClock::now();
  auto health = cli.Get("/healthz");
  auto metrics = cli.Get("/metrics");
  auto during = cli.Get("/readyz");  // a probe is under way: the previous answer, at once
  auto others_ms = ms_since(t0);
  bool overlapped = !probe_done.load();
  probing.join();
  REQUIRE(waiting);
  CHECK(overlapped);
  REQUIRE(health);
  CHECK(health->status == 200);
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  REQUIRE(during);
  CHECK(during->status == 200);
  CHECK(others_ms < 500);
  CHECK(status == 503);
  CHECK(body.find("not ready: ") == 0);
  CHECK(body.find("no `endpoint` event within 1500ms") != std::string::npos);  // the cause
  CHECK(probe_ms >= 1300);
  CHECK(probe_ms < 3000);
}

TEST_CASE("metrics: requests by method and outcome, failures by kind and phase, gauges") {
  Harness h;
  std::string sid = h.initialize();
  CHECK(text_of(h.call_tool(sid, 1, "echo", {{"text", "m"}}).last()) == "m");
  h.faults().sse_status = 500;
  check_bridge_error(h.call_tool(sid, 2, "echo", {{"text", "x"}}), 2, "upstream_rejected", "connect");
  h.faults().sse_status = 0;
  h.post("not json", sid);
  std::string m = scrape(h.port());
  CHECK(series(m, R"(mcp_bridge_requests_total{method="tools/call",outcome="ok"})") == 1);
  CHECK(series(m, R"(mcp_bridge_requests_total{method="tools/call",outcome="upstream_rejected"})") == 1);
  CHECK(series(m, R"(mcp_bridge_requests_total{method="initialize",outcome="ok"})") == 1);
  CHECK(series(m, R"(mcp_bridge_failures_total{kind="upstream_rejected",phase="connect"})") == 1);
  CHECK(series(m, R"(mcp_bridge_upstream_session_failures_total{phase="connect"})") >= 1);
  CHECK(series(m, R"(mcp_bridge_upstream_sessions_opened_total)") >= 2);
  CHECK(series(m, R"(mcp_bridge_http_refused_total{code="400"})") == 1);
  CHECK(series(m, R"(mcp_bridge_request_duration_seconds_count{method="tools/call"})") == 2);
  CHECK(series(m, R"(mcp_bridge_time_to_error_seconds_count)") == 1);
  CHECK(series(m, "mcp_bridge_inflight_calls") == 0);
  CHECK(series(m, "process_open_fds") > 0);
  CHECK(m.find("# TYPE mcp_bridge_request_duration_seconds histogram") != std::string::npos);
}

TEST_CASE("drain: in-flight calls finish within --drain-timeout, later ones get shutting_down, readyz 503") {
  Harness h;
  std::string sid = h.initialize();
  Reply quick, slow;
  // Both calls in flight in the bridge before the drain (the upstream's
  // stream count alone can include a warm pooled session: a slow machine then
  // drained before the second call had arrived). The slow one first, so that
  // the quick one cannot end before both are seen.
  auto inflight = [&] { return series(scrape(h.port()), "mcp_bridge_inflight_calls"); };
  std::thread b([&] { slow = h.call_tool(sid, 2, "sleep", {{"ms", 5000}}); });
  bool one = wait_for([&] { return inflight() == 1; }, 2000ms);
  std::thread a([&] { quick = h.call_tool(sid, 1, "sleep", {{"ms", 300}}); });
  if (!one || !wait_for([&] { return inflight() == 2; }, 2000ms)) {
    a.join();  // never leave a thread writing into this frame
    b.join();
    FAIL("the two calls were not in flight within 2 s");
  }
  auto t0 = SteadyClock::now();
  int cut = h.bridge().drain(800ms);
  auto drained_ms = ms_since(t0);
  a.join();
  b.join();
  CHECK(cut == 1);
  CHECK(drained_ms >= 700);
  CHECK(drained_ms < 2500);
  CHECK(text_of(quick.last()) == "slept 300 ms");  // finished normally during the drain
  check_bridge_error(slow, 2, "shutting_down");    // answered, not dropped
  CHECK(slow.ms < 3000);
  // No longer accepting new connections.
  httplib::Client cli("127.0.0.1", h.port());
  cli.set_connection_timeout(1s);
  auto r = cli.Get("/readyz");
  CHECK((!r || r->status == 503));
}

TEST_CASE("drain: a streamed answer cut by the drain closes its connection once written, not at the grace's end") {
  Harness h;
  std::string sid = h.initialize();
  RawConn c(h.port());
  REQUIRE(c.connected());
  std::string body = R"({"jsonrpc":"2.0","id":"s","method":"tools/call","params":{"name":"sleep","arguments":{"ms":5000}}})";
  REQUIRE(c.send("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json, text/event-stream\r\n"
                 "Content-Type: application/json\r\nMcp-Session-Id: " + sid +
                 "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  if (!wait_for([&] { return series(scrape(h.port()), "mcp_bridge_inflight_calls") == 1; }, 2000ms))
    FAIL("the call never started");
  std::this_thread::sleep_for(200ms);  // its stream's head has gone out
  auto t0 = SteadyClock::now();
  std::thread drainer([&] { h.bridge().drain(300ms); });
  bool closed = false;
  std::string resp = c.read_until_close(5000ms, &closed);
  auto eof_ms = ms_since(t0);
  c.reset();
  drainer.join();
  CHECK(closed);
  CHECK(resp.find("shutting_down") != std::string::npos);
  // The drain's 300 ms, then the answer, then the close: not the 2 s grace
  // the bridge gives connections before it closes them all.
  CHECK(eof_ms < 1500);
}

TEST_CASE("drain: a call arriving during the drain on an open connection is answered shutting_down") {
  Harness h;
  std::string sid = h.initialize();
  RawConn keep(h.port());  // a client's keep-alive connection, open before the drain
  REQUIRE(keep.connected());
  REQUIRE(keep.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
  REQUIRE(keep.read_response(5s).status == 200);
  Reply slow;
  std::thread b([&] { slow = h.call_tool(sid, 2, "sleep", {{"ms", 3000}}); });
  if (!wait_for([&] { return series(scrape(h.port()), "mcp_bridge_inflight_calls") == 1; }, 2000ms)) {
    b.join();
    FAIL("the slow call never started");
  }
  int cut = -1;
  std::thread drainer([&] { cut = h.bridge().drain(1500ms); });
  REQUIRE(wait_for([&] { return h.bridge().draining(); }, 1000ms));
  std::string body = R"({"jsonrpc":"2.0","id":"late","method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}})";
  REQUIRE(keep.send("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
                    "Content-Type: application/json\r\nMcp-Session-Id: " + sid +
                    "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  auto late = keep.read_response(5s);
  REQUIRE(late.status == 200);  // answered, never refused or dropped
  auto j = json::parse(late.body, nullptr, false);
  REQUIRE(j.is_object());
  CHECK(j["id"] == "late");
  CHECK(j["error"]["data"]["bridge"]["kind"] == "shutting_down");
  drainer.join();
  b.join();
  CHECK(cut == 1);
}
