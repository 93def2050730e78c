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
#include <tuple>
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
  // On a plain stream through read_now() and wait_readable(): Asio's own
  // read is never used on one, since its end-of-stream would mark the socket
  // drained for good.
  asio::awaitable<std::pair<ErrorCode, size_t>> read_some(asio::mutable_buffer b);
  // Plain streams only: what is already there, without waiting (would_block
  // when nothing is). The socket is left known drained (see
  // may_have_input()) by a read that returns would_block, or one whose bytes
  // have nothing behind them (TCP_INQ says 0: no more bytes, no FIN) when no
  // error or hang-up was seen since the last would_block.
  size_t read_now(asio::mutable_buffer b, ErrorCode& ec);
  // False when the socket is known to hold nothing: read_now() drained it and
  // the loop has seen no readiness event for it since (nginx's rule: the
  // edge-triggered epoll reports every arrival after a drained read). True
  // when unknown, always for TLS, and always where the tracking is not built
  // (another Boost than 1.81). Lets a read that would return EAGAIN, and the
  // liveness look at an idle socket, be skipped.
  bool may_have_input();
  // Whether this build tracks readiness (Boost 1.81 with epoll, see the
  // source); where not, may_have_input() is always true.
  static bool tracks_readiness();
  // Plain streams only: waits until the socket is readable (no bytes taken).
  // On a socket known drained this costs no syscall: the wait joins the loop's
  // epoll set as it is (Asio's own readiness wait re-arms the descriptor with
  // an epoll_ctl). Ends with operation_aborted on cancel() or the awaiting
  // coroutine's cancellation, bad_descriptor on a closed socket. It may end
  // without bytes to read (a readiness event for bytes a read took already):
  // callers read with read_now() and wait again on would_block.
  asio::awaitable<std::tuple<ErrorCode>> wait_readable();
  // Plain streams only: writes what the socket takes now, without waiting
  // (0 when it takes nothing; ec only for a real failure).
  size_t write_now(std::string_view data, ErrorCode& ec);
  // Writes everything: on a plain stream a direct non-blocking write first
  // (no loop round trip when the socket buffer has room), then async.
  asio::awaitable<ErrorCode> write_all(std::string_view data);
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
  void* reactor_ = nullptr;  // plain streams: the loop's epoll reactor (see the source)
  std::shared_ptr<asio::ssl::context> ctx_;
  std::optional<asio::ssl::stream<tcp::socket>> tls_;
};

}  // namespace msb
