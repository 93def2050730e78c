// The client side's view of one HTTP request and its response, between the
// connection layer (ClientConnection: sockets, parsing, deadlines; Asio) and
// the layers above it (Router, SessionHandler: MCP; no Asio). A request has
// been read whole (head and body, bounded by --max-body-size and
// --client-read-timeout) before it reaches a handler.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/request_policy.h"

namespace msb {

class EventLoop;

struct HttpRequest {
  HttpRequest() = default;
  // Move-only: a copy's `headers` would view the original's head_bytes.
  HttpRequest(const HttpRequest&) = delete;
  HttpRequest& operator=(const HttpRequest&) = delete;
  HttpRequest(HttpRequest&&) = default;
  HttpRequest& operator=(HttpRequest&&) = default;

  std::string method;  // "POST"
  std::string target;  // as sent: path and query
  std::string path;    // target without the query
  // The headers' bytes ("name\0value\0"...), viewed by `headers`
  // (RequestReader fills it; kept above the short-string size, so that a
  // moved request keeps them in place).
  std::string head_bytes;
  HeaderList headers;  // views into head_bytes
  std::string body;
  Clock::time_point arrival{};  // when its first byte came: a call's deadline starts here
  int version = 11;             // HTTP/1.x as 10 or 11
  bool keep_alive = true;       // HTTP/1.1 without Connection: close
  bool too_large = false;       // body above --max-body-size (read and dropped): answer 413
};

struct HttpResponse {
  int status = 200;
  std::string content_type;  // empty: no Content-Type (and no body)
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;  // Connection: close after this response
  // Streams only: the head may wait for the stream's first bytes (or its
  // end), so that a quick answer leaves in one write. A stream whose client
  // must see the head at once (a listen or GET stream) leaves it false.
  bool defer_head = false;

  void set_header(std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
  }
};

// One request's response, owned by its connection. respond() or
// start_stream() once, then for a stream any number of write() and one
// end() (whose bytes, if any, are the stream's last: they leave in the same
// write as the end). Thread-safe: a call running on another thread may use it; write()
// then blocks that thread until the bytes are written (bounded by
// --client-write-timeout). On the loop's own thread write() queues and
// returns at once. It returns false once the client is gone.
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual void respond(HttpResponse r) = 0;
  virtual void start_stream(HttpResponse head) = 0;
  virtual bool write(std::string data) = 0;
  virtual void end(std::string last = {}) = 0;
  // The client closed its connection (or it failed) before the response ended.
  virtual bool client_gone() const = 0;
  // Runs f (on the connection's loop) when the client goes away while the
  // response is still open; at once if it already has.
  virtual void on_gone(std::function<void()> f) = 0;
  // The loop that owns the connection: a call answering this exchange runs there.
  virtual EventLoop& loop() = 0;
  // Bytes written to this exchange's connection and not yet taken by its
  // socket. Thread-safe. A call relaying an upstream stream stops reading it
  // while this is above kCongested (backpressure: a slow client slows the
  // upstream instead of growing the bridge's memory).
  virtual uint64_t queued_bytes() const { return 0; }
  static constexpr uint64_t kCongested = 1u << 20;
};

// What serves requests: called on the connection's loop thread; must not
// block (work that waits runs later on the loop: a coroutine or a callback).
class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  virtual void handle(std::shared_ptr<Exchange> ex, HttpRequest&& req) = 0;
  // A request the connection layer refused before it was whole (malformed,
  // head or body too large): the answer to send, counted and logged.
  virtual HttpResponse refused(int status, std::string_view why) = 0;
  // No new requests are taken (drain): responses close their connection.
  virtual bool draining() const = 0;
};

}  // namespace msb
