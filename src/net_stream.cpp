#include "mcp_sse_bridge/net_stream.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/detail/handler_cont_helpers.hpp>
#include <boost/asio/detail/reactive_wait_op.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/version.hpp>

#include <memory>
#include <mutex>
#include <type_traits>

// Readiness tracking reads and writes one flag of Asio's epoll reactor (its
// per-descriptor "try a speculative read" flag, which the reactor sets on
// every readiness event). Checked against Boost 1.81's epoll_reactor; other
// versions, or another reactor, fall back to Asio's public API: a socket is
// never known drained, so reads are tried before each wait (an EAGAIN) and
// each wait re-arms epoll (an epoll_ctl), as before session 16.
// (-DMSB_NO_READINESS_TRACKING builds the fallback on purpose.)
#if BOOST_VERSION == 108100 && defined(BOOST_ASIO_HAS_EPOLL) && \
    !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT) && !defined(MSB_NO_READINESS_TRACKING)
#define MSB_TRACK_READINESS 1
#else
#define MSB_TRACK_READINESS 0
#endif

namespace msb {

namespace {
constexpr auto kTok = asio::as_tuple(asio::use_awaitable);

bool would_block(const ErrorCode& ec) {
  return ec == asio::error::would_block || ec == asio::error::try_again;
}

#if MSB_TRACK_READINESS
using Reactor = asio::detail::epoll_reactor;
using DescriptorState = Reactor::descriptor_state;

// Access to non-public members of Asio. Names in an explicit instantiation
// are not access-checked (C++20 [temp.spec]/6), so this is the standard way
// to reach them without editing the library's headers.
template <class Tag, typename Tag::type Member>
struct Expose {
  friend typename Tag::type member(Tag) { return Member; }
};
struct TrySpeculative {
  using type = bool (DescriptorState::*)[Reactor::max_ops];
  friend type member(TrySpeculative);
};
template struct Expose<TrySpeculative, &DescriptorState::try_speculative_>;
struct DescriptorMutex {
  using type = asio::detail::conditionally_enabled_mutex DescriptorState::*;
  friend type member(DescriptorMutex);
};
template struct Expose<DescriptorMutex, &DescriptorState::mutex_>;

// The socket's reactor-side implementation (a protected member, reached
// through a derived class as the language allows).
struct SocketAccess : tcp::socket {
  static auto& impl(tcp::socket& s) { return (s.*&SocketAccess::impl_).get_implementation(); }
};

// Per-operation cancellation of a readiness wait, as Asio does it for its own.
struct ReadWaitCancel {
  Reactor* reactor;
  Reactor::per_descriptor_data* data;
  int fd;
  void operator()(asio::cancellation_type_t t) {
    if (!!(t & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                asio::cancellation_type::total)))
      reactor->cancel_ops_by_key(fd, *data, Reactor::read_op, this);
  }
};

// Asio's basic_socket::async_wait(wait_read) with one difference: the
// operation may be "speculative", so the reactor queues it without the
// epoll_ctl(MOD) that re-checks readiness (Asio's wait issues one whenever no
// other read is queued).
// The reactor decides with its own flag: when an event came since the last
// drained read, the wait completes at once (posted, no syscall); otherwise
// it is queued and woken by the next edge.
struct InitiateWaitReadable {
  tcp::socket* s;
  Reactor* r;
  template <class Handler>
  void operator()(Handler&& handler) const {
    using H = std::decay_t<Handler>;
    using Op = asio::detail::reactive_wait_op<H, asio::any_io_executor>;
    H h(std::forward<Handler>(handler));
    auto& impl = SocketAccess::impl(*s);
    Reactor& reactor = *r;
    const bool cont = boost_asio_handler_cont_helpers::is_continuation(h);
    auto slot = asio::get_associated_cancellation_slot(h);
    typename Op::ptr p = {std::addressof(h), Op::ptr::allocate(h), nullptr};
    p.p = new (p.v) Op(ErrorCode(), h, s->get_executor());
    if (slot.is_connected())
      p.p->cancellation_key_ =
          &slot.template emplace<ReadWaitCancel>(&reactor, &impl.reactor_data_, impl.socket_);
    reactor.start_op(Reactor::read_op, impl.socket_, impl.reactor_data_, p.p, cont, true);
    p.v = p.p = nullptr;
  }
};

// Under the descriptor's own mutex (a no-op on the loops' io_contexts, whose
// reactor I/O is unlocked): the same lock the reactor holds to set the flag.
bool read_maybe_ready(tcp::socket& s) {
  DescriptorState* d = SocketAccess::impl(s).reactor_data_;
  if (!d) return true;
  std::lock_guard lock(d->*member(DescriptorMutex{}));
  return (d->*member(TrySpeculative{}))[Reactor::read_op];
}
#endif

}  // namespace

