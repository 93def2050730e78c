// RequestReader: reads one client HTTP/1.1 request with Beast's parser
// (basic_parser: the request line, header and body syntax, chunked coding,
// header_limit, body_limit) straight into an HttpRequest, without Beast's
// header container: the header names and values are copied once into one
// buffer of the request (HttpRequest::head_bytes) and the request's header
// list views them. The body goes to HttpRequest::body; a body above
// `max_body` is read and dropped (too_large) up to the parser's body_limit.
// One request per reader: make a new one for the next request.
#pragma once

#include <boost/beast/http/basic_parser.hpp>

#include <cstdint>

#include "mcp_sse_bridge/http_exchange.h"

namespace msb {

class RequestReader : public boost::beast::http::basic_parser<true> {
 public:
  // header_limit: the head's size bound; body_limit: the largest body read
  // at all (a larger one is error::body_limit); max_body: the largest kept.
  RequestReader(uint32_t header_limit, uint64_t body_limit, uint64_t max_body);

  // The request so far (method, target and headers once is_header_done()).
  HttpRequest& request() { return req_; }
  // An HTTP/1.1 client asked for `100 Continue` (valid once is_header_done()).
  bool expects_continue() const { return expect_continue_; }

 private:
  using string_view = boost::beast::string_view;
  using error_code = boost::beast::error_code;
  void on_request_impl(boost::beast::http::verb, string_view method, string_view target, int version,
                       error_code& ec) override;
  void on_response_impl(int, string_view, int, error_code&) override {}
  void on_field_impl(boost::beast::http::field f, string_view name, string_view value,
                     error_code& ec) override;
  void on_header_impl(error_code& ec) override;
  void on_body_init_impl(const boost::optional<uint64_t>& content_length, error_code& ec) override;
  size_t on_body_impl(string_view body, error_code& ec) override;
  void on_chunk_header_impl(uint64_t, string_view, error_code&) override {}
  size_t on_chunk_body_impl(uint64_t, string_view body, error_code& ec) override;
  void on_finish_impl(error_code&) override {}
  void keep(string_view body);

  HttpRequest req_;
  uint64_t max_body_;
  int version_ = 11;
  bool expect_continue_ = false;
  bool transfer_encoding_ = false;  // a Transfer-Encoding field was sent
};

}  // namespace msb
