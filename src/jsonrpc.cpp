#include "mcp_sse_bridge/jsonrpc.h"

#include <simdjson.h>

#include <charconv>
#include <cstring>
#include <utility>

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
  // One pass over the members (a lookup per key would scan the object five
  // times). A repeated jsonrpc, id, method or params is refused: parsers
  // disagree on which one counts (simdjson's lookup and this loop take the
  // first, Python, JavaScript and nlohmann the last), and the body goes
  // upstream verbatim, so the bridge would route, log and retry one request
  // while the server ran another.
  dom::element version_el, id_el, method_el, params_el;
  bool has_version = false, has_id = false, has_method = false, has_params = false;
  bool has_result = false, has_error = false;
  std::string_view dup;
  auto take = [&dup](std::string_view k, bool& seen, dom::element& slot, dom::element value) {
    if (seen) dup = k;
    seen = true;
    slot = value;
  };
  for (dom::key_value_pair kv : obj) {
    std::string_view k = kv.key;
    if (k.size() < 2 || k.size() > 7) continue;
    switch (k[0]) {
      case 'j':
        if (k == "jsonrpc") take(k, has_version, version_el, kv.value);
        break;
      case 'i':
        if (k == "id") take(k, has_id, id_el, kv.value);
        break;
      case 'm':
        if (k == "method") take(k, has_method, method_el, kv.value);
        break;
      case 'p':
        if (k == "params") take(k, has_params, params_el, kv.value);
        break;
      case 'r':
        has_result = has_result || k == "result";
        break;
      case 'e':
        has_error = has_error || k == "error";
        break;
      default:
        break;
    }
  }
  // The id first, so that a refusal of the rest can still name it.
  if (has_id && dup != "id") {
    auto t = id_el.type();
    if (t != dom::element_type::STRING && t != dom::element_type::INT64 &&
        t != dom::element_type::UINT64 && !(t == dom::element_type::NULL_VALUE)) {
      if (why) *why = "id must be a string or an integer";
      return false;
    }
    // An integer id (the usual kind) is its decimal text, as minify would
    // write it, without minify's string builder.
    char num[24];
    int64_t i64;
    uint64_t u64;
    if (t == dom::element_type::INT64 && id_el.get_int64().get(i64) == SUCCESS)
      m.id.assign(num, std::to_chars(num, num + sizeof num, i64).ptr);
    else if (t == dom::element_type::UINT64 && id_el.get_uint64().get(u64) == SUCCESS)
      m.id.assign(num, std::to_chars(num, num + sizeof num, u64).ptr);
    else
      m.id = simdjson::minify(id_el);
  }
  if (!dup.empty()) {
    if (why) *why = "duplicate \"" + std::string(dup) + "\" member";
    return false;
  }
  std::string_view version;
  if (!has_version || version_el.get_string().get(version) != SUCCESS || version != "2.0") {
    if (why) *why = "missing or wrong \"jsonrpc\": \"2.0\"";
    return false;
  }
  std::string_view method;
  if (has_method) {
    if (method_el.get_string().get(method) != SUCCESS) {
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
    if (has_params && params_el.get_object().get(params) == SUCCESS) {
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
    size_t index = 0;
    for (auto el : arr) {
      ++index;
      Message m;
      std::string el_why;
      if (!classify(el, m, &el_why)) {
        // The first invalid element names the refusal; every element whose
        // id could be read is answered by it (below).
        if (r.error_message.empty()) {
          r.error_code = -32600;
          r.error_message = "Invalid Request: element " + std::to_string(index) + ": " + el_why;
        }
      } else {
        m.raw = simdjson::minify(el);
      }
      if (!m.id.empty() && m.id != "null") r.error_ids.push_back(m.id);
      r.messages.push_back(std::move(m));
    }
    if (!r.error_message.empty()) {
      r.messages.clear();
      return r;
    }
    r.error_ids.clear();
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
      if (!m.id.empty() && m.id != "null") r.error_ids.push_back(m.id);
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
  bool seen_version = false, seen_method = false, seen_params = false;
  std::string_view params_raw;
  // As classify(): a repeated jsonrpc, id, method or params is refused, so
  // that a message reads the same whatever its size.
  for (auto field : obj) {
    std::string_view key;
    if (field.unescaped_key().get(key) != SUCCESS) {
      if (why) *why = "invalid JSON";
      return false;
    }
    auto value = field.value();
    if ((key == "jsonrpc" && std::exchange(seen_version, true)) || (key == "id" && has_id) ||
        (key == "method" && std::exchange(seen_method, true)) ||
        (key == "params" && std::exchange(seen_params, true))) {
      if (why) *why = "duplicate \"" + std::string(key) + "\" member";
      return false;
    }
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

namespace {

bool json_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

size_t skip_ws(std::string_view s, size_t i) {
  while (i < s.size() && json_ws(s[i])) ++i;
  return i;
}

// The end of the string starting at s[i] == '"' (one past its closing
// quote), or npos. `escaped`: whether it contains a backslash.
size_t skip_key(std::string_view s, size_t i, bool* escaped) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      *escaped = true;
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// The same for a value string, found with memchr (a result's text may be
// megabytes): a quote preceded by an odd number of backslashes is escaped.
size_t skip_string(std::string_view s, size_t i) {
  for (++i; i < s.size();) {
    const void* q = std::memchr(s.data() + i, '"', s.size() - i);
    if (!q) return std::string_view::npos;
    size_t at = static_cast<const char*>(q) - s.data();
    size_t bs = 0;
    while (at - bs > i && s[at - bs - 1] == '\\') ++bs;
    if (bs % 2 == 0) return at + 1;
    i = at + 1;
  }
  return std::string_view::npos;
}

// The end of the value starting at s[i], or npos.
size_t skip_value(std::string_view s, size_t i) {
  if (i >= s.size()) return std::string_view::npos;
  if (s[i] == '"') return skip_string(s, i);
  if (s[i] == '{' || s[i] == '[') {
    size_t depth = 0;
    while (i < s.size()) {
      char c = s[i];
      if (c == '"') {
        i = skip_string(s, i);
        if (i == std::string_view::npos) return i;
        continue;
      }
      if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
      ++i;
    }
    return std::string_view::npos;
  }
  size_t b = i;  // number, true, false, null
  while (i < s.size() && !json_ws(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']') ++i;
  return i == b ? std::string_view::npos : i;
}

}  // namespace

bool find_members(std::string_view s, std::initializer_list<std::string_view> keys,
                  JsonMember* out) {
  size_t n = keys.size();
  for (size_t k = 0; k < n; ++k) out[k] = JsonMember{};
  auto unsure = [&] {
    for (size_t k = 0; k < n; ++k) out[k] = JsonMember{};
    return false;
  };
  size_t i = skip_ws(s, 0);
  if (i >= s.size() || s[i] != '{') return unsure();
  size_t open = i;
  i = skip_ws(s, i + 1);
  bool empty = i < s.size() && s[i] == '}';
  bool escaped_key = false;
  if (!empty) {
    for (;;) {
      if (i >= s.size() || s[i] != '"') return unsure();
      bool esc = false;
      size_t kend = skip_key(s, i, &esc);
      if (kend == std::string_view::npos) return unsure();
      escaped_key = escaped_key || esc;
      std::string_view name = s.substr(i + 1, kend - i - 2);
      i = skip_ws(s, kend);
      if (i >= s.size() || s[i] != ':') return unsure();
      i = skip_ws(s, i + 1);
      size_t vend = skip_value(s, i);
      if (vend == std::string_view::npos) return unsure();
      size_t k = 0;
      for (auto key : keys) {
        if (!esc && name == key) {
          if (out[k].status == JsonMember::Status::kFound) return unsure();  // duplicate key
          out[k].status = JsonMember::Status::kFound;
          out[k].begin = i;
          out[k].end = vend;
        }
        ++k;
      }
      i = skip_ws(s, vend);
      if (i < s.size() && s[i] == ',') {
        i = skip_ws(s, i + 1);
        continue;
      }
      if (i < s.size() && s[i] == '}') break;
      return unsure();
    }
  }
  if (escaped_key) return unsure();
  for (size_t k = 0; k < n; ++k) {
    out[k].open = open;
    out[k].empty = empty;
    if (out[k].status != JsonMember::Status::kFound) out[k].status = JsonMember::Status::kAbsent;
  }
  return true;
}

JsonMember find_member(std::string_view object_json, std::string_view key) {
  JsonMember m;
  find_members(object_json, {key}, &m);
  return m;
}

std::optional<std::string> with_id(const std::string& raw, std::string_view id_json) {
  auto m = find_member(raw, "id");
  if (m.status == JsonMember::Status::kFound && !id_json.empty()) {
    std::string out;
    out.reserve(raw.size() - (m.end - m.begin) + id_json.size());
    out.append(raw, 0, m.begin).append(id_json).append(raw, m.end);
    return out;
  }
  auto j = nlohmann::ordered_json::parse(raw, nullptr, false);
  auto id = nlohmann::ordered_json::parse(id_json, nullptr, false);
  if (j.is_discarded() || !j.is_object() || id.is_discarded()) return std::nullopt;
  j["id"] = std::move(id);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace msb
