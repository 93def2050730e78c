#include "mcp_sse_bridge/config_cli.h"

#include <CLI/CLI.hpp>
#include <cctype>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/request_policy.h"
#include "mcp_sse_bridge/session_token.h"
#include "mcp_sse_bridge/text_util.h"

namespace msb {

namespace {

std::string format_size(uint64_t b) {
  if (b && b % (1ull << 30) == 0) return std::to_string(b >> 30) + "GiB";
  if (b && b % (1ull << 20) == 0) return std::to_string(b >> 20) + "MiB";
  if (b && b % (1ull << 10) == 0) return std::to_string(b >> 10) + "KiB";
  return std::to_string(b);
}

// An invalid value ends parsing; parse_command_line turns it into its result.
struct CliFailure {
  std::string message;
};
[[noreturn]] void fail(const std::string& msg) { throw CliFailure{msg}; }


bool valid_header_line(const std::string& h, std::string* name) {
  auto colon = h.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  for (size_t i = 0; i < colon; ++i) {
    unsigned char c = static_cast<unsigned char>(h[i]);
    if (c <= 0x20 || c >= 0x7f || std::strchr("()<>@,;:\\\"/[]?={}", c)) return false;
  }
  if (h.find_first_of(std::string("\r\n\0", 3)) != std::string::npos) return false;
  *name = h.substr(0, colon);
  return true;
}

std::string read_file(const char* flag, const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(std::string("--") + flag + ": cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  if (ss.str().size() > (1u << 20)) fail(std::string("--") + flag + ": " + path + " is larger than 1 MiB");
  return ss.str();
}

// Non-empty lines that are not comments (#), trimmed.
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos || line[b] == '#') continue;
    out.push_back(line.substr(b));
  }
  return out;
}

std::string read_secret_file(const std::string& path) {
  std::string s = read_file("session-secret-file", path);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  if (s.size() < 16) fail("--session-secret-file: secret must be at least 16 bytes");
  return s;
}

}  // namespace

namespace {
Config parse_or_throw(int argc, char** argv, std::string* help_text);
}  // namespace

CliResult parse_command_line(int argc, char** argv) {
  CliResult r;
  try {
    std::string help;
    Config c = parse_or_throw(argc, argv, &help);
    if (!help.empty()) {
      r.output = std::move(help);
      r.exit_code = 0;
      return r;
    }
    r.config = std::move(c);
  } catch (const CliFailure& f) {
    r.output = "mcp-sse-bridge: error: " + f.message + "\n";
    r.to_stderr = true;
    r.exit_code = 2;
  }
  return r;
}

