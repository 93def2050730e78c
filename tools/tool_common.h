// What the tools (bench, soak) share: the bridge binary as a child process,
// a keep-alive Streamable HTTP client (bridge_client.h), /proc readings of a
// process.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bridge_client.h"
#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/text_util.h"

extern char** environ;

namespace msb_tools {

using namespace std::chrono_literals;
using msb::Clock;
using msb::Deadline;

inline constexpr char kInit[] =
    R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}})";

// Value of header `name` in an HTTP/1.1 head ("...\r\n" lines after the
// first), trimmed; nullopt when absent.
inline std::optional<std::string_view> header_value(std::string_view head, std::string_view name) {
  size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos && pos + 2 < head.size()) {
    size_t start = pos + 2, end = head.find("\r\n", start);
    if (end == std::string_view::npos) end = head.size();
    std::string_view line = head.substr(start, end - start);
    auto colon = line.find(':');
    if (colon != std::string_view::npos && msb::iequals(line.substr(0, colon), name))
      return msb::trim(line.substr(colon + 1));
    pos = end;
  }
  return std::nullopt;
}

inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

// A TCP socket connected (or, when `nonblocking`, connecting) to
// 127.0.0.1:port, with TCP_NODELAY when `nodelay`; -1 on failure.
inline int connect_loopback(int port, bool nonblocking, bool nodelay = false) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return -1;
  if (nodelay) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline std::string call_body(int id, const std::string& tool, const std::string& args) {
  return R"({"jsonrpc":"2.0","id":)" + std::to_string(id) +
         R"(,"method":"tools/call","params":{"name":")" + tool + R"(","arguments":)" + args + "}}";
}

inline long proc_status_kb(pid_t pid, const char* field) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(std::strlen(field) + 1));
  return -1;
}

// CPU time (user + system) of a process, in microseconds; `user`, when given,
// receives the user part alone.
inline double cpu_us(pid_t pid, double* user = nullptr) {
  std::ifstream f(pid > 0 ? "/proc/" + std::to_string(pid) + "/stat" : std::string("/proc/self/stat"));
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto rp = all.rfind(')');
  if (rp == std::string::npos) return 0;
  std::istringstream in(all.substr(rp + 2));
  std::string tok;
  double ut = 0, st = 0;
  for (int field = 3; in >> tok; ++field) {  // fields after "pid (comm)" start at 3
    if (field == 14) ut = std::stod(tok);
    if (field == 15) {
      st = std::stod(tok);
      break;
    }
  }
  double tick_us = 1e6 / static_cast<double>(sysconf(_SC_CLK_TCK));
  if (user) *user = ut * tick_us;
  return (ut + st) * tick_us;
}

// ---- the bridge as a child process ------------------------------------------

// Ends a child process: SIGTERM, then SIGKILL after 3 s (bounded); reaps it
// and sets `pid` to -1. No-op when pid <= 0.
inline void stop_process(pid_t& pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  for (int i = 0; i < 300; ++i) {
    if (waitpid(pid, nullptr, WNOHANG) == pid) {
      pid = -1;
      return;
    }
    std::this_thread::sleep_for(10ms);
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  pid = -1;
}

struct Child {
  pid_t pid = -1;
  int port = -1;
  ~Child() { stop(); }
  void stop() { stop_process(pid); }
};

inline bool start_bridge(Child& c, const std::string& bin, int upstream_port,
                  const std::vector<std::string>& extra) {
  int pipefd[2];
  if (pipe(pipefd) != 0) return false;
  std::vector<std::string> args = {bin, "--upstream",
                                   "http://127.0.0.1:" + std::to_string(upstream_port) + "/sse",
                                   "--listen", "127.0.0.1:0", "--log-level", "warn",
                                   "--session-secret-file", "/dev/null"};
  args.pop_back();  // no secret file: a random secret is fine for a benchmark
  args.pop_back();
  for (auto& e : extra) args.push_back(e);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  int rc = posix_spawn(&c.pid, bin.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  if (rc != 0) {
    close(pipefd[0]);
    return false;
  }
  // Read stderr until the "listening" line (bounded by 10 s), then keep
  // draining it on a thread so the child never blocks on a full pipe.
  std::string seen;
  const std::string marker = "listening url=http://127.0.0.1:";
  auto d = Deadline::after(10s);
  char buf[4096];
  while (!d.reached()) {
    pollfd p{pipefd[0], POLLIN, 0};
    if (poll(&p, 1, d.poll_ms(100)) <= 0) continue;
    ssize_t n = read(pipefd[0], buf, sizeof buf);
    if (n <= 0) break;
    seen.append(buf, static_cast<size_t>(n));
    auto at = seen.find(marker);
    if (at != std::string::npos && seen.find('/', at + marker.size()) != std::string::npos) {
      c.port = std::atoi(seen.c_str() + at + marker.size());
      break;
    }
  }
  int fd = pipefd[0];
  std::thread([fd] {
    char b[4096];
    while (read(fd, b, sizeof b) > 0) {
    }
    close(fd);
  }).detach();
  return c.port > 0;
}

}  // namespace msb_tools
