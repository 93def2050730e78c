#include "mcp_sse_bridge/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "mcp_sse_bridge/resolver.h"
#include "mcp_sse_bridge/text_util.h"
#include "mcp_sse_bridge/tls.h"

namespace msb {

namespace {

std::string errno_text(int e) { return std::strerror(e); }


// Parses a response head (up to and including the blank line).
bool parse_head(std::string_view text, HttpHead& h, std::string* why) {
  size_t eol = text.find('\n');
  std::string_view status_line = trim(text.substr(0, eol));
  if (status_line.substr(0, 7) != "HTTP/1." || status_line.size() < 12) {
    *why = "malformed status line";
    return false;
  }
  bool http10 = status_line[7] == '0';
  std::string_view code = status_line.substr(9, 3);
  if (code.find_first_not_of("0123456789") != std::string_view::npos) {
    *why = "malformed status code";
    return false;
  }
  h.status = std::stoi(std::string(code));
  h.keep_alive = !http10;
  text.remove_prefix(eol + 1);
  while (!text.empty()) {
    eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    line = trim(line);
    if (line.empty()) break;
    auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      *why = "malformed header line";
      return false;
    }
    std::string name = lower(trim(line.substr(0, colon)));
    std::string value(trim(line.substr(colon + 1)));
    if (name == "transfer-encoding") {
      if (lower(value).find("chunked") != std::string::npos) h.chunked = true;
    } else if (name == "content-length") {
      if (value.empty() || value.size() > 18 ||
          value.find_first_not_of("0123456789") != std::string::npos) {
        *why = "malformed Content-Length";
        return false;
      }
      h.content_length = std::stoull(value);
    } else if (name == "connection") {
      auto v = lower(value);
      if (v.find("close") != std::string::npos) h.keep_alive = false;
      if (v.find("keep-alive") != std::string::npos) h.keep_alive = true;
    }
    h.headers.emplace_back(std::move(name), std::move(value));
  }
  if (h.chunked) h.content_length.reset();
  return true;
}

}  // namespace

// ---- TcpStream -------------------------------------------------------------

TcpStream::~TcpStream() { close(); }

TcpStream::TcpStream(TcpStream&& o) noexcept
    : fd_(o.fd_), ssl_(o.ssl_), last_error_(std::move(o.last_error_)) {
  o.fd_ = -1;
  o.ssl_ = nullptr;
}

TcpStream& TcpStream::operator=(TcpStream&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    ssl_ = o.ssl_;
    last_error_ = std::move(o.last_error_);
    o.fd_ = -1;
    o.ssl_ = nullptr;
  }
  return *this;
}

void TcpStream::close() {
  if (ssl_) {
    SSL_free(ssl_);  // no close_notify: the socket may be dead, and nothing waits for it
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void TcpStream::shutdown() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

Expected<TcpStream> TcpStream::connect(const std::string& host, int port, Deadline d,
                                       const TcpOptions& opt) {
  Resolved r = Resolver::shared().resolve(host, port, d);
  if (r.timed_out) return make_error(ErrorKind::kTimeout, Phase::kConnect, r.error);
  if (r.addrs.empty())
    return make_error(ErrorKind::kUnreachable, Phase::kConnect,
                      r.error.empty() ? "no address for " + host : r.error);
  std::string last = "no address";
  for (size_t i = 0; i < r.addrs.size(); ++i) {
    int fd = ::socket(r.addrs[i].ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last = "socket: " + errno_text(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt.keepalive_idle.count() > 0) {
      int idle = std::max<int>(1, static_cast<int>(opt.keepalive_idle.count() / 1000));
      int intvl = 1, cnt = 3;
      ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    }
    if (opt.user_timeout.count() > 0) {
      unsigned ut = static_cast<unsigned>(opt.user_timeout.count());
      ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut);
    }
    TcpStream s(fd);
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&r.addrs[i]), r.lens[i]);
    if (rc != 0 && errno != EINPROGRESS) {
      last = "connect " + host + ":" + std::to_string(port) + ": " + errno_text(errno);
      continue;
    }
    if (rc != 0) {
      pollfd p{fd, POLLOUT, 0};
      int n;
      do {
        n = ::poll(&p, 1, d.poll_ms());
      } while (n < 0 && errno == EINTR);
      if (n == 0)
        return make_error(ErrorKind::kTimeout, Phase::kConnect,
                          "connect " + host + ":" + std::to_string(port) + ": deadline exceeded");
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (n < 0 || err != 0) {
        last = "connect " + host + ":" + std::to_string(port) + ": " + errno_text(err ? err : errno);
        continue;
      }
    }
    return s;
  }
  return make_error(ErrorKind::kUnreachable, Phase::kConnect, last);
}

