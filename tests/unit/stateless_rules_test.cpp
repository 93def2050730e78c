// Unit tests of StatelessRules: which requests take the stateless era, the
// header and _meta rules with their error codes, the request sent upstream,
// the stand-in initialize params and result decoration.
#include <doctest/doctest.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/stateless_rules.h"

using namespace msb;
using json = nlohmann::json;

namespace {

Message one(const json& body) {
  auto r = parse_body(body.dump());
  REQUIRE(r.ok);
  return r.messages.front();
}

json meta(json extra = json::object()) {
  json m = {{"io.modelcontextprotocol/protocolVersion", "2026-07-28"},
            {"io.modelcontextprotocol/clientCapabilities", json::object()},
            {"io.modelcontextprotocol/clientInfo", {{"name", "t"}, {"version", "1"}}}};
  for (auto& [k, v] : extra.items()) m[k] = v;
  return m;
}

json request(const std::string& method, json params, json id = 1) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", std::move(params)}};
}

// Headers a conforming client sends for `method` (and Mcp-Name `name`).
struct Heads {
  std::vector<std::pair<std::string, std::string>> store;
  HeaderList list() const {
    HeaderList l;
    for (auto& [k, v] : store) l.push_back(HeaderView{k, v});
    return l;
  }
};
Heads heads(const std::string& method, const std::string& name = "",
            const std::string& version = "2026-07-28") {
  Heads h;
  if (!version.empty()) h.store.emplace_back("MCP-Protocol-Version", version);
  if (!method.empty()) h.store.emplace_back("Mcp-Method", method);
  if (!name.empty()) h.store.emplace_back("Mcp-Name", name);
  return h;
}

Rejection refusal(const Heads& h, const json& body) {
  auto r = StatelessRules::check(h.list(), one(body));
  REQUIRE_MESSAGE(std::holds_alternative<Rejection>(r), body.dump());
  return std::get<Rejection>(r);
}

StatelessEnvelope accepted(const Heads& h, const json& body) {
  auto r = StatelessRules::check(h.list(), one(body));
  if (auto* rej = std::get_if<Rejection>(&r)) FAIL(rej->message);
  return std::get<StatelessEnvelope>(r);
}

}  // namespace

TEST_CASE("era choice: _meta version or server/discover without a session; initialize only with a 2026-07-28 _meta") {
  HeaderList none;
  HeaderList with_session = {{"Mcp-Session-Id", "abc"}};
  HeaderList modern_header = {{"MCP-Protocol-Version", "2026-07-28"}};
  auto modern = one(request("tools/list", {{"_meta", meta()}}));
  auto discover_bare = one(json{{"jsonrpc", "2.0"}, {"id", 1}, {"method", "server/discover"}});
  auto plain = one(request("tools/list", json::object()));
  auto init = one(request("initialize", {{"protocolVersion", "2025-06-18"}}));
  // A 2026-07-28 client that sends initialize hears that the method is gone.
  auto init_modern = one(request("initialize", {{"protocolVersion", "2025-06-18"}, {"_meta", meta()}}));
  CHECK(StatelessRules::is_stateless(none, modern));
  CHECK(StatelessRules::is_stateless(none, discover_bare));
  CHECK_FALSE(StatelessRules::is_stateless(with_session, modern));  // a session keeps its era
  CHECK_FALSE(StatelessRules::is_stateless(modern_header, plain));  // the header alone does not switch
  CHECK_FALSE(StatelessRules::is_stateless(none, init));
  CHECK(StatelessRules::is_stateless(none, init_modern));
  CHECK_FALSE(StatelessRules::is_stateless(with_session, init_modern));
  auto note = one(json{{"jsonrpc", "2.0"}, {"method", "notifications/x"}, {"params", {{"_meta", meta()}}}});
  CHECK_FALSE(StatelessRules::is_stateless(none, note));
}

TEST_CASE("protocol version: header required and equal to _meta (-32020); unsupported -32022 with data") {
  json body = request("tools/list", {{"_meta", meta()}});
  auto missing = refusal(heads("tools/list", "", ""), body);
  CHECK(missing.status == 400);
  CHECK(missing.code == -32020);
  auto differs = refusal(heads("tools/list", "", "2025-11-25"), body);
  CHECK(differs.status == 400);
  CHECK(differs.code == -32020);
  CHECK(differs.message.find("2025-11-25") != std::string::npos);

  json old = request("tools/list", {{"_meta", meta({{"io.modelcontextprotocol/protocolVersion", "2099-01-01"}})}});
  auto unsupported = refusal(heads("tools/list", "", "2099-01-01"), old);
  CHECK(unsupported.status == 400);
  CHECK(unsupported.code == -32022);
  auto data = json::parse(unsupported.data_json);
  CHECK(data["requested"] == "2099-01-01");
  REQUIRE(data["supported"].is_array());
  CHECK(data["supported"][0] == "2026-07-28");
  CHECK(std::find(data["supported"].begin(), data["supported"].end(), "2025-11-25") != data["supported"].end());
}