namespace {

Config parse_or_throw(int argc, char** argv, std::string* help_text) {
  Config c;
  CLI::App app{
      "mcp-sse-bridge: serves MCP Streamable HTTP to clients and forwards each call to a legacy\n"
      "HTTP+SSE (2024-11-05) MCP server on a short-lived upstream session, with a deadline on\n"
      "every step, so a dead upstream becomes an immediate JSON-RPC error for the caller.\n"
      "Every flag can also be set by MCP_BRIDGE_<FLAG> (upper case, '-' as '_') or by a key of\n"
      "the same name in --config FILE (TOML/INI). Precedence: flag > config file > environment.\n"
      "Durations: 250ms, 5s, 2m, 1h (0 = off where noted). Sizes: 512KiB, 16MiB, 1GiB.\n"
      "Health check mode: 'mcp-sse-bridge --probe URL' GETs URL and exits 0 on HTTP 200.",
      "mcp-sse-bridge"};
  app.option_defaults()->always_capture_default();
  app.get_formatter()->column_width(44);
  app.set_config("--config", "", "Read flags from this TOML/INI file (keys = flag names)")
      ->type_name("FILE");
  app.allow_config_extras(CLI::config_extras_mode::error);

  std::string upstream, listen = "127.0.0.1:8080";
  auto& u = c.upstream;
  std::string connect_t = format_duration(u.connect_timeout),
              endpoint_t = format_duration(u.endpoint_timeout),
              init_t = format_duration(u.initialize_timeout),
              request_t = format_duration(u.request_timeout),
              max_request_t = format_duration(u.max_request_timeout),
              ping_i = format_duration(u.ping_interval), ping_t = format_duration(u.ping_timeout),
              post_t = format_duration(u.post_timeout), tcp_ka = format_duration(u.tcp_keepalive),
              tcp_ut = format_duration(u.tcp_user_timeout),
              probe_after = format_duration(u.idle_probe_after),
              probe_t = format_duration(u.idle_probe_timeout),
              resolve_t = format_duration(u.resolve_timeout),
              resolve_ttl = format_duration(u.resolve_cache_ttl),
              keepalive_i = format_duration(c.keepalive_interval),
              max_msg = format_size(u.max_message_size), max_body = format_size(c.max_body_size);
  std::string secret_file, headers_file, tokens_file;
  std::string client_read_t = format_duration(c.client_read_timeout),
              client_write_t = format_duration(c.client_write_timeout),
              client_idle_t = format_duration(c.client_idle_timeout),
              drain_t = format_duration(c.drain_timeout),
              ready_i = format_duration(c.ready_probe_interval),
              session_idle_t = format_duration(u.session_idle_timeout),
              discover_refresh = format_duration(c.discover_refresh),
              mrtr_park_t = format_duration(c.mrtr_park_timeout);
  std::string upstream_mode = "call";
  std::string auth_health = "open", auth_metrics = "open";

  auto env = [](const char* flag) {
    std::string e = "MCP_BRIDGE_";
    for (const char* p = flag; *p; ++p) e += *p == '-' ? '_' : static_cast<char>(std::toupper(*p));
    return e;
  };
  // Each option's value label in --help is given where it is added: a label
  // guessed from the flag's name once called --max-message-size a DURATION.
  // Durations and sizes are checked by CLI11 validators while parsing, so
  // an error names the flag the value came from (command line, file or env).
  auto duration_check = [](bool zero_ok) {
    return CLI::Validator(
        [zero_ok](std::string& v) -> std::string {
          auto d = parse_duration(v);
          if (!d) return "invalid duration '" + v + "' (use e.g. 250ms, 5s, 2m; at most 8784h)";
          if (!zero_ok && d->count() == 0) return "must be greater than 0";
          return {};
        },
        "", "");
  };
  const CLI::Validator size_check(
      [](std::string& v) -> std::string {
        auto n = parse_size(v);
        if (!n || *n < 1024)
          return "invalid size '" + v + "' (at least 1KiB, at most 1024GiB; e.g. 512KiB, 16MiB)";
        return {};
      },
      "", "");
  constexpr const char* kDur = "DURATION";    // > 0
  constexpr const char* kDur0 = "DURATION0";  // 0 allowed (= off)
  constexpr const char* kSize = "SIZE";
  constexpr const char* kFile = "FILE";
  // Each option's value label in --help is given where it is added.
  int ignored_workers = 0;
  auto opt = [&](const char* flag, auto& var, const char* help, const char* type = nullptr) {
    auto* o = app.add_option(std::string("--") + flag, var, help)->envname(env(flag));
    if (type == kDur || type == kDur0) {
      o->type_name("DURATION")->check(duration_check(type == kDur0));
    } else if (type == kSize) {
      o->type_name("SIZE")->check(size_check);
    } else if (type) {
      o->type_name(type);
    }
    return o;
  };

  opt("upstream", upstream, "Legacy MCP server SSE URL, e.g. http://127.0.0.1:3001/sse (required)",
      "URL")
      ->required();
  opt("listen", listen, "HOST:PORT to serve Streamable HTTP on (port 0 = any free port)", "HOST:PORT");
  opt("path", c.path, "Endpoint path for POST/GET/DELETE", "PATH");
  opt("connect-timeout", connect_t, "Deadline for the upstream TCP connect plus the SSE response head", kDur);
  opt("endpoint-timeout", endpoint_t, "Deadline for the upstream `endpoint` event after connect", kDur);
  opt("initialize-timeout", init_t,
      "Deadline for the upstream initialize reply and each setup POST", kDur);
  opt("request-timeout", request_t,
      "Deadline for a whole call, from its arrival; upstream progress notifications extend it", kDur);
  opt("max-request-timeout", max_request_t,
      "Hard cap on a call, however much progress the upstream reports", kDur);
  opt("ping-interval", ping_i,
      "Upstream silence before the bridge sends an MCP ping: while a call waits, and in session "
      "mode also on an idle upstream session (0 = off)", kDur0);
  opt("ping-timeout", ping_t, "Deadline for the reply to that ping; none = the upstream is dead", kDur);
  opt("post-timeout", post_t,
      "Deadline for the response head of each upstream POST once sent (a live legacy server "
      "answers 202 at once); none = the upstream is unresponsive",
      kDur);
  opt("upstream-tcp-keepalive", tcp_ka,
      "Idle time before TCP keepalive probes on upstream connections (3 probes 1s apart), so "
      "that a path that died silently is noticed (0 = off)",
      kDur0);
  opt("upstream-tcp-user-timeout", tcp_ut,
      "TCP_USER_TIMEOUT of upstream connections: unacknowledged data or keepalive probes fail "
      "the connection after this (0 = the kernel's default, many minutes)",
      kDur0);
  opt("idle-probe-after", probe_after,
      "A warm upstream session silent this long is proven alive with an MCP ping before a call "
      "uses it (0 = always)",
      kDur0);
  opt("idle-probe-timeout", probe_t,
      "Deadline for that ping; without a reply the session is dropped and the call goes to a "
      "fresh one",
      kDur);
  opt("resolve-timeout", resolve_t, "Deadline for resolving the upstream's host name", kDur);
  opt("resolve-cache-ttl", resolve_ttl, "Name lookups are cached this long (0 = off)", kDur0);
  opt("keepalive-interval", keepalive_i,
      "SSE comment sent on an idle client response stream (0 = off)", kDur0);
  opt("max-message-size", max_msg, "Largest upstream SSE event (one JSON-RPC message)", kSize);
  opt("max-body-size", max_body, "Largest client request body (413 above)", kSize);
  opt("upstream-header", u.static_headers,
      "Static header sent upstream, 'Name: value' (repeatable)", "'NAME: VALUE'");
  opt("forward-header", c.forward_headers,
      "Client header copied to the upstream, e.g. Authorization (repeatable)", "NAME");
  opt("allowed-host", c.allowed_hosts,
      "Host header value accepted (repeatable; host or host:port). On a loopback listener only "
      "localhost/127.0.0.1/[::1] are accepted otherwise (DNS-rebinding guard); elsewhere any",
      "HOST");
  opt("allowed-origin", c.allowed_origins,
      "Origin accepted, e.g. https://app.example.com (repeatable). A request with any other "
      "Origin gets 403; loopback origins pass when listening on loopback", "ORIGIN");
  opt("allow-foreign-endpoint", u.allow_foreign_endpoint,
      "Accept an upstream `endpoint` on another origin than --upstream (SSRF risk)");
  opt("upstream-pipelining", u.pipelining,
      "A fresh upstream session sends notifications/initialized pipelined with the next POST (one "
      "write, HTTP/1.1 pipelining on the kept-alive POST connection) instead of waiting for its "
      "202: one round trip less per cold session. Only for an upstream (and proxy) known to serve "
      "pipelined requests in order (Node, uvicorn, Go); cpp-httplib servers drop them");
  opt("upstream-retries", u.retries,
      "Fresh-session retries for calls that provably never reached the upstream (or are read-only)")->check(CLI::Range(0, 5));
  std::string pool_age = format_duration(u.pool.max_idle_age);
  opt("pool-size", u.pool.size,
      "Warm pool: most idle pre-initialized upstream sessions kept ready, in all (0 = off: every "
      "call opens its own session)")->check(CLI::Range(0, 10000));
  opt("pool-max-idle-age", pool_age, "Warm pool: an idle session older than this is closed", kDur);
  opt("pool-fillers", u.pool.fillers, "Warm pool: sessions opened at once in the background, per event loop")->check(CLI::Range(1, 64));
  opt("pool-reuse", u.pool.reuse,
      "Warm pool: after a clean call (response received, nothing pending) the session waits for "
      "the next call on the same key, within --pool-max-idle-age; off = one call per session");
  opt("loop-threads", c.loop_threads,
      "Event-loop threads serving client connections (0 = one per CPU this process may use: its "
      "affinity mask, capped by its cgroup v2 CPU quota); an idle connection or open response "
      "stream costs memory, not a thread")->check(CLI::Range(0, 256));
  opt("loop-packing", c.loop_packing,
      "With several loops: connections live on the first loop while it is below 70% busy (one "
      "loop waking for every call costs less CPU than two waking in turn), and idle connections "
      "move to a less busy loop at their next request once it is busier; off = each connection "
      "stays on the loop the kernel handed it to");
  opt("max-connections", c.max_connections,
      "Client connections open at once; one more gets HTTP 503 with Retry-After and is closed")
      ->check(CLI::Range(16, 1000000));
  opt("worker-threads", ignored_workers,
      "Deprecated and ignored: connections are served by --loop-threads (see --max-connections "
      "and --max-inflight)");
  opt("max-inflight", c.max_inflight,
      "Calls in progress at once, initialize included; more get HTTP 503 with Retry-After")->check(CLI::Range(1, 1000000));
  opt("max-revoked-sessions", c.max_revoked_sessions,
      "Bound on the DELETEd-session set kept by this process");
  opt("mrtr-park-timeout", mrtr_park_t,
      "2026-07-28 clients: a call whose upstream asked for input (elicitation, sampling, roots) "
      "was answered input_required and waits this long for the client's retry; then it is "
      "cancelled upstream",
      kDur);
  opt("mrtr-max-parked", c.mrtr_max_parked,
      "2026-07-28 clients: calls waiting for their client's input at once (each holds an "
      "upstream session, within --max-upstream-sessions: the default leaves the rest to calls); "
      "one more is answered with an error and cancelled upstream")
      ->check(CLI::Range(size_t{1}, size_t{1000000}));
  opt("session-secret-file", secret_file,
      "File holding the HMAC secret for session ids (share it across replicas); env "
      "MCP_BRIDGE_SESSION_SECRET holds the secret itself; random when neither is given",
      kFile);
  opt("upstream-headers-file", headers_file,
      "File of static upstream headers, one 'Name: value' per line (# comments), so that "
      "secrets stay out of argv", kFile);
  opt("upstream-ca", u.tls_options.ca_file,
      "PEM CA bundle that https upstreams are verified against (default: the system CAs)", kFile);
  opt("upstream-client-cert", u.tls_options.cert_file,
      "PEM client certificate presented to https upstreams (with --upstream-client-key)", kFile);
  opt("upstream-client-key", u.tls_options.key_file, "PEM private key of --upstream-client-cert", kFile);
  app.add_flag("--upstream-insecure", u.tls_options.insecure,
               "Do not verify https upstream certificates (logs a warning; for tests only)")
      ->envname(env("upstream-insecure"));
  opt("max-upstream-sessions", u.max_sessions,
      "Upstream SSE sessions open at once (calls plus warm pool; in session mode, client "
      "sessions holding one); a call that finds none free fails at once")
      ->check(CLI::Range(1, 100000));
  opt("max-listen-sessions", u.max_listen_sessions,
      "2026-07-28 subscriptions/listen: upstream sessions held for listen streams at once (one "
      "per distinct set of forwarded headers, shared by its listeners; within "
      "--max-upstream-sessions); a listen needing one more gets HTTP 503 with Retry-After")
      ->check(CLI::Range(size_t{1}, size_t{100000}));
  opt("upstream-mode", upstream_mode,
      "call: each call runs on a short-lived upstream session; session: each client session "
      "keeps one upstream session (for servers that keep state per SSE session) and gets a "
      "standalone GET stream for server messages outside calls",
      "call|session")
      ->check(CLI::IsMember({"call", "session"}));
  opt("session-idle-timeout", session_idle_t,
      "Session mode: an upstream session with no call and no GET stream for this long is closed",
      kDur);
  opt("tls-cert", c.tls.cert_file, "Serve HTTPS with this PEM certificate chain (with --tls-key)", kFile);
  opt("tls-key", c.tls.key_file, "PEM private key for --tls-cert", kFile);
  opt("tls-client-ca", c.tls.client_ca_file,
      "Require client certificates signed by this PEM CA bundle (mutual TLS)", kFile);
  opt("auth-tokens-file", tokens_file,
      "Require 'Authorization: Bearer <token>' on the MCP endpoint; one token per line (# "
      "comments). Env MCP_BRIDGE_AUTH_TOKENS holds tokens themselves (comma-separated)", kFile);
  opt("auth-health", auth_health,
      "open or protected: whether /healthz and /readyz need a bearer token (with auth on)", "open|protected");
  opt("auth-metrics", auth_metrics,
      "open or protected: whether the metrics endpoint needs a bearer token (with auth on)", "open|protected");
  opt("metrics-path", c.metrics_path, "Prometheus metrics endpoint path (empty = off)", "PATH");
  opt("ready-probe-interval", ready_i,
      "/readyz probes the upstream SSE endpoint at most this often and caches the answer", kDur);
  opt("client-read-timeout", client_read_t,
      "A client request's head and body must arrive within this (slow clients are cut off)", kDur);
  opt("client-write-timeout", client_write_t,
      "A client that takes none of an answer's bytes for this long is cut off (slow but steady "
      "readers are not)", kDur);
  opt("client-idle-timeout", client_idle_t,
      "Keep-alive client connections with no request in progress and nothing left to write close "
      "after this", kDur);
  opt("max-calls-per-session", c.max_calls_per_session,
      "Calls (open response streams) at once per client session; more get HTTP 429")->check(CLI::Range(1, 1000000));
  opt("serve-stale-initialize", c.serve_stale_initialize,
      "While the upstream cannot be reached, answer a client's initialize from the last "
      "initialize result this process got from the upstream for the same protocol version and "
      "forwarded headers (its age is logged), so the client gets a session and its calls work "
      "once the upstream is back; false = initialize fails while the upstream is down");
  opt("cache-ttl-ms", c.cache_ttl_ms,
      "2026-07-28 clients: the ttlMs cache hint (milliseconds) on list results, resources/read "
      "and server/discover (0 = do not reuse)", "MS")
      ->check(CLI::Range(int64_t{0}, int64_t{86400000}));
  opt("cache-scope", c.cache_scope,
      "2026-07-28 clients: the cacheScope hint on those results: private (per user) or public "
      "(shared caches may keep them; only when the upstream's answers do not depend on who asks)",
      "private|public")
      ->check(CLI::IsMember({"private", "public"}));
  opt("discover-refresh", discover_refresh,
      "2026-07-28 clients: server/discover reuses the upstream's last initialize result this "
      "long before asking the upstream again (while the upstream is down the last result keeps "
      "being served)", kDur);
  opt("drain-timeout", drain_t,
      "On SIGTERM/SIGINT: time in-flight calls get to finish before they are answered with "
      "a shutting_down error", kDur0);
  opt("log-level", c.log_level, "debug, info, warn, error or off", "LEVEL");
  opt("log-format", c.log_format, "text or json", "text|json");
  app.add_flag("--check-config", c.check_config,
               "Parse and validate the configuration, then exit (0 = valid, 2 = invalid)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    *help_text = app.help();
    return c;
  } catch (const CLI::CallForAllHelp&) {
    *help_text = app.help("", CLI::AppFormatMode::All);
    return c;
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    fail(what + " (see --help)");
  }
  if (app.get_option("--worker-threads")->count() > 0 || ignored_workers != 0)
    c.warnings.push_back(
        "--worker-threads is deprecated and ignored: connections are served by --loop-threads "
        "event loops; bound them with --max-connections and calls with --max-inflight");

  std::string why;
  auto url = parse_url(upstream, &why);
  if (!url) fail("--upstream: " + why + ": '" + upstream + "'");
  u.sse_url = *url;

  auto colon = listen.rfind(':');
  if (colon == std::string::npos) fail("--listen: expected HOST:PORT, got '" + listen + "'");
  c.listen_host = listen.substr(0, colon);
  if (c.listen_host.empty())
    fail("--listen: a host is required ('" + listen + "'): 127.0.0.1:PORT for this machine only, "
         "0.0.0.0:PORT or [::]:PORT for every interface");
  if (c.listen_host.size() > 1 && c.listen_host.front() == '[' && c.listen_host.back() == ']')
    c.listen_host = c.listen_host.substr(1, c.listen_host.size() - 2);
  std::string port = listen.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoi(port) > 65535)
    fail("--listen: invalid port in '" + listen + "'");
  c.listen_port = std::stoi(port);
  if (c.path.empty() || c.path.front() != '/') fail("--path: must start with '/'");

