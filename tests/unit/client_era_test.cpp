// Unit tests of the pieces #10 added: era detection of client requests, the
// protocol-version rule, the initialize cache and the log rate limit.
#include <doctest/doctest.h>

#include <thread>

#include "mcp_sse_bridge/initialize_cache.h"
#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/request_policy.h"

using namespace msb;

namespace {
Message one(const std::string& body) {
  auto r = parse_body(body);
  REQUIRE(r.ok);
  return r.messages.front();
}
}  // namespace

TEST_CASE("era: 2026-07-28 requests without a session are told to fall back; session-era ones are not") {
  auto discover = one(R"({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}})");
  auto modern = one(R"({"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}})");
  auto plain = one(R"({"jsonrpc":"2.0","id":3,"method":"tools/list"})");
  auto init = one(R"({"jsonrpc":"2.0","id":4,"method":"initialize","params":{"protocolVersion":"2025-06-18"}})");
  CHECK(modern.meta_protocol_version == "2026-07-28");
  CHECK(plain.meta_protocol_version.empty());
  HeaderList none;
  HeaderList modern_header = {{"MCP-Protocol-Version", "2026-07-28"}};
  HeaderList with_session = {{"Mcp-Session-Id", "abc"}, {"MCP-Protocol-Version", "2026-07-28"}};
  CHECK(is_modern_era_request(none, discover));
  CHECK(is_modern_era_request(none, modern));
  CHECK(is_modern_era_request(modern_header, plain));
  CHECK_FALSE(is_modern_era_request(none, plain));        // session era: 400 for the missing id
  CHECK_FALSE(is_modern_era_request(modern_header, init));  // initialize is always session era
  CHECK_FALSE(is_modern_era_request(with_session, modern));  // a session decides the era
  auto r = modern_era_refusal("2026-07-28");
  CHECK(r.status == 400);
  CHECK(r.code != -32022);  // a recognized modern error would stop the fallback
  CHECK(r.code != -32020);
  CHECK(r.code != -32021);
  CHECK(r.message.find("2026-07-28") != std::string::npos);
  CHECK(r.message.find("initialize") != std::string::npos);
}

TEST_CASE("protocol version header: session-era and modern versions pass, others are refused") {
  Config cfg;
  RequestPolicy p(cfg);
  for (auto v : {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"}) {
    HeaderList h = {{"MCP-Protocol-Version", v}};
    CHECK_MESSAGE(!p.check_protocol_version(h), v);
  }
  HeaderList bad = {{"MCP-Protocol-Version", "1999-01-01"}};
  auto r = p.check_protocol_version(bad);
  REQUIRE(r);
  CHECK(r->status == 400);
  CHECK(!p.check_protocol_version({}));
}

TEST_CASE("initialize cache: keyed by protocol version and upstream headers, bounded, with age") {
  InitializeCache c(2);
  auto k1 = InitializeCache::key("2025-06-18", "");
  auto k2 = InitializeCache::key("2025-06-18", "X-Tenant: a\r\n");
  auto k3 = InitializeCache::key("2025-03-26", "");
  CHECK(k1 != k2);
  CHECK(k1 != k3);
  CHECK_FALSE(c.find(k1));
  c.store(k1, R"({"v":1})");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  c.store(k2, R"({"v":2})");
  auto hit = c.find(k1);
  REQUIRE(hit);
  CHECK(hit->result_json == R"({"v":1})");
  CHECK(hit->age.count() >= 15);
  c.store(k1, R"({"v":3})");  // replaces, no eviction
  CHECK(c.find(k1)->result_json == R"({"v":3})");
  CHECK(c.find(k2));
  c.store(k3, R"({"v":4})");  // full: the oldest (k2) goes
  CHECK_FALSE(c.find(k2));
  CHECK(c.find(k1));
  CHECK(c.find(k3));
}

TEST_CASE("initialize cache: resources.subscribe removed from the stored result, remembered beside it") {
  std::string resp =
      R"({"jsonrpc":"2.0","id":1,"result":{"capabilities":{"resources":{"subscribe":true,"listChanged":true}}}})";
  bool subscribes = false;
  std::string result = InitializeCache::result_of(resp, false, &subscribes);
  CHECK(subscribes);
  CHECK(result.find("subscribe") == std::string::npos);
  CHECK(resp.find("subscribe") == std::string::npos);
  std::string plain = R"({"jsonrpc":"2.0","id":1,"result":{"capabilities":{"resources":{}}}})";
  InitializeCache::result_of(plain, false, &subscribes);
  CHECK_FALSE(subscribes);
  InitializeCache c;
  auto k = InitializeCache::key("2025-06-18", "");
  c.store(k, result, true);
  REQUIRE(c.find(k));
  CHECK(c.find(k)->subscribes);
  c.store(k, result);
  CHECK_FALSE(c.find(k)->subscribes);
}

TEST_CASE("log rate limit: a burst is cut to the budget and the next window reports what was left out") {
  log::RateLimit limit(3, 50);
  uint64_t suppressed = 99;
  int allowed = 0;
  for (int i = 0; i < 10; ++i)
    if (limit.allow(&suppressed)) ++allowed;
  CHECK(allowed == 3);
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  REQUIRE(limit.allow(&suppressed));
  CHECK(suppressed == 7);
}

TEST_CASE("log text format: a value with a control byte is quoted and escaped, so it cannot end its line") {
  CHECK(msb::log::text_value("tools/call") == "tools/call");
  CHECK(msb::log::text_value("") == "\"\"");
  CHECK(msb::log::text_value("a b") == "\"a b\"");
  std::string forged = msb::log::text_value("x\n2026-12-02T03:01:25.904Z error FORGED\r");
  CHECK(forged.find('\n') == std::string::npos);
  CHECK(forged.find('\r') == std::string::npos);
  CHECK(forged.front() == '"');
  for (const char* v : {"a\x0b" "b", "a\x7f", "a\tb", "a=b"}) CHECK(msb::log::text_value(v).front() == '"');
}