TEST_CASE("_meta envelope: missing version or capabilities, malformed clientInfo or logLevel -> -32602") {
  auto no_meta = refusal(heads("server/discover"), json{{"jsonrpc", "2.0"}, {"id", 1}, {"method", "server/discover"}});
  CHECK(no_meta.status == 400);
  CHECK(no_meta.code == -32602);
  json m = meta();
  m.erase("io.modelcontextprotocol/clientCapabilities");
  auto no_caps = refusal(heads("tools/list"), request("tools/list", {{"_meta", m}}));
  CHECK(no_caps.code == -32602);
  CHECK(no_caps.message.find("clientCapabilities") != std::string::npos);
  auto caps_array = refusal(heads("tools/list"),
                            request("tools/list", {{"_meta", meta({{"io.modelcontextprotocol/clientCapabilities", json::array()}})}}));
  CHECK(caps_array.code == -32602);
  auto bad_info = refusal(heads("tools/list"),
                          request("tools/list", {{"_meta", meta({{"io.modelcontextprotocol/clientInfo", "me"}})}}));
  CHECK(bad_info.code == -32602);
  auto bad_level = refusal(heads("tools/list"),
                           request("tools/list", {{"_meta", meta({{"io.modelcontextprotocol/logLevel", "loud"}})}}));
  CHECK(bad_level.code == -32602);
  // clientInfo is optional (SHOULD); a valid logLevel becomes setLevel params.
  json no_info = meta({{"io.modelcontextprotocol/logLevel", "warning"}});
  no_info.erase("io.modelcontextprotocol/clientInfo");
  auto env = accepted(heads("tools/list"), request("tools/list", {{"_meta", no_info}}));
  CHECK(env.client_info.empty());
  REQUIRE(env.log_level_params);
  CHECK(*env.log_level_params == R"({"level":"warning"})");
  CHECK_FALSE(accepted(heads("tools/list"), request("tools/list", {{"_meta", meta()}})).log_level_params);
}

TEST_CASE("Mcp-Method on every request, Mcp-Name on tools/call, resources/read, prompts/get (-32020)") {
  json call = request("tools/call", {{"name", "echo"}, {"arguments", {{"text", "x"}}}, {"_meta", meta()}});
  CHECK(refusal(heads(""), call).code == -32020);                    // no Mcp-Method
  CHECK(refusal(heads("tools/list", "echo"), call).code == -32020);  // wrong Mcp-Method
  CHECK(refusal(heads("tools/call"), call).code == -32020);          // no Mcp-Name
  CHECK(refusal(heads("tools/call", "add"), call).code == -32020);   // wrong Mcp-Name
  CHECK(refusal(heads("tools/call", "=?base64?!!!?="), call).code == -32020);  // bad base64
  accepted(heads("tools/call", "echo"), call);
  accepted(heads("tools/call", "=?base64?ZWNobw==?="), call);  // "echo", encoded

  json read = request("resources/read", {{"uri", "file:///a b"}, {"_meta", meta()}});
  CHECK(refusal(heads("resources/read", "file:///other"), read).code == -32020);
  accepted(heads("resources/read", "file:///a b"), read);
  json prompt = request("prompts/get", {{"name", "héllo"}, {"_meta", meta()}});
  accepted(heads("prompts/get", "=?base64?aMOpbGxv?="), prompt);  // UTF-8 "héllo"
  CHECK(refusal(heads("prompts/get", "hello"), prompt).code == -32020);
}

TEST_CASE("header values: sentinel decoding, invalid characters refused") {
  CHECK(StatelessRules::header_value("plain name") == "plain name");
  CHECK(StatelessRules::header_value("=?base64?SGVsbG8sIOS4lueVjA==?=") == "Hello, 世界");
  CHECK_FALSE(StatelessRules::header_value("=?base64?SGVsbG8?="));  // length not a multiple of 4
  CHECK_FALSE(StatelessRules::header_value(std::string("a\x01z")));
  CHECK_FALSE(StatelessRules::header_value("caf\xc3\xa9"));  // raw non-ASCII must be encoded
}

