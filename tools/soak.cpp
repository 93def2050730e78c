// mcp-bridge-soak: minutes of load on the real bridge binary while the
// upstream (the example legacy server, in this process) misbehaves at random:
// dropped streams, black holes, silence (half-open), 5xx on GET or POST,
// missing `endpoint`, restarts; and the network between them does too: the
// bridge reaches the upstream through a relay in this process that can stop
// forwarding in both directions without closing anything (a black hole
// above TCP: the kernel still acknowledges, so the bridge's own bounds must
// notice) or stall each chunk for 50-600 ms at random (the delays a lossy
// path causes). Kernel-level drops and loss are in the network suite
// (tests/network), which needs namespaces.
//
// Prints the bridge process's RSS, open fds and threads over time, calls and
// errors by kind. Fails (exit 1) when any call hangs (no answer within the
// bridge's request timeout plus a margin), when RSS grows through the run, or
// when fds/threads do not return to their baseline once the load stops.
#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "legacy_server.h"
#include "mcp_sse_bridge/config.h"
#include "tool_common.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

namespace {

using namespace msb_tools;

int count_fds(pid_t pid) {
  int n = 0;
  if (DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

struct Sample {
  long rss_kb;
  int fds;
  long threads;
};

Sample sample(pid_t pid) {
  return {proc_status_kb(pid, "VmRSS:"), count_fds(pid), proc_status_kb(pid, "Threads:")};
}

// "ok", the bridge error kind, or what went wrong at the HTTP level.
std::string outcome_of(const std::string& resp) {
  if (resp.empty()) return "http_error";
  auto k = resp.find("\"kind\":\"");
  if (resp.find("\"error\"") != std::string::npos && k != std::string::npos) {
    auto e = resp.find('"', k + 8);
    return resp.substr(k + 8, e - k - 8);
  }
  if (resp.find("\"error\"") != std::string::npos) return "jsonrpc_error";
  return "ok";
}

// A TCP relay on 127.0.0.1 in front of the upstream, one thread per relayed
// connection. Modes: pass, blackhole (nothing forwarded, nothing closed),
// lossy (each chunk held 50-600 ms). Every loop is bounded by `stop`.
class FaultRelay {
 public:
  enum Mode { kPass = 0, kBlackhole = 1, kLossy = 2 };
  FaultRelay(int upstream_port, std::atomic<bool>& stop) : up_port_(upstream_port), stop_(stop) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd_, 256) != 0) return;
    socklen_t len = sizeof a;
    ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~FaultRelay() {
    if (acceptor_.joinable()) acceptor_.join();
    // Pumps are detached (thousands come and go); each sees `stop` within
    // 100 ms.
    for (int i = 0; i < 100 && active_.load() > 0; ++i) std::this_thread::sleep_for(20ms);
    ::close(lfd_);
  }
  int port() const { return port_; }
  void set(Mode m) { mode_ = m; }
  uint64_t relayed() const { return relayed_; }

 private:
  void accept_loop() {
    while (!stop_.load()) {
      pollfd p{lfd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      int c = ::accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      int u = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(up_port_));
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::connect(u, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(u);
        ::close(c);
        continue;
      }
      ++relayed_;
      ++active_;
      std::thread([this, c, u] {
        pump(c, u);
        --active_;
      }).detach();
    }
  }
  void pump(int c, int u) {
    std::mt19937 rng(static_cast<unsigned>(c * 7919 + u));
    char buf[16384];
    while (!stop_.load()) {
      if (mode_.load() == kBlackhole) {  // hold everything; close nothing
        std::this_thread::sleep_for(50ms);
        continue;
      }
      pollfd p[2] = {{c, POLLIN, 0}, {u, POLLIN, 0}};
      if (::poll(p, 2, 100) <= 0) continue;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if (!p[i].revents) continue;
        ssize_t n = ::recv(p[i].fd, buf, sizeof buf, 0);
        if (n <= 0) {
          done = true;
          break;
        }
        if (mode_.load() == kLossy) std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 550));
        int to = i == 0 ? u : c;
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::send(to, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
          if (w <= 0) {
            done = true;
            break;
          }
          off += w;
        }
      }
      if (done) break;
    }
    ::close(c);
    ::close(u);
  }

  int up_port_;
  std::atomic<bool>& stop_;
  int lfd_ = -1;
  int port_ = 0;
  std::atomic<int> mode_{kPass};
  std::atomic<uint64_t> relayed_{0};
  std::atomic<int> active_{0};
  std::thread acceptor_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mcp-bridge-soak: load + random upstream faults on the real bridge; fails on hangs, "
               "RSS growth, or fds/threads not returning to baseline"};
  std::string bridge_bin = "./mcp-sse-bridge", duration_s = "10m", settle_s = "60s", every_s = "10s";
  int clients = 8, thread_slack = 6, fd_slack = 2;
  unsigned seed = 0;
  app.add_option("--bridge", bridge_bin, "Path of the mcp-sse-bridge binary")->capture_default_str();
  app.add_option("--duration", duration_s, "Load duration (e.g. 10m, 30s)")->capture_default_str();
  app.add_option("--clients", clients, "Concurrent client sessions")->capture_default_str();
  app.add_option("--report-every", every_s, "Sampling period")->capture_default_str();
  app.add_option("--settle", settle_s,
                 "After the load: how long fds/threads get to return to baseline (idle worker "
                 "threads exit after 30s)")
      ->capture_default_str();
  app.add_option("--thread-slack", thread_slack,
                 "Threads allowed above the idle baseline at the end (idle workers kept by design: "
                 "4, pool fillers: 2)")
      ->capture_default_str();
  app.add_option("--fd-slack", fd_slack, "Open fds allowed above the baseline at the end")
      ->capture_default_str();
  app.add_option("--seed", seed, "Fault schedule seed (0 = random)");
  CLI11_PARSE(app, argc, argv);
  auto duration = msb::parse_duration(duration_s), settle = msb::parse_duration(settle_s),
       every = msb::parse_duration(every_s);
  if (!duration || !settle || !every || every->count() == 0) {
    std::fprintf(stderr, "soak: bad duration\n");
    return 2;
  }
  if (seed == 0) seed = std::random_device{}();
  std::printf("soak: %d clients, %s of load, seed %u\n", clients, duration_s.c_str(), seed);

  auto up = std::make_unique<example::LegacyServer>();
  int up_port = up->start("127.0.0.1", 0);
  if (up_port <= 0) return 2;
  std::mutex up_mu;  // guards `up` across restarts

  const auto request_timeout = 3s;
  std::atomic<bool> relay_stop{false};
  auto relay = std::make_unique<FaultRelay>(up_port, relay_stop);
  if (relay->port() <= 0) return 2;
  Child bridge;
  if (!start_bridge(bridge, bridge_bin, relay->port(),
                    {"--request-timeout", "3s", "--connect-timeout", "1s", "--endpoint-timeout",
                     "1s", "--initialize-timeout", "1s", "--ping-interval", "1s", "--ping-timeout",
                     "700ms", "--pool-max-idle-age", "5s",
                     "--max-inflight", "48", "--post-timeout", "1s", "--idle-probe-after", "500ms",
                     "--idle-probe-timeout", "500ms"})) {
    std::fprintf(stderr, "soak: bridge did not start (%s)\n", bridge_bin.c_str());
    return 2;
  }
  std::this_thread::sleep_for(300ms);
  Sample base = sample(bridge.pid);
  std::printf("baseline: rss=%.1fMB fds=%d threads=%ld\n", base.rss_kb / 1024.0, base.fds, base.threads);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> calls{0}, hangs{0};
  std::mutex kinds_mu;
  std::map<std::string, uint64_t> kinds;
  const auto hang_bound = request_timeout + 3s;

  std::vector<std::thread> load;
  for (int c = 0; c < clients; ++c)
    load.emplace_back([&, c] {
      std::mt19937 rng(seed + static_cast<unsigned>(c));
      std::unique_ptr<BridgeClient> cli;
      for (int id = 1; !stop.load(); ++id) {
        if (!cli) {
          cli = std::make_unique<BridgeClient>(bridge.port);
          if (!cli->initialize()) {  // the upstream may be down right now
            cli.reset();
            std::lock_guard lk(kinds_mu);
            ++kinds["initialize_failed"];
            std::this_thread::sleep_for(100ms);
            continue;
          }
        }
        bool slow = rng() % 5 == 0;
        std::string body = slow ? call_body(id, "sleep", R"({"ms":200})")
                                : call_body(id, "echo", R"({"text":"soak"})");
        auto t0 = Clock::now();
        std::string resp = cli->call(body, Deadline::after(hang_bound));
        auto took = Clock::now() - t0;
        calls.fetch_add(1);
        std::string kind = outcome_of(resp);
        if (resp.empty() && took >= hang_bound - 100ms) {
          hangs.fetch_add(1);
          kind = "HANG";
        }
        if (resp.empty()) cli.reset();  // new connection (and session) after a transport failure
        std::lock_guard lk(kinds_mu);
        ++kinds[kind];
      }
    });

  // Faults: every ~2 s one of them for 1-3 s, half of the time none.
  static constexpr const char* kFaultNames[] = {
      "drop_on_call", "black_hole", "half_open", "sse_503", "post_500", "drop_mid_event",
      "no_endpoint", "drop_after_endpoint", "kill_streams", "restart", "net_blackhole",
      "net_blackhole", "net_lossy"};
  std::map<std::string, int> fault_counts;
  std::thread faults([&] {
    std::mt19937 rng(seed);
    while (!stop.load()) {
      int pick = static_cast<int>(rng() % 22);
      if (pick < 13) ++fault_counts[kFaultNames[pick]];
      {
        std::lock_guard lk(up_mu);
        auto& f = up->faults();
        switch (pick) {
          case 0: f.drop_on_call = true; break;
          case 1: f.black_hole = true; break;
          case 2: f.half_open = true; break;
          case 3: f.sse_status = 503; break;
          case 4: f.post_status = 500; break;
          case 5: f.drop_mid_event = true; break;
          case 6: f.no_endpoint = true; break;
          case 7: f.drop_after_endpoint = true; break;
          case 8: up->kill_streams(); break;
          case 9: {  // restart on the same port
            up.reset();
            std::this_thread::sleep_for(200ms);
            for (int i = 0; i < 50; ++i) {
              up = std::make_unique<example::LegacyServer>();
              if (up->start("127.0.0.1", up_port) == up_port) break;
              std::this_thread::sleep_for(20ms);
            }
            break;
          }
          case 10:
          case 11: relay->set(FaultRelay::kBlackhole); break;
          case 12: relay->set(FaultRelay::kLossy); break;
          default: break;  // healthy
        }
      }
      for (int i = 0; i < 10 + static_cast<int>(rng() % 20) && !stop.load(); ++i)
        std::this_thread::sleep_for(100ms);
      std::lock_guard lk(up_mu);
      auto& f = up->faults();
      f.drop_on_call = f.black_hole = f.half_open = f.drop_mid_event = f.no_endpoint =
          f.drop_after_endpoint = false;
      f.sse_status = 0;
      f.post_status = 0;
      relay->set(FaultRelay::kPass);
    }
  });

  auto t_start = Clock::now();
  long rss_quarter = -1, rss_peak = 0;
  auto report = [&](const char* tag) {
    Sample s = sample(bridge.pid);
    rss_peak = std::max(rss_peak, s.rss_kb);
    std::string ks;
    {
      std::lock_guard lk(kinds_mu);
      for (auto& [k, v] : kinds) ks += " " + k + "=" + std::to_string(v);
    }
    auto t = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - t_start).count();
    std::printf("%s t=%llds rss=%.1fMB fds=%d threads=%ld calls=%llu hangs=%llu |%s\n", tag,
                static_cast<long long>(t), s.rss_kb / 1024.0, s.fds, s.threads,
                static_cast<unsigned long long>(calls.load()),
                static_cast<unsigned long long>(hangs.load()), ks.c_str());
    std::fflush(stdout);
    return s;
  };
  auto end = t_start + *duration;
  while (Clock::now() < end) {
    auto next = std::min(end, Clock::now() + *every);
    while (Clock::now() < next) std::this_thread::sleep_for(50ms);
    Sample s = report("load");
    if (rss_quarter < 0 && Clock::now() - t_start >= *duration / 4) rss_quarter = s.rss_kb;
  }
  Sample at_end = sample(bridge.pid);
  if (rss_quarter < 0) rss_quarter = at_end.rss_kb;
  stop = true;
  for (auto& t : load) t.join();  // each call is bounded by hang_bound
  faults.join();
  std::string fc;
  for (auto& [k, v] : fault_counts) fc += " " + k + "=" + std::to_string(v);
  std::printf("faults:%s; relay: %llu upstream connections relayed\n", fc.c_str(),
              static_cast<unsigned long long>(relay->relayed()));

  // Settle: the counts must come back.
  auto settle_end = Clock::now() + *settle;
  Sample s = sample(bridge.pid);
  while (Clock::now() < settle_end &&
         (s.fds > base.fds + fd_slack || s.threads > base.threads + thread_slack)) {
    std::this_thread::sleep_for(1s);
    s = sample(bridge.pid);
  }
  report("settled");

  bool ok = true;
  auto verdict = [&](bool pass, const std::string& what) {
    std::printf("%s %s\n", pass ? "PASS" : "FAIL", what.c_str());
    ok = ok && pass;
  };
  verdict(hangs.load() == 0, "no call hung (" + std::to_string(hangs.load()) + " of " +
                                 std::to_string(calls.load()) + " calls)");
  verdict(calls.load() > 0, "calls were made");
  {
    std::lock_guard lk(kinds_mu);
    verdict(kinds["ok"] > 0, "calls succeeded between faults (" + std::to_string(kinds["ok"]) + ")");
  }
  char buf[256];
  std::snprintf(buf, sizeof buf, "RSS flat: %.1fMB at 1/4 of the run, %.1fMB at the end (limit +20%% +4MB)",
                rss_quarter / 1024.0, at_end.rss_kb / 1024.0);
  verdict(at_end.rss_kb <= rss_quarter * 12 / 10 + 4096, buf);
  verdict(s.fds <= base.fds + fd_slack, "fds back to baseline: " + std::to_string(s.fds) + " (baseline " +
                                           std::to_string(base.fds) + " + slack " +
                                           std::to_string(fd_slack) + ")");
  verdict(s.threads <= base.threads + thread_slack,
          "threads back to baseline: " + std::to_string(s.threads) + " (baseline " +
              std::to_string(base.threads) + " + slack " + std::to_string(thread_slack) + ")");
  bridge.stop();
  relay_stop = true;
  relay.reset();
  {
    std::lock_guard lk(up_mu);
    up.reset();
  }
  std::printf("%s\n", ok ? "soak: PASS" : "soak: FAIL");
  return ok ? 0 : 1;
}
