// example-legacy-server: a legacy HTTP+SSE MCP server for demos and benchmarks.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "legacy_server.h"

int main(int argc, char** argv) {
  CLI::App app{"example-legacy-server: a legacy HTTP+SSE (2024-11-05) MCP server with tools "
               "echo, add, sleep, big and log"};
  std::string listen = "127.0.0.1:3001";
  example::Options opt;
  app.add_option("--listen", listen, "HOST:PORT to listen on (loopback by default)")->capture_default_str();
  app.add_flag("--python-style", opt.python_style,
               "Mimic python-sdk: /messages/?session_id= endpoint, CRLF line ends");
  app.add_option("--ping-comment-ms", opt.ping_comment_ms,
                 "Send ': ping' SSE comments this often (0 = never, like the TS SDK)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "example-legacy-server: error: --listen expects HOST:PORT\n");
    return 2;
  }
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);
  example::LegacyServer server(opt);
  int port = server.start(listen.substr(0, colon), std::stoi(listen.substr(colon + 1)));
  if (port < 0) {
    std::fprintf(stderr, "example-legacy-server: error: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  std::fprintf(stderr, "example-legacy-server: SSE endpoint http://%s:%d/sse\n",
               listen.substr(0, colon).c_str(), port);
  std::fflush(stderr);
  int sig = 0;
  sigwait(&sigs, &sig);
  server.stop();
  return 0;
}
