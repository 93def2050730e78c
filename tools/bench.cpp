// mcp-bridge-bench: measures the bridge against a baseline taken in the same
// run on the same upstream (--cpp-upstream: the reference legacy SSE server of
// ref_server.h, or the example legacy server; in this process):
//
//   direct  a legacy SSE client speaking to the upstream itself: one long-lived
//           session per client thread (the floor: no bridge at all)
//   dcold   (c1 only) the legacy client with a fresh upstream session per call
//           (endpoint, initialize, notifications/initialized, the call): what
//           a cold session costs any client of this upstream
//   cold    Streamable HTTP through the bridge, --pool-size 0 (a fresh upstream
//           session per call)
//   warm    Streamable HTTP through the bridge with the warm pool
//
// at each concurrency: calls/s, p50/p99 latency, and bridged/direct ratios.
// Then: the cold-session cost, time from upstream stream death to the
// client's error, RSS idle / per idle client session, and a large tool result
// streamed through (time, peak RSS). The bridge runs as a child process (its
// RSS is read from /proc); everything binds 127.0.0.1 and stops by itself.
//
// With --ts-server FILE (tests/interop/legacy-ts-server.mjs, run by `node`
// with the interop node_modules next to it), the same direct/warm comparison
// runs against the TypeScript SDK's legacy SSE server as the upstream, at
// --ts-concurrency (#12: bridged/direct calls/s >= 0.85 at c10 and c50), in
// --ts-rounds rounds (direct then warm each round; the median ratio counts).
//
// Lines starting with "TARGET|" are for tools/bench-core.sh's summary:
// TARGET|key|what|target|measured|MET or MISSED.
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "direct_client.h"
#include "legacy_server.h"
#include "node_child.h"
#include "ref_server.h"
#include "tool_common.h"
#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/sse_parser.h"
#include "mcp_sse_bridge/url.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using namespace msb_tools;
using msb::Clock;
using msb::Deadline;

struct Cell {
  double calls_per_s = 0, p50_us = 0, p99_us = 0;
  uint64_t errors = 0;
};

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void target_line(const char* key, const char* what, const char* target, const std::string& measured, bool met) {
  std::printf("TARGET|%s|%s|%s|%s|%s\n", key, what, target, measured.c_str(), met ? "MET" : "MISSED");
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// Runs `threads` clients for `warmup` + `duration`, each looping make_call();
// only calls that start after the warm-up count (session setup, which
// clients do on their first call, and the warm pool's filling stay out of
// the measurement when warmup covers them).
template <class MakeClient>
Cell run_load(int threads, std::chrono::milliseconds duration, MakeClient make_client,
              std::chrono::milliseconds warmup = std::chrono::milliseconds(0)) {
  std::vector<std::vector<double>> lat(static_cast<size_t>(threads));
  std::atomic<uint64_t> errors{0};
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  Clock::time_point start, end, measure_from;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      auto call = make_client(t);  // returns a callable(int seq) -> bool, set up before the clock
      ready++;
      while (!go.load()) std::this_thread::sleep_for(1ms);
      int seq = 1;
      auto stop_at = measure_from + duration;
      while (Clock::now() < stop_at) {
        auto t0 = Clock::now();
        bool ok = call(seq++);
        if (t0 < measure_from) continue;  // warm-up
        auto us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
        if (ok) lat[static_cast<size_t>(t)].push_back(us);
        else errors++;
      }
    });
  }
  for (int i = 0; i < 3000 && ready.load() < threads; ++i) std::this_thread::sleep_for(10ms);
  measure_from = Clock::now() + warmup;
  go = true;
  start = measure_from;
  for (auto& t : ts) t.join();
  end = Clock::now();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  Cell c;
  double secs = std::chrono::duration<double>(end - start).count();
  c.calls_per_s = static_cast<double>(all.size()) / secs;
  c.p50_us = percentile(all, 0.50);
  c.p99_us = percentile(all, 0.99);
  c.errors = errors.load();
  return c;
}

