#include "mcp_sse_bridge/standalone_stream.h"

#include <boost/asio/post.hpp>

#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/metrics.h"
#include "mcp_sse_bridge/response_sink.h"

namespace msb {

namespace asio = boost::asio;

StandaloneStream::StandaloneStream(std::shared_ptr<Exchange> ex, Duration keepalive,
                                   Metrics& metrics)
    : ex_(std::move(ex)),
      keepalive_(keepalive),
      metrics_(metrics),
      timer_(ex_->loop().io()),
      last_write_(Clock::now()) {}

StandaloneStream::~StandaloneStream() = default;

void StandaloneStream::start(HttpResponse head, std::function<void()> on_gone) {
  head.defer_head = false;  // the client must see the head at once
  ex_->start_stream(std::move(head));
  std::weak_ptr<StandaloneStream> weak = weak_from_this();
  ex_->on_gone([weak, on_gone = std::move(on_gone)] {
    if (auto self = weak.lock()) {
      self->open_.store(false);
      self->timer_.cancel();
    }
    if (on_gone) on_gone();
  });
  arm_keepalive();
}

void StandaloneStream::arm_keepalive() {
  if (keepalive_.count() <= 0 || !open_.load()) return;
  timer_.expires_at(last_write_ + keepalive_);
  timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!self->open_.load()) return;
    if (!ec && Clock::now() - self->last_write_ >= self->keepalive_) {
      self->metrics_.keepalive_sent();
      if (!self->ex_->write(": keepalive\n\n")) self->open_.store(false);
      self->last_write_ = Clock::now();
    }
    if (!ec || ec == asio::error::operation_aborted) {
      // A write moved last_write_ (and cancelled the wait): re-arm from it.
      if (self->open_.load() && !self->ex_->client_gone()) self->arm_keepalive();
    }
  });
}

bool StandaloneStream::deliver(std::string json) {
  if (!open_.load()) return false;
  asio::post(ex_->loop().io(), [self = shared_from_this(), json = std::move(json)] {
    if (!self->open_.load()) return;
    // On the connection's loop: write() queues and returns at once.
    if (!self->ex_->write(SseSink::event(json))) {
      self->open_.store(false);
      self->timer_.cancel();
      return;
    }
    self->last_write_ = Clock::now();
  });
  return true;
}

void StandaloneStream::end() { end_with({}); }

void StandaloneStream::end_with(std::string json) {
  asio::post(ex_->loop().io(), [self = shared_from_this(), json = std::move(json)] {
    if (!self->open_.exchange(false)) return;
    self->timer_.cancel();
    self->ex_->end(json.empty() ? std::string() : SseSink::event(json));
  });
}

}  // namespace msb