TEST_CASE("methods: unknown ones (ping, logging/setLevel, resources/subscribe) are 404 -32601") {
  for (auto m : {"ping", "logging/setLevel", "resources/subscribe", "no/such"}) {
    auto r = refusal(heads(m), request(m, {{"_meta", meta()}}));
    CHECK_MESSAGE(r.status == 404, m);
    CHECK_MESSAGE(r.code == -32601, m);
  }
  for (auto m : {"tools/list", "prompts/list", "resources/list", "resources/templates/list",
                 "completion/complete", "server/discover", "subscriptions/listen"})
    accepted(heads(m), request(m, {{"_meta", meta()}}));
}

TEST_CASE("upstream request: the io.modelcontextprotocol/* _meta keys go, the rest stays") {
  json m = meta({{"progressToken", 7}, {"io.modelcontextprotocol/logLevel", "info"}});
  auto env = accepted(heads("tools/call", "echo"),
                      request("tools/call", {{"name", "echo"}, {"arguments", {{"text", "x"}}}, {"_meta", m}}, "abc"));
  auto up = json::parse(env.upstream_request);
  CHECK(up["id"] == "abc");
  CHECK(up["params"]["_meta"] == json{{"progressToken", 7}});
  CHECK(up["params"]["arguments"]["text"] == "x");
  auto bare = accepted(heads("tools/list"), request("tools/list", {{"_meta", meta()}}));
  CHECK_FALSE(json::parse(bare.upstream_request)["params"].contains("_meta"));
}

TEST_CASE("init params: the request's own capabilities and clientInfo, the upstream's version") {
  json caps = {{"sampling", json::object()}, {"roots", {{"listChanged", true}}}};
  auto env = accepted(heads("tools/list"),
                      request("tools/list", {{"_meta", meta({{"io.modelcontextprotocol/clientCapabilities", caps}})}}));
  auto p = json::parse(StatelessRules::init_params(env, "2024-11-05"));
  CHECK(p["protocolVersion"] == "2024-11-05");
  CHECK(p["capabilities"] == caps);
  CHECK(p["clientInfo"]["name"] == "t");
  auto other = accepted(heads("tools/list"), request("tools/list", {{"_meta", meta()}}));
  // Different capabilities, different params: the warm pool's key differs.
  CHECK(StatelessRules::init_params(other, "2024-11-05") != StatelessRules::init_params(env, "2024-11-05"));
  json no_info = meta();
  no_info.erase("io.modelcontextprotocol/clientInfo");
  auto anon = accepted(heads("tools/list"), request("tools/list", {{"_meta", no_info}}));
  CHECK(json::parse(StatelessRules::init_params(anon, "2025-06-18"))["clientInfo"]["name"].is_string());
}

TEST_CASE("result decoration: resultType always; ttlMs/cacheScope on complete cacheable results only") {
  auto dec = [](const std::string& method, const json& resp) {
    return json::parse(StatelessRules::decorate_result(method, resp.dump(), 5000, "private"));
  };
  json list = {{"jsonrpc", "2.0"}, {"id", 1}, {"result", {{"tools", json::array()}}}};
  auto l = dec("tools/list", list);
  CHECK(l["result"]["resultType"] == "complete");
  CHECK(l["result"]["ttlMs"] == 5000);
  CHECK(l["result"]["cacheScope"] == "private");
  auto c = dec("tools/call", {{"jsonrpc", "2.0"}, {"id", 1}, {"result", {{"content", json::array()}}}});
  CHECK(c["result"]["resultType"] == "complete");
  CHECK_FALSE(c["result"].contains("ttlMs"));
  CHECK_FALSE(c["result"].contains("cacheScope"));
  auto r = dec("resources/read", {{"jsonrpc", "2.0"}, {"id", 1}, {"result", {{"contents", json::array()}}}});
  CHECK(r["result"]["ttlMs"] == 5000);
  // The upstream's own valid values stay; invalid ones are replaced.
  auto own = dec("prompts/list", {{"jsonrpc", "2.0"}, {"id", 1},
                                  {"result", {{"prompts", json::array()}, {"ttlMs", 10}, {"cacheScope", "public"}}}});
  CHECK(own["result"]["ttlMs"] == 10);
  CHECK(own["result"]["cacheScope"] == "public");
  auto bad = dec("prompts/list", {{"jsonrpc", "2.0"}, {"id", 1},
                                  {"result", {{"prompts", json::array()}, {"ttlMs", -1}, {"cacheScope", "all"}}}});
  CHECK(bad["result"]["ttlMs"] == 5000);
  CHECK(bad["result"]["cacheScope"] == "private");
  // input_required (an upstream that speaks it) is never given cache hints.
  auto ir = dec("resources/read", {{"jsonrpc", "2.0"}, {"id", 1},
                                   {"result", {{"resultType", "input_required"}, {"requestState", "s"}}}});
  CHECK(ir["result"]["resultType"] == "input_required");
  CHECK_FALSE(ir["result"].contains("ttlMs"));
  CHECK_FALSE(ir["result"].contains("cacheScope"));
  // Errors pass unchanged.
  std::string err = R"({"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"x"}})";
  CHECK(StatelessRules::decorate_result("tools/list", err, 5000, "private") == err);
}

