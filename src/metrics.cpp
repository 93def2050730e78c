#include "mcp_sse_bridge/metrics.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "mcp_sse_bridge/upstream_stats.h"

namespace msb {

namespace {

void line(std::string& out, std::string_view name, std::string_view labels, double v) {
  char num[64];
  std::snprintf(num, sizeof num, "%.17g", v);
  out.append(name);
  if (!labels.empty()) out.append("{").append(labels).append("}");
  out.append(" ").append(num).append("\n");
}
void line(std::string& out, std::string_view name, std::string_view labels, uint64_t v) {
  out.append(name);
  if (!labels.empty()) out.append("{").append(labels).append("}");
  out.append(" ").append(std::to_string(v)).append("\n");
}
void head(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

std::string outcome_name(int i) {
  if (i == 0) return "ok";
  if (i == 1) return "cancelled";
  return std::string(to_string(static_cast<ErrorKind>(i - 2)));
}

// Process figures from /proc (Linux).
void process_metrics(std::string& out) {
  long rss_pages = 0;
  if (std::ifstream f("/proc/self/statm"); f) {
    long size = 0;
    f >> size >> rss_pages;
  }
  head(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  line(out, "process_resident_memory_bytes", "",
       static_cast<uint64_t>(rss_pages) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
  uint64_t fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++fds;
    closedir(d);
  }
  head(out, "process_open_fds", "gauge", "Number of open file descriptors.");
  line(out, "process_open_fds", "", fds > 0 ? fds - 1 : 0);  // minus the directory's own
  uint64_t threads = 0;
  if (std::ifstream f("/proc/self/status"); f) {
    std::string l;
    while (std::getline(f, l))
      if (l.rfind("Threads:", 0) == 0) threads = std::stoull(l.substr(8));
  }
  head(out, "process_threads", "gauge", "Number of OS threads in the process.");
  line(out, "process_threads", "", threads);
}

}  // namespace

void Histogram::observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void Histogram::render(std::string& out, std::string_view name, std::string_view labels) const {
  std::string sep = labels.empty() ? "" : std::string(labels) + ",";
  uint64_t cum = 0;
  for (size_t i = 0; i <= kBounds.size(); ++i) {
    cum += buckets_[i].load(std::memory_order_relaxed);
    char le[32];
    if (i < kBounds.size()) std::snprintf(le, sizeof le, "%g", kBounds[i]);
    else std::snprintf(le, sizeof le, "+Inf");
    line(out, std::string(name) + "_bucket", sep + "le=\"" + le + "\"", cum);
  }
  line(out, std::string(name) + "_sum", labels, static_cast<double>(sum_us_.load()) / 1e6);
  line(out, std::string(name) + "_count", labels, cum);
}

int Metrics::method_index(std::string_view m) {
  for (size_t i = 0; i + 1 < kMethods.size(); ++i)
    if (kMethods[i] == m) return static_cast<int>(i);
  return static_cast<int>(kMethods.size()) - 1;  // "other"
}

void Metrics::call_done(std::string_view method, const BridgeError* error, bool cancelled,
                        double seconds) {
  int m = method_index(method);
  int o = cancelled ? 1 : error ? 2 + static_cast<int>(error->kind) : 0;
  requests_[m][o].fetch_add(1, std::memory_order_relaxed);
  latency_[m].observe(seconds);
  if (error && !cancelled) {
    failures_[static_cast<int>(error->kind)][static_cast<int>(error->phase)].fetch_add(
        1, std::memory_order_relaxed);
    time_to_error_.observe(seconds);
  }
}

void Metrics::http_refused(int status) {
  if (status >= 0 && status < static_cast<int>(http_refused_.size()))
    http_refused_[status].fetch_add(1, std::memory_order_relaxed);
}

std::string Metrics::render(const MetricsGauges& g, const ForwarderStats& f,
                            const PoolStats& p) const {
  std::string out;
  out.reserve(32 * 1024);
  head(out, "mcp_bridge_requests_total", "counter",
       "Client JSON-RPC requests finished, by method and outcome (ok, cancelled or the error kind).");
  for (size_t m = 0; m < kMethods.size(); ++m)
    for (int o = 0; o < kOutcomes; ++o) {
      uint64_t v = requests_[m][o].load(std::memory_order_relaxed);
      if (v == 0 && o != 0) continue;  // keep the series small; ok is always present
      line(out, "mcp_bridge_requests_total",
           "method=\"" + std::string(kMethods[m]) + "\",outcome=\"" + outcome_name(o) + "\"", v);
    }
  head(out, "mcp_bridge_request_duration_seconds", "histogram",
       "Time from a request's arrival to its response, by method.");
  for (size_t m = 0; m < kMethods.size(); ++m)
    latency_[m].render(out, "mcp_bridge_request_duration_seconds",
                       "method=\"" + std::string(kMethods[m]) + "\"");
  head(out, "mcp_bridge_time_to_error_seconds", "histogram",
       "Time from a request's arrival to the bridge's error response.");
  time_to_error_.render(out, "mcp_bridge_time_to_error_seconds", "");
  head(out, "mcp_bridge_failures_total", "counter",
       "Requests answered with a bridge error, by kind and upstream phase.");
  for (int k = 0; k < kErrorKindCount; ++k)
    for (int ph = 0; ph < kPhaseCount; ++ph) {
      uint64_t v = failures_[k][ph].load(std::memory_order_relaxed);
      if (v == 0) continue;
      line(out, "mcp_bridge_failures_total",
           "kind=\"" + std::string(to_string(static_cast<ErrorKind>(k))) + "\",phase=\"" +
               std::string(to_string(static_cast<Phase>(ph))) + "\"",
           v);
    }
  head(out, "mcp_bridge_upstream_sessions_opened_total", "counter",
       "Upstream SSE sessions set up (connect, endpoint, initialize), for calls and the warm pool.");
  line(out, "mcp_bridge_upstream_sessions_opened_total", "", f.sessions_opened.load());
  head(out, "mcp_bridge_upstream_session_failures_total", "counter",
       "Upstream session set-ups that failed, by phase.");
  for (int ph = 0; ph < 3; ++ph)
    line(out, "mcp_bridge_upstream_session_failures_total",
         "phase=\"" + std::string(to_string(static_cast<Phase>(ph))) + "\"",
         f.session_failures[ph].load());
  head(out, "mcp_bridge_upstream_sessions", "gauge", "Upstream SSE sessions open now.");
  line(out, "mcp_bridge_upstream_sessions", "", static_cast<uint64_t>(g.upstream_sessions));
  head(out, "mcp_bridge_retries_total", "counter", "Calls retried on a fresh upstream session.");
  line(out, "mcp_bridge_retries_total", "", f.retries.load());
  head(out, "mcp_bridge_upstream_pings_total", "counter",
       "MCP pings sent to probe a silent upstream stream during a call.");
  line(out, "mcp_bridge_upstream_pings_total", "", f.pings_sent.load());
  head(out, "mcp_bridge_server_requests_total", "counter",
       "Server-to-client requests (sampling, roots, elicitation) forwarded to clients.");
  line(out, "mcp_bridge_server_requests_total", "", f.server_requests.load());
  head(out, "mcp_bridge_keepalives_sent_total", "counter",
       "SSE keepalive comments written to idle client response streams.");
  line(out, "mcp_bridge_keepalives_sent_total", "", keepalives_.load());
  head(out, "mcp_bridge_inflight_calls", "gauge", "Client calls in progress.");
  line(out, "mcp_bridge_inflight_calls", "", static_cast<uint64_t>(g.inflight < 0 ? 0 : g.inflight));
  head(out, "mcp_bridge_pool_idle_sessions", "gauge", "Warm upstream sessions ready in the pool.");
  line(out, "mcp_bridge_pool_idle_sessions", "", p.idle.load());
  head(out, "mcp_bridge_pool_hits_total", "counter", "Calls served by a warm pooled session.");
  line(out, "mcp_bridge_pool_hits_total", "", p.hits.load());
  head(out, "mcp_bridge_pool_misses_total", "counter", "Calls that found no warm session.");
  line(out, "mcp_bridge_pool_misses_total", "", p.misses.load());
  head(out, "mcp_bridge_http_refused_total", "counter",
       "Client HTTP requests refused before any upstream work, by status code.");
  for (size_t s = 100; s < http_refused_.size(); ++s) {
    uint64_t v = http_refused_[s].load(std::memory_order_relaxed);
    if (v) line(out, "mcp_bridge_http_refused_total", "code=\"" + std::to_string(s) + "\"", v);
  }
  head(out, "mcp_bridge_client_connections", "gauge", "Client connections being served.");
  line(out, "mcp_bridge_client_connections", "", static_cast<uint64_t>(g.connections));
  head(out, "mcp_bridge_loop_connections", "gauge",
       "Client connections per event loop (--loop-packing: loop 0 holds them all at light load).");
  for (size_t i = 0; i < g.loop_connections.size(); ++i)
    line(out, "mcp_bridge_loop_connections", "loop=\"" + std::to_string(i) + "\"",
         static_cast<uint64_t>(std::max<int64_t>(g.loop_connections[i], 0)));
  head(out, "mcp_bridge_connection_moves_total", "counter",
       "Idle client connections moved to another event loop at their next request (--loop-packing).");
  line(out, "mcp_bridge_connection_moves_total", "", g.connection_moves);
  head(out, "mcp_bridge_client_connections_refused_total", "counter",
       "Client connections refused with 503 because --max-connections were open.");
  line(out, "mcp_bridge_client_connections_refused_total", "", connections_refused_.load());
  head(out, "mcp_bridge_slow_clients_total", "counter",
       "Client connections closed because a request did not arrive within --client-read-timeout.");
  line(out, "mcp_bridge_slow_clients_total", "", slow_clients_.load());
  head(out, "mcp_bridge_tls_handshake_failures_total", "counter",
       "Client TLS handshakes that failed or timed out.");
  line(out, "mcp_bridge_tls_handshake_failures_total", "", tls_failures_.load());
  head(out, "mcp_bridge_initialize_stale_total", "counter",
       "initialize requests answered from the last upstream initialize result while the "
       "upstream could not be reached (--serve-stale-initialize).");
  line(out, "mcp_bridge_initialize_stale_total", "", stale_initializes_.load());
  head(out, "mcp_bridge_session_state_lost_total", "counter",
       "Session mode: client sessions given a fresh upstream session because this process held "
       "none for them (after a failure, an idle close, a restart or on another replica).");
  line(out, "mcp_bridge_session_state_lost_total", "", sessions_state_lost_.load());
  head(out, "mcp_bridge_unattributed_dropped_total", "counter",
       "Session mode: upstream messages that belonged to no call, dropped because the client "
       "session had no GET stream open.");
  line(out, "mcp_bridge_unattributed_dropped_total", "", unattributed_dropped_.load());
  head(out, "mcp_bridge_ready", "gauge",
       "1 when the last /readyz check answered 200 (0 before the first; not probed by scrapes).");
  line(out, "mcp_bridge_ready", "", static_cast<uint64_t>(g.ready));
  head(out, "mcp_bridge_draining", "gauge", "1 while the bridge drains after SIGTERM/SIGINT.");
  line(out, "mcp_bridge_draining", "", static_cast<uint64_t>(g.draining));
  process_metrics(out);
  return out;
}

}  // namespace msb
