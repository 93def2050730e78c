// StandaloneStream: a client session's standalone server-to-client stream
// (GET on the MCP path with text/event-stream; session mode only). Its head is
// sent at once; then SSE `message` events carry the upstream messages that
// belong to no call, and a `: keepalive` comment goes out every
// --keepalive-interval of silence. It ends when the client goes away, when a
// newer GET of the same session replaces it, or when its upstream session
// closes or fails.
//
// Threading: deliver() and end() may be called from any thread (the upstream
// session's loop is usually not the connection's); they post to the
// connection's loop and never block. start() runs on the connection's loop.
#pragma once

#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "mcp_sse_bridge/http_exchange.h"

namespace msb {

class Metrics;

// Where an upstream session sends the messages that belong to no call: a
// client session's GET stream (StandaloneStream) or the feed of the
// subscriptions/listen streams (ListenHub). Any thread.
class SessionStreamSink {
 public:
  virtual ~SessionStreamSink() = default;
  // Takes one JSON-RPC message; false once the sink has ended.
  virtual bool deliver(std::string json) = 0;
  virtual void end() = 0;
  virtual bool open() const = 0;
};

class StandaloneStream : public SessionStreamSink,
                         public std::enable_shared_from_this<StandaloneStream> {
 public:
  StandaloneStream(std::shared_ptr<Exchange> ex, Duration keepalive, Metrics& metrics);
  ~StandaloneStream();
  StandaloneStream(const StandaloneStream&) = delete;
  StandaloneStream& operator=(const StandaloneStream&) = delete;

  // Sends the head (at once) and starts the keepalive timer; `on_gone` runs
  // (on the connection's loop) when the client goes away. Connection's loop.
  void start(HttpResponse head, std::function<void()> on_gone);
  // Queues one JSON-RPC message as an SSE event. False once the stream has
  // ended (the message is then not sent). Any thread; never blocks.
  bool deliver(std::string json) override;
  // Ends the stream (its last chunk). Idempotent. Any thread.
  void end() override;
  // Ends it with one last message (a listen stream's final response). Any thread.
  void end_with(std::string json);
  bool open() const override { return open_.load(); }

 private:
  void arm_keepalive();

  std::shared_ptr<Exchange> ex_;
  Duration keepalive_;
  Metrics& metrics_;
  boost::asio::steady_timer timer_;
  Clock::time_point last_write_;  // connection's loop
  std::atomic<bool> open_{true};
};

}  // namespace msb
