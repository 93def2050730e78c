#include "mcp_sse_bridge/error.h"

#include <nlohmann/json.hpp>

#include "mcp_sse_bridge/url.h"

namespace msb {

std::string_view to_string(ErrorKind k) {
  switch (k) {
    case ErrorKind::kUnreachable: return "upstream_unreachable";
    case ErrorKind::kRejected: return "upstream_rejected";
    case ErrorKind::kClosed: return "upstream_closed";
    case ErrorKind::kProtocol: return "upstream_protocol_error";
    case ErrorKind::kEndpointRefused: return "endpoint_refused";
    case ErrorKind::kTimeout: return "deadline_exceeded";
    case ErrorKind::kUnresponsive: return "upstream_unresponsive";
    case ErrorKind::kCancelled: return "cancelled";
    case ErrorKind::kShuttingDown: return "shutting_down";
    case ErrorKind::kOverloaded: return "bridge_overloaded";
    case ErrorKind::kInternal: return "internal";
  }
  return "internal";
}

std::string_view to_string(Phase p) {
  switch (p) {
    case Phase::kConnect: return "connect";
    case Phase::kEndpoint: return "endpoint";
    case Phase::kInitialize: return "initialize";
    case Phase::kRequest: return "request";
  }
  return "request";
}

namespace {
std::string_view kind_text(ErrorKind k) {
  switch (k) {
    case ErrorKind::kUnreachable: return "upstream unreachable";
    case ErrorKind::kRejected: return "upstream rejected the request";
    case ErrorKind::kClosed: return "upstream closed the connection";
    case ErrorKind::kProtocol: return "upstream protocol error";
    case ErrorKind::kEndpointRefused: return "upstream endpoint refused";
    case ErrorKind::kTimeout: return "upstream deadline exceeded";
    case ErrorKind::kUnresponsive: return "upstream unresponsive (ping unanswered)";
    case ErrorKind::kCancelled: return "request cancelled";
    case ErrorKind::kShuttingDown: return "bridge shutting down";
    case ErrorKind::kOverloaded: return "bridge overloaded";
    case ErrorKind::kInternal: return "internal bridge error";
  }
  return "internal bridge error";
}
}  // namespace

// {"jsonrpc":"2.0","id":<raw id, verbatim>,"error":<err>}; id null only
// when the request's id could not be known (unparseable body).
static std::string error_envelope(std::string_view raw_id, const nlohmann::ordered_json& err) {
  std::string out = R"({"jsonrpc":"2.0","id":)";
  out += raw_id.empty() ? std::string_view("null") : raw_id;
  out += R"(,"error":)";
  out += err.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  out += '}';
  return out;
}

std::string BridgeError::message() const {
  std::string m(kind_text(kind));
  m += " (";
  m += to_string(phase);
  m += ")";
  if (!detail.empty()) {
    m += ": ";
    m += detail;
  }
  return m;
}

std::string jsonrpc_error_response(std::string_view raw_id, const BridgeError& e,
                                   int64_t elapsed_ms, std::string_view upstream) {
  nlohmann::ordered_json bridge;
  bridge["kind"] = to_string(e.kind);
  bridge["phase"] = to_string(e.phase);
  bridge["elapsed_ms"] = elapsed_ms;
  bridge["upstream"] = redact_query(upstream);  // a query may hold a credential
  if (e.http_status) bridge["http_status"] = e.http_status;
  if (!e.detail.empty()) bridge["detail"] = e.detail;
  nlohmann::ordered_json err;
  err["code"] = e.jsonrpc_code();
  err["message"] = e.message();
  err["data"]["bridge"] = std::move(bridge);
  return error_envelope(raw_id, err);
}

bool upstream_unavailable(ErrorKind k) {
  switch (k) {
    case ErrorKind::kUnreachable:
    case ErrorKind::kRejected:
    case ErrorKind::kClosed:
    case ErrorKind::kProtocol:
    case ErrorKind::kTimeout:
    case ErrorKind::kUnresponsive:
      return true;
    default:
      return false;
  }
}

std::string jsonrpc_plain_error(std::string_view raw_id, int code, std::string_view message,
                                std::string_view data_json) {
  nlohmann::ordered_json err;
  err["code"] = code;
  err["message"] = message;
  if (!data_json.empty()) {
    auto data = nlohmann::ordered_json::parse(data_json, nullptr, false);
    if (!data.is_discarded()) err["data"] = std::move(data);
  }
  return error_envelope(raw_id, err);
}

}  // namespace msb
