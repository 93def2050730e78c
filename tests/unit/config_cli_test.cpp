// The command-line parser returns values (it never exits or prints): valid
// configurations, each kind of refusal with the flag named, --help, and the
// environment and config-file sources.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "mcp_sse_bridge/config_cli.h"

using namespace msb;

namespace {
CliResult parse(std::vector<std::string> args) {
  args.insert(args.begin(), "mcp-sse-bridge");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_command_line(static_cast<int>(argv.size()), argv.data());
}
}  // namespace

TEST_CASE("config cli: a minimal valid command line gives the documented defaults") {
  auto r = parse({"--upstream", "http://127.0.0.1:3001/sse"});
  REQUIRE(r.config);
  const Config& c = *r.config;
  CHECK(c.upstream.sse_url.str() == "http://127.0.0.1:3001/sse");
  CHECK(c.listen_host == "127.0.0.1");
  CHECK(c.listen_port == 8080);
  CHECK(c.upstream.connect_timeout.count() == 5000);
  CHECK(c.upstream.post_timeout.count() == 5000);
  CHECK(c.upstream.tcp_keepalive.count() == 5000);
  CHECK(c.upstream.tcp_user_timeout.count() == 8000);
  CHECK(c.upstream.idle_probe_after.count() == 2000);
  CHECK(c.upstream.max_message_size == 128ull << 20);
  CHECK(c.serve_stale_initialize);
  CHECK(c.session_secret_generated);
}

TEST_CASE("config cli: values are parsed with their units; bad ones name the flag, exit 2") {
  auto ok = parse({"--upstream", "http://h:1/sse", "--post-timeout", "750ms", "--max-body-size", "64KiB",
                   "--serve-stale-initialize", "false", "--listen", "[::1]:0"});
  REQUIRE(ok.config);
  CHECK(ok.config->upstream.post_timeout.count() == 750);
  CHECK(ok.config->max_body_size == 64u << 10);
  CHECK_FALSE(ok.config->serve_stale_initialize);
  CHECK(ok.config->listen_host == "::1");
  CHECK(ok.config->listen_port == 0);
  struct Bad {
    std::vector<std::string> args;
    const char* says;
  } bad[] = {
      {{"--upstream", "http://h:1/sse", "--drain-timeout", "5parsecs"}, "--drain-timeout: invalid duration"},
      {{"--upstream", "http://h:1/sse", "--post-timeout", "0"}, "--post-timeout: must be greater than 0"},
      {{"--upstream", "http://h:1/sse", "--max-body-size", "12"}, "--max-body-size"},
      {{"--upstream", "ftp://h/sse"}, "--upstream"},
      {{"--upstream", "http://h:1/sse", "--listen", "nocolon"}, "--listen"},
      {{"--upstream", "http://h:1/sse", "--request-timeout", "10s", "--max-request-timeout", "5s"},
       "--max-request-timeout"},
      {{"--upstream", "http://h:1/sse", "--max-inflight", "0"}, "--max-inflight"},
      {{"--upstream", "http://h:1/sse", "--max-connections", "3"}, "--max-connections"},
      {{"--upstream", "http://h:1/sse", "--loop-threads", "-1"}, "--loop-threads"},
      {{"--upstream", "http://h:1/sse", "--no-such-flag"}, "no-such-flag"},
      {{"--upstream", "http://h:1/sse", "--pool-fillers", "0"}, "--pool-fillers: Value 0 not in range 1 to 64"},
      {{"--upstream", "http://h:1/sse", "--upstream-retries", "9"}, "--upstream-retries"},
      {{}, "--upstream is required"},
  };
  for (auto& b : bad) {
    auto r = parse(b.args);
    INFO("expecting: " << b.says);
    CHECK_FALSE(r.config);
    CHECK(r.exit_code == 2);
    CHECK(r.to_stderr);
    CHECK(r.output.rfind("mcp-sse-bridge: error: ", 0) == 0);
    CHECK(r.output.find(b.says) != std::string::npos);
  }
}