int TcpStream::wait(short events, Deadline d, bool watch) {
  for (;;) {
    pollfd p[3] = {{fd_, events, 0}, {watch ? wake_fd_ : -1, POLLIN, 0},
                   {watch ? hup_fd_ : -1, POLLRDHUP, 0}};
    int rc = ::poll(p, 3, d.poll_ms());  // negative fds are ignored by poll(2)
    if (rc == 0) return 0;
    if (rc < 0) {
      if (errno == EINTR) continue;
      last_error_ = "poll: " + errno_text(errno);
      return -1;
    }
    if (p[0].revents == 0 && (p[1].revents || p[2].revents)) return 2;
    return 1;
  }
}

Status TcpStream::start_tls(const TlsContext& ctx, const std::string& host, Deadline d) {
  ERR_clear_error();
  ssl_ = SSL_new(ctx.get());
  if (!ssl_ || SSL_set_fd(ssl_, fd_) != 1)
    return make_error(ErrorKind::kInternal, Phase::kConnect, "TLS setup: " + tls_error_text());
  bool is_ip = host.find(':') != std::string::npos ||
               host.find_first_not_of("0123456789.") == std::string::npos;
  if (!is_ip) SSL_set_tlsext_host_name(ssl_, host.c_str());
  if (ctx.verify_peer()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                   : X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
    if (ok != 1)
      return make_error(ErrorKind::kInternal, Phase::kConnect, "TLS: cannot check name " + host);
  }
  for (;;) {
    int rc = SSL_connect(ssl_);
    if (rc == 1) return Ok{};
    int err = SSL_get_error(ssl_, rc);
    short ev = err == SSL_ERROR_WANT_READ ? POLLIN : err == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (ev) {
      int w = wait(ev, d, /*watch=*/true);
      if (w == 1) continue;
      if (w == -1) return make_error(ErrorKind::kClosed, Phase::kConnect, "TLS handshake: " + last_error_);
      return make_error(ErrorKind::kTimeout, Phase::kConnect,
                        w == 0 ? "TLS handshake with " + host + ": deadline exceeded"
                               : "TLS handshake interrupted");
    }
    long vr = SSL_get_verify_result(ssl_);
    std::string why = vr != X509_V_OK
                          ? std::string("certificate verification failed: ") +
                                X509_verify_cert_error_string(vr)
                          : (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
                                ? std::string("connection closed during the handshake")
                                : tls_error_text();
    ERR_clear_error();
    return make_error(ErrorKind::kProtocol, Phase::kConnect, "TLS handshake with " + host + ": " + why);
  }
}

Io TcpStream::write_all(std::string_view data, Deadline d, bool more) {
  int flags = MSG_NOSIGNAL | (more ? MSG_MORE : 0);
  while (!data.empty()) {
    if (ssl_) {
      ERR_clear_error();
      int n = SSL_write(ssl_, data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 30)));
      if (n > 0) {
        data.remove_prefix(static_cast<size_t>(n));
        continue;
      }
      int err = SSL_get_error(ssl_, n);
      short ev = err == SSL_ERROR_WANT_READ ? POLLIN : err == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
      if (!ev) {
        last_error_ = "TLS write: " + (err == SSL_ERROR_SYSCALL ? errno_text(errno) : tls_error_text());
        return Io::kError;
      }
      int w = wait(ev, d, false);
      if (w == 0) return Io::kTimeout;
      if (w < 0) return Io::kError;
      continue;
    }
    ssize_t n = ::send(fd_, data.data(), data.size(), flags);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int w = wait(POLLOUT, d, false);
      if (w == 0) return Io::kTimeout;
      if (w < 0) return Io::kError;
      continue;
    }
    last_error_ = "send: " + errno_text(errno);
    return Io::kError;
  }
  return Io::kOk;
}

