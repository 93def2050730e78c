// A small, real legacy HTTP+SSE (2024-11-05) MCP server, used by the demo,
// the benchmarks and — through its fault switches — the integration tests.
//
// GET /sse opens a session: `event: endpoint` with /message?sessionId=<id>,
// then `event: message` per JSON-RPC message. POST /message?sessionId=<id>
// answers 202 and handles the message on its own thread.
//
// Tools: echo {text}, add {a, b}, sleep {ms} (progress notifications when the
// request has a progressToken), big {bytes} (a text result of that many
// bytes), log {level, text} (a notifications/message filtered by the
// session's logging/setLevel), whoami (the Authorization header that opened
// the session), count (a counter per SSE session: returns the new value, so a
// test sees whether calls share an upstream session), notify_later {ms, text}
// (answers at once; ms later sends notifications/tools/list_changed and a
// notifications/message with `text` on the session's stream: messages outside
// any call), roots (sends the client a roots/list request during the call
// and returns the client's answer as the server received it), init_params
// (the params of the session's initialize, as JSON text), fail {code,
// message} (answers with that JSON-RPC error).
// Resources: resources/list, resources/read, resources/subscribe and
// unsubscribe (remembered per SSE session; resources.subscribe advertised
// unless Options::resource_subscribe is false: then they get -32601);
// touch_resource() and the tool touch {uri} change one
// (notifications/resources/updated to every session subscribed to it); the
// tool list_changed {kind} sends notifications/<kind>/list_changed on its
// own session before answering.
// The asking tools (MRTR tests) ask mid-call and wait up to `wait_ms` (default 30 s):
// ask_name (elicitation/create → "hello <name>"), ask_model
// (sampling/createMessage → "model said: <text>"), ask_roots (roots/list →
// "roots: <uris>"), ask_twice (elicits, reports progress 1/2 when asked, then
// samples: two rounds), ask_both
// (elicits and samples at once, `gap_ms` apart); an error answer becomes an isError result
// "<what> failed: error <code>: <message>".
//
// Like python-sdk 1.6 it crashes a session (closes its stream) when a request
// other than initialize/ping arrives before notifications/initialized; the
// premature_requests counter records it so tests can prove the bridge never
// does that.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace example {

struct Faults {
  std::atomic<int> sse_status{0};            // answer GET /sse with this HTTP status
  std::atomic<bool> sse_wrong_type{false};   // answer GET /sse 200 text/html
  std::atomic<bool> no_endpoint{false};      // open the stream, never send `endpoint`
  std::atomic<bool> drop_before_endpoint{false};  // close right after the response head
  std::atomic<bool> drop_after_endpoint{false};   // close right after `endpoint`
  std::atomic<bool> drop_on_call{false};     // tools/call: close the stream, no reply
  std::atomic<bool> drop_mid_event{false};   // tools/call: send half an event, then close
  std::atomic<int> post_status{0};           // tools/call POST answered with this status
  std::atomic<bool> black_hole{false};       // tools/call: 202, then nothing ever
  std::atomic<bool> half_open{false};        // tools/call: stream stays open, silent forever
  std::atomic<bool> endpoint_foreign{false}; // announce an endpoint on another origin
  std::atomic<int> delay_endpoint_ms{0};     // wait before sending `endpoint`
  std::atomic<bool> post_hang{false};        // tools/call POST: never answered (held until stop)
  std::atomic<int> drop_then_404{0};         // next N tools/call POSTs: end the stream, answer 404
  std::atomic<bool> drop_after_initialized{false};  // end the stream once a session is initialized
  std::atomic<bool> multiline_data{false};   // each message pretty-printed over several `data:` lines
  std::atomic<bool> id_as_string{false};     // tools/call echo: the response's integer id sent back as a string
  // notifications/initialized POSTs (plain HTTP only, the pipelining tests):
  std::atomic<int> initialized_status{0};       // handled, but answered with this status
  std::atomic<bool> initialized_conn_close{false};  // answered 202 `Connection: close`, then closed
  std::atomic<bool> initialized_then_close{false};  // answered 202 (keep-alive), then closed unread
  std::atomic<int> initialized_abort{0};        // next N: not handled, connection closed unanswered
};

// One POST as the server received it (post_log()).
struct PostRecord {
  std::string method;  // "" for a response
  int remote_port = 0; // the client's port: which connection it came on
  // Its first bytes had already arrived with the previous request on that
  // connection (read ahead before the previous response was written): it
  // was pipelined. Plain HTTP only.
  bool pipelined = false;
};

struct Options {
  bool python_style = false;   // /messages/?session_id=<hex> endpoint and CRLF line ends
  int ping_comment_ms = 0;     // send ": ping" comments this often (0 = never, like the TS SDK)
  int threads = 64;
  std::string tls_cert, tls_key;  // serve HTTPS with these PEM files
  bool resource_subscribe = true;  // advertise resources.subscribe and serve resources/subscribe
};

using Headers = std::vector<std::pair<std::string, std::string>>;

class LegacyServer {
 public:
  explicit LegacyServer(Options o = {});
  ~LegacyServer();
  // Binds host:port (0 = any) and serves on a background thread. Returns the
  // port, or -1.
  int start(const std::string& host, int port);
  // Ends every open SSE stream now (a server-side crash of the sessions).
  void kill_streams();
  // Every open session goes silent: its stream stays open but carries
  // nothing more, POSTs still get 202 (a path that died under a proxy that
  // still acknowledges, or a wedged server).
  void silence_sessions();
  // A resource changes: every session subscribed to `uri` gets
  // notifications/resources/updated. Returns how many sessions.
  int touch_resource(const std::string& uri);
  // Sessions subscribed to `uri` now.
  int subscribed(const std::string& uri) const;
  // Sends the notification `method` (no params) on every open SSE session, as
  // a server announcing a server-wide change does; returns how many.
  int broadcast(const std::string& method);
  // Closes every session and stops; joins. Idempotent.
  void stop();
  int port() const;

  Faults& faults();
  // Counters since start.
  int sessions_opened() const;
  int sse_requests() const;    // GET /sse received, refused ones included
  int premature_requests() const;
  int cancellations() const;   // notifications/cancelled received
  int subscribe_requests() const;    // resources/subscribe received (served ones)
  int unsubscribe_requests() const;  // resources/unsubscribe received (served ones)
  int open_streams() const;    // SSE streams currently open
  std::string last_cancelled_id() const;
  // Headers of the latest GET /sse and of the latest POST (httplib's
  // REMOTE_ADDR-style pseudo-headers left out).
  Headers last_get_headers() const;
  Headers last_post_headers() const;
  // Every POST to the message endpoint that named a known session, in
  // arrival order (bounded: the first 10,000).
  std::vector<PostRecord> post_log() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace example
