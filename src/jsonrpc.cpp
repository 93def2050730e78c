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
        dom::object meta;
        if (params["_meta"].get_object().get(meta) == SUCCESS) {
          if (meta["progressToken"].get(tok) == SUCCESS) m.progress_token = simdjson::minify(tok);
          std::string_view v;
          if (meta["io.modelcontextprotocol/protocolVersion"].get_string().get(v) == SUCCESS)
            m.meta_protocol_version = std::string(v.substr(0, 64));
        }
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

// Classifies a large upstream message with the on-demand parser: it reads the
// top-level keys and skips the bulk (a 64 MiB result) without building a
// tape or copying its strings. What it skips is not validated; the bytes are
// forwarded verbatim and the client parses them anyway. Small messages take
// the validating DOM path.
bool classify_large(std::string& text, Message& m, std::string* why) {
  using namespace simdjson;
  if (text.capacity() - text.size() < SIMDJSON_PADDING) text.reserve(text.size() + SIMDJSON_PADDING);
  ondemand::parser parser;
  ondemand::document doc;
  ondemand::object obj;
  if (parser.iterate(text.data(), text.size(), text.capacity()).get(doc) != SUCCESS ||
      doc.get_object().get(obj) != SUCCESS) {
    if (why) *why = "message is not a JSON object";
    return false;
  }
  bool has_id = false, has_result = false, has_error = false, version_ok = false;
  std::string_view params_raw;
  for (auto field : obj) {
    std::string_view key;
    if (field.unescaped_key().get(key) != SUCCESS) {
      if (why) *why = "invalid JSON";
      return false;
    }
    auto value = field.value();
    if (key == "jsonrpc") {
      std::string_view v;
      version_ok = value.get_string().get(v) == SUCCESS && v == "2.0";
    } else if (key == "id") {
      std::string_view raw;
      if (value.raw_json_token().get(raw) != SUCCESS) return false;
      while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\n' || raw.back() == '\r' || raw.back() == '\t'))
        raw.remove_suffix(1);
      m.id = std::string(raw);
      has_id = true;
    } else if (key == "method") {
      std::string_view v;
      if (value.get_string().get(v) != SUCCESS) return false;
      m.method = std::string(v);
    } else if (key == "result") {
      has_result = true;
    } else if (key == "error") {
      has_error = true;
    } else if (key == "params") {
      ondemand::object po;  // params is an object (or absent) in MCP
      if (value.get_object().get(po) != SUCCESS || po.raw_json().get(params_raw) != SUCCESS)
        return false;
    }
  }
  if (!version_ok) {
    if (why) *why = "missing or wrong \"jsonrpc\": \"2.0\"";
    return false;
  }
  if (!m.method.empty()) {
    m.kind = has_id ? MsgKind::kRequest : MsgKind::kNotification;
    if (!params_raw.empty() && (m.method == "notifications/progress" || m.kind == MsgKind::kRequest)) {
      // Small enough in practice; take the exact token from a DOM parse of params.
      auto j = nlohmann::json::parse(params_raw, nullptr, false);
      if (!j.is_discarded() && j.is_object()) {
        if (m.kind == MsgKind::kRequest && j.contains("_meta") && j["_meta"].is_object() &&
            j["_meta"].contains("progressToken"))
          m.progress_token = j["_meta"]["progressToken"].dump();
        else if (m.kind == MsgKind::kNotification && j.contains("progressToken"))
          m.progress_token = j["progressToken"].dump();
      }
    }
    return true;
  }
  if (has_id && has_result != has_error) {
    m.kind = MsgKind::kResponse;
    m.is_error = has_error;
    return true;
  }
  if (why) *why = "neither a request, a notification nor a response";
  return false;
}

bool parse_message(std::string text, Message& out, std::string* why) {
  if (text.size() > kSharedParserMax) {
    if (!classify_large(text, out, why)) return false;
    out.raw = std::move(text);
    return true;
  }
  simdjson::dom::element root;  // small here: large messages took classify_large
  if (auto err = parse_doc(thread_parser(), text, root); err != simdjson::SUCCESS) {
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

std::string make_request(std::string_view id, std::string_view method, std::string_view params) {
  std::string s = R"({"jsonrpc":"2.0","id":)";
  s.append(id).append(R"(,"method":)").append(json_quote(method));
  if (!params.empty()) s.append(R"(,"params":)").append(params);
  s.push_back('}');
  return s;
}

std::optional<std::string> with_id(const std::string& raw, std::string_view id_json) {
  auto j = nlohmann::ordered_json::parse(raw, nullptr, false);
  auto id = nlohmann::ordered_json::parse(id_json, nullptr, false);
  if (j.is_discarded() || !j.is_object() || id.is_discarded()) return std::nullopt;
  j["id"] = std::move(id);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace msb