TEST_CASE("config cli: --help is a result with the usage text and exit 0") {
  auto r = parse({"--help"});
  CHECK_FALSE(r.config);
  CHECK(r.exit_code == 0);
  CHECK_FALSE(r.to_stderr);
  CHECK(r.output.find("--post-timeout DURATION") != std::string::npos);
  CHECK(r.output.find("--max-message-size SIZE") != std::string::npos);
}

TEST_CASE("config cli: precedence flag > config file > environment") {
  ::setenv("MCP_BRIDGE_PING_INTERVAL", "7s", 1);
  ::setenv("MCP_BRIDGE_PING_TIMEOUT", "3s", 1);
  std::string path = "/tmp/msb-config-cli-test-" + std::to_string(::getpid()) + ".toml";
  if (FILE* f = std::fopen(path.c_str(), "w")) {
    std::fputs("ping-timeout = \"2s\"\nrequest-timeout = \"40s\"\n", f);
    std::fclose(f);
  }
  auto r = parse({"--upstream", "http://h:1/sse", "--config", path, "--request-timeout", "50s"});
  ::unsetenv("MCP_BRIDGE_PING_INTERVAL");
  ::unsetenv("MCP_BRIDGE_PING_TIMEOUT");
  std::remove(path.c_str());
  REQUIRE(r.config);
  CHECK(r.config->upstream.ping_interval.count() == 7000);     // environment only
  CHECK(r.config->upstream.ping_timeout.count() == 2000);      // file over environment
  CHECK(r.config->upstream.request_timeout.count() == 50000);  // flag over file
}

TEST_CASE("config_cli: --worker-threads is accepted, ignored and warned about") {
  std::vector<std::string> args = {"mcp-sse-bridge", "--upstream", "http://h:1/sse", "--worker-threads", "64"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  auto r = msb::parse_command_line(static_cast<int>(argv.size()), argv.data());
  REQUIRE(r.config);
  REQUIRE(r.config->warnings.size() == 1);
  CHECK(r.config->warnings[0].find("--worker-threads is deprecated") != std::string::npos);
  std::vector<std::string> plain = {"mcp-sse-bridge", "--upstream", "http://h:1/sse"};
  std::vector<char*> pargv;
  for (auto& a : plain) pargv.push_back(a.data());
  auto p = msb::parse_command_line(static_cast<int>(pargv.size()), pargv.data());
  REQUIRE(p.config);
  CHECK(p.config->warnings.empty());
}

TEST_CASE("config cli: --upstream-mode and --session-idle-timeout") {
  auto d = parse({"--upstream", "http://h:1/sse"});
  REQUIRE(d.config);
  CHECK(d.config->upstream.mode == msb::UpstreamMode::kCall);
  CHECK(d.config->upstream.session_idle_timeout.count() == 30 * 60 * 1000);
  auto s = parse({"--upstream", "http://h:1/sse", "--upstream-mode", "session",
                  "--session-idle-timeout", "90s"});
  REQUIRE(s.config);
  CHECK(s.config->upstream.mode == msb::UpstreamMode::kSession);
  CHECK(s.config->upstream.session_idle_timeout.count() == 90000);
  ::setenv("MCP_BRIDGE_UPSTREAM_MODE", "session", 1);
  auto e = parse({"--upstream", "http://h:1/sse"});
  ::unsetenv("MCP_BRIDGE_UPSTREAM_MODE");
  REQUIRE(e.config);
  CHECK(e.config->upstream.mode == msb::UpstreamMode::kSession);
  auto bad = parse({"--upstream", "http://h:1/sse", "--upstream-mode", "sessions"});
  CHECK_FALSE(bad.config);
  CHECK(bad.exit_code == 2);
  CHECK(bad.output.find("--upstream-mode") != std::string::npos);
  auto zero = parse({"--upstream", "http://h:1/sse", "--session-idle-timeout", "0"});
  CHECK_FALSE(zero.config);
  auto help = parse({"--help"});
  CHECK(help.output.find("--upstream-mode call|session") != std::string::npos);
  CHECK(help.output.find("--session-idle-timeout DURATION=30m") != std::string::npos);
  auto range = parse({"--upstream", "http://h:1/sse", "--max-upstream-sessions", "0"});
  CHECK_FALSE(range.config);  // its range check was once inside the help text
}
