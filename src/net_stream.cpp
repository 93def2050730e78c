#include "mcp_sse_bridge/net_stream.h"

#include <openssl/ssl.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace msb {

namespace {
constexpr auto kTok = asio::as_tuple(asio::use_awaitable);
}

std::shared_ptr<asio::ssl::context> asio_tls_context(const TlsContext& ctx) {
  SSL_CTX_up_ref(ctx.get());
  return std::make_shared<asio::ssl::context>(ctx.get());  // owns the extra reference
}

NetStream::NetStream(tcp::socket s) : plain_(std::move(s)) {}

NetStream::NetStream(tcp::socket s, std::shared_ptr<asio::ssl::context> tls)
    : plain_(s.get_executor()), ctx_(std::move(tls)) {
  tls_.emplace(std::move(s), *ctx_);
}

asio::awaitable<ErrorCode> NetStream::handshake(bool server) {
  if (!tls_) co_return ErrorCode{};
  auto [ec] = co_await tls_->async_handshake(
      server ? asio::ssl::stream_base::server : asio::ssl::stream_base::client, kTok);
  co_return ec;
}

asio::awaitable<std::pair<ErrorCode, size_t>> NetStream::read_some(asio::mutable_buffer b) {
  if (tls_) {
    auto [ec, n] = co_await tls_->async_read_some(b, kTok);
    co_return std::pair{ec, n};
  }
  auto [ec, n] = co_await plain_.async_read_some(b, kTok);
  co_return std::pair{ec, n};
}

asio::awaitable<std::pair<ErrorCode, size_t>> NetStream::write_some(std::string_view data) {
  if (tls_) {
    auto [ec, n] = co_await tls_->async_write_some(asio::buffer(data), kTok);
    co_return std::pair{ec, n};
  }
  ErrorCode ec;
  size_t n = write_now(data, ec);
  if (ec || n > 0) co_return std::pair{ec, n};
  auto [e2, m] = co_await plain_.async_write_some(asio::buffer(data), kTok);
  co_return std::pair{e2, m};
}

size_t NetStream::read_now(asio::mutable_buffer b, ErrorCode& ec) {
  ec.clear();
  if (!plain_.non_blocking()) plain_.non_blocking(true, ec);
  if (ec) return 0;
  return plain_.read_some(b, ec);
}

size_t NetStream::write_now(std::string_view data, ErrorCode& ec) {
  ec.clear();
  if (!plain_.non_blocking()) plain_.non_blocking(true, ec);
  if (ec) return 0;
  size_t n = plain_.write_some(asio::buffer(data), ec);
  if (ec == asio::error::would_block || ec == asio::error::try_again) {
    ec.clear();
    n = 0;
  }
  return n;
}

asio::awaitable<ErrorCode> NetStream::write_all(std::string_view data) {
  if (tls_) {
    auto [ec, n] = co_await asio::async_write(*tls_, asio::buffer(data), kTok);
    co_return ec;
  }
  ErrorCode ec;
  size_t n = write_now(data, ec);
  if (ec) co_return ec;
  if (n < data.size()) {
    auto [e2, m] = co_await asio::async_write(plain_, asio::buffer(data.substr(n)), kTok);
    co_return e2;
  }
  co_return ErrorCode{};
}

void NetStream::close() {
  // close() alone: the descriptor is ours only, so a shutdown before it is
  // a syscall that changes nothing (the FIN, or the RST for unread bytes, is
  // the close's). Asio ends pending operations with operation_aborted.
  ErrorCode ec;
  socket().close(ec);
}

void NetStream::shutdown_send() {
  ErrorCode ec;
  socket().shutdown(tcp::socket::shutdown_send, ec);
}

bool NetStream::is_open() const { return tls_ ? tls_->next_layer().is_open() : plain_.is_open(); }

int NetStream::fd() { return socket().is_open() ? socket().native_handle() : -1; }

tcp::socket& NetStream::socket() { return tls_ ? tls_->next_layer() : plain_; }

asio::any_io_executor NetStream::executor() { return plain_.get_executor(); }

}  // namespace msb
