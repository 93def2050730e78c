// mcp-bridge-scale: what idle and waiting clients cost the bridge (#12).
//
// Opens --idle keep-alive client connections (each answered once: a GET
// /healthz, then left idle) and --streams response streams (a tools/call of the
// example server's `sleep` tool, or with --ts-server the TS SDK legacy
// server's `slow` tool, held open by the upstream), all at once, then
// reads the bridge process's threads, RSS and fds, and checks that a new
// client is still served promptly. Targets from #12: every connection served,
// at most 16 threads, at most 200 MiB RSS. The bridge runs as a child
// process; the example legacy server runs in this process (one thread per
// connection: with 2,000 streams it holds 4,000 upstream connections and can
// itself become what is slow), or with --ts-server the TS SDK's legacy server
// runs under node (one event loop); the client side is one epoll loop. Everything binds 127.0.0.1 and stops by itself.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "legacy_server.h"
#include "node_child.h"
#include "tool_common.h"

namespace {

using namespace msb_tools;

struct Conn {
  int fd = -1;
  std::string out;  // request bytes still to send
  std::string in;   // response bytes read so far
  bool done = false;
};

// Sends each connection's request and reads until `complete(in)` holds, for
// all connections at once, within `bound`. Returns how many completed.
size_t run_all(std::vector<Conn>& conns, const std::function<bool(const std::string&)>& complete,
               Deadline bound) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  for (size_t i = 0; i < conns.size(); ++i) {
    if (conns[i].fd < 0) continue;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = i;
    epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
  }
  size_t done = 0;
  std::vector<epoll_event> evs(1024);
  char buf[8192];
  while (done < conns.size() && !bound.reached()) {
    int n = epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), bound.poll_ms(100));
    for (int k = 0; k < n; ++k) {
      Conn& c = conns[evs[k].data.u64];
      if (c.done) continue;
      if ((evs[k].events & EPOLLOUT) && !c.out.empty()) {
        ssize_t w = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (w > 0) c.out.erase(0, static_cast<size_t>(w));
        if (c.out.empty()) {
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.u64 = evs[k].data.u64;
          epoll_ctl(ep, EPOLL_CTL_MOD, c.fd, &ev);
        }
      }
      if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
        if (r > 0) c.in.append(buf, static_cast<size_t>(r));
        if (complete(c.in) || r == 0 || (r < 0 && errno != EAGAIN)) {
          c.done = true;
          ++done;
          epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
        }
      }
    }
  }
  ::close(ep);
  size_t ok = 0;
  for (auto& c : conns) ok += complete(c.in) ? 1 : 0;
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mcp-bridge-scale: idle keep-alive connections and open response streams at once; "
               "prints the bridge's threads, RSS and fds"};
  std::string bridge_bin = "./mcp-sse-bridge";
  int idle = 10000, streams = 2000, hold_ms = 60000, wait_ms = 60000;
  // Capacity, not admission, is measured: the caps are set above the load
  // (the defaults, 1024 calls and upstream sessions, would refuse streams).
  std::vector<std::string> flags = {"--client-idle-timeout", "10m", "--max-calls-per-session", "100000",
                                    "--max-inflight", "100000", "--max-upstream-sessions", "100000"};
  std::vector<std::string> extra;
  std::string ts_server, node_bin = "node";
  app.add_option("--bridge", bridge_bin, "Path of the mcp-sse-bridge binary")->capture_default_str();
  app.add_option("--ts-server", ts_server,
                 "legacy-ts-server.mjs of tests/interop (its node_modules installed): the upstream is the TS "
                 "SDK's legacy server under node instead of the example server");
  app.add_option("--node", node_bin, "Node.js binary for --ts-server")->capture_default_str();
  app.add_option("--idle", idle, "Idle keep-alive client connections")->capture_default_str();
  app.add_option("--streams", streams, "Open response streams (calls the upstream holds)")
      ->capture_default_str();
  app.add_option("--hold-ms", hold_ms, "How long the upstream holds each stream's call")
      ->capture_default_str();
  app.add_option("--wait-ms", wait_ms, "How long each phase (idle, streams) waits for its answers")
      ->capture_default_str();
  app.add_option("--bridge-flag", extra,
                 "Extra bridge flag (repeatable, e.g. --bridge-flag=--max-inflight=9000)");
  CLI11_PARSE(app, argc, argv);
  for (auto& e : extra) flags.push_back(e);

  // Both ends of every connection live in this machine: raise the fd limit
  // (the bridge child inherits it). This process holds the client side of
  // every connection plus the upstream's side of each stream's SSE and POST
  // connections; the bridge holds every client connection plus two upstream
  // connections per stream: each needs idle + 3 * streams and some spare.
  // Above the hard limit only with privilege (CAP_SYS_RESOURCE).
  size_t need = static_cast<size_t>(idle) + 3 * static_cast<size_t>(streams) + 1024;
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
    rlimit want{need, need};
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  getrlimit(RLIMIT_NOFILE, &rl);
  std::printf("RLIMIT_NOFILE %llu (this process and the bridge; %zu needed)\n",
              static_cast<unsigned long long>(rl.rlim_cur), need);
  if (rl.rlim_cur < need)
    std::printf("warning: RLIMIT_NOFILE %llu is below the %zu fds this run needs\n",
                static_cast<unsigned long long>(rl.rlim_cur), need);

  example::Options opt;
  // The example server holds a thread per connection: each stream has an SSE
  // connection and a kept-alive POST connection upstream.
  opt.threads = ts_server.empty() ? 2 * streams + 256 : 4;
  example::LegacyServer up(opt);
  NodeChild ts;
  int up_port = -1;
  if (ts_server.empty()) {
    up_port = up.start("127.0.0.1", 0);
  } else if (ts.start(node_bin, ts_server)) {
    up_port = ts.port;
  }
  if (up_port <= 0) {
    std::fprintf(stderr, "scale: the upstream did not start\n");
    return 2;
  }
  std::printf("upstream: %s\n", ts_server.empty() ? "the example legacy server (a thread per connection)"
                                                    : ("node " + ts_server + " (TS SDK legacy server)").c_str());
  const char* hold_tool = ts_server.empty() ? "sleep" : "slow";
  Child bridge;
  if (!start_bridge(bridge, bridge_bin, up_port, flags)) {
    std::fprintf(stderr, "scale: bridge did not start (%s)\n", bridge_bin.c_str());
    return 2;
  }
  std::this_thread::sleep_for(300ms);
  long base_rss = proc_status_kb(bridge.pid, "VmRSS:"), base_threads = proc_status_kb(bridge.pid, "Threads:");
  std::printf("bridge idle: rss=%.1fMB threads=%ld\n", base_rss / 1024.0, base_threads);
  BridgeClient session(bridge.port);
  if (!session.initialize()) {
    std::fprintf(stderr, "scale: initialize failed\n");
    return 2;
  }

  auto t0 = Clock::now();
  std::vector<Conn> idle_conns(static_cast<size_t>(idle));
  for (auto& c : idle_conns) {
    c.fd = connect_loopback(bridge.port, true);
    c.out = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  }
  auto answered = [](const std::string& in) {
    return in.rfind("HTTP/1.1 200", 0) == 0 && in.find("\r\n\r\nok\n") != std::string::npos;
  };
  size_t idle_ok = run_all(idle_conns, answered, Deadline::after(std::chrono::milliseconds(wait_ms)));
  double idle_s = std::chrono::duration<double>(Clock::now() - t0).count();

  auto t1 = Clock::now();
  std::vector<Conn> stream_conns(static_cast<size_t>(streams));
  for (size_t i = 0; i < stream_conns.size(); ++i) {
    auto& c = stream_conns[i];
    c.fd = connect_loopback(bridge.port, true);
    std::string body = call_body(static_cast<int>(i + 1), hold_tool, "{\"ms\":" + std::to_string(hold_ms) + "}");
    c.out = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\nMcp-Session-Id: " + session.sid() +
            "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  }
  auto stream_open = [](const std::string& in) {
    return in.rfind("HTTP/1.1 200", 0) == 0 && in.find("text/event-stream") != std::string::npos &&
           in.find("\r\n\r\n") != std::string::npos;
  };
  size_t streams_ok = run_all(stream_conns, stream_open, Deadline::after(std::chrono::milliseconds(wait_ms)));
  double streams_s = std::chrono::duration<double>(Clock::now() - t1).count();
  std::this_thread::sleep_for(500ms);

  long rss = proc_status_kb(bridge.pid, "VmRSS:"), threads = proc_status_kb(bridge.pid, "Threads:");
  // A new client meanwhile: is it served promptly?
  auto t2 = Clock::now();
  BridgeClient fresh(bridge.port);
  bool fresh_ok = fresh.initialize() &&
                  fresh.call(call_body(1, "echo", R"({"text":"x"})"), Deadline::after(10s)).find("\"x\"") !=
                      std::string::npos;
  double fresh_ms = std::chrono::duration<double, std::milli>(Clock::now() - t2).count();

  std::printf("idle connections answered: %zu of %d (%.1f s)\n", idle_ok, idle, idle_s);
  std::printf("response streams open:     %zu of %d (%.1f s)\n", streams_ok, streams, streams_s);
  std::printf("bridge with both open: rss=%.1fMB (%.1f KB per connection) threads=%ld\n", rss / 1024.0,
              idle + streams > 0 ? static_cast<double>(rss - base_rss) / (idle + streams) : 0.0, threads);
  std::printf("a new client meanwhile: %s in %.1f ms\n", fresh_ok ? "served" : "NOT served", fresh_ms);
  bool ok = idle_ok == static_cast<size_t>(idle) && streams_ok == static_cast<size_t>(streams) && fresh_ok;
  // Threads and RSS prove their targets only while every connection is held.
  bool threads_ok = ok && threads <= 16, rss_ok = ok && rss <= 200 * 1024;
  std::string held = " (" + std::to_string(idle_ok + streams_ok) + " of " + std::to_string(idle + streams) +
                     " connections held)";
  std::printf("targets (#12):\n");
  std::printf("  every connection served (idle + streams + a new client): %zu+%zu of %d+%d, new client %s  %s\n",
              idle_ok, streams_ok, idle, streams, fresh_ok ? "served" : "NOT served", ok ? "PASS" : "FAIL");
  std::printf("  threads <= 16    : %ld%s  %s\n", threads, ok ? "" : held.c_str(), threads_ok ? "PASS" : "FAIL");
  std::printf("  RSS <= 200 MiB   : %.1f MiB%s  %s\n", rss / 1024.0, ok ? "" : held.c_str(), rss_ok ? "PASS" : "FAIL");
  std::printf("TARGET|scale-served|%d idle keep-alive + %d open streams + a new client: all served|all|"
              "%zu+%zu of %d+%d, new client %s|%s\n",
              idle, streams, idle_ok, streams_ok, idle, streams, fresh_ok ? "served" : "NOT served",
              ok ? "MET" : "MISSED");
  std::printf("TARGET|scale-threads|bridge threads with them open|<= 16|%ld%s|%s\n", threads,
              ok ? "" : held.c_str(), threads_ok ? "MET" : "MISSED");
  std::printf("TARGET|scale-rss|bridge RSS with them open|<= 200 MiB|%.1f MiB%s|%s\n", rss / 1024.0,
              ok ? "" : held.c_str(), rss_ok ? "MET" : "MISSED");
  std::fflush(stdout);
  for (auto& c : idle_conns)
    if (c.fd >= 0) ::close(c.fd);
  for (auto& c : stream_conns)
    if (c.fd >= 0) ::close(c.fd);
  bridge.stop();
  up.stop();
  ts.stop();
  return ok && threads_ok && rss_ok ? 0 : 1;
}
