// A Node script serving as a test upstream (tests/interop/legacy-ts-server.mjs,
// the TS SDK's legacy SSE server), run as a child process by the tools.
#pragma once

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "mcp_sse_bridge/deadline.h"
#include "tool_common.h"

extern char** environ;

namespace msb_tools {

using namespace std::chrono_literals;

// The TS SDK's legacy SSE server (a Node script) as a child process: ready
// when it prints "LISTENING <port>" (bounded: 20 s); its stdin is a pipe we
// hold, and the script exits when that pipe closes (so also when we die).
struct NodeChild {
  pid_t pid = -1;
  int port = -1;
  int stdin_fd = -1;
  ~NodeChild() { stop(); }
  bool start(const std::string& node, const std::string& script) {
    int in[2], out[2];
    if (pipe(in) != 0) return false;
    if (pipe(out) != 0) {
      close(in[0]);
      close(in[1]);
      return false;
    }
    std::vector<std::string> args = {node, script};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addclose(&fa, in[1]);
    posix_spawn_file_actions_addclose(&fa, out[0]);
    int rc = posix_spawnp(&pid, node.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    stdin_fd = in[1];
    if (rc != 0) {
      pid = -1;
      close(out[0]);
      return false;
    }
    std::string seen;
    auto d = msb::Deadline::after(20s);
    char buf[1024];
    while (!d.reached() && port < 0) {
      pollfd p{out[0], POLLIN, 0};
      if (poll(&p, 1, d.poll_ms(100)) <= 0) continue;
      ssize_t n = read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      seen.append(buf, static_cast<size_t>(n));
      auto at = seen.find("LISTENING ");
      if (at != std::string::npos && seen.find('\n', at) != std::string::npos) port = std::atoi(seen.c_str() + at + 10);
    }
    int fd = out[0];
    std::thread([fd] {  // keep draining its stdout
      char b[1024];
      while (read(fd, b, sizeof b) > 0) {
      }
      close(fd);
    }).detach();
    if (port <= 0) std::fprintf(stderr, "%s printed no LISTENING line: %s\n", script.c_str(), seen.c_str());
    return port > 0;
  }
  void stop() {
    if (stdin_fd >= 0) {
      close(stdin_fd);
      stdin_fd = -1;
    }
    stop_process(pid);
  }
};

}  // namespace msb_tools