Io TcpStream::read_some(char* buf, size_t cap, size_t* got, Deadline d) {
  *got = 0;
  for (;;) {
    short ev = POLLIN;
    if (ssl_) {
      ERR_clear_error();
      int n = SSL_read(ssl_, buf, static_cast<int>(std::min<size_t>(cap, 1 << 30)));
      if (n > 0) {
        *got = static_cast<size_t>(n);
        return Io::kOk;
      }
      int err = SSL_get_error(ssl_, n);
      if (err == SSL_ERROR_ZERO_RETURN) return Io::kEof;
      if (err == SSL_ERROR_WANT_WRITE) {
        ev = POLLOUT;
      } else if (err != SSL_ERROR_WANT_READ) {
        if (err == SSL_ERROR_SYSCALL && errno == 0) return Io::kEof;
        last_errno_ = err == SSL_ERROR_SYSCALL ? errno : 0;
        last_error_ = "TLS read: " + (err == SSL_ERROR_SYSCALL ? errno_text(errno) : tls_error_text());
        return Io::kError;
      }
    } else {
      ssize_t n = ::recv(fd_, buf, cap, 0);
      if (n > 0) {
        *got = static_cast<size_t>(n);
        return Io::kOk;
      }
      if (n == 0) return Io::kEof;
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        last_errno_ = errno;
        last_error_ = "recv: " + errno_text(errno);
        return Io::kError;
      }
    }
    int w = wait(ev, d, /*watch=*/true);
    if (w == 0) return Io::kTimeout;
    if (w == 2) return Io::kWoken;
    if (w < 0) return Io::kError;
  }
}

bool TcpStream::idle_alive() const {
  if (fd_ < 0) return false;
  if (ssl_) {
    // TLS 1.3 servers send session tickets after the handshake: bytes on an
    // idle TLS connection are not necessarily application data. Let OpenSSL
    // consume records without blocking; any application byte means "stale".
    if (SSL_pending(ssl_) > 0) return false;
    char c;
    ssize_t raw = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (raw < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (raw <= 0) return false;
    ERR_clear_error();
    int n = SSL_read(ssl_, &c, 1);
    bool want = n <= 0 && SSL_get_error(ssl_, n) == SSL_ERROR_WANT_READ;
    ERR_clear_error();
    return want;
  }
  char c;
  ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
  return false;  // closed (0), reset (<0), or unexpected bytes on an idle connection
}

// ---- HttpHead / ChunkedDecoder ---------------------------------------------

std::string HttpHead::header(std::string_view name) const {
  for (auto& [k, v] : headers)
    if (k == name) return v;
  return {};
}

ChunkedDecoder::R ChunkedDecoder::feed(std::string_view& in, std::string& out) {
  while (!in.empty()) {
    switch (state_) {
      case S::kSize:
      case S::kTrailer: {
        auto nl = in.find('\n');
        if (nl == std::string_view::npos) {
          if (line_.size() + in.size() > 4096) return R::kError;
          line_.append(in);
          in = {};
          return R::kNeedMore;
        }
        line_.append(in.substr(0, nl));
        in.remove_prefix(nl + 1);
        std::string_view line = trim(line_);
        if (state_ == S::kTrailer) {
          if (line.empty()) {
            state_ = S::kDone;
            line_.clear();
            return R::kDone;
          }
          line_.clear();
          break;
        }
        line = line.substr(0, line.find(';'));
        line = trim(line);
        if (line.empty() || line.size() > 15 ||
            line.find_first_not_of("0123456789abcdefABCDEF") != std::string_view::npos)
          return R::kError;
        remaining_ = std::stoull(std::string(line), nullptr, 16);
        line_.clear();
        state_ = remaining_ == 0 ? S::kTrailer : S::kData;
        break;
      }
      case S::kData: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size()));
        out.append(in.data(), n);
        in.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) state_ = S::kDataEnd;
        break;
      }
      case S::kDataEnd: {
        // Expect CRLF (or a bare LF).
        if (in.front() == '\r') {
          in.remove_prefix(1);
          break;
        }
        if (in.front() != '\n') return R::kError;
        in.remove_prefix(1);
        state_ = S::kSize;
        break;
      }
      case S::kDone:
        return R::kDone;
    }
  }
  return state_ == S::kDone ? R::kDone : R::kNeedMore;
}

