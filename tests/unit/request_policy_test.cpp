// find_header() and the known-header index RequestReader builds per request:
// an indexed lookup must answer exactly what a scan of the list answers.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "mcp_sse_bridge/request_policy.h"

using namespace msb;

namespace {

std::optional<std::string_view> scan(const HeaderList& h, std::string_view name) {
  for (auto& kv : h)
    if (kv.name.size() == name.size()) {
      bool same = true;
      for (size_t i = 0; i < name.size() && same; ++i)
        same = (kv.name[i] | 0x20) == (name[i] | 0x20);
      if (same) return kv.value;
    }
  return std::nullopt;
}

const std::vector<std::string_view> kKnown = {
    "Host", "Accept", "Content-Type", "Authorization", "Origin", "Mcp-Session-Id",
    "MCP-Protocol-Version", "X-Request-Id", "Mcp-Method", "Mcp-Name"};

}  // namespace

TEST_CASE("request policy: every header the bridge reads has its own slot, in any case") {
  std::vector<int> seen;
  for (auto name : kKnown) {
    std::string upper(name), lower(name);
    for (auto& c : upper) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
    for (auto& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    int slot = known_header_slot(name);
    CAPTURE(name);
    CHECK(slot >= 0);
    CHECK(slot < kKnownHeaders);
    CHECK(known_header_slot(upper) == slot);
    CHECK(known_header_slot(lower) == slot);
    for (int s : seen) CHECK(s != slot);
    seen.push_back(slot);
  }
  // Same lengths and first letters, other names.
  for (std::string_view other : {"Hosts", "Hast", "Accepts", "Origen", "Content-Tipe", "X-Request-Ix",
                                 "Authorisation", "Mcp-Session-Ix", "MCP-Protocol-Versio", "",
                                 "Mcp-Methods", "Mcp-Nome", "Content-Length", "Connection"})
    CHECK(known_header_slot(other) == -1);
}

TEST_CASE("request policy: an indexed header list answers as a scan does") {
  HeaderList h = {{"host", "a.example"},       {"ACCEPT", "application/json"},
                  {"X-Other", "1"},            {"Mcp-Session-Id", "first"},
                  {"mcp-session-id", "second"}, {"Content-Type", "application/json"},
                  {"X-Request-Id", "r-1"}};
  HeaderList plain = h;
  h.index();
  CHECK(h.indexed());
  CHECK_FALSE(plain.indexed());
  for (auto name : kKnown) {
    CAPTURE(name);
    CHECK(find_header(h, name) == scan(h, name));
    CHECK(find_header(plain, name) == scan(plain, name));
  }
  CHECK(find_header(h, "mcp-session-id").value_or("") == "first");  // the first of two
  CHECK(find_header(h, "x-other").value_or("") == "1");             // not indexed: scanned
  CHECK_FALSE(find_header(h, "Authorization"));
  CHECK_FALSE(find_header(h, "Origin"));
  // Changed after index(): scanned again, never a stale position.
  h.push_back({"Authorization", "Bearer t"});
  CHECK_FALSE(h.indexed());
  CHECK(find_header(h, "authorization").value_or("") == "Bearer t");
  h.index();
  CHECK(find_header(h, "authorization").value_or("") == "Bearer t");
  HeaderList empty;
  empty.index();
  CHECK_FALSE(find_header(empty, "Host"));
}

TEST_CASE("request policy: loopback names are localhost, ::1 and IPv4 literals in 127/8 only") {
  for (const char* yes : {"localhost", "::1", "[::1]", "127.0.0.1", "127.1.2.3", "127.255.255.255"})
    CHECK_MESSAGE(msb::is_loopback_name(yes), yes);
  // Names that only start like one are anyone's (DNS rebinding).
  for (const char* no : {"127.attacker.example", "127.0.0.1.nip.io", "127.0.0.1x", "127.", "127.0.0.256",
                         "1127.0.0.1", "evil.example", "", "127.0.0.1.0.0.0.0"})
    CHECK_FALSE_MESSAGE(msb::is_loopback_name(no), no);
}
