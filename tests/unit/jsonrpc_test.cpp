#include <doctest/doctest.h>

#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/jsonrpc.h"

using namespace msb;

TEST_CASE("jsonrpc: classify requests, notifications, responses") {
  auto r = parse_body(R"({"jsonrpc":"2.0","id":"a-1","method":"tools/call","params":{"_meta":{"progressToken":7}}})");
  REQUIRE(r.ok);
  REQUIRE(r.messages.size() == 1);
  CHECK(r.messages[0].kind == MsgKind::kRequest);
  CHECK(r.messages[0].id == "\"a-1\"");
  CHECK(r.messages[0].method == "tools/call");
  CHECK(r.messages[0].progress_token == "7");
  CHECK_FALSE(r.batch);

  Message n;
  REQUIRE(parse_message(R"({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}})", n));
  CHECK(n.kind == MsgKind::kNotification);
  CHECK(n.progress_token == "\"t\"");

  Message c;
  REQUIRE(parse_message(R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":12}})", c));
  CHECK(c.cancel_id == "12");

  Message resp;
  REQUIRE(parse_message(R"({"jsonrpc":"2.0","id":5,"error":{"code":-1,"message":"x"}})", resp));
  CHECK(resp.kind == MsgKind::kResponse);
  CHECK(resp.is_error);
  CHECK(resp.id == "5");
}

TEST_CASE("jsonrpc: ids are kept as minified JSON text, integers at their full range") {
  // The id is matched against the upstream's answer and written back into
  // errors as text: "007"-style or float ids are not valid, every integer is.
  const std::pair<const char*, const char*> cases[] = {
      {"0", "0"},
      {"-5", "-5"},
      {"9223372036854775807", "9223372036854775807"},
      {"-9223372036854775808", "-9223372036854775808"},
      {"18446744073709551615", "18446744073709551615"},  // beyond int64: simdjson's uint64
      {R"("a \"b\" \u00e9")", "\"a \\\"b\\\" \xc3\xa9\""},  // strings: simdjson's serialization
      {R"("")", R"("")"},
  };
  for (auto [in, want] : cases) {
    CAPTURE(in);
    Message m;
    REQUIRE(parse_message(std::string(R"({"jsonrpc":"2.0","id": )") + in + R"( ,"result":{}})", m));
    CHECK(m.id == want);
    auto r = parse_body(std::string(R"({"jsonrpc":"2.0","method":"ping","id":)") + in + "}");
    REQUIRE(r.ok);
    CHECK(r.messages[0].id == want);
  }
  Message f;
  CHECK_FALSE(parse_message(R"({"jsonrpc":"2.0","id":1.5,"result":{}})", f));
}

TEST_CASE("jsonrpc: the raw text of a single message is kept verbatim") {
  std::string body = "{ \"jsonrpc\" : \"2.0\", \"id\" : 1 , \"method\" : \"ping\" }";
  auto r = parse_body(body);
  REQUIRE(r.ok);
  CHECK(r.messages[0].raw == body);
}

TEST_CASE("jsonrpc: batches") {
  auto r = parse_body(R"([{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}])");
  REQUIRE(r.ok);
  CHECK(r.batch);
  REQUIRE(r.messages.size() == 2);
  CHECK(r.messages[1].kind == MsgKind::kNotification);
  CHECK(r.messages[0].raw == R"({"jsonrpc":"2.0","id":1,"method":"ping"})");
  auto e = parse_body("[]");
  CHECK_FALSE(e.ok);
  CHECK(e.error_code == -32600);
}

TEST_CASE("jsonrpc: malformed and invalid input") {
  CHECK(parse_body("{\"jsonrpc\":").error_code == -32700);
  CHECK(parse_body("").error_code == -32700);
  CHECK(parse_body("{\"jsonrpc\":\"2.0\",\"id\":1} trailing").error_code == -32700);
  CHECK(parse_body("42").error_code == -32600);
  CHECK(parse_body(R"({"jsonrpc":"1.0","id":1,"method":"x"})").error_code == -32600);
  CHECK(parse_body(R"({"jsonrpc":"2.0","id":null,"method":"x"})").error_code == -32600);
  CHECK(parse_body(R"({"jsonrpc":"2.0","id":{},"method":"x"})").error_code == -32600);
  CHECK(parse_body(R"({"jsonrpc":"2.0","id":1,"method":5})").error_code == -32600);
  CHECK(parse_body(R"({"jsonrpc":"2.0","id":1})").error_code == -32600);
  CHECK(parse_body(R"({"jsonrpc":"2.0","id":1,"result":{},"error":{}})").error_code == -32600);
  CHECK(parse_body("{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}").error_code == -32700);  // bad UTF-8
}

