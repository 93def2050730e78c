// RefServer: the minimal MCP upstreams that mcp-bridge-cpu measures its two
// proxies against, one implementation for both so that neither proxy is
// charged for a slower or more eager upstream: one epoll thread, keep-alive,
// every answer written in the same turn as the request is read.
//
//   kStreamable  nginx's upstream: each POST is answered at once with a JSON
//                body (Content-Length).
//   kLegacySse   the bridge's upstream, the 2024-11-05 HTTP+SSE transport as
//                the TS and Python SDKs serve it from one event loop:
//                `GET /sse` opens a chunked `text/event-stream` that starts
//                with the `endpoint` event; `POST /message?sessionId=N` gets
//                `202 Accepted`, and a request's answer follows on the stream
//                in the same turn (the 202 first, as the TS SDK writes them).
//
// Answers: `initialize` an initialize result, `ping` `{}`, a message without
// an id nothing (Streamable: 202 with no body), any other request a
// tools/call-shaped result (`hello`). Binds 127.0.0.1 only.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

namespace msb_tools {

class RefServer {
 public:
  enum class Mode { kStreamable, kLegacySse };
  explicit RefServer(Mode mode) : mode_(mode) {}
  ~RefServer() { stop(); }
  RefServer(const RefServer&) = delete;
  RefServer& operator=(const RefServer&) = delete;

  // Listens on 127.0.0.1, an ephemeral port; returns it (-1 on failure).
  int start();
  void stop();
  // Requests answered (POSTs, both modes).
  uint64_t answered() const { return answered_.load(); }

 private:
  struct Conn {
    std::string in, out;
    bool want_out = false;
    uint64_t stream_of = 0;  // kLegacySse: the session whose SSE stream this is
  };

  void loop();
  void on_readable(int fd, char* buf, size_t cap);
  // Parses every complete request in c.in; answers go to the out buffers.
  // False: the connection is to be closed.
  bool serve_requests(int fd, Conn& c);
  void answer_streamable(std::string_view body, std::string& out);
  void answer_legacy(std::string_view target, std::string_view body, std::string& out);
  void open_stream(int fd, Conn& c);
  void flush(int fd);
  void close_conn(int fd);

  Mode mode_;
  int lfd_ = -1, ep_ = -1;
  std::thread th_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> answered_{0};
  std::unordered_map<int, Conn> conns_;
  // kLegacySse: session id -> the fd of its open SSE stream.
  std::unordered_map<uint64_t, int> streams_;
  uint64_t next_session_ = 1;
  int dirty_stream_ = -1;  // a stream written to in this turn, flushed after the 202
};

}  // namespace msb_tools