  struct D {
    const char* flag;
    std::string* text;
    Duration* out;
    bool zero_ok;
  } durations[] = {
      {"connect-timeout", &connect_t, &u.connect_timeout, false},
      {"endpoint-timeout", &endpoint_t, &u.endpoint_timeout, false},
      {"initialize-timeout", &init_t, &u.initialize_timeout, false},
      {"request-timeout", &request_t, &u.request_timeout, false},
      {"max-request-timeout", &max_request_t, &u.max_request_timeout, false},
      {"ping-interval", &ping_i, &u.ping_interval, true},
      {"ping-timeout", &ping_t, &u.ping_timeout, false},
      {"post-timeout", &post_t, &u.post_timeout, false},
      {"upstream-tcp-keepalive", &tcp_ka, &u.tcp_keepalive, true},
      {"upstream-tcp-user-timeout", &tcp_ut, &u.tcp_user_timeout, true},
      {"idle-probe-after", &probe_after, &u.idle_probe_after, true},
      {"idle-probe-timeout", &probe_t, &u.idle_probe_timeout, false},
      {"resolve-timeout", &resolve_t, &u.resolve_timeout, false},
      {"resolve-cache-ttl", &resolve_ttl, &u.resolve_cache_ttl, true},
      {"keepalive-interval", &keepalive_i, &c.keepalive_interval, true},
      {"pool-max-idle-age", &pool_age, &u.pool.max_idle_age, false},
      {"client-read-timeout", &client_read_t, &c.client_read_timeout, false},
      {"client-write-timeout", &client_write_t, &c.client_write_timeout, false},
      {"client-idle-timeout", &client_idle_t, &c.client_idle_timeout, false},
      {"drain-timeout", &drain_t, &c.drain_timeout, true},
      {"ready-probe-interval", &ready_i, &c.ready_probe_interval, false},
      {"session-idle-timeout", &session_idle_t, &u.session_idle_timeout, false},
      {"discover-refresh", &discover_refresh, &c.discover_refresh, false},
      {"mrtr-park-timeout", &mrtr_park_t, &c.mrtr_park_timeout, false},
  };
  // Validated while parsing (duration_check); this only converts.
  for (auto& d : durations) {
    auto v = parse_duration(*d.text);
    if (!v || (!d.zero_ok && v->count() == 0)) fail(std::string("--") + d.flag + ": invalid duration");
    *d.out = *v;
  }
  u.mode = upstream_mode == "session" ? UpstreamMode::kSession : UpstreamMode::kCall;
  if (u.max_request_timeout < u.request_timeout)
    fail("--max-request-timeout (" + max_request_t + ") must not be below --request-timeout (" +
         request_t + ")");
  auto ms = parse_size(max_msg);
  if (!ms || *ms < 1024) fail("--max-message-size: invalid size '" + max_msg + "' (at least 1KiB)");
  u.max_message_size = *ms;
  auto mb = parse_size(max_body);
  if (!mb || *mb < 1024) fail("--max-body-size: invalid size '" + max_body + "' (at least 1KiB)");
  c.max_body_size = *mb;