TEST_CASE("jsonrpc: members in any order; duplicate keys are refused; near-miss keys do not count") {
  Message m;
  REQUIRE(parse_message(R"({"result":{"x":1},"id":"z","jsonrpc":"2.0"})", m));
  CHECK(m.kind == MsgKind::kResponse);
  CHECK(m.id == "\"z\"");
  CHECK_FALSE(m.is_error);
  // Parsers disagree on which duplicate counts (the upstream may take the
  // last): the bridge refuses rather than route one request while the
  // server runs another.
  Message d;
  std::string why;
  CHECK_FALSE(parse_message(R"({"jsonrpc":"2.0","id":1,"id":2,"method":"a"})", d, &why));
  CHECK(why == "duplicate \"id\" member");
  for (auto text : {R"({"jsonrpc":"2.0","id":3,"method":"tools/list","method":"tools/call"})",
                    R"({"jsonrpc":"2.0","id":3,"method":"a","params":{},"params":{"x":1}})",
                    R"({"jsonrpc":"2.0","jsonrpc":"1.0","id":3,"method":"a"})"}) {
    CAPTURE(text);
    auto r = parse_body(text);
    CHECK(r.error_code == -32600);
    CHECK(r.error_message.find("duplicate") != std::string::npos);
    CHECK(r.error_ids == std::vector<std::string>{"3"});  // the refusal names the id
  }
  CHECK(parse_body(R"({"jsonrpc":"2.0","id":1,"id":2,"method":"a"})").error_ids.empty());  // which id?
  // "ids", "methods", "results", "errors", "json": not the members they resemble.
  CHECK(parse_body(R"({"jsonrpc":"2.0","ids":1,"method":"x"})").messages.at(0).kind == MsgKind::kNotification);
  CHECK(parse_body(R"({"jsonrpc":"2.0","id":1,"methods":"x"})").error_code == -32600);
  CHECK(parse_body(R"({"jsonrpc":"2.0","id":1,"results":{}})").error_code == -32600);
  CHECK(parse_body(R"({"jsonrpc":"2.0","id":1,"errors":{}})").error_code == -32600);
  CHECK(parse_body(R"({"json":"2.0","id":1,"method":"x"})").error_code == -32600);
  // The version must be the string "2.0", wherever it is.
  CHECK(parse_body(R"({"id":1,"method":"x","jsonrpc":2.0})").error_code == -32600);
  // params of a request found after the method, _meta read from it.
  auto r = parse_body(R"({"params":{"_meta":{"progressToken":"p"}},"method":"tools/call","jsonrpc":"2.0","id":3})");
  REQUIRE(r.ok);
  CHECK(r.messages[0].progress_token == "\"p\"");
}

TEST_CASE("jsonrpc: a message above the shared parser's size reads as a small one (duplicates refused)") {
  // Above 1 MiB the message is read by a separate (on-demand) path.
  std::string pad(1100 * 1024, 'x');
  auto text = R"({"jsonrpc":"2.0","id":1,"method":"a","params":{"p":")" + pad + R"("}})";
  Message m;
  std::string why;
  REQUIRE_MESSAGE(parse_message(text, m, &why), why);
  CHECK(m.kind == MsgKind::kRequest);
  CHECK(m.id == "1");
  CHECK(m.method == "a");
  CHECK(m.raw.size() == text.size());
  for (std::string dup : {R"("id":2)", R"("method":"b")", R"("params":{"q":1})", R"("jsonrpc":"1.0")"}) {
    CAPTURE(dup);
    std::string large = text.substr(0, text.size() - 1) + "," + dup + "}";
    std::string small = R"({"jsonrpc":"2.0","id":1,"method":"a","params":{"p":"x"},)" + dup + "}";
    Message l, s;
    std::string lwhy, swhy;
    CHECK_FALSE(parse_message(large, l, &lwhy));
    CHECK_FALSE(parse_message(small, s, &swhy));
    CHECK(lwhy.find("duplicate") != std::string::npos);
    CHECK(lwhy == swhy);
  }
}

