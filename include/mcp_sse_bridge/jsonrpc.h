// JSON-RPC 2.0 message classification with simdjson (validating DOM parser).
//
// The bridge forwards message bytes verbatim; it only needs to know what a
// message is (request / notification / response), its id exactly as written,
// its method, and a few params. Ids are kept as their minified JSON text
// (`1`, `"abc"`), so they can be re-emitted byte-for-byte and compared.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace msb {

enum class MsgKind {
  kRequest,       // method + id
  kNotification,  // method, no id
  kResponse,      // id + result or error
};

struct Message {
  MsgKind kind = MsgKind::kNotification;
  std::string raw;        // this message's JSON text (verbatim for a single message)
  std::string id;         // minified id text; empty for notifications
  std::string method;     // requests and notifications
  std::string progress_token;  // raw: params._meta.progressToken (requests) or
                               // params.progressToken (notifications/progress)
  std::string cancel_id;  // raw: params.requestId of notifications/cancelled
  // Requests: params._meta["io.modelcontextprotocol/protocolVersion"] when it
  // is a string (the 2026-07-28 era's per-request version); else empty.
  std::string meta_protocol_version;
  bool is_error = false;  // response carrying `error`
};

struct ParseResult {
  bool ok = false;
  int error_code = 0;  // -32700 parse error, -32600 invalid request
  std::string error_message;
  bool batch = false;
  std::vector<Message> messages;
  // When refused (-32600): the ids that could be read from the refused
  // message, or from every element of a refused batch, so that each request
  // is answered by its id (JSON-RPC 2.0 §5: null only when the id cannot be
  // detected).
  std::vector<std::string> error_ids;
};

// Parses a client body: one message or (2025-03-26) a non-empty batch array.
// Takes the body by value: it is moved into Message::raw for single messages.
ParseResult parse_body(std::string body);

// Parses one message received from the upstream. Returns false when it is not
// a valid JSON-RPC message.
bool parse_message(std::string text, Message& out, std::string* why = nullptr);

// Methods that change nothing upstream and may be retried on a fresh session
// after a failure (DESIGN §2.5).
bool is_read_only_method(std::string_view method);

// Quotes a string as a JSON string literal.
std::string json_quote(std::string_view s);

// A JSON-RPC request with id `id` (JSON text), `method` and `params` (JSON
// text; empty: none).
std::string make_request(std::string_view id, std::string_view method, std::string_view params);

// Returns `raw` (a JSON-RPC message) with its id replaced by `id_json`.
// nullopt when `raw` is not a JSON object. Splices the text (no parse of
// the rest: a 64 MiB result costs one copy) when `raw` is valid JSON, as
// parse_message leaves it.
std::optional<std::string> with_id(const std::string& raw, std::string_view id_json);

// Where the value of a top-level member of a JSON object text sits, found
// by a scan that tracks only strings and nesting (the text must be valid
// JSON; nothing is allocated). kUnsure: the object has a key written with
// escapes (which might spell `key`), or the text is not an object as
// expected; the caller then parses it properly.
struct JsonMember {
  enum class Status { kFound, kAbsent, kUnsure } status = Status::kUnsure;
  size_t begin = 0, end = 0;  // the value's bytes [begin, end) when kFound
  size_t open = 0;            // the object's '{' (kFound, kAbsent)
  bool empty = false;         // the object has no member at all
};
JsonMember find_member(std::string_view object_json, std::string_view key);
// The same for several keys in one scan: out[k] for the k-th key. False
// (every entry kUnsure) when the text cannot be scanned with certainty.
bool find_members(std::string_view object_json, std::initializer_list<std::string_view> keys,
                  JsonMember* out);

}  // namespace msb