std::shared_ptr<asio::ssl::context> asio_tls_context(const TlsContext& ctx) {
  SSL_CTX_up_ref(ctx.get());
  return std::make_shared<asio::ssl::context>(ctx.get());  // owns the extra reference
}

NetStream::NetStream(tcp::socket s) : plain_(std::move(s)) {
#if MSB_TRACK_READINESS
  // Each read reports what is left behind it (read_now): a short read then
  // tells "drained" without a second read that returns EAGAIN. Linux 4.18+;
  // where it fails, reads just do not report it.
  int one = 1;
  if (plain_.is_open()) ::setsockopt(plain_.native_handle(), SOL_TCP, TCP_INQ, &one, sizeof one);
  // (Any socket, open or not, belongs to an io_context.) Looked up once: use_service takes the registry's lock each time.
  reactor_ = &asio::use_service<Reactor>(asio::query(plain_.get_executor(), asio::execution::context));
#endif
}

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
  // Bounded by the caller's cancellation and by close(): each turn either
  // returns or waits, and a wait that ends without bytes is followed by one
  // read, whose would_block leaves the socket known drained.
  bool wait_first = !may_have_input();
  for (;;) {
    if (wait_first) {
      auto [wec] = co_await wait_readable();
      if (wec) co_return std::pair{wec, size_t{0}};
    }
    ErrorCode ec;
    size_t n = read_now(b, ec);
    if (!would_block(ec)) co_return std::pair{ec, n};
    wait_first = true;
  }
}

size_t NetStream::read_now(asio::mutable_buffer b, ErrorCode& ec) {
  ec.clear();
  if (!plain_.non_blocking()) plain_.non_blocking(true, ec);
  if (ec) return 0;
#if MSB_TRACK_READINESS
  DescriptorState* d = SocketAccess::impl(plain_).reactor_data_;
  if (d && b.size() > 0) {
    // The read and the flags under one lock (a no-op on the loops): an event
    // the reactor handles is either before both (the read sees its bytes)
    // or after (it sets the flags again). On a loop nothing runs between
    // the read and the flags.
    std::lock_guard lock(d->*member(DescriptorMutex{}));
    auto& ready = d->*member(TrySpeculative{});
    iovec iov{b.data(), b.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do n = ::recvmsg(plain_.native_handle(), &msg, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      ec = ErrorCode(errno, asio::error::get_system_category());
      if (would_block(ec)) {
        // Nothing there, no end, no error pending (recv reports those
        // first): drained, and any ERR/HUP seen before is dealt with.
        ready[Reactor::read_op] = false;
        ready[Reactor::except_op] = false;
      }
      return 0;
    }
    if (n == 0) {
      ec = asio::error::eof;
      return 0;
    }
    // Bytes: drained when the kernel says nothing is left behind them
    // (TCP_INQ; it counts a received FIN as a byte, so an end that came
    // with the data is not mistaken for drained) and the reactor saw no
    // error or hang-up since the last EAGAIN (Asio sets the out-of-band
    // flag, which the bridge never uses, on EPOLLERR/EPOLLHUP/EPOLLPRI). An
    // RST the reactor handled before this read is seen there; one it has
    // not handled yet sets the read flag again when it does.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_TCP && c->cmsg_type == TCP_CM_INQ) {
        int inq;
        std::memcpy(&inq, CMSG_DATA(c), sizeof inq);
        if (inq == 0 && !ready[Reactor::except_op]) ready[Reactor::read_op] = false;
      }
    }
    return static_cast<size_t>(n);
  }
#endif
  return plain_.read_some(b, ec);
}

bool NetStream::tracks_readiness() { return MSB_TRACK_READINESS != 0; }

bool NetStream::may_have_input() {
#if MSB_TRACK_READINESS
  if (!tls_) return read_maybe_ready(plain_);
#endif
  return true;
}

// (Not a coroutine: the caller awaits the operation itself, a frame less.)
asio::awaitable<std::tuple<ErrorCode>> NetStream::wait_readable() {
#if MSB_TRACK_READINESS
  if (!tls_)
    return asio::async_initiate<decltype(kTok), void(ErrorCode)>(
        InitiateWaitReadable{&plain_, static_cast<Reactor*>(reactor_)}, kTok);
#endif
  return socket().async_wait(tcp::socket::wait_read, kTok);
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