TEST_CASE("result decoration splices the text: the upstream's bytes are kept as they came") {
  auto dec = [](const std::string& method, const std::string& resp) {
    return StatelessRules::decorate_result(method, resp, 5000, "private");
  };
  // Spacing, key order and number spelling of the upstream survive.
  CHECK(dec("tools/call", R"({ "id" : 1, "result" : { "content" : [ 1.50 ] }, "jsonrpc":"2.0" })") ==
        R"({ "id" : 1, "result" : {"resultType":"complete", "content" : [ 1.50 ] }, "jsonrpc":"2.0" })");
  CHECK(dec("tools/list", R"({"jsonrpc":"2.0","id":1,"result":{}})") ==
        R"({"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","ttlMs":5000,"cacheScope":"private"}})");
  // Nothing to add: the same text.
  std::string done = R"({"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","ttlMs":7,"cacheScope":"public","tools":[]}})";
  CHECK(dec("tools/list", done) == done);
  // Strings holding braces, quotes and escaped quotes do not confuse it.
  auto tricky = json::parse(dec("tools/call",
      R"({"jsonrpc":"2.0","id":"}","result":{"content":[{"type":"text","text":"a\\\"}{\"resultType\":1"}]}})"));
  CHECK(tricky["result"]["resultType"] == "complete");
  CHECK(tricky["result"]["content"][0]["text"] == "a\\\"}{\"resultType\":1");
  // An escaped quote followed by a brace inside a string ends nothing.
  std::string ir = dec("tools/call", R"({"jsonrpc":"2.0","id":1,"result":{"a":"x\"}","resultType":"input_required"}})");
  CHECK(ir.find("resultType") == ir.rfind("resultType"));
  CHECK(json::parse(ir)["result"]["resultType"] == "input_required");
  // A key spelled with escapes, or a duplicate, goes the parsing way: one resultType.
  auto esc = json::parse(dec("tools/call", R"({"jsonrpc":"2.0","id":1,"result":{"result\u0054ype":"complete","x":1}})"));
  CHECK(esc["result"]["resultType"] == "complete");
  CHECK(esc["result"].size() == 2);
}

TEST_CASE("json member scan: where a top-level member's value is, without parsing") {
  using S = JsonMember::Status;
  std::string t = R"({"a":{"id":9},"s":"x\"id\":","id" : [1,{"b":"]"}] ,"z":null})";
  auto m = find_member(t, "id");
  REQUIRE(m.status == S::kFound);
  CHECK(t.substr(m.begin, m.end - m.begin) == R"([1,{"b":"]"}])");
  CHECK(find_member(t, "q").status == S::kAbsent);
  CHECK(find_member(R"({ })", "id").empty);
  CHECK(find_member(R"([1])", "id").status == S::kUnsure);
  CHECK(find_member(R"({"id":1,"id":2})", "id").status == S::kUnsure);
  CHECK(find_member(R"({"i\u0064":1})", "id").status == S::kUnsure);
  CHECK(find_member(R"({"id":"unterminated})", "id").status == S::kUnsure);
  // with_id splices the new id in and keeps every other byte.
  CHECK(with_id(R"({"jsonrpc":"2.0", "id" : "b-7" ,"result":{"id":3}})", "42").value() ==
        R"({"jsonrpc":"2.0", "id" : 42 ,"result":{"id":3}})");
  CHECK_FALSE(with_id("[]", "1").has_value());
}
