// Unit tests of ListenHub's pure parts: the listen filter (with
// resourceSubscriptions and its bounds), the acknowledgement (the honoured
// filter, tagged), which notifications a listener gets and how they are
// tagged, and reading resources.subscribe from an initialize answer.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/listen_hub.h"

using namespace msb;
using json = nlohmann::json;

namespace {

json listen_request(json notifications) {
  return {{"jsonrpc", "2.0"},
          {"id", 7},
          {"method", "subscriptions/listen"},
          {"params", {{"_meta", json::object()}, {"notifications", std::move(notifications)}}}};
}

std::optional<ListenHub::Filter> parse(json notifications, std::string* why = nullptr) {
  std::string w;
  auto f = ListenHub::filter_of(listen_request(std::move(notifications)).dump(), &w);
  if (why) *why = w;
  return f;
}

json j(const std::string& s) { return json::parse(s); }

}  // namespace

TEST_CASE("listen filter: list flags and resourceSubscriptions (sorted, duplicates once)") {
  auto f = parse({{"toolsListChanged", true},
                  {"promptsListChanged", false},
                  {"resourceSubscriptions", {"file:///b", "file:///a", "file:///b"}}});
  REQUIRE(f);
  CHECK(f->tools);
  CHECK_FALSE(f->prompts);
  CHECK_FALSE(f->resources);
  CHECK(f->uris == std::vector<std::string>{"file:///a", "file:///b"});
  // Absent or null: no URIs, not an error.
  auto g = parse({{"resourcesListChanged", true}});
  REQUIRE(g);
  CHECK(g->resources);
  CHECK(g->uris.empty());
  CHECK(parse({{"resourceSubscriptions", nullptr}}));
}

TEST_CASE("listen filter: malformed resourceSubscriptions and more than 256 URIs are refused") {
  std::string why;
  CHECK_FALSE(parse({{"resourceSubscriptions", "file:///a"}}, &why));
  CHECK(why.find("array") != std::string::npos);
  CHECK_FALSE(parse({{"resourceSubscriptions", {"file:///a", 5}}}, &why));
  CHECK(why.find("strings") != std::string::npos);
  json many = json::array();
  for (size_t i = 0; i < ListenHub::kMaxUris; ++i) many.push_back("file:///" + std::to_string(i));
  CHECK(parse({{"resourceSubscriptions", many}}));  // exactly the bound: fine
  many.push_back("file:///one-more");
  CHECK_FALSE(parse({{"resourceSubscriptions", many}}, &why));
  CHECK(why.find("257") != std::string::npos);
  CHECK(why.find("256") != std::string::npos);
  // Duplicates do not count twice against the bound.
  json dup = json::array();
  for (size_t i = 0; i < ListenHub::kMaxUris + 10; ++i) dup.push_back("file:///same");
  auto d = parse({{"resourceSubscriptions", dup}});
  REQUIRE(d);
  CHECK(d->uris.size() == 1);
}

TEST_CASE("listen acknowledgement: the honoured filter, URIs when honoured, tagged with the id") {
  ListenHub::Filter f;
  f.tools = true;
  auto ack = j(ListenHub::acknowledgement(f, R"("sub-1")"));
  CHECK(ack["method"] == "notifications/subscriptions/acknowledged");
  CHECK(ack["params"]["notifications"] == json{{"toolsListChanged", true}});
  CHECK(ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-1");
  f.uris = {"file:///a", "file:///b"};
  ack = j(ListenHub::acknowledgement(f, "17"));
  CHECK(ack["params"]["notifications"]["resourceSubscriptions"] == json{"file:///a", "file:///b"});
  CHECK(ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 17);
}

TEST_CASE("listen delivery: resources/updated only for the listener's URIs, tagged, uri kept") {
  ListenHub::Filter f;
  f.uris = {"file:///a", "file:///c"};
  std::string upd = R"({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a"}})";
  auto got = ListenHub::for_listener(upd, f, R"("s")");
  REQUIRE_FALSE(got.empty());
  auto m = j(got);
  CHECK(m["params"]["uri"] == "file:///a");
  CHECK(m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "s");
  CHECK(ListenHub::for_listener(
            R"({"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///b"}})",
            f, R"("s")")
            .empty());
  // Without a uri, or asked by nobody: nothing.
  CHECK(ListenHub::for_listener(R"({"jsonrpc":"2.0","method":"notifications/resources/updated"})", f,
                                R"("s")")
            .empty());
  CHECK(ListenHub::for_listener(upd, ListenHub::Filter{}, R"("s")").empty());
  // The list flags as asked; resources/list_changed is not resources/updated.
  f.resources = true;
  CHECK_FALSE(ListenHub::for_listener(
                  R"({"jsonrpc":"2.0","method":"notifications/resources/list_changed"})", f, "1")
                  .empty());
  CHECK(ListenHub::for_listener(R"({"jsonrpc":"2.0","method":"notifications/tools/list_changed"})",
                                f, "1")
            .empty());
  // Never a request or a response, never a log message.
  CHECK(ListenHub::for_listener(
            R"({"jsonrpc":"2.0","id":1,"method":"notifications/resources/updated","params":{"uri":"file:///a"}})",
            f, "1")
            .empty());
  CHECK(ListenHub::for_listener(
            R"({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}})",
            f, "1")
            .empty());
}

TEST_CASE("listen: resources.subscribe read from the upstream's initialize answer") {
  CHECK(ListenHub::advertises_subscribe(
      R"({"jsonrpc":"2.0","id":1,"result":{"capabilities":{"resources":{"subscribe":true}}}})"));
  CHECK_FALSE(ListenHub::advertises_subscribe(
      R"({"jsonrpc":"2.0","id":1,"result":{"capabilities":{"resources":{}}}})"));
  CHECK_FALSE(ListenHub::advertises_subscribe(
      R"({"jsonrpc":"2.0","id":1,"result":{"capabilities":{"resources":{"subscribe":"yes"}}}})"));
  CHECK_FALSE(ListenHub::advertises_subscribe(R"({"jsonrpc":"2.0","id":1,"error":{"code":1}})"));
  CHECK_FALSE(ListenHub::advertises_subscribe("not json"));
}
