#include "mcp_sse_bridge/request_reader.h"

#include <algorithm>

#include "mcp_sse_bridge/text_util.h"

namespace msb {

namespace http = boost::beast::http;

RequestReader::RequestReader(uint32_t header_limit, uint64_t body_limit, uint64_t max_body)
    : max_body_(max_body) {
  this->header_limit(header_limit);
  this->body_limit(body_limit);
  eager(true);
}

void RequestReader::on_request_impl(http::verb, string_view method, string_view target, int version,
                                    error_code&) {
  req_.method.assign(method.data(), method.size());
  req_.target.assign(target.data(), target.size());
  req_.path.assign(req_.target, 0, req_.target.find('?'));
  version_ = version;
  req_.version = version;
}

// Beast hands over each field as soon as its line is complete, with views
// into that put()'s input: copied at once, as "name\0value\0" (the parser
// admits no NUL in either), and indexed once the head is complete.
void RequestReader::on_field_impl(http::field f, string_view name, string_view value, error_code&) {
  // Beast hands a chunked body's trailer fields here too, after the head:
  // ignored (nothing the bridge reads is a trailer), and never appended, which
  // could move head_bytes under the views already taken into it.
  if (is_header_done()) return;
  if (req_.head_bytes.capacity() < 256) req_.head_bytes.reserve(256);  // a usual head: one allocation
  req_.head_bytes.append(name.data(), name.size()).push_back('\0');
  req_.head_bytes.append(value.data(), value.size()).push_back('\0');
  if (f == http::field::expect && iequals({value.data(), value.size()}, "100-continue"))
    expect_continue_ = true;
  if (f == http::field::transfer_encoding) transfer_encoding_ = true;
}

void RequestReader::on_header_impl(error_code& ec) {
  // A Transfer-Encoding whose last coding is not chunked leaves the body's
  // length unknown: Beast reads no body then, and the body's bytes would be
  // taken for the next request. RFC 9112 §6.3: 400, and the connection closed.
  if (transfer_encoding_ && !chunked()) {
    ec = http::error::bad_transfer_encoding;
    return;
  }
  // Above the short-string size (see HttpRequest::head_bytes), so that
  // moving the request keeps the bytes, and the views, where they are.
  if (req_.head_bytes.capacity() < 64) req_.head_bytes.reserve(64);
  std::string_view rest = req_.head_bytes;
  req_.headers.reserve(16);
  while (!rest.empty()) {
    size_t n = rest.find('\0');
    size_t v = n == std::string_view::npos ? n : rest.find('\0', n + 1);
    if (v == std::string_view::npos) break;  // (cannot happen: every field adds two)
    req_.headers.push_back(HeaderView{rest.substr(0, n), rest.substr(n + 1, v - n - 1)});
    rest.remove_prefix(v + 1);
  }
  req_.headers.index();
  req_.keep_alive = keep_alive();
  expect_continue_ = expect_continue_ && version_ == 11;  // HTTP/1.0 clients get no 100
}

void RequestReader::on_body_init_impl(const boost::optional<uint64_t>& content_length, error_code&) {
  if (content_length && *content_length <= max_body_) req_.body.reserve(*content_length);
}

void RequestReader::keep(string_view body) {
  if (req_.too_large) return;
  if (req_.body.size() + body.size() > max_body_) {
    req_.too_large = true;  // read on and dropped: answered 413
    std::string().swap(req_.body);
    return;
  }
  req_.body.append(body.data(), body.size());
}

size_t RequestReader::on_body_impl(string_view body, error_code&) {
  keep(body);
  return body.size();
}

size_t RequestReader::on_chunk_body_impl(uint64_t, string_view body, error_code&) {
  keep(body);
  return body.size();
}

}  // namespace msb
