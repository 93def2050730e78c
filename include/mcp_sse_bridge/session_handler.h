// SessionHandler: the MCP endpoint in the session era (2025-03-26 …
// 2025-11-25): POST (initialize opens a client session; requests become
// calls; notifications/cancelled and client answers are routed to running
// calls), GET (405 in call mode; in session mode the client session's
// standalone stream) and DELETE (ends a client session and, in session mode,
// its upstream session). In session mode calls run on the client session's
// upstream session (SessionTable) instead of the Forwarder's per-call ones.
// A POSTed 2026-07-28 request (a protocol version in params._meta, or
// server/discover; never initialize or a request with Mcp-Session-Id) is
// handed to the StatelessHandler. Runs on the event loop that owns the client's
// connection; each POST's calls run there as a coroutine (Forwarder::call)
// and answer through its Exchange, as an SSE stream or one JSON body.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mcp_sse_bridge/admission.h"
#include "mcp_sse_bridge/call_registry.h"
#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/forwarder.h"
#include "mcp_sse_bridge/http_exchange.h"
#include "mcp_sse_bridge/initialize_cache.h"
#include "mcp_sse_bridge/request_policy.h"
#include "mcp_sse_bridge/session_table.h"
#include "mcp_sse_bridge/session_token.h"
#include "mcp_sse_bridge/stateless_handler.h"

namespace msb {

class Metrics;
class CallSink;

class SessionHandler {
 public:
  struct Deps {
    const Config& cfg;
    Forwarder& forwarder;
    SessionTokens& tokens;
    const RequestPolicy& policy;
    Metrics& metrics;
    Admission& admission;
    Refusals& refusals;
    const Lifecycle& life;
    InitializeCache& init_cache;  // shared with the stateless era (server/discover)
    StatelessHandler& stateless;  // 2026-07-28 requests go there (StatelessRules::is_stateless)
  };
  explicit SessionHandler(Deps d);

  // Any request to the MCP path. Loop thread; never blocks.
  void handle(std::shared_ptr<Exchange> ex, HttpRequest&& req);
  // Wakes every running call (stop: they end with shutting_down).
  void wake_all() { registry_.wake_all(); }
  // Session mode: closes every upstream session (bounded). Loops must run.
  void stop_sessions() { sessions_.stop(); }

 private:
  // A client request whose response is still to be produced.
  struct PendingCall {
    Message msg;
    std::string key;  // session + id, for cancellation
    MailboxPtr mailbox;
    bool counted = true;        // still counted in admission (global and per session)
    std::string request_id;     // X-Request-Id, for logs
    Clock::time_point arrival;  // when the HTTP request arrived: the call's deadline starts here
    bool late = false;          // arrived during the drain: answered shutting_down
  };

  bool guard(const HttpRequest& req, Exchange& ex);
  // `batch_ids`: the request ids of a batch, each answered with the error
  // (else `id`, the single request's).
  void refuse(Exchange& ex, const Rejection& r, std::string_view id = "",
              HttpResponse* base = nullptr, const std::vector<std::string>* batch_ids = nullptr);
  std::shared_ptr<const ClientSession> require_session(const HeaderList& h, Exchange& ex,
                                               std::string_view id = "",
                                               HttpResponse* base = nullptr,
                                               const std::vector<std::string>* batch_ids = nullptr);
  void handle_post(std::shared_ptr<Exchange> ex, HttpRequest& req);
  void handle_delete(Exchange& ex, const HttpRequest& req);
  void handle_get(std::shared_ptr<Exchange> ex, const HttpRequest& req);
  bool session_mode() const { return d_.cfg.upstream.mode == UpstreamMode::kSession; }
  void handle_initialize(std::shared_ptr<Exchange> ex, Message init, bool accepts_sse,
                         std::string headers, std::string request_id, HttpResponse base);
  boost::asio::awaitable<void> initialize_call(std::shared_ptr<Exchange> ex, Message init,
                                               std::string params, std::string version,
                                               bool accepts_sse, std::string headers,
                                               std::string request_id, bool late,
                                               HttpResponse base);
  boost::asio::awaitable<void> run_calls(std::shared_ptr<Exchange> ex,
                                         std::vector<PendingCall> calls,
                                         std::shared_ptr<const ClientSession> session,
                                         std::string headers, bool sse, bool batch,
                                         HttpResponse base, boost::asio::cancellation_signal* wake);
  std::optional<std::string> local_answer(const Message& m, const ClientSession& s);
  void release(PendingCall& c);
  boost::asio::awaitable<CallResult> call_guarded(EventLoop& loop, const Message& m,
                                                  const ClientSession* s,
                                                  std::optional<std::string> log_level,
                                                  std::string headers, CallSink& sink,
                                                  Clock::time_point arrival);
  boost::asio::awaitable<CallResult> run_call(EventLoop& loop, PendingCall& c,
                                              const ClientSession& s, const std::string& headers,
                                              CallSink& sink);
  std::string shutdown_answer(const PendingCall& c);

  Deps d_;
  CallRegistry registry_;
  SessionTable sessions_;  // session mode only
};

}  // namespace msb