// ---- HttpConnection ---------------------------------------------------------

Io HttpConnection::fill(Deadline d) {
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 64 * 1024) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
  // Read into the stack, then append what came: resizing buf_ up front
  // would zero 64 KiB on every read (it showed in profiles).
  char slice[64 * 1024];
  size_t got = 0;
  Io r = stream_.read_some(slice, sizeof slice, &got, d);
  buf_.append(slice, got);
  return r;
}

Expected<HttpHead> HttpConnection::send(std::string_view method, std::string_view target,
                                        std::string_view extra_headers, std::string_view body,
                                        Deadline d, Millis head_timeout,
                                        const std::function<bool()>* keep_waiting) {
  std::string req;
  req.reserve(256 + extra_headers.size() + (body.size() < 16384 ? body.size() : 0));
  req.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ");
  req.append(origin_.host_header()).append("\r\n");
  req.append(extra_headers);
  if (method != "GET" || !body.empty())
    req.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  req.append("\r\n");
  bool small = body.size() < 16384;
  if (small) req.append(body);

  for (int attempt = 0; attempt < 2; ++attempt) {
    bool reused = false;
    if (reusable_ && body_done_ && pos_ == buf_.size() && stream_.idle_alive()) {
      reused = true;
    } else {
      stream_.close();
      buf_.clear();
      pos_ = 0;
      auto connect_d = opt_.connect_timeout.count() > 0
                           ? Deadline::earliest(d, Deadline::after(opt_.connect_timeout))
                           : d;
      auto s = TcpStream::connect(origin_.host, origin_.port, connect_d, opt_);
      if (!s) return s.error();
      stream_ = std::move(s.value());
      if (origin_.tls()) {
        if (!tls_)
          return make_error(ErrorKind::kInternal, Phase::kConnect,
                            "https upstream without a TLS context");
        stream_.set_watch(wake_fd_, hup_fd_);
        if (auto t = stream_.start_tls(*tls_, origin_.host, connect_d); !t) return t.error();
      }
      stream_.set_watch(wake_fd_, hup_fd_);
    }
    reusable_ = false;
    body_done_ = false;
    Io w = stream_.write_all(req, d, !small);
    if (w == Io::kOk && !small) w = stream_.write_all(body, d);
    if (w == Io::kTimeout)
      return make_error(ErrorKind::kTimeout, Phase::kConnect, "sending request: deadline exceeded");
    if (w != Io::kOk) {
      if (reused) continue;
      return make_error(ErrorKind::kClosed, Phase::kConnect,
                        "sending request: " + stream_.last_error());
    }
    // Read the head: a live server answers at once; --post-timeout (or the
    // caller's head bound) names the wait when it does not.
    const Deadline head_d =
        head_timeout.count() > 0 ? Deadline::earliest(d, Deadline::after(head_timeout)) : d;
    for (;;) {
      std::string_view view(buf_.data() + pos_, buf_.size() - pos_);
      size_t end = view.find("\r\n\r\n");
      size_t term = 4;
      if (end == std::string_view::npos) {
        end = view.find("\n\n");
        term = 2;
      }
      if (end != std::string_view::npos) {
        head_ = HttpHead{};
        std::string why;
        if (!parse_head(view.substr(0, end + term), head_, &why))
          return make_error(ErrorKind::kProtocol, Phase::kConnect, "upstream HTTP: " + why);
        pos_ += end + term;
        if (head_.status >= 100 && head_.status < 200) continue;  // 1xx: read the real head
        body_done_ = false;
        if (method == "HEAD" || head_.status == 204 || head_.status == 304) {
          body_done_ = true;
        } else if (head_.chunked) {
          chunked_ = ChunkedDecoder{};
        } else if (head_.content_length) {
          body_left_ = *head_.content_length;
          body_done_ = body_left_ == 0;
        } else {
          head_.keep_alive = false;  // body runs to close
          body_left_ = UINT64_MAX;
        }
        return head_;
      }
      if (buf_.size() - pos_ > kMaxHeadBytes)
        return make_error(ErrorKind::kProtocol, Phase::kConnect, "upstream HTTP head too large");
      bool nothing_yet = buf_.size() == pos_;
      // Waits in slices when someone must be asked whether to go on (the
      // client may cancel or leave while a POST hangs).
      Deadline slice = keep_waiting ? Deadline::earliest(head_d, Deadline::after(Millis(200))) : head_d;
      Io r = fill(slice);
      if (r == Io::kOk) continue;
      if ((r == Io::kWoken || r == Io::kTimeout) && !head_d.reached() && keep_waiting) {
        if ((*keep_waiting)()) continue;
        stream_.close();  // the request is abandoned mid-exchange
        return make_error(ErrorKind::kCancelled, Phase::kConnect,
                          "the client went away while the upstream had not answered");
      }
      if (r == Io::kWoken) {
        stream_.close();
        return make_error(ErrorKind::kCancelled, Phase::kConnect, "interrupted");
      }
      if (r == Io::kTimeout && !d.reached() && head_timeout.count() > 0) {
        stream_.close();
        return make_error(ErrorKind::kUnresponsive, Phase::kConnect,
                          "no response head within " + std::to_string(head_timeout.count()) +
                              "ms of sending the request");
      }
      if (r == Io::kTimeout)
        return make_error(ErrorKind::kTimeout, Phase::kConnect,
                          "waiting for the response head: deadline exceeded");
      if (reused && nothing_yet) break;  // stale keep-alive connection: resend once
      return make_error(ErrorKind::kClosed, Phase::kConnect,
                        r == Io::kEof ? "connection closed before the response head"
                                      : "reading response head: " + stream_.last_error());
    }
    stream_.close();
  }
  return make_error(ErrorKind::kClosed, Phase::kConnect, "connection closed before the response");
}

