#include "mcp_sse_bridge/jsonrpc.h"

#include <simdjson.h>

#include <nlohmann/json.hpp>

namespace msb {

namespace {

simdjson::dom::parser& thread_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

// Big documents get a parser of their own so that a thread does not keep a
// 64 MiB tape alive after one large message.
constexpr size_t kSharedParserMax = 1 << 20;

bool classify(simdjson::dom::element el, Message& m, std::string* why) {
  using namespace simdjson;
  dom::object obj;
  if (el.get_object().get(obj) != SUCCESS) {
    if (why) *why = "message is not a JSON object";
    return false;
  }
  std::string_view version;
  if (obj["jsonrpc"].get_string().get(version) != SUCCESS || version != "2.0") {
    if (why) *why = "missing or wrong \"jsonrpc\": \"2.0\"";
    return false;
  }
  dom::element id_el;
  bool has_id = obj["id"].get(id_el) == SUCCESS;
  if (has_id) {
    auto t = id_el.type();
    if (t != dom::element_type::STRING && t != dom::element_type::INT64 &&
        t != dom::element_type::UINT64 && !(t == dom::element_type::NULL_VALUE)) {
      if (why) *why = "id must be a string or an integer";
      return false;
    }
    m.id = simdjson::minify(id_el);
  }
  std::string_view method;
  auto method_res = obj["method"];
  if (method_res.error() == SUCCESS) {
    if (method_res.get_string().get(method) != SUCCESS) {
      if (why) *why = "method must be a string";
      return false;
    }
    m.method = std::string(method);
    if (has_id) {
      if (id_el.is_null()) {
        if (why) *why = "request id must not be null";
        return false;
      }
      m.kind = MsgKind::kRequest;
    } else {
      m.kind = MsgKind::kNotification;
    }
    dom::object params;
    if (obj["params"].get_object().get(params) == SUCCESS) {
      dom::element tok;
      if (m.kind == MsgKind::kRequest) {
        if (params.at_pointer("/_meta/progressToken").get(tok) == SUCCESS)
          m.progress_token = simdjson::minify(tok);
      } else if (m.method == "notifications/progress") {
        if (params["progressToken"].get(tok) == SUCCESS) m.progress_token = simdjson::minify(tok);
      } else if (m.method == "notifications/cancelled") {
        if (params["requestId"].get(tok) == SUCCESS) m.cancel_id = simdjson::minify(tok);
      }
    }
    return true;
  }
  bool has_result = obj["result"].error() == SUCCESS;
  bool has_error = obj["error"].error() == SUCCESS;
  if (has_id && (has_result != has_error)) {
    m.kind = MsgKind::kResponse;
    m.is_error = has_error;
    return true;
  }
  if (why) *why = "neither a request, a notification nor a response";
  return false;
}

simdjson::error_code parse_doc(simdjson::dom::parser& p, std::string& text,
                               simdjson::dom::element& out) {
  if (text.capacity() - text.size() < simdjson::SIMDJSON_PADDING)
    text.reserve(text.size() + simdjson::SIMDJSON_PADDING);
  return p.parse(text.data(), text.size(), false).get(out);
}

}  // namespace

ParseResult parse_body(std::string body) {
  ParseResult r;
  std::unique_ptr<simdjson::dom::parser> own;
  simdjson::dom::parser* p = &thread_parser();
  if (body.size() > kSharedParserMax) p = (own = std::make_unique<simdjson::dom::parser>()).get();
  simdjson::dom::element root;
  if (auto err = parse_doc(*p, body, root); err != simdjson::SUCCESS) {
    r.error_code = -32700;
    r.error_message = std::string("Parse error: ") + simdjson::error_message(err);
    return r;
  }
  std::string why;
  if (root.is_array()) {
    r.batch = true;
    simdjson::dom::array arr;
    if (root.get_array().get(arr) != simdjson::SUCCESS) arr = {};  // is_array() was checked
    for (auto el : arr) {
      Message m;
      if (!classify(el, m, &why)) {
        r.error_code = -32600;
        r.error_message = "Invalid Request: " + why;
        return r;
      }
      m.raw = simdjson::minify(el);
      r.messages.push_back(std::move(m));
    }
    if (r.messages.empty()) {
      r.error_code = -32600;
      r.error_message = "Invalid Request: empty batch";
      return r;
    }
  } else {
    Message m;
    if (!classify(root, m, &why)) {
      r.error_code = -32600;
      r.error_message = "Invalid Request: " + why;
      return r;
    }
    m.raw = std::move(body);
    r.messages.push_back(std::move(m));
  }
  r.ok = true;
  return r;
}

bool parse_message(std::string text, Message& out, std::string* why) {
  std::unique_ptr<simdjson::dom::parser> own;
  simdjson::dom::parser* p = &thread_parser();
  if (text.size() > kSharedParserMax) p = (own = std::make_unique<simdjson::dom::parser>()).get();
  simdjson::dom::element root;
  if (auto err = parse_doc(*p, text, root); err != simdjson::SUCCESS) {
    if (why) *why = std::string("invalid JSON: ") + simdjson::error_message(err);
    return false;
  }
  if (!classify(root, out, why)) return false;
  out.raw = std::move(text);
  return true;
}

bool is_read_only_method(std::string_view m) {
  return m == "ping" || m == "tools/list" || m == "resources/list" ||
         m == "resources/templates/list" || m == "prompts/list" || m == "resources/read" ||
         m == "prompts/get" || m == "completion/complete";
}

std::string json_quote(std::string_view s) {
  return nlohmann::json(std::string(s)).dump(-1, ' ', false,
                                             nlohmann::json::error_handler_t::replace);
}

}  // namespace msb
