#include <doctest/doctest.h>

#include <boost/beast/http/error.hpp>

#include <string>
#include <vector>

#include "mcp_sse_bridge/request_reader.h"

using msb::HttpRequest;
using msb::RequestReader;
namespace http = boost::beast::http;

namespace {

// Feeds `in` in slices of at most `slice` bytes, each from a scratch buffer
// that is overwritten afterwards (as the connection's loop-wide buffer is),
// keeping unparsed bytes as the connection does. Returns the request, moved
// out of the reader (which is then destroyed).
HttpRequest read(std::string_view in, size_t slice, uint64_t max_body = 1 << 20, bool* cont = nullptr) {
  RequestReader r(8192, max_body * 2, max_body);
  std::string held;
  for (size_t off = 0; off < in.size() && !r.is_done(); off += slice) {
    held.append(in.substr(off, slice));
    for (;;) {  // bounded: each pass consumes bytes or stops
      std::string scratch = held;
      boost::beast::error_code ec;
      size_t used = r.put(boost::asio::const_buffer(scratch.data(), scratch.size()), ec);
      if (ec && ec != http::error::need_more) FAIL("parse error: " << ec.message());
      held.erase(0, used);
      std::fill(scratch.begin(), scratch.end(), 'X');
      if (used == 0 || r.is_done() || held.empty()) break;
    }
  }
  REQUIRE(r.is_done());
  if (cont) *cont = r.expects_continue();
  return std::move(r.request());
}

}  // namespace

TEST_CASE("RequestReader: method, target, headers and body, however the bytes are sliced") {
  const std::string in =
      "POST /mcp?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
      "Mcp-Session-Id: abcdefghijklmnopqrstuvwxyz0123456789\r\nX-Short: a\r\nContent-Length: 13\r\n\r\n"
      "{\"jsonrpc\":1}";
  for (size_t slice : {in.size(), size_t(1), size_t(7), size_t(64)}) {
    CAPTURE(slice);
    HttpRequest req = read(in, slice);
    // Moved again, as the connection hands it on: the views still hold.
    HttpRequest moved = std::move(req);
    CHECK(moved.method == "POST");
    CHECK(moved.target == "/mcp?x=1");
    CHECK(moved.path == "/mcp");
    CHECK(moved.keep_alive);
    CHECK(moved.body == "{\"jsonrpc\":1}");
    REQUIRE(moved.headers.size() == 5);
    CHECK(moved.headers[0].name == "Host");
    CHECK(moved.headers[0].value == "127.0.0.1:8080");
    CHECK(moved.headers[2].value == "abcdefghijklmnopqrstuvwxyz0123456789");
    CHECK(moved.headers[3].name == "X-Short");
    CHECK(moved.headers[3].value == "a");
    CHECK(msb::find_header(moved.headers, "content-type").value_or("") == "application/json");
  }
}

TEST_CASE("RequestReader: a chunked body, Connection: close, a body over the kept size") {
  HttpRequest c = read(
      "POST /mcp HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
      3);
  CHECK(c.body == "hello world");
  CHECK_FALSE(c.keep_alive);
  CHECK_FALSE(c.too_large);

  HttpRequest big = read("POST /mcp HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\n01234567890123456789", 5, 10);
  CHECK(big.too_large);
  CHECK(big.body.empty());
  CHECK(big.keep_alive);
}

TEST_CASE("RequestReader: a chunked body's trailer is ignored and leaves the head's views intact") {
  // The trailer is larger than the head's buffer: appended there, it would
  // move the bytes the header views point into.
  std::string trailer = "X-Trailer: " + std::string(600, 't') + "\r\nContent-Type: text/plain\r\n";
  for (size_t slice : {size_t(1), size_t(7), size_t(4096)}) {
    CAPTURE(slice);
    HttpRequest r = read("POST /mcp HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n"
                         "2\r\n{}\r\n0\r\n" + trailer + "\r\n",
                         slice);
    CHECK(r.body == "{}");
    REQUIRE(r.headers.size() == 4);
    CHECK(r.headers[0].value == "h");
    CHECK(msb::find_header(r.headers, "Content-Type").value_or("") == "application/json");
    CHECK_FALSE(msb::find_header(r.headers, "X-Trailer"));
    CHECK(r.head_bytes.find("ttt") == std::string::npos);
  }
}

TEST_CASE("RequestReader: 100-continue only for HTTP/1.1") {
  bool cont = false;
  (void)read("POST /mcp HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n{}", 1000, 1 << 20, &cont);
  CHECK(cont);
  (void)read("POST /mcp HTTP/1.0\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}", 1000, 1 << 20, &cont);
  CHECK_FALSE(cont);
  HttpRequest get = read("GET /healthz HTTP/1.0\r\nHost: h\r\n\r\n", 1000);
  CHECK(get.method == "GET");
  CHECK_FALSE(get.keep_alive);
  CHECK(get.headers.size() == 1);
}

TEST_CASE("RequestReader: a NUL or another control byte in a header is a parse error (the buffer's separator)") {
  for (std::string bad : {std::string("X-A: a\0b\r\n", 11), std::string("X-\0A: ab\r\n", 11), std::string("X-A: a\x01b\r\n")}) {
    std::string in = "POST /mcp HTTP/1.1\r\nHost: h\r\n" + bad + "Content-Length: 0\r\n\r\n";
    RequestReader r(8192, 1 << 20, 1 << 20);
    boost::beast::error_code ec;
    r.put(boost::asio::const_buffer(in.data(), in.size()), ec);
    CHECK(ec);
    CHECK_FALSE(r.is_done());
  }
}

TEST_CASE("RequestReader: a Transfer-Encoding that does not end in chunked is a parse error; chunked is read") {
  // Its body's length is unknown (RFC 9112 §6.3): read as no body, its bytes
  // would be taken for the next request.
  for (std::string te : {"gzip", "chunked, gzip", "identity"}) {
    CAPTURE(te);
    std::string in = "POST /mcp HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + te + "\r\n\r\n{\"a\":1}";
    RequestReader r(8192, 1 << 20, 1 << 20);
    boost::beast::error_code ec;
    r.put(boost::asio::const_buffer(in.data(), in.size()), ec);
    CHECK(ec == http::error::bad_transfer_encoding);
  }
  HttpRequest ok = read("POST /mcp HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 5);
  CHECK(ok.body == "{}");
  CHECK(ok.version == 11);
  CHECK(read("GET /healthz HTTP/1.0\r\nHost: h\r\n\r\n", 1000).version == 10);
}
