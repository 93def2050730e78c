// Configuration: every limit and timeout is a named field here, a flag, an
// MCP_BRIDGE_* environment variable and a config-file key of the same name.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mcp_sse_bridge/tls.h"
#include "mcp_sse_bridge/url.h"

namespace msb {

using Duration = std::chrono::milliseconds;

struct PoolConfig {
  size_t size = 32;                   // --pool-size: most idle warm sessions in all (0 = off)
  Duration max_idle_age{30000};       // --pool-max-idle-age: older idle sessions are closed
  int fillers = 2;                    // --pool-fillers: sessions opened at once, per loop
  bool reuse = true;                  // --pool-reuse: a session serves further calls after a clean one
};

// How client calls map onto upstream SSE sessions.
enum class UpstreamMode {
  kCall,     // each call runs on a short-lived upstream session (warm pool per loop)
  kSession,  // each client session owns one long-lived upstream session (stateful servers)
};

struct UpstreamConfig {
  Url sse_url;                              // --upstream
  std::vector<std::string> static_headers;  // --upstream-header / --upstream-headers-file, "Name: value"
  TlsClientOptions tls_options;             // --upstream-ca, --upstream-client-cert/-key, --upstream-insecure
  std::shared_ptr<const TlsContext> tls;    // built from tls_options when an https upstream is possible
  size_t max_sessions = 1024;               // --max-upstream-sessions: open upstream sessions at once
  Duration connect_timeout{5000};           // TCP connect + SSE response head
  Duration endpoint_timeout{5000};          // `endpoint` event after connect
  Duration initialize_timeout{10000};       // initialize reply and each setup POST
  Duration request_timeout{120000};         // the whole call, from arrival
  Duration max_request_timeout{900000};     // cap for progress-extended calls
  Duration ping_interval{15000};            // silence before an MCP ping probe (0 = off)
  Duration ping_timeout{5000};              // reply deadline for that ping
  Duration post_timeout{5000};              // an upstream POST's response head, once sent
  Duration tcp_keepalive{5000};             // idle time before TCP keepalive probes (0 = off)
  Duration tcp_user_timeout{8000};          // TCP_USER_TIMEOUT of upstream sockets (0 = kernel default)
  Duration idle_probe_after{2000};          // a pooled session silent this long is pinged before use
  Duration idle_probe_timeout{2000};        // reply deadline for that ping (else: a fresh session)
  Duration resolve_timeout{2000};           // one name lookup
  Duration resolve_cache_ttl{30000};        // lookups cached this long (0 = off)
  uint64_t max_message_size = 128ull << 20; // one upstream SSE event / message
  bool allow_foreign_endpoint = false;      // accept an endpoint on another origin
  bool pipelining = false;                  // a cold session's notifications/initialized pipelined with the next POST
  int retries = 1;                          // fresh-session retries allowed by DESIGN §2.5
  UpstreamMode mode = UpstreamMode::kCall;  // --upstream-mode call|session
  Duration session_idle_timeout{1800000};   // --session-idle-timeout: session mode, unused upstream session closed
  size_t max_listen_sessions = 64;          // --max-listen-sessions: upstream sessions held for listen streams (one per header profile)
  PoolConfig pool;                          // warm sessions
};

struct Config {
  UpstreamConfig upstream;
  std::string listen_host = "127.0.0.1";
  int listen_port = 8080;
  std::string path = "/mcp";
  std::vector<std::string> forward_headers;  // client header names copied upstream
  std::vector<std::string> allowed_hosts;    // Host values accepted besides loopback names
  std::vector<std::string> allowed_origins;  // Origin values accepted besides loopback origins
  Duration keepalive_interval{15000};        // SSE comment on idle response streams (0 = off)
  uint64_t max_body_size = 16ull << 20;      // client request body
  int loop_threads = 0;                      // event-loop threads serving connections (0 = one per usable CPU)
  bool loop_packing = true;                  // connections packed on loop 0 at light load, spread under load
  int max_connections = 20000;               // client connections open at once; above: 503 + close
  int max_inflight = 1024;                   // calls at once; above: 503 + Retry-After
  int max_calls_per_session = 32;            // calls at once per client session; above: 429
  Duration client_read_timeout{30000};       // a request's head + body must arrive within this
  Duration client_write_timeout{30000};      // each write to a client must progress within this
  Duration client_idle_timeout{5000};        // keep-alive: idle client connections close after this
  TlsServerOptions tls;                      // --tls-cert, --tls-key, --tls-client-ca
  std::shared_ptr<const TlsContext> tls_ctx; // built from `tls` when serving HTTPS
  std::vector<std::string> auth_tokens;      // bearer tokens accepted (empty = no inbound auth)
  bool auth_health = false;                  // /healthz and /readyz need a token too
  bool auth_metrics = false;                 // /metrics needs a token too
  std::string metrics_path = "/metrics";     // empty = no metrics endpoint
  Duration ready_probe_interval{5000};       // /readyz re-probes the upstream at most this often
  Duration drain_timeout{20000};             // SIGTERM: in-flight calls get this long to finish
  bool serve_stale_initialize = true;        // upstream down: answer initialize from its last result
  // The stateless era (2026-07-28): cache hints put on list results,
  // resources/read and server/discover, and how long server/discover reuses
  // the upstream's last initialize result before asking it again.
  int64_t cache_ttl_ms = 0;                  // --cache-ttl-ms: ttlMs (0 = clients re-ask every time)
  std::string cache_scope = "private";       // --cache-scope: public or private
  Duration discover_refresh{60000};          // --discover-refresh
  size_t max_revoked_sessions = 100000;
  Duration mrtr_park_timeout{120000};        // 2026-07-28: a call waiting for its client's MRTR retry
  size_t mrtr_max_parked = 256;              // calls waiting for an MRTR retry at once (each holds an upstream session); more: error
  std::string session_secret;                // from --session-secret-file or env
  bool session_secret_generated = false;
  std::string log_level = "info";
  std::string log_format = "text";
  bool check_config = false;
  std::vector<std::string> warnings;         // said once at start (deprecated flags)
};

// Parses "250ms", "5s", "2m", "1h", "0" (a bare number means seconds); at
// most kMaxDurationMs (a year).
inline constexpr uint64_t kMaxDurationMs = 366ull * 24 * 3600 * 1000;
std::optional<Duration> parse_duration(std::string_view s);
// Parses "16MiB", "64KiB", "1GiB", "10MB", "512" (bytes); at most kMaxSize
// (1 TiB, far above any useful limit, and no wrap-around below it).
inline constexpr uint64_t kMaxSize = 1ull << 40;
std::optional<uint64_t> parse_size(std::string_view s);
std::string format_duration(Duration d);

}  // namespace msb
