#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "mcp_sse_bridge/sse_parser.h"

using msb::SseEvent;
using msb::SseParser;

namespace {
std::vector<SseEvent> parse_all(std::string_view in, size_t max = 1 << 20) {
  SseParser p(max);
  std::vector<SseEvent> out;
  p.feed(in, [&](SseEvent& e) { out.push_back(e); });
  return out;
}
// Feeds `in` split at every single position (two slices) and in 1-byte slices,
// checking the events equal those of one whole feed.
void check_all_splits(std::string_view in) {
  auto whole = parse_all(in);
  for (size_t cut = 0; cut <= in.size(); ++cut) {
    SseParser p(1 << 20);
    std::vector<SseEvent> out;
    auto cb = [&](SseEvent& e) { out.push_back(e); };
    p.feed(in.substr(0, cut), cb);
    p.feed(in.substr(cut), cb);
    REQUIRE(out.size() == whole.size());
    for (size_t i = 0; i < out.size(); ++i) {
      CHECK(out[i].type == whole[i].type);
      CHECK(out[i].data == whole[i].data);
      CHECK(out[i].id == whole[i].id);
    }
  }
  SseParser p(1 << 20);
  std::vector<SseEvent> out;
  for (char c : in) p.feed(std::string_view(&c, 1), [&](SseEvent& e) { out.push_back(e); });
  REQUIRE(out.size() == whole.size());
  for (size_t i = 0; i < out.size(); ++i) CHECK(out[i].data == whole[i].data);
}
}  // namespace

TEST_CASE("sse: endpoint then message, LF line ends") {
  auto ev = parse_all("event: endpoint\ndata: /message?sessionId=abc\n\nevent: message\ndata: {\"a\":1}\n\n");
  REQUIRE(ev.size() == 2);
  CHECK(ev[0].type == "endpoint");
  CHECK(ev[0].data == "/message?sessionId=abc");
  CHECK(ev[1].type == "message");
  CHECK(ev[1].data == "{\"a\":1}");
}

TEST_CASE("sse: CRLF and lone CR line ends") {
  auto crlf = parse_all("event: endpoint\r\ndata: /x\r\n\r\n: ping - 2024\r\n\r\ndata: y\r\n\r\n");
  REQUIRE(crlf.size() == 2);
  CHECK(crlf[0].data == "/x");
  CHECK(crlf[1].type == "message");
  CHECK(crlf[1].data == "y");
  auto cr = parse_all("data: a\rdata: b\r\r");
  REQUIRE(cr.size() == 1);
  CHECK(cr[0].data == "a\nb");
}

TEST_CASE("sse: comments are counted, not dispatched") {
  SseParser p(1024);
  int n = 0;
  p.feed(": keepalive\n\n:another\n\n", [&](SseEvent&) { ++n; });
  CHECK(n == 0);
  CHECK(p.comments() == 2);
}

TEST_CASE("sse: multi-line data, field without space, no-colon field, id and retry") {
  auto ev = parse_all("id: 7\nretry: 1500\ndata:one\ndata: two\ndata\n\n");
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].data == "one\ntwo\n");
  CHECK(ev[0].id == "7");
  REQUIRE(ev[0].retry.has_value());
  CHECK(*ev[0].retry == 1500);
  // id persists to later events; retry does not.
  SseParser p(1024);
  std::vector<SseEvent> out;
  p.feed("id: 1\ndata: a\n\ndata: b\n\nretry: x\ndata: c\n\n", [&](SseEvent& e) { out.push_back(e); });
  REQUIRE(out.size() == 3);
  CHECK(out[1].id == "1");
  CHECK(!out[2].retry.has_value());
}

TEST_CASE("sse: an id longer than 1 KiB is ignored, not copied into every later event") {
  // A hostile upstream's 50 MB id was copied into each of its small events:
  // the loop spent 17 s copying before any deadline could fire.
  SseParser p(size_t{8} << 20);
  std::vector<SseEvent> out;
  std::string stream = "id: short\ndata: a\n\nid: " + std::string(SseParser::kMaxIdBytes + 1, 'x') + "\n";
  for (int i = 0; i < 3; ++i) stream += "data: b\n\n";
  stream += "id: " + std::string(SseParser::kMaxIdBytes, 'y') + "\ndata: c\n\n";
  p.feed(stream, [&](SseEvent& e) { out.push_back(e); });
  REQUIRE(out.size() == 5);
  for (int i = 0; i < 4; ++i) CHECK(out[i].id == "short");
  CHECK(out[4].id == std::string(SseParser::kMaxIdBytes, 'y'));  // at the limit: kept
}

TEST_CASE("sse: an event without data is not dispatched; BOM is skipped") {
  CHECK(parse_all("event: endpoint\n\n").empty());
  auto ev = parse_all("\xEF\xBB\xBF" "data: x\n\n");
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].data == "x");
}

TEST_CASE("sse: events split at every byte boundary parse the same") {
  check_all_splits("event: endpoint\r\ndata: /messages/?session_id=ab\r\n\r\n"
                   ": ping\r\n\r\nevent: message\ndata: {\"x\":\"a\\nb\"}\n\ndata: l1\rdata: l2\r\r");
  check_all_splits("\xEF\xBB\xBF" "data: bom\n\n");
}

TEST_CASE("sse: oversized event is rejected and the parser stays failed") {
  SseParser p(64);
  int n = 0;
  auto cb = [&](SseEvent&) { ++n; };
  CHECK(p.feed("data: small\n\n", cb));
  CHECK(n == 1);
  std::string big = "data: " + std::string(100, 'x');
  CHECK_FALSE(p.feed(big, cb));  // no line end yet: still caught
  CHECK(p.failed());
  CHECK_FALSE(p.feed("\n\n", cb));
  CHECK(n == 1);
  // Many small data lines adding up past the limit also fail.
  SseParser q(64);
  bool ok = true;
  for (int i = 0; i < 20 && ok; ++i) ok = q.feed("data: 0123456789\n", cb);
  CHECK_FALSE(ok);
}

TEST_CASE("sse: a large event in many slices is linear, not quadratic") {
  std::string payload(8 << 20, 'a');
  std::string in = "data: " + payload + "\n\n";
  SseParser p(16 << 20);
  size_t got = 0;
  for (size_t off = 0; off < in.size(); off += 16384)
    p.feed(std::string_view(in).substr(off, 16384), [&](SseEvent& e) { got = e.data.size(); });
  CHECK(got == payload.size());
}
