#include <doctest/doctest.h>

#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/url.h"

using msb::parse_url;
using msb::resolve_url;

TEST_CASE("url: parse absolute URLs") {
  auto u = parse_url("http://127.0.0.1:3001/sse");
  REQUIRE(u);
  CHECK(u->host == "127.0.0.1");
  CHECK(u->port == 3001);
  CHECK(u->target == "/sse");
  auto d = parse_url("HTTPS://Example.COM");
  REQUIRE(d);
  CHECK(d->scheme == "https");
  CHECK(d->host == "example.com");
  CHECK(d->port == 443);
  CHECK(d->target == "/");
  CHECK(d->host_header() == "example.com");
  auto v6 = parse_url("http://[::1]:8080/a?b=c#frag");
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->target == "/a?b=c");
  CHECK(v6->host_header() == "[::1]:8080");
}

TEST_CASE("url: reject what the bridge cannot or must not use") {
  std::string why;
  CHECK_FALSE(parse_url("ftp://x/y", &why));
  CHECK(why.find("scheme") != std::string::npos);
  CHECK_FALSE(parse_url("/relative"));
  CHECK_FALSE(parse_url("http://user:pw@host/"));
  CHECK_FALSE(parse_url("http://host:99999/"));
  CHECK_FALSE(parse_url("http://host:12ab/"));
  CHECK_FALSE(parse_url("http:///path"));
  CHECK_FALSE(parse_url("http://ho st/"));
}

TEST_CASE("url: resolve endpoint references against the SSE URL") {
  auto base = *parse_url("http://127.0.0.1:3001/mcp/sse");
  CHECK(resolve_url(base, "/messages/?session_id=ab")->str() ==
        "http://127.0.0.1:3001/messages/?session_id=ab");
  CHECK(resolve_url(base, "message?sessionId=1")->str() == "http://127.0.0.1:3001/mcp/message?sessionId=1");
  CHECK(resolve_url(base, "../up?x")->str() == "http://127.0.0.1:3001/up?x");
  CHECK(resolve_url(base, "?s=1")->str() == "http://127.0.0.1:3001/mcp/sse?s=1");
  CHECK(resolve_url(base, "//other:9/p")->str() == "http://other:9/p");
  CHECK(resolve_url(base, "http://evil.example/x")->host == "evil.example");
  CHECK(msb::same_origin(*resolve_url(base, "/x"), base));
  CHECK_FALSE(msb::same_origin(*resolve_url(base, "http://127.0.0.1:3002/x"), base));
  CHECK_FALSE(resolve_url(base, "/has space"));
}

TEST_CASE("url: the configured upstream URL's query is redacted where clients and logs see it") {
  CHECK(msb::redact_query("http://h:1/sse") == "http://h:1/sse");
  CHECK(msb::redact_query("http://h:1/sse?api_key=SECRET") == "http://h:1/sse?REDACTED");
  CHECK(msb::redact_query("http://h:1/sse#frag") == "http://h:1/sse");
  msb::BridgeError e = msb::make_error(msb::ErrorKind::kUnreachable, msb::Phase::kConnect, "refused");
  std::string reply = msb::jsonrpc_error_response("7", e, 1, "http://127.0.0.1:1/sse?api_key=SUPERSECRET123");
  CHECK(reply.find("SUPERSECRET123") == std::string::npos);
  CHECK(reply.find("http://127.0.0.1:1/sse?REDACTED") != std::string::npos);
}