Io HttpConnection::read_body(std::string& out, bool* finished, Deadline d) {
  *finished = body_done_;
  while (!body_done_) {
    if (pos_ < buf_.size()) {
      std::string_view in(buf_.data() + pos_, buf_.size() - pos_);
      size_t before = in.size();
      if (head_.chunked) {
        auto r = chunked_.feed(in, out);
        pos_ += before - in.size();
        if (r == ChunkedDecoder::R::kError) {
          stream_.close();
          return Io::kError;
        }
        if (r == ChunkedDecoder::R::kDone) body_done_ = true;
      } else {
        size_t n = static_cast<size_t>(std::min<uint64_t>(body_left_, in.size()));
        out.append(in.data(), n);
        pos_ += n;
        if (body_left_ != UINT64_MAX) {
          body_left_ -= n;
          if (body_left_ == 0) body_done_ = true;
        }
      }
      if (body_done_) {
        reusable_ = head_.keep_alive;
        *finished = true;
      }
      return Io::kOk;
    }
    Io r = fill(d);
    if (r == Io::kOk) continue;
    if (r == Io::kEof && !head_.chunked && body_left_ == UINT64_MAX) {
      body_done_ = true;
      *finished = true;
      return Io::kOk;
    }
    return r;
  }
  return Io::kOk;
}

Expected<std::string> HttpConnection::read_full_body(size_t max, Deadline d) {
  std::string out;
  bool finished = false;
  while (!finished) {
    Io r = read_body(out, &finished, d);
    if (r == Io::kTimeout)
      return make_error(ErrorKind::kTimeout, Phase::kConnect, "reading body: deadline exceeded");
    if (r != Io::kOk)
      return make_error(ErrorKind::kClosed, Phase::kConnect,
                        r == Io::kEof ? "connection closed in the middle of the body"
                                      : "reading body: " + stream_.last_error());
    if (out.size() > max) {
      stream_.close();
      return make_error(ErrorKind::kProtocol, Phase::kConnect,
                        "response body larger than " + std::to_string(max) + " bytes");
    }
  }
  return out;
}

}  // namespace msb
