// RequestStateSealer / RequestBinding: the MRTR requestState is
// attacker-controlled, so every way of presenting a state that was not
// issued for this request, here, now, must be refused with its reason.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "mcp_sse_bridge/request_state.h"
#include "mcp_sse_bridge/session_token.h"

using namespace msb;
using Refusal = RequestStateSealer::Refusal;

namespace {

const std::string kSecret = "0123456789abcdef0123456789abcdef";
const std::string kParams = R"({"name":"ask_name","arguments":{"a":1,"b":"x"},"_meta":{"k":1}})";

RequestBinding binding(std::string params = kParams, std::string method = "tools/call") {
  auto b = RequestBinding::of(method, params);
  REQUIRE(b);
  return *b;
}

RequestStateClaims claims(int64_t expires_ms) {
  RequestStateClaims c;
  c.call_key = "00112233445566778899aabbccddeeff";
  c.replica = "replica-a";
  c.binding = binding();
  c.round = 2;
  c.expires_ms = expires_ms;
  return c;
}

}  // namespace

TEST_CASE("request state: a sealed state opens to the same claims") {
  RequestStateSealer s(kSecret, "replica-a");
  auto now = RequestStateSealer::now_ms();
  auto c = claims(now + 60000);
  std::string state = s.seal(c);
  CHECK(RequestStateSealer::is_ours(state));
  CHECK(state.size() < RequestStateSealer::kMaxStateLength);
  for (char ch : state) CHECK((ch >= 0x21 && ch <= 0x7e));
  auto o = s.open(state, binding(), now);
  REQUIRE(o.claims);
  CHECK(o.claims->call_key == c.call_key);
  CHECK(o.claims->replica == "replica-a");
  CHECK(o.claims->round == 2);
  CHECK(o.claims->expires_ms == c.expires_ms);
  CHECK(o.claims->binding == c.binding);
  CHECK(o.claims->binding.name == "ask_name");
}

TEST_CASE("request state: changing any byte is refused") {
  RequestStateSealer s(kSecret, "replica-a");
  auto now = RequestStateSealer::now_ms();
  std::string state = s.seal(claims(now + 60000));
  int accepted = 0;
  for (size_t i = 0; i < state.size(); ++i) {
    std::string t = state;
    t[i] = t[i] == 'A' ? 'B' : 'A';
    auto o = s.open(t, binding(), now);
    if (o.claims) ++accepted;
    // A changed prefix or separator is not our format; every other byte
    // fails the MAC (or the base64 of the MAC).
    if (i < 5 || state[i] == '.') CHECK(o.refusal == Refusal::kMalformed);
    else CHECK(o.refusal == Refusal::kTampered);
  }
  CHECK(accepted == 0);
  // Truncated, extended, empty, oversized, foreign.
  CHECK_FALSE(s.open(state.substr(0, state.size() - 1), binding(), now).claims);
  CHECK_FALSE(s.open(state + "A", binding(), now).claims);
  CHECK(s.open("", binding(), now).refusal == Refusal::kMalformed);
  CHECK(s.open("msb1." + std::string(5000, 'A'), binding(), now).refusal == Refusal::kMalformed);
  CHECK(s.open("upstream-state", binding(), now).refusal == Refusal::kMalformed);
  CHECK_FALSE(RequestStateSealer::is_ours("upstream-state"));
}

TEST_CASE("request state: re-sealed claims (a forged body) fail the MAC") {
  RequestStateSealer s(kSecret, "replica-a");
  auto now = RequestStateSealer::now_ms();
  std::string state = s.seal(claims(now + 60000));
  // Swap in a body with a later expiry but keep the MAC.
  std::string forged_body = s.seal(claims(now + 600000));
  auto dot = state.rfind('.');
  auto fdot = forged_body.rfind('.');
  std::string forged = forged_body.substr(0, fdot) + state.substr(dot);
  CHECK(s.open(forged, binding(), now).refusal == Refusal::kTampered);
}

TEST_CASE("request state: another secret, expiry, another replica") {
  RequestStateSealer s(kSecret, "replica-a");
  RequestStateSealer other_secret("another secret of 32 bytes......", "replica-a");
  RequestStateSealer other_replica(kSecret, "replica-b");
  auto now = RequestStateSealer::now_ms();
  std::string state = s.seal(claims(now + 1000));
  CHECK(other_secret.open(state, binding(), now).refusal == Refusal::kTampered);
  CHECK(other_replica.open(state, binding(), now).refusal == Refusal::kOtherReplica);
  CHECK(s.open(state, binding(), now + 999).claims);
  CHECK(s.open(state, binding(), now + 1000).refusal == Refusal::kExpired);
  // A session id signed with the same secret is no requestState.
  SessionTokens tokens(kSecret, 10);
  std::string sid = tokens.mint(R"({"capabilities":{}})");
  CHECK(s.open("msb1." + sid, binding(), now).refusal == Refusal::kTampered);
  CHECK_THROWS(RequestStateSealer("", "x"));
}

TEST_CASE("request state: bound to method, name, arguments and principal") {
  RequestStateSealer s(kSecret, "replica-a");
  auto now = RequestStateSealer::now_ms();
  std::string state = s.seal(claims(now + 60000));
  // The same params in another key order, with other _meta, inputResponses
  // and requestState: the same request.
  auto same = binding(R"({"_meta":{"z":2},"arguments":{"b":"x","a":1},"name":"ask_name",)"
                      R"("inputResponses":{"r1":{}},"requestState":"x"})");
  CHECK(s.open(state, same, now).claims);
  CHECK(s.open(state, binding(kParams, "prompts/get"), now).refusal == Refusal::kOtherRequest);
  CHECK(s.open(state, binding(R"({"name":"other","arguments":{"a":1,"b":"x"}})"), now).refusal ==
        Refusal::kOtherRequest);
  CHECK(s.open(state, binding(R"({"name":"ask_name","arguments":{"a":2,"b":"x"}})"), now).refusal ==
        Refusal::kOtherRequest);
  CHECK(s.open(state, binding(R"({"name":"ask_name","arguments":{"a":1}})"), now).refusal ==
        Refusal::kOtherRequest);
  auto who = RequestBinding::of("tools/call", kParams, "alice");
  CHECK(s.open(state, *who, now).refusal == Refusal::kOtherRequest);
  // resources/read binds the uri.
  auto r = RequestBinding::of("resources/read", R"({"uri":"file:///a"})");
  REQUIRE(r);
  CHECK(r->name == "file:///a");
  CHECK_FALSE(RequestBinding::of("tools/call", "[1]"));
  CHECK_FALSE(RequestBinding::of("tools/call", "{"));
}

TEST_CASE("request state: refusals become JSON-RPC errors with the request's id") {
  for (auto r : {Refusal::kMalformed, Refusal::kTampered, Refusal::kExpired, Refusal::kOtherReplica,
                 Refusal::kOtherRequest, Refusal::kNotParked}) {
    auto j = nlohmann::json::parse(RequestStateSealer::error_response("\"req-7\"", r, "2m"));
    CHECK(j["id"] == "req-7");
    CHECK(j["error"]["code"] == -32602);
    CHECK(j["error"]["data"]["bridge"]["reason"] == std::string(RequestStateSealer::to_string(r)));
    CHECK(j["error"]["message"].get<std::string>().find("without inputResponses and requestState") !=
          std::string::npos);
  }
  auto j = nlohmann::json::parse(RequestStateSealer::error_response("12", Refusal::kOtherReplica, "2m"));
  CHECK(j["id"] == 12);
  CHECK(j["error"]["message"].get<std::string>().find("another bridge replica") != std::string::npos);
}