// Makes the call loop of one direct client (a DirectClient on `cfg` calling
// echo with `args`). A client whose call failed starts over with a new session
// (and a pause), so one failure is counted once, not once per spin of a dead
// client. cfg and args must outlive the loops.
auto direct_clients(const msb::UpstreamConfig& cfg, const std::string& args) {
  return [&cfg, &args](int) {
    auto c = std::make_shared<std::unique_ptr<DirectClient>>();
    return [c, &cfg, &args](int seq) {
      if (!*c) {
        *c = std::make_unique<DirectClient>(cfg);
        if (!(*c)->initialize()) {
          c->reset();
          std::this_thread::sleep_for(10ms);
          return false;
        }
      }
      bool ok = (*c)->call(call_body(seq, "echo", args), std::to_string(seq), Deadline::after(10s));
      if (!ok) c->reset();
      return ok;
    };
  };
}

// A fresh upstream session per call, straight to the upstream (endpoint,
// initialize, notifications/initialized, the call, close): what a cold
// session costs any legacy client of this upstream, the reference for the
// bridge's cold cell.
auto direct_cold_clients(const msb::UpstreamConfig& cfg, const std::string& args) {
  return [&cfg, &args](int) {
    return [&cfg, &args](int seq) {
      DirectClient c(cfg);
      return c.initialize() && c.call(call_body(seq, "echo", args), std::to_string(seq), Deadline::after(10s));
    };
  };
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mcp-bridge-bench: the bridge against a direct legacy SSE baseline, in one run"};
  std::string bridge_bin = "./build/mcp-sse-bridge";
  std::string conc = "1,16,64";
  std::string cpp_upstream = "ref";
  int seconds_ms = 3000;
  int sessions = 1000;
  std::string big = "64MiB";
  int death_trials = 50;
  bool extras = true;
  std::string ts_server, node_bin = "node", ts_conc = "10,50";
  int ts_rounds = 3, ts_cell_ms = 1500, warmup_ms = 0, ts_warmup_ms = 500;
  app.add_option("--bridge", bridge_bin, "Path of the mcp-sse-bridge binary")->capture_default_str();
  app.add_option("--cpp-upstream", cpp_upstream,
                 "Upstream of the direct/cold/warm cells: ref (the reference legacy SSE server, one epoll "
                 "thread, the 202 and the answer's event in one turn, as the TS and Python SDKs write them) "
                 "or example (the example server: a thread per connection and per request)")
      ->capture_default_str()
      ->check(CLI::IsMember({"ref", "example"}));
  app.add_option("--concurrency", conc, "Client threads per cell, comma-separated")->capture_default_str();
  app.add_option("--cell-ms", seconds_ms, "Duration of each load cell in ms")->capture_default_str();
  app.add_option("--sessions", sessions, "Idle client sessions for the RSS-per-session figure")->capture_default_str();
  app.add_option("--big", big, "Size of the large tool result")->capture_default_str();
  app.add_option("--death-trials", death_trials, "Stream-death trials for time-to-error")->capture_default_str();
  app.add_flag("--extras,!--no-extras", extras,
               "Also measure stream death, RSS and the large result (default on)");
  app.add_option("--ts-server", ts_server,
                 "legacy-ts-server.mjs of tests/interop (its node_modules installed): also compare direct "
                 "and warm with the TS SDK legacy server upstream");
  app.add_option("--node", node_bin, "Node.js binary for --ts-server")->capture_default_str();
  app.add_option("--ts-concurrency", ts_conc, "Client threads per TS-upstream cell, comma-separated")
      ->capture_default_str();
  app.add_option("--ts-rounds", ts_rounds, "Rounds of direct+warm per TS concurrency (median ratio)")
      ->capture_default_str();
  app.add_option("--ts-cell-ms", ts_cell_ms, "Duration of each TS-upstream cell in ms")->capture_default_str();
  app.add_option("--warmup-ms", warmup_ms,
                 "Warm-up of each cell before its measured --cell-ms (clients set up their sessions on "
                 "their first call)")->capture_default_str();
  app.add_option("--ts-warmup-ms", ts_warmup_ms, "Warm-up of each TS-upstream cell")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  msb::log::set_level(msb::log::Level::kError);
  auto big_bytes = msb::parse_size(big);
  if (!big_bytes) {
    std::fprintf(stderr, "mcp-bridge-bench: error: --big: invalid size\n");
    return 2;
  }
  auto parse_levels = [](const std::string& list) {
    std::vector<int> out;
    std::stringstream ss(list);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
    return out;
  };
  std::vector<int> levels = parse_levels(conc);
  auto cell = std::chrono::milliseconds(seconds_ms);
  auto warmup = std::chrono::milliseconds(warmup_ms);

  example::Options opt;
  opt.threads = 512;
  example::LegacyServer upstream(opt);
  int up_port = upstream.start("127.0.0.1", 0);
  if (up_port < 0) {
    std::fprintf(stderr, "mcp-bridge-bench: error: cannot start the example upstream\n");
    return 1;
  }
  // The load cells' upstream: RefServer (one epoll thread, as the TS and
  // Python SDKs serve) or the example server (a thread per connection and
  // per request); the extras need the example server's fault switches.
  msb_tools::RefServer ref_upstream(msb_tools::RefServer::Mode::kLegacySse);
  int load_port = cpp_upstream == "ref" ? ref_upstream.start() : up_port;
  if (load_port < 0) {
    std::fprintf(stderr, "mcp-bridge-bench: error: cannot start the reference upstream\n");
    return 1;
  }
  msb::UpstreamConfig direct_cfg;
  direct_cfg.sse_url = *msb::parse_url("http://127.0.0.1:" + std::to_string(load_port) + "/sse");

  Child cold, warm;
  if (!start_bridge(cold, bridge_bin, load_port, {"--pool-size", "0", "--max-inflight", "200"}) ||
      !start_bridge(warm, bridge_bin, load_port, {"--pool-size", "128", "--pool-fillers", "4", "--max-inflight", "200"})) {
    std::fprintf(stderr, "mcp-bridge-bench: error: cannot start %s\n", bridge_bin.c_str());
    return 1;
  }
  unsigned cores = std::thread::hardware_concurrency();
  std::printf("mcp-bridge-bench: %u cores; C++ upstream: %s (in process); tool: echo; %d ms per cell\n\n", cores,
              cpp_upstream == "ref" ? "reference legacy SSE server (one epoll thread)"
                                    : "example legacy server (thread per connection and per request)",
              seconds_ms);
  std::fflush(stdout);

  const std::string echo_args = R"({"text":"hello"})";
  auto direct_client = direct_clients(direct_cfg, echo_args);
  auto bridge_client = [&](int port) {
    return [port, &echo_args](int) {
      auto c = std::make_shared<std::unique_ptr<BridgeClient>>();
      return [c, port, &echo_args](int seq) {
        if (!*c) {
          *c = std::make_unique<BridgeClient>(port);
          if (!(*c)->initialize()) {
            c->reset();
            std::this_thread::sleep_for(10ms);
            return false;
          }
        }
        bool ok = !(*c)->call(call_body(seq, "echo", echo_args), Deadline::after(10s)).empty();
        if (!ok) c->reset();
        return ok;
      };
    };
  };

  std::printf("%-6s %-7s %12s %10s %10s %8s\n", "conc", "path", "calls/s", "p50 us", "p99 us", "errors");
  struct Row { int c; Cell d, dcold, cold, warm; double bridge_cpu_warm = 0, self_cpu_direct = 0, self_cpu_warm = 0; };
  std::vector<Row> rows;
  for (int c : levels) {
    Row r{c, {}, {}, {}, {}};
    double s0 = cpu_us(0);
    r.d = run_load(c, cell, direct_client, warmup);
    double s1 = cpu_us(0);
    r.cold = run_load(c, cell, bridge_client(cold.port), warmup);
    if (c == 1) r.dcold = run_load(c, cell, direct_cold_clients(direct_cfg, echo_args), warmup);
    double b0 = cpu_us(warm.pid), s2 = cpu_us(0);
    r.warm = run_load(c, cell, bridge_client(warm.port), warmup);
    double b1 = cpu_us(warm.pid), s3 = cpu_us(0);
    double secs = std::chrono::duration<double>(cell + warmup).count();  // CPU spans the warm-up too
    if (r.d.calls_per_s > 0) r.self_cpu_direct = (s1 - s0) / (r.d.calls_per_s * secs);
    if (r.warm.calls_per_s > 0) {
      r.bridge_cpu_warm = (b1 - b0) / (r.warm.calls_per_s * secs);
      r.self_cpu_warm = (s3 - s2) / (r.warm.calls_per_s * secs);
    }
    for (auto [name, x] : {std::pair{"direct", &r.d}, std::pair{"dcold", &r.dcold}, std::pair{"cold", &r.cold},
                           std::pair{"warm", &r.warm}})
      if (x != &r.dcold || c == 1)  // dcold runs at c1 only
        std::printf("%-6d %-7s %12.0f %10.0f %10.0f %8llu\n", c, name, x->calls_per_s, x->p50_us, x->p99_us,
                  static_cast<unsigned long long>(x->errors));
    std::fflush(stdout);
    rows.push_back(r);
  }

  std::printf("\nratios (bridged / direct, same run)\n");
  std::printf("%-6s %14s %14s %16s %16s\n", "conc", "warm calls/s", "cold calls/s", "warm +p50 us", "cold +p50 us");
  for (auto& r : rows)
    std::printf("%-6d %14.2f %14.2f %16.0f %16.0f\n", r.c, r.warm.calls_per_s / r.d.calls_per_s,
                r.cold.calls_per_s / r.d.calls_per_s, r.warm.p50_us - r.d.p50_us, r.cold.p50_us - r.d.p50_us);
  std::printf("\nCPU per call (us; 2 cores shared by client, upstream and bridge)\n");
  std::printf("%-6s %22s %22s %18s\n", "conc", "direct: client+upstream", "warm: client+upstream", "warm: bridge");
  for (auto& r : rows)
    std::printf("%-6d %22.0f %22.0f %18.0f\n", r.c, r.self_cpu_direct, r.self_cpu_warm, r.bridge_cpu_warm);
  const Row* c1 = nullptr;
  const Row* c16 = nullptr;
  for (auto& r : rows) {
    if (r.c == 1) c1 = &r;
    if (r.c == 16) c16 = &r;
  }
  std::printf("\ntargets\n");
  if (c16) {
    double ratio = c16->warm.calls_per_s / c16->d.calls_per_s;
    std::printf("  warm/direct calls/s at c16 >= 0.90        : %.2f  %s\n", ratio, ratio >= 0.9 ? "MET" : "MISSED");
  }
  if (c1) {
    double add = c1->warm.p50_us - c1->d.p50_us;
    std::printf("  warm added p50 at c1 <= 100 us            : %.0f us  %s\n", add, add <= 100 ? "MET" : "MISSED");
    double cold_cost = c1->cold.p50_us - c1->warm.p50_us;
    std::printf("  cold session added cost <= 1 ms           : %.0f us  %s\n", cold_cost, cold_cost <= 1000 ? "MET" : "MISSED");
  }
  // The event-driven core's targets (#12), for tools/bench-core.sh.
  if (c16) {
    double ratio = c16->warm.calls_per_s / c16->d.calls_per_s;
    std::printf("  warm/direct calls/s at c16 >= 0.80 (#12)  : %.2f  %s\n", ratio, ratio >= 0.8 ? "MET" : "MISSED");
    target_line(("cpp-c16-" + cpp_upstream).c_str(),
                ("bridged/direct calls/s, C++ upstream (" + cpp_upstream + "), c16").c_str(), ">= 0.80",
                fmt("%.2f", ratio), ratio >= 0.8);
  }
  if (c1) {
    double cold_cost = c1->cold.p50_us - c1->warm.p50_us;
    std::printf("  cold session added cost <= 300 us (#12)   : %.0f us (cold p50 - warm p50, c1)  %s\n", cold_cost,
                cold_cost <= 300 ? "MET" : "MISSED");
    target_line(("cold-" + cpp_upstream).c_str(),
                ("cold session added cost (cold p50 - warm p50, c1; " + cpp_upstream + " upstream)").c_str(),
                "<= 300 us", fmt("%.0f us", cold_cost), cold_cost <= 300);
    // How much of that cost the upstream charges any client (a fresh session
    // straight to it: "dcold"), and what is left for the bridge. Information,
    // not a TARGET line: separate c1 cells move with the machine, so this
    // difference of differences is noisy.
    if (c1->dcold.calls_per_s > 0) {
      double upstream_cost = c1->dcold.p50_us - c1->d.p50_us;
      std::printf("  of it, the upstream's own session setup   : %.0f us (direct cold p50 - direct p50, c1); "
                  "the bridge's share: %.0f us\n",
                  upstream_cost, cold_cost - upstream_cost);
    }
  }
  std::fflush(stdout);

  // The TS SDK's legacy SSE server as the upstream (#12: >= 0.85 at c10, c50).
  if (!ts_server.empty()) {
    NodeChild ts;
    Child ts_bridge;
    if (!ts.start(node_bin, ts_server)) {
      std::fprintf(stderr, "mcp-bridge-bench: error: cannot start %s %s\n", node_bin.c_str(), ts_server.c_str());
      for (int c : parse_levels(ts_conc)) {
        std::string key = "ts-c" + std::to_string(c), what = "bridged/direct calls/s, TS SDK upstream, c" + std::to_string(c);
        target_line(key.c_str(), what.c_str(), ">= 0.85", "not run (TS server did not start)", false);
      }
    } else {
      // A fresh bridge per warm cell: pooled sessions of the previous cell's
      // (departed) clients would otherwise fill --pool-size for up to
      // --pool-max-idle-age and push the new clients' calls to cold.
      const std::vector<std::string> ts_bridge_flags = {"--pool-size", "128", "--pool-fillers", "4",
                                                        "--max-inflight", "200"};
      msb::UpstreamConfig ts_cfg;
      ts_cfg.sse_url = *msb::parse_url("http://127.0.0.1:" + std::to_string(ts.port) + "/sse");
      auto ts_direct = direct_clients(ts_cfg, echo_args);
      auto ts_cell = std::chrono::milliseconds(ts_cell_ms);
      std::printf("\nTS SDK legacy SSE server upstream (node %s), %d ms warm-up + %d ms per cell, %d rounds\n",
                  ts_server.c_str(), ts_warmup_ms, ts_cell_ms, ts_rounds);
      std::printf("%-6s %-6s %-7s %12s %10s %10s %8s\n", "round", "conc", "path", "calls/s", "p50 us", "p99 us", "errors");
      for (int c : parse_levels(ts_conc)) {
        std::vector<double> ratios;
        for (int round = 1; round <= ts_rounds; ++round) {
          Cell d = run_load(c, ts_cell, ts_direct, std::chrono::milliseconds(ts_warmup_ms));
          ts_bridge.stop();
          if (!start_bridge(ts_bridge, bridge_bin, ts.port, ts_bridge_flags)) {
            std::fprintf(stderr, "mcp-bridge-bench: error: cannot start %s for the TS upstream\n", bridge_bin.c_str());
            continue;
          }
          Cell w = run_load(c, ts_cell, bridge_client(ts_bridge.port), std::chrono::milliseconds(ts_warmup_ms));
          for (auto [name, x] : {std::pair{"direct", &d}, std::pair{"warm", &w}})
            std::printf("%-6d %-6d %-7s %12.0f %10.0f %10.0f %8llu\n", round, c, name, x->calls_per_s, x->p50_us,
                        x->p99_us, static_cast<unsigned long long>(x->errors));
          if (d.calls_per_s > 0) ratios.push_back(w.calls_per_s / d.calls_per_s);
          std::fflush(stdout);
        }
        double m = median_of(ratios);
        std::string each;
        for (double r : ratios) each += (each.empty() ? "" : ", ") + fmt("%.2f", r);
        std::printf("  warm/direct calls/s, TS upstream, c%d >= 0.85 (#12): %.2f (median of [%s])  %s\n", c, m,
                    each.c_str(), m >= 0.85 ? "MET" : "MISSED");
        std::string key = "ts-c" + std::to_string(c), what = "bridged/direct calls/s, TS SDK upstream, c" + std::to_string(c);
        target_line(key.c_str(), what.c_str(), ">= 0.85", ratios.empty() ? "n/a" : fmt("%.2f", m),
                    !ratios.empty() && m >= 0.85);
        std::fflush(stdout);
      }
    }
    ts_bridge.stop();
    ts.stop();
  }
  if (!extras) {
    cold.stop();
    warm.stop();
    upstream.stop();
    return 0;
  }

  // The extras run on the example server (its fault switches).
  if (load_port != up_port) {
    cold.stop();
    if (!start_bridge(cold, bridge_bin, up_port, {"--pool-size", "0", "--max-inflight", "200"})) {
      std::fprintf(stderr, "mcp-bridge-bench: error: cannot start %s\n", bridge_bin.c_str());
      return 1;
    }
  }
  // Time from upstream stream death to the client's error.
  {
    std::vector<double> ms;
    BridgeClient bc(cold.port);
    if (bc.initialize()) {
      for (int i = 0; i < death_trials; ++i) {
        std::atomic<bool> done{false};
        Clock::time_point got;
        std::thread t([&] {
          bc.call(call_body(i, "sleep", R"({"ms":5000})"), Deadline::after(10s));
          got = Clock::now();
          done = true;
        });
        // Wait until the call's upstream stream is open, then kill it.
        for (int k = 0; k < 500 && upstream.open_streams() < 1; ++k) std::this_thread::sleep_for(1ms);
        std::this_thread::sleep_for(20ms);
        auto killed = Clock::now();
        upstream.kill_streams();
        t.join();
        ms.push_back(std::chrono::duration<double, std::milli>(got - killed).count());
        for (int k = 0; k < 500 && upstream.open_streams() > 0; ++k) std::this_thread::sleep_for(1ms);
      }
    }
    std::printf("  stream death -> client error p99 <= 20 ms : p50 %.1f ms, p99 %.1f ms over %zu trials  %s\n",
                percentile(ms, 0.5), percentile(ms, 0.99), ms.size(), percentile(ms, 0.99) <= 20 ? "MET" : "MISSED");
  }

  // Memory: idle RSS, then per idle client session (cold bridge: no pool).
  {
    Child fresh;
    if (start_bridge(fresh, bridge_bin, up_port, {"--pool-size", "0"})) {
      std::this_thread::sleep_for(200ms);
      long idle = proc_status_kb(fresh.pid, "VmRSS:");
      std::printf("  idle RSS <= 10 MB                         : %.1f MB  %s\n", idle / 1024.0,
                  idle <= 10 * 1024 ? "MET" : "MISSED");
      BridgeClient bc(fresh.port);
      long before = proc_status_kb(fresh.pid, "VmRSS:");
      int made = 0;
      for (int i = 0; i < sessions; ++i) {
        BridgeClient one(fresh.port);
        made += one.initialize();
      }
      long after = proc_status_kb(fresh.pid, "VmRSS:");
      double per = made ? (after - before) * 1024.0 / made : 0;
      std::printf("  RSS per idle client session <= 20 KB      : %.0f bytes over %d sessions  %s\n", per, made,
                  per <= 20 * 1024 ? "MET" : "MISSED");
    }
  }

  // A large tool result streamed through (fresh process: its peak RSS is the stream's).
  {
    Child fresh;
    if (start_bridge(fresh, bridge_bin, up_port, {"--pool-size", "0", "--max-message-size", "1GiB"})) {
      BridgeClient bc(fresh.port);
      if (bc.initialize()) {
        long base = proc_status_kb(fresh.pid, "VmHWM:");
        auto t0 = Clock::now();
        std::string r = bc.call(call_body(1, "big", R"({"bytes":)" + std::to_string(*big_bytes) + "}"),
                                Deadline::after(120s), *big_bytes * 2);
        double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        long peak = proc_status_kb(fresh.pid, "VmHWM:");
        double mult = static_cast<double>(peak - base) * 1024.0 / static_cast<double>(*big_bytes);
        std::printf("  %s result through the bridge            : %.2f s, %zu bytes received\n", big.c_str(), secs,
                    r.size());
        std::printf("  peak RSS while streaming <= 3x message    : +%.1f MB = %.2fx  %s\n", (peak - base) / 1024.0,
                    mult, mult <= 3 ? "MET" : "MISSED");
      }
    }
  }
  cold.stop();
  warm.stop();
  upstream.stop();
  return 0;
}
