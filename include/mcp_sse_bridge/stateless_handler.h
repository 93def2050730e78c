// StatelessHandler: the MCP endpoint in the stateless era (2026-07-28), on
// the same path as the session era. SessionHandler hands it every POSTed
// request that StatelessRules::is_stateless() picks (a protocol version in
// params._meta, or server/discover; never initialize, never a request with
// Mcp-Session-Id).
//
// - Refusals (StatelessRules::check): 400 -32020 / -32022 / -32602, 404
//   -32601, each with the request's id, counted and logged (Refusals). The
//   body has been read whole, so the connection stays usable.
// - server/discover: answered by the bridge from the upstream's initialize
//   result (InitializeCache, shared with the session era): reused for
//   --discover-refresh, then asked again; while the upstream is down the
//   last result is served; with none ever cached, a JSON-RPC error with the
//   id.
// - subscriptions/listen: a long-lived SSE stream per request (ListenHub).
// - tools/call, prompts/get and resources/read run through an MrtrSink
//   (MRTR, basic/patterns/mrtr): a legacy upstream's mid-call
//   elicitation/create, sampling/createMessage or roots/list becomes an
//   `input_required` result with a sealed requestState; the upstream call
//   stays parked (ParkedCalls, --mrtr-park-timeout, --mrtr-max-parked) and
//   the client's retry (requestState + inputResponses) resumes it, on any
//   loop. A requestState that is not the bridge's passes through upstream.
// - Every other request is a call: Forwarder::call on an upstream session
//   initialized with the request's own capabilities and clientInfo (the
//   warm pool's key holds them: see StatelessRules::init_params), logLevel
//   replayed as logging/setLevel; answered through a StatelessSink (JSON or
//   a per-request SSE stream; closing it cancels the call upstream); every
//   result decorated by StatelessRules::decorate_result; an upstream -32021
//   becomes HTTP 400.
//
// Runs on the event loop that owns the client's connection (coroutines);
// never blocks. Thread-safe as SessionHandler is.
#pragma once

#include <boost/asio/awaitable.hpp>

#include <memory>
#include <string>

#include "mcp_sse_bridge/admission.h"
#include "mcp_sse_bridge/call_registry.h"
#include "mcp_sse_bridge/config.h"
#include "mcp_sse_bridge/forwarder.h"
#include "mcp_sse_bridge/http_exchange.h"
#include "mcp_sse_bridge/initialize_cache.h"
#include "mcp_sse_bridge/listen_hub.h"
#include "mcp_sse_bridge/parked_calls.h"
#include "mcp_sse_bridge/request_state.h"
#include "mcp_sse_bridge/mrtr_sink.h"
#include "mcp_sse_bridge/stateless_rules.h"

namespace msb {

class Metrics;
class StatelessSink;

class StatelessHandler {
 public:
  struct Deps {
    const Config& cfg;
    Forwarder& forwarder;
    Metrics& metrics;
    Admission& admission;
    Refusals& refusals;
    const Lifecycle& life;
    InitializeCache& init_cache;
  };
  explicit StatelessHandler(Deps d);

  // One stateless request (already past Host/Origin, auth, Accept and
  // Content-Type). `upstream_headers`: the lines sent upstream; `base`: the
  // response's common headers (X-Request-Id). Loop thread; never blocks.
  void handle(std::shared_ptr<Exchange> ex, const HttpRequest& req, Message m, bool accepts_sse,
              std::string upstream_headers, std::string request_id, HttpResponse base);
  // Wakes every running call (stop: they end with shutting_down).
  void wake_all() { registry_.wake_all(); }
  // Stop: every call parked for an MRTR retry is cancelled upstream.
  void stop_parked();
  // Stop: every subscriptions/listen stream ends, their upstream sessions close.
  void stop_listen() { listen_.stop(); }
  const ParkedCalls& parked() const { return parked_; }

  // The protocol version sent in the initialize that stands in for a
  // stateless request's missing handshake, when the upstream's own choice is
  // not known yet.
  static constexpr std::string_view kUpstreamVersion = "2025-06-18";

 private:
  struct Call;
  void refuse(Exchange& ex, const Rejection& r, std::string_view id, const HttpResponse& base);
  boost::asio::awaitable<void> discover(std::shared_ptr<Exchange> ex, Message m, bool sse,
                                        std::string headers, std::string request_id,
                                        HttpResponse base);
  boost::asio::awaitable<void> run_call(std::shared_ptr<Exchange> ex, std::shared_ptr<Call> c,
                                        boost::asio::cancellation_signal* wake);
  // The MRTR path of tools/call, prompts/get, resources/read: false when the
  // request cannot take it (then run_call serves it).
  bool start_mrtr(const std::shared_ptr<Exchange>& ex, const std::shared_ptr<Call>& c,
                  const Message& client_msg, const HttpRequest& req);
  int final_answer(std::string_view method, std::string& response) const;
  void finish_round(const std::shared_ptr<Call>& c, const std::shared_ptr<StatelessSink>& sink,
                    Clock::time_point t0, MrtrSink::Outcome o);
  // `subscribes`: the upstream advertises resources.subscribe, which
  // subscriptions/listen honours (the cached result has it removed).
  std::string discover_answer(std::string_view id, const std::string& init_result,
                              bool subscribes) const;
  std::string upstream_version(const std::string& headers) const;

  Deps d_;
  CallRegistry registry_;
  ParkedCalls parked_;
  RequestStateSealer sealer_;
  ListenHub listen_;
};

}  // namespace msb