  if (!c.metrics_path.empty() && c.metrics_path.front() != '/')
    fail("--metrics-path: must start with '/' (or be empty to turn metrics off)");
  if (c.metrics_path == c.path || c.metrics_path == "/healthz" || c.metrics_path == "/readyz")
    fail("--metrics-path: clashes with another endpoint");

  for (auto& h : u.static_headers) {
    std::string name;
    if (!valid_header_line(h, &name)) fail("--upstream-header: expected 'Name: value', got '" + h + "'");
  }
  if (!headers_file.empty()) {
    for (auto& h : lines_of(read_file("upstream-headers-file", headers_file))) {
      std::string name;
      // The value is a secret: never echo it.
      if (!valid_header_line(h, &name))
        fail("--upstream-headers-file: " + headers_file + ": a line is not 'Name: value'");
      u.static_headers.push_back(h);
    }
  }
  for (auto& h : c.forward_headers) {
    std::string name;
    if (!valid_header_line(h + ":", &name))
      fail("--forward-header: invalid header name '" + h + "'");
    if (is_never_forwarded(h))
      fail("--forward-header: '" + h + "' is never forwarded (hop-by-hop, framing, Host, Cookie "
           "or the bridge's own)");
  }

  // Inbound auth.
  if (!tokens_file.empty()) {
    c.auth_tokens = lines_of(read_file("auth-tokens-file", tokens_file));
    if (c.auth_tokens.empty()) fail("--auth-tokens-file: " + tokens_file + " holds no token");
  } else if (const char* t = std::getenv("MCP_BRIDGE_AUTH_TOKENS"); t && *t) {
    // Comma- (or newline-) separated; no comments here (a token may start
    // with '#'). Set but holding no token is an error, as for the file:
    // never auth off.
    std::string_view all = t;
    while (!all.empty()) {
      auto comma = all.find_first_of(",\n");
      std::string_view tok = all.substr(0, comma);
      all = comma == std::string_view::npos ? std::string_view() : all.substr(comma + 1);
      while (!tok.empty() && (tok.front() == ' ' || tok.front() == '\t' || tok.front() == '\n' || tok.front() == '\r'))
        tok.remove_prefix(1);
      while (!tok.empty() && (tok.back() == ' ' || tok.back() == '\t' || tok.back() == '\n' || tok.back() == '\r'))
        tok.remove_suffix(1);
      if (!tok.empty()) c.auth_tokens.emplace_back(tok);
    }
    if (c.auth_tokens.empty()) fail("MCP_BRIDGE_AUTH_TOKENS is set but holds no token");
  }
  for (auto& t : c.auth_tokens) {
    if (t.size() < 16) fail("auth tokens must be at least 16 characters");
    for (unsigned char ch : t)
      if (ch <= 0x20 || ch >= 0x7f) fail("auth tokens must be printable ASCII without spaces");
  }
  auto open_or_protected = [&](const char* flag, const std::string& v) {
    if (v == "open") return false;
    if (v == "protected") return true;
    fail(std::string("--") + flag + ": expected open or protected, got '" + v + "'");
  };
  c.auth_health = open_or_protected("auth-health", auth_health);
  c.auth_metrics = open_or_protected("auth-metrics", auth_metrics);
  if (!c.auth_tokens.empty())
    for (auto& h : c.forward_headers)
      if (lower(h) == "authorization")
        fail("--forward-header Authorization cannot be combined with inbound auth: the bridge's "
             "own bearer token would reach the upstream");

