// ClientConnection: one client HTTP/1.1 connection (plain or TLS) on one
// event loop. Beast's request parser reads each request whole, under
// deadlines that are loop timers:
//   --client-read-timeout   the TLS handshake, and a request's head + body
//                           from its first byte (slowloris clients are cut)
//   --client-idle-timeout   keep-alive wait for the next request
//   --client-write-timeout  each write must progress within it
// Requests are answered in order; while one is being answered the socket is
// still read, so a client that hangs up cancels its call at once. An idle
// connection costs its buffers, not a thread. Requests are parsed by
// RequestReader (Beast's parser, headers as views into one buffer).
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/http_exchange.h"
#include "mcp_sse_bridge/net_stream.h"
#include "mcp_sse_bridge/request_reader.h"

namespace msb {

class Metrics;

struct ConnLimits {
  Duration read_timeout{30000};
  Duration write_timeout{30000};
  Duration idle_timeout{5000};
  uint64_t max_body_size = 16ull << 20;
  uint32_t max_header_size = 64 * 1024;
  int max_requests = 1000;  // per connection, then Connection: close
  int max_pipelined = 16;   // requests read ahead of the one being answered
  // Bytes a connection may hold queued for its client (written by calls,
  // not yet taken by the socket); past it the client is too slow for what
  // is sent to it and the connection closes. Calls relaying an upstream's
  // stream stop reading it at Exchange::kCongested (backpressure): this cap
  // is for what cannot wait (one large answer, listen and session streams).
  uint64_t max_queued = (128ull << 20) + (16ull << 20);
};

class ClientExchange;
struct WriteTicket;

class ClientConnection : public std::enable_shared_from_this<ClientConnection> {
 public:
  ClientConnection(EventLoop& loop, std::unique_ptr<NetStream> stream, const ConnLimits& limits,
                   RequestHandler& handler, Metrics* metrics);
  ~ClientConnection();

  // Starts serving (handshake, then requests). Loop thread.
  void start();
  // Starts serving a plain connection moved here from another loop: `first`
  // is what was read of its next request there, `served` how many requests
  // it had answered (--max-requests-per-connection counts on). Loop thread.
  void start_moved(std::string first, int served);
  // Hands the socket over for a move to another loop: this object is done
  // (closed, no callbacks) and the caller owns the returned descriptor, or
  // -1 (nothing changed). Only when the connection is idle. Loop thread.
  int release_for_move();
  int served() const { return served_; }
  // Closes now: pending calls see the client gone. Loop thread.
  void close();
  // Drain: closes the connection if it is idle; otherwise its current
  // response ends with Connection: close. Loop thread.
  void close_when_idle();

  EventLoop& loop() { return loop_; }
  bool closed() const { return closed_; }

  // Intrusive links of the listener's per-loop list (loop thread only).
  ClientConnection* prev = nullptr;
  ClientConnection* next = nullptr;
  std::function<void(ClientConnection*)> on_closed;
  // Set by the listener when connections may move between loops: offered
  // the first bytes of a request that arrived on an idle plain connection;
  // true when it moved the connection (release_for_move) to another loop.
  std::function<bool(ClientConnection*, std::string_view)> mover;

 private:
  friend class ClientExchange;

  asio::awaitable<void> run();    // serve(), and close() however it ends
  asio::awaitable<void> serve();
  bool movable() const;   // idle between requests, plain, nothing owed
  void take(const char* in, size_t n);  // bytes just read, nothing buffered before them
  void feed();            // parses buffered bytes (buf_) into pending_ requests
  size_t pending_body_bytes() const;
  // Parses `in` into pending_ requests; returns how many bytes it used.
  size_t parse(const char* in, size_t n);
  void next_request();    // dispatches the next pending request, if idle
  void dispatch(HttpRequest&& req);  // hands a request to the handler (none in progress)
  void send(std::string bytes, std::shared_ptr<WriteTicket> ticket = nullptr);
  asio::awaitable<void> writer();
  void response_done(bool close);
  void refuse_and_close(int status, std::string_view why);
  asio::awaitable<void> linger_close();
  void arm_idle();
  void arm_read();
  void disarm_reads();

  static void on_read_timeout(TimerEntry* e);
  static void on_idle_timeout(TimerEntry* e);
  static void on_write_timeout(TimerEntry* e);
  int send_queue_bytes();  // unsent bytes in the socket's send queue (-1: unknown)
  static void on_head_timer(TimerEntry* e);

  EventLoop& loop_;
  std::unique_ptr<NetStream> stream_;
  const ConnLimits& limits_;
  RequestHandler& handler_;
  Metrics* metrics_;

  boost::beast::flat_buffer buf_;
  std::unique_ptr<char[]> tls_in_;  // a TLS connection's read buffer (serve())
  std::optional<RequestReader> parser_;
  Clock::time_point request_start_{};
  std::deque<HttpRequest> pending_;
  std::shared_ptr<ClientExchange> current_;  // the request being answered
  int served_ = 0;
  std::string first_;  // bytes read on the loop it moved from (start_moved)
  bool handshaken_ = false;
  bool closed_ = false;
  bool closing_after_ = false;  // close once the output is written
  bool drain_ = false;
  bool lingering_ = false;
  int deferred_status_ = 0;  // a refusal waiting for the response in progress
  std::string deferred_why_;

  std::deque<std::pair<std::string, std::shared_ptr<WriteTicket>>> out_;
  bool writing_ = false;
  // Bytes in out_ plus what the writer holds unwritten (read by calls on
  // other threads through Exchange::queued_bytes()).
  std::atomic<uint64_t> queued_{0};

  TimerEntry read_timer_, idle_timer_, write_timer_;
  int outq_mark_ = -1;  // send_queue_bytes() when write_timer_ was armed
  TimerEntry head_timer_;  // a deferred stream head goes out when it fires
};

}  // namespace msb
