// mcp-bridge-upstream: the example legacy HTTP+SSE server (examples/) for the
// benchmark scripts, with its thread count as a flag (each open SSE stream
// holds one of its threads, so a burst of hundreds of sessions needs more
// than the example binary's 64). Binds 127.0.0.1 (port 0 = any free port),
// prints "LISTENING <port>" on stdout once ready, and exits on SIGTERM/SIGINT,
// when stdin reaches EOF (its parent went away) or after --max-seconds.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "legacy_server.h"

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mcp-bridge-upstream: the example legacy MCP server for benchmarks, on 127.0.0.1"};
  int port = 0, threads = 1024, max_seconds = 600;
  bool watch_stdin = false;
  app.add_option("--port", port, "Port on 127.0.0.1 (0 = any free port)")->capture_default_str();
  app.add_option("--threads", threads, "Server threads (one per open SSE stream)")->capture_default_str();
  app.add_option("--max-seconds", max_seconds, "Exit after this long whatever happens")->capture_default_str();
  app.add_flag("--exit-on-stdin-eof", watch_stdin, "Exit when stdin reaches EOF (the parent closed it)");
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  example::Options opt;
  opt.threads = threads;
  example::LegacyServer server(opt);
  int p = server.start("127.0.0.1", port);
  if (p < 0) {
    std::fprintf(stderr, "mcp-bridge-upstream: error: cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  std::printf("LISTENING %d\n", p);
  std::fflush(stdout);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(max_seconds);
  while (!g_stop && std::chrono::steady_clock::now() < end) {
    if (watch_stdin) {
      pollfd pf{0, POLLIN, 0};
      if (::poll(&pf, 1, 200) > 0) {
        char b[256];
        if (::read(0, b, sizeof b) <= 0) break;
      }
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  server.stop();
  return 0;
}
