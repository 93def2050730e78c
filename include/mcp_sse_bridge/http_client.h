// A small HTTP/1.1 client on non-blocking sockets where every operation takes
// a Deadline: name resolution, connect, each write, each read. Nothing here can
// block past the deadline it was given (unlike cpp-httplib's client, whose
// connect phase ignores stop() and whose read timeout is per read).
//
// Used for the upstream SSE GET (streamed body) and the upstream POSTs
// (keep-alive). Not thread-safe: one owner thread per object; shutdown() may
// be called from another thread to abort a blocked read at once.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mcp_sse_bridge/deadline.h"
#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/url.h"

typedef struct ssl_st SSL;

namespace msb {

class TlsContext;

// Outcome of one socket operation.
enum class Io {
  kOk,       // bytes moved
  kEof,      // orderly close by the peer
  kError,    // reset or other socket error (errno text in the stream's last_error())
  kTimeout,  // the deadline passed
  kWoken,    // a watched fd fired first (see set_watch): not a timeout
};

// Socket options of upstream connections, so that the kernel reports a peer
// that vanished (no FIN, no RST) instead of leaving reads waiting.
struct TcpOptions {
  Millis keepalive_idle{0};   // SO_KEEPALIVE: idle time before probes (1 s apart, 3 of them); 0 = off
  Millis user_timeout{0};     // TCP_USER_TIMEOUT: unacknowledged data or probes fail the
                              // connection after this; 0 = the kernel's default (minutes)
  Millis connect_timeout{0};  // bound of a connect made by HttpConnection::send; 0 = its deadline only
};

class TcpStream {
 public:
  TcpStream() = default;
  ~TcpStream();
  TcpStream(TcpStream&& o) noexcept;
  TcpStream& operator=(TcpStream&& o) noexcept;
  TcpStream(const TcpStream&) = delete;
  TcpStream& operator=(const TcpStream&) = delete;

  // Resolves (Resolver::shared()) and connects, TCP_NODELAY on plus `opt`.
  // Errors: kUnreachable (refused, no route, name not found) or kTimeout;
  // the phase is left as kConnect.
  static Expected<TcpStream> connect(const std::string& host, int port, Deadline d,
                                     const TcpOptions& opt = {});

  // Runs a TLS handshake over the connected socket (SNI and certificate name
  // checks for `host` unless the context does not verify). Errors: kProtocol
  // (handshake/verification failure, with OpenSSL's reason), kTimeout, kClosed.
  Status start_tls(const TlsContext& ctx, const std::string& host, Deadline d);

  Io write_all(std::string_view data, Deadline d, bool more = false);
  // Reads up to n bytes (kOk with *got > 0), or reports EOF/error/timeout.
  // Also returns kTimeout early when a watched fd fires (see set_watch).
  Io read_some(char* buf, size_t n, size_t* got, Deadline d);
  // Extra fds a blocked read also waits on, so that its owner wakes at once:
  // `wake_fd` readable (an eventfd), or `hup_fd` hung up (a client socket).
  // -1 = none. The fds are not owned.
  void set_watch(int wake_fd, int hup_fd) {
    wake_fd_ = wake_fd;
    hup_fd_ = hup_fd;
  }
  // Non-blocking check for a pooled/kept-alive connection: false when the peer
  // has closed it, reset it, or sent unexpected bytes.
  bool idle_alive() const;
  // Aborts any blocked read/write from another thread; idempotent.
  void shutdown();
  void close();
  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const std::string& last_error() const { return last_error_; }
  // errno of the last failed read (ETIMEDOUT: keepalive probes or sent data
  // went unacknowledged, the peer vanished); 0 if none.
  int last_errno() const { return last_errno_; }

 private:
  explicit TcpStream(int fd) : fd_(fd) {}
  // Waits until fd_ is ready for `events` (or a watched fd fires: returns 2).
  // 1 = ready, 0 = deadline, -1 = error.
  int wait(short events, Deadline d, bool watch);
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  int wake_fd_ = -1;
  int hup_fd_ = -1;
  std::string last_error_;
  int last_errno_ = 0;
};

struct HttpHead {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  bool chunked = false;
  std::optional<uint64_t> content_length;
  bool keep_alive = true;
  std::string header(std::string_view lower_name) const;
};

// Incremental decoder of a chunked transfer-coded body.
class ChunkedDecoder {
 public:
  enum class R { kNeedMore, kDone, kError };
  // Consumes bytes from `in` (advancing it) and appends decoded data to `out`.
  R feed(std::string_view& in, std::string& out);

 private:
  enum class S { kSize, kData, kDataEnd, kTrailer, kDone };
  S state_ = S::kSize;
  uint64_t remaining_ = 0;
  std::string line_;
};

// One HTTP/1.1 connection to one origin.
class HttpConnection {
 public:
  // `tls` is required for https origins (nullptr: such a connection fails).
  explicit HttpConnection(Url origin, std::shared_ptr<const TlsContext> tls = nullptr,
                          TcpOptions opt = {})
      : origin_(std::move(origin)), tls_(std::move(tls)), opt_(opt) {}

  // Sends a request and reads the response head. `extra_headers` are full
  // "Name: value\r\n" lines. Reuses the kept-alive connection when possible
  // (resending once, on a fresh connection, if a reused one turns out closed
  // before any response byte). Errors carry kUnreachable/kTimeout/kClosed/
  // kProtocol; the caller sets the phase.
  //
  // `head_timeout` (0 = none) bounds the wait for the response head once the
  // request is sent (error kUnresponsive). `keep_waiting`, when given, is
  // asked whenever a watched fd fires or every `Forwarder::kPollSlice` while
  // the head is awaited; false ends the wait with kCancelled.
  Expected<HttpHead> send(std::string_view method, std::string_view target,
                          std::string_view extra_headers, std::string_view body, Deadline d,
                          Millis head_timeout = Millis(0),
                          const std::function<bool()>* keep_waiting = nullptr);

  // After send(): reads the next slice of the decoded body into `out`
  // (appending). Returns kOk with *finished set once the body is complete,
  // kEof/kError/kTimeout otherwise. For bodies delimited by close, EOF is the
  // normal end (kOk + finished).
  Io read_body(std::string& out, bool* finished, Deadline d);

  // Reads the whole body (up to max bytes; larger bodies are an error).
  Expected<std::string> read_full_body(size_t max, Deadline d);

  void shutdown() { stream_.shutdown(); }
  void close() { stream_.close(); }
  // See TcpStream::set_watch; kept across reconnects.
  void set_watch(int wake_fd, int hup_fd) {
    wake_fd_ = wake_fd;
    hup_fd_ = hup_fd;
    stream_.set_watch(wake_fd, hup_fd);
  }
  const Url& origin() const { return origin_; }
  const std::string& last_error() const { return stream_.last_error(); }
  int last_errno() const { return stream_.last_errno(); }

 private:
  Io fill(Deadline d);  // reads more raw bytes into buf_

  Url origin_;
  std::shared_ptr<const TlsContext> tls_;
  TcpOptions opt_;
  TcpStream stream_;
  int wake_fd_ = -1;
  int hup_fd_ = -1;
  bool reusable_ = false;
  std::string buf_;  // raw bytes read but not consumed
  size_t pos_ = 0;
  HttpHead head_;
  ChunkedDecoder chunked_;
  uint64_t body_left_ = 0;
  bool body_done_ = true;
};

// Limits for reading a response head.
inline constexpr size_t kMaxHeadBytes = 64 * 1024;

}  // namespace msb
