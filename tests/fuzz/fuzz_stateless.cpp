// libFuzzer target: the stateless era's request rules (StatelessRules) and
// the MRTR requestState seal, on hostile headers and bodies. Input: header
// lines ("Name: value\n"), a blank line, then a JSON-RPC body.
// Checks: nothing crashes; a refusal is a 4xx with one of the era's codes
// and a message; an accepted request yields a JSON request for the upstream
// with the same method and id, without the io.modelcontextprotocol/* _meta
// keys, and capabilities that are a JSON object; a decorated result is JSON
// with a resultType; a requestState the bridge did not seal never opens,
// and one it sealed opens only for the request it was sealed for.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/request_state.h"
#include "mcp_sse_bridge/stateless_rules.h"
#include "fuzz_input.h"

namespace {

using nlohmann::json;

void check_refusal(const msb::Rejection& r) {
  if (r.status < 400 || r.status > 499 || r.message.empty()) std::abort();
  if (r.code != -32020 && r.code != -32022 && r.code != -32602 && r.code != -32601) std::abort();
  if (!r.data_json.empty() && json::parse(r.data_json, nullptr, false).is_discarded()) std::abort();
}

void check_envelope(const msb::StatelessEnvelope& e, const msb::Message& m) {
  if (e.protocol_version.empty()) std::abort();
  auto caps = json::parse(e.capabilities, nullptr, false);
  if (!caps.is_object()) std::abort();
  auto up = json::parse(e.upstream_request, nullptr, false);
  if (!up.is_object() || up.value("method", std::string()) != m.method) std::abort();
  if (!up.contains("id") || up["id"].dump() != json::parse(m.id, nullptr, false).dump()) std::abort();
  if (up.contains("params") && up["params"].is_object() && up["params"].contains("_meta")) {
    for (auto& [k, v] : up["params"]["_meta"].items())
      if (k.rfind("io.modelcontextprotocol/", 0) == 0) std::abort();
  }
  auto init = json::parse(msb::StatelessRules::init_params(e, "2025-06-18"), nullptr, false);
  if (!init.is_object() || !init["capabilities"].is_object() || !init["clientInfo"].is_object())
    std::abort();
}

void check_request_state(const msb::Message& m, const std::string& body) {
  static const msb::RequestStateSealer sealer("fuzz-secret-0123456789abcdef", "0123456789ab");
  auto j = json::parse(body, nullptr, false);
  if (!j.is_object() || !j["params"].is_object()) return;
  auto params = j["params"].dump();
  auto binding = msb::RequestBinding::of(m.method, params);
  if (!binding) return;
  auto now = msb::RequestStateSealer::now_ms();
  // A state from the input: the fuzzer cannot forge the MAC.
  if (auto st = j["params"].find("requestState"); st != j["params"].end() && st->is_string()) {
    if (sealer.open(st->get<std::string>(), *binding, now).claims) std::abort();
  }
  msb::RequestStateClaims c{"call-1", sealer.replica(), *binding, 1, now + 60000};
  auto sealed = sealer.seal(c);
  if (!msb::RequestStateSealer::is_ours(sealed)) std::abort();
  auto opened = sealer.open(sealed, *binding, now);
  if (!opened.claims || opened.claims->call_key != "call-1") std::abort();
  auto other = *binding;
  other.method += "x";
  if (sealer.open(sealed, other, now).claims) std::abort();
  if (sealer.open(sealed, *binding, now + 120000).claims) std::abort();  // expired
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto [h, body] = fuzz::split_request(
      std::string_view(reinterpret_cast<const char*>(data), size));
  for (auto& [name, value] : h) (void)msb::StatelessRules::header_value(value);

  msb::Message m;
  if (msb::parse_message(std::string(body), m) && m.kind == msb::MsgKind::kRequest) {
    (void)msb::StatelessRules::is_stateless(h, m);
    auto r = msb::StatelessRules::check(h, m);
    if (auto* e = std::get_if<msb::StatelessEnvelope>(&r)) check_envelope(*e, m);
    else check_refusal(std::get<msb::Rejection>(r));
    check_request_state(m, body);
  }

  // The body as an upstream response to decorate.
  auto decorated = msb::StatelessRules::decorate_result("tools/list", body, 1000, "public");
  auto in = json::parse(body, nullptr, false);
  if (in.is_object() && in.contains("result") && in["result"].is_object() && !in.contains("error")) {
    auto out = json::parse(decorated, nullptr, false);
    if (!out.is_object() || !out["result"].is_object() || !out["result"].contains("resultType"))
      std::abort();
  }
  return 0;
}