  // TLS, both sides: contexts are built here so that bad files fail at start
  // (and in --check-config), not at the first connection.
  if (!c.tls.cert_file.empty() || !c.tls.key_file.empty() || !c.tls.client_ca_file.empty()) {
    if (c.tls.cert_file.empty() || c.tls.key_file.empty())
      fail("--tls-cert and --tls-key go together (--tls-client-ca needs both)");
    c.tls_ctx = TlsContext::server(c.tls, &why);
    if (!c.tls_ctx) fail("TLS: " + why);
  }
  auto& to = u.tls_options;
  if (to.insecure && !to.ca_file.empty())
    fail("--upstream-insecure and --upstream-ca contradict each other");
  if (u.sse_url.tls() || u.allow_foreign_endpoint || !to.ca_file.empty() || !to.cert_file.empty() ||
      !to.key_file.empty()) {
    u.tls = TlsContext::client(to, &why);
    if (!u.tls) fail("upstream TLS: " + why);
  }
  log::Level lvl;
  if (!log::parse_level(c.log_level, &lvl)) fail("--log-level: expected debug, info, warn, error or off");
  if (c.log_format != "text" && c.log_format != "json") fail("--log-format: expected text or json");

  if (!secret_file.empty()) {
    c.session_secret = read_secret_file(secret_file);
  } else if (const char* s = std::getenv("MCP_BRIDGE_SESSION_SECRET"); s && *s) {
    c.session_secret = s;
    if (c.session_secret.size() < 16) fail("MCP_BRIDGE_SESSION_SECRET: secret must be at least 16 bytes");
  } else {
    c.session_secret = random_bytes(32);
    c.session_secret_generated = true;
  }
  return c;
}

}  // namespace

}  // namespace msb
