// mcp-sse-bridge: parse flags, build the config, serve until a signal.
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <string_view>
#include <thread>

#include "mcp_sse_bridge/config_cli.h"
#include "mcp_sse_bridge/url.h"
#include "mcp_sse_bridge/front_server.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/request_policy.h"
#include "mcp_sse_bridge/url_probe.h"

namespace {

// `mcp-sse-bridge --probe URL`: GET URL (2 s deadline), exit 0 on HTTP 200,
// 1 otherwise. For container HEALTHCHECKs in an image without curl; https
// is not verified (it checks liveness, not identity).
int probe(const char* target) {
  auto url = msb::parse_url(target);
  if (!url) {
    std::fprintf(stderr, "mcp-sse-bridge: --probe: not an http(s) URL: %s\n", target);
    return 2;
  }
  auto status = msb::probe_url(*url, msb::Deadline::after(msb::Millis(2000)));
  if (!status) {
    std::fprintf(stderr, "probe %s: %s\n", target, status.error().message().c_str());
    return 1;
  }
  std::printf("probe %s: HTTP %d\n", target, *status);
  return *status == 200 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string_view(argv[1]) == "--probe") return probe(argv[2]);
  // Many short-lived worker threads with glibc's default of up to 8 arenas
  // per core leave RSS scattered over arenas; two are plenty for this load.
  mallopt(M_ARENA_MAX, 2);
  auto parsed = msb::parse_command_line(argc, argv);
  if (!parsed.config) {
    std::fputs(parsed.output.c_str(), parsed.to_stderr ? stderr : stdout);
    return parsed.exit_code;
  }
  msb::Config cfg = std::move(*parsed.config);
  msb::log::Level level;
  msb::log::parse_level(cfg.log_level, &level);
  msb::log::set_level(level);
  msb::log::set_json(cfg.log_format == "json");
  if (cfg.check_config) {
    std::printf("configuration OK: upstream %s, listening on %s://%s:%d%s (auth %s, metrics %s)\n",
                msb::redact_query(cfg.upstream.sse_url.str()).c_str(), cfg.tls_ctx ? "https" : "http",
                cfg.listen_host.c_str(), cfg.listen_port, cfg.path.c_str(),
                cfg.auth_tokens.empty() ? "off" : "on",
                cfg.metrics_path.empty() ? "off" : cfg.metrics_path.c_str());
    return 0;
  }
  for (auto& w : cfg.warnings) msb::log::warn(w);
  if (cfg.upstream.tls_options.insecure)
    msb::log::warn("--upstream-insecure: upstream TLS certificates are NOT verified; anyone on the "
                   "path can impersonate the upstream");
  if (cfg.auth_tokens.empty() && !msb::is_loopback_name(cfg.listen_host))
    msb::log::warn("listening beyond loopback without inbound auth (--auth-tokens-file)",
                   {{"listen", cfg.listen_host}});
  if (cfg.session_secret_generated)
    msb::log::warn(
        "no --session-secret-file or MCP_BRIDGE_SESSION_SECRET: using a random secret; client "
        "sessions will not survive a restart or work across replicas");

  // Signals are taken by one thread with sigwait; every other thread blocks them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  msb::FrontServer server(cfg);
  std::string why;
  if (!server.bind(&why)) {
    std::fprintf(stderr, "mcp-sse-bridge: error: %s\n", why.c_str());
    return 1;
  }
  // Printed whatever --log-level says: tools and people starting the bridge
  // on port 0 need the address.
  msb::log::write(msb::log::Level::kInfo, "listening",
                  {{"url", std::string(cfg.tls_ctx ? "https://" : "http://") + cfg.listen_host + ":" + std::to_string(server.port()) + cfg.path},
                   {"upstream", msb::redact_query(cfg.upstream.sse_url.str())},
                   {"loops", server.loops()}});
  static std::atomic<bool> signalled{false};
  std::thread signals([&server, &cfg, sigs] {
    int sig = 0;
    sigwait(&sigs, &sig);
    signalled = true;
    msb::log::info("signal received: draining (a second signal exits at once)",
                   {{"signal", std::to_string(sig)}});
    std::thread([sigs] {
      int again = 0;
      sigwait(&sigs, &again);
      msb::log::warn("second signal, exiting now");
      std::_Exit(1);
    }).detach();
    server.drain(cfg.drain_timeout);
  });
  server.run();
  // run() normally returns after a signal's stop(); otherwise wake the signal
  // thread so that it can be joined.
  if (!signalled.load()) kill(getpid(), SIGTERM);
  signals.join();
  msb::log::info("stopped");
  return 0;
}