TEST_CASE("jsonrpc: a refused message or batch names every id it could read") {
  auto one = parse_body(R"({"jsonrpc":"2.0","id":7,"method":5})");
  CHECK(one.error_code == -32600);
  CHECK(one.error_ids == std::vector<std::string>{"7"});
  auto ver = parse_body(R"({"jsonrpc":"1.0","id":"s","method":"a"})");
  CHECK(ver.error_ids == std::vector<std::string>{"\"s\""});
  CHECK(parse_body(R"({"jsonrpc":"2.0","id":1.5,"method":"a"})").error_ids.empty());  // no valid id
  auto batch = parse_body(R"([{"jsonrpc":"2.0","id":11,"method":"tools/list"},5,{"jsonrpc":"2.0","id":"b","method":7}])");
  CHECK_FALSE(batch.ok);
  CHECK(batch.batch);
  CHECK(batch.error_message.find("element 2") != std::string::npos);
  CHECK(batch.error_ids == std::vector<std::string>{"11", "\"b\""});
  CHECK(parse_body(R"([{"jsonrpc":"2.0","id":11,"method":"tools/list"}])").error_ids.empty());  // accepted
}

TEST_CASE("jsonrpc: read-only methods") {
  CHECK(is_read_only_method("tools/list"));
  CHECK(is_read_only_method("resources/read"));
  CHECK_FALSE(is_read_only_method("tools/call"));
  CHECK_FALSE(is_read_only_method("logging/setLevel"));
}

TEST_CASE("error: bridge errors carry the id verbatim, code and machine-readable data") {
  auto e = make_error(ErrorKind::kClosed, Phase::kRequest, "SSE stream ended");
  std::string s = jsonrpc_error_response("\"req-7\"", e, 12, "http://127.0.0.1:1/sse");
  Message m;
  REQUIRE(parse_message(s, m));
  CHECK(m.kind == MsgKind::kResponse);
  CHECK(m.is_error);
  CHECK(m.id == "\"req-7\"");
  CHECK(s.find("\"code\":-32000") != std::string::npos);
  CHECK(s.find("\"kind\":\"upstream_closed\"") != std::string::npos);
  CHECK(s.find("\"phase\":\"request\"") != std::string::npos);
  CHECK(s.find("\"elapsed_ms\":12") != std::string::npos);
  auto t = make_error(ErrorKind::kTimeout, Phase::kEndpoint, "");
  CHECK(jsonrpc_error_response("3", t, 0, "u").find("\"code\":-32001") != std::string::npos);
}

TEST_CASE("jsonrpc: large upstream messages are classified without a full DOM") {
  std::string big(2 << 20, 'z');
  Message r;
  REQUIRE(parse_message(R"({"jsonrpc":"2.0","id":"k-1","result":{"content":[{"type":"text","text":")" + big +
                            R"("}]}})", r));
  CHECK(r.kind == MsgKind::kResponse);
  CHECK(r.id == "\"k-1\"");
  CHECK_FALSE(r.is_error);
  CHECK(r.raw.size() > big.size());
  Message e;
  REQUIRE(parse_message(R"({"error":{"code":-1,"message":")" + big + R"("},"id":7 ,"jsonrpc":"2.0"})", e));
  CHECK(e.kind == MsgKind::kResponse);
  CHECK(e.id == "7");
  CHECK(e.is_error);
  Message n;
  REQUIRE(parse_message(R"({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t9","message":")" +
                            big + R"("}})", n));
  CHECK(n.kind == MsgKind::kNotification);
  CHECK(n.progress_token == "\"t9\"");
  Message bad;
  CHECK_FALSE(parse_message(R"({"jsonrpc":"1.0","id":1,"result":")" + big + "\"}", bad));
  CHECK_FALSE(parse_message("[" + big + "]", bad));
}
