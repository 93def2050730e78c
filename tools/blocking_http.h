// BlockingHttp: the bench clients' HTTP/1.1 connection, as cheap as a client
// can be, so that the client's own CPU does not decide a bridged/direct ratio
// (#12). A blocking socket (TCP_NODELAY) with a 50 ms receive timeout slice:
// one send() per request, one recv() per piece read, no poll, no event loop,
// no timer. Both of tools/bench's paths use it (DirectClient to the legacy
// upstream, BridgeClient to the bridge), so both pay the same client cost.
//
// Enough HTTP for the bench: a status line, headers, Content-Length,
// chunked or close-delimited bodies, keep-alive with a reconnect when the
// server closed. Not for untrusted servers (heads are bounded, nothing else).
// One thread at a time.
#pragma once

#include <string>
#include <string_view>

#include "mcp_sse_bridge/deadline.h"

namespace msb_tools {

class BlockingHttp {
 public:
  struct Head {
    int status = 0;
    std::string session_id;  // Mcp-Session-Id, if any
    bool close = false;      // Connection: close
  };

  BlockingHttp(std::string host, int port) : host_(std::move(host)), port_(port) {}
  ~BlockingHttp() { disconnect(); }
  BlockingHttp(const BlockingHttp&) = delete;
  BlockingHttp& operator=(const BlockingHttp&) = delete;

  // Sends a request (the "Host" line and, when `body` is set or the method is
  // not GET, Content-Length are added) and reads the response head. A kept
  // connection that the server closed meanwhile is replaced and the request
  // sent once more. False on any failure or when d passes.
  bool request(std::string_view method, std::string_view target, std::string_view headers,
               std::string_view body, msb::Deadline d, Head& head);
  // Appends the next decoded body bytes to out. 1: the body is complete;
  // 0: more to come; -1: failure or d passed (the connection is closed).
  int read_body(std::string& out, msb::Deadline d);
  // The whole body, at most max bytes; false on failure.
  bool read_full_body(std::string& out, size_t max, msb::Deadline d);
  void disconnect();

 private:
  bool connect(msb::Deadline d);
  // Reads more raw bytes into buf_; false on failure, end or d passed.
  bool fill(msb::Deadline d);
  void compact();

  std::string host_;
  int port_;
  int fd_ = -1;
  std::string req_;  // the request being sent (its buffer reused)
  std::string buf_;  // raw bytes read, from pos_
  size_t pos_ = 0;
  bool chunked_ = false;
  bool until_close_ = false;
  bool in_body_ = false;
  bool keep_ = false;        // the last response allowed keep-alive
  size_t left_ = 0;          // Content-Length bytes or bytes of the current chunk left
  bool chunk_data_ = false;  // inside a chunk's data
  bool after_data_ = false;  // a chunk's data ended: its CRLF is next
  bool trailers_ = false;    // after the last chunk: trailer lines until an empty one
};

}  // namespace msb_tools
