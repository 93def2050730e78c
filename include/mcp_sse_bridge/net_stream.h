// NetStream: the one plain/TLS byte stream of the bridge, client side and
// upstream side alike: handshake, read, write, close. Coroutine API on the
// owning loop; every operation honours the awaiting coroutine's cancellation
// (a call's cancellation_signal aborts whatever read or write is pending).
// Deadlines are not here: the owner arms a loop timer (DeadlineList) and
// closes or cancels on expiry.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include "mcp_sse_bridge/tls.h"

namespace msb {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;

// An Asio view of a TlsContext (shares its SSL_CTX, one reference more).
std::shared_ptr<asio::ssl::context> asio_tls_context(const TlsContext& ctx);

class NetStream {
 public:
  explicit NetStream(tcp::socket s);                                        // plain
  NetStream(tcp::socket s, std::shared_ptr<asio::ssl::context> tls);        // TLS
  NetStream(NetStream&&) = delete;

  // TLS handshake as server or client (no-op on a plain stream).
  asio::awaitable<ErrorCode> handshake(bool server);
  // Reads what is available (at least one byte), or an error (eof at end).
  asio::awaitable<std::pair<ErrorCode, size_t>> read_some(asio::mutable_buffer b);
  // Plain streams only: what is already there, without waiting (would_block
  // when nothing is).
  size_t read_now(asio::mutable_buffer b, ErrorCode& ec);
  // Plain streams only: writes what the socket takes now, without waiting
  // (0 when it takes nothing; ec only for a real failure).
  size_t write_now(std::string_view data, ErrorCode& ec);
  // Writes everything: on a plain stream a direct non-blocking write first
  // (no loop round trip when the socket buffer has room), then async.
  asio::awaitable<ErrorCode> write_all(std::string_view data);
  // Writes some of `data` (at least one byte), or an error: for callers that
  // bound each step of a long write rather than the whole of it.
  asio::awaitable<std::pair<ErrorCode, size_t>> write_some(std::string_view data);
  // Best-effort TLS close_notify is not sent: close() just closes, so that a
  // peer that stopped reading cannot hold it.
  void close();
  void shutdown_send();
  bool is_open() const;
  bool is_tls() const { return tls_.has_value(); }
  // The OpenSSL connection (nullptr on a plain stream).
  SSL* ssl() { return tls_ ? tls_->native_handle() : nullptr; }
  int fd();
  tcp::socket& socket();
  asio::any_io_executor executor();

 private:
  tcp::socket plain_;
  std::shared_ptr<asio::ssl::context> ctx_;
  std::optional<asio::ssl::stream<tcp::socket>> tls_;
};

}  // namespace msb
