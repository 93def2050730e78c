#include "blocking_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace msb_tools {

namespace {

constexpr size_t kMaxHead = 64 * 1024;

bool name_is(std::string_view line, std::string_view name) {
  return line.size() > name.size() && line[name.size()] == ':' &&
         strncasecmp(line.data(), name.data(), name.size()) == 0;
}

std::string_view value_of(std::string_view line, size_t name_len) {
  std::string_view v = line.substr(name_len + 1);
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

bool has_token(std::string_view v, std::string_view token) {
  for (size_t i = 0; i + token.size() <= v.size(); ++i)
    if (strncasecmp(v.data() + i, token.data(), token.size()) == 0) return true;
  return false;
}

}  // namespace

void BlockingHttp::disconnect() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_.clear();
  pos_ = 0;
  in_body_ = false;
  keep_ = false;
}

bool BlockingHttp::connect(msb::Deadline d) {
  disconnect();
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port_));
  if (inet_pton(AF_INET, host_.c_str(), &a.sin_addr) != 1) return false;  // the bench's 127.0.0.1
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return false;
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // Reads and writes block for at most a slice; the deadline is checked
  // between slices (no poll per read).
  timeval slice{0, 50 * 1000};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &slice, sizeof slice);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &slice, sizeof slice);
  for (;;) {
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return true;
    if (errno == EINTR && !d.reached()) continue;
    disconnect();
    return false;
  }
}

bool BlockingHttp::fill(msb::Deadline d) {
  char tmp[16 * 1024];
  for (;;) {
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n > 0) {
      buf_.append(tmp, static_cast<size_t>(n));
      return true;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    if ((errno == EAGAIN || errno == EWOULDBLOCK) && !d.reached()) continue;
    return false;
  }
}

void BlockingHttp::compact() {
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 64 * 1024) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
}

bool BlockingHttp::request(std::string_view method, std::string_view target,
                           std::string_view headers, std::string_view body, msb::Deadline d,
                           Head& head) {
  req_.clear();
  req_.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ");
  req_.append(host_).append(":").append(std::to_string(port_)).append("\r\n").append(headers);
  if (method != "GET" || !body.empty())
    req_.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  req_.append("\r\n").append(body);

  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = fd_ >= 0 && keep_ && !in_body_;
    if (!reused && !connect(d)) return false;
    in_body_ = false;
    buf_.clear();
    pos_ = 0;
    size_t sent = 0;
    while (sent < req_.size()) {
      ssize_t n = ::send(fd_, req_.data() + sent, req_.size() - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EINTR || ((errno == EAGAIN || errno == EWOULDBLOCK) && !d.reached())))
        continue;
      break;
    }
    if (sent < req_.size()) {
      disconnect();
      if (reused) continue;  // the server closed the kept connection: once more on a new one
      return false;
    }
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (buf_.size() > kMaxHead || !fill(d)) break;
    }
    if (end == std::string::npos) {
      const bool nothing = buf_.empty();
      disconnect();
      if (reused && nothing) continue;
      return false;
    }
    std::string_view h(buf_.data(), end);
    size_t eol = h.find("\r\n");
    std::string_view status_line = h.substr(0, eol);
    if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/") {
      disconnect();
      return false;
    }
    head = Head{};
    head.status = std::atoi(std::string(status_line.substr(9, 3)).c_str());
    bool http10 = status_line.substr(5, 3) == "1.0";
    bool has_length = false;
    chunked_ = false;
    left_ = 0;
    while (eol != std::string_view::npos) {
      size_t start = eol + 2;
      eol = h.find("\r\n", start);
      std::string_view line = h.substr(start, eol == std::string_view::npos ? h.npos : eol - start);
      if (name_is(line, "content-length")) {
        has_length = true;
        left_ = std::strtoull(std::string(value_of(line, 14)).c_str(), nullptr, 10);
      } else if (name_is(line, "transfer-encoding")) {
        chunked_ = has_token(value_of(line, 17), "chunked");
      } else if (name_is(line, "connection")) {
        head.close = has_token(value_of(line, 10), "close");
      } else if (name_is(line, "mcp-session-id")) {
        head.session_id = std::string(value_of(line, 14));
      }
    }
    pos_ = end + 4;
    keep_ = !head.close && !http10;
    chunk_data_ = after_data_ = trailers_ = false;
    until_close_ =
        !chunked_ && !has_length && head.status != 204 && head.status != 304 && head.status >= 200;
    if (until_close_) keep_ = false;
    in_body_ = chunked_ || until_close_ || left_ > 0;
    if (!in_body_) {
      compact();
      if (!keep_) disconnect();
    }
    return true;
  }
  return false;
}

int BlockingHttp::read_body(std::string& out, msb::Deadline d) {
  if (!in_body_) return 1;
  auto fail = [&] {
    disconnect();
    return -1;
  };
  for (;;) {
    size_t avail = buf_.size() - pos_;
    if (until_close_) {
      if (avail > 0) {
        out.append(buf_, pos_, avail);
        pos_ = buf_.size();
        compact();
        return 0;
      }
      if (!fill(d)) {
        disconnect();  // the end of the body (or a failure: the bench cannot tell)
        return 1;
      }
      continue;
    }
    if (!chunked_ || chunk_data_) {
      size_t n = std::min(left_, avail);
      out.append(buf_, pos_, n);
      pos_ += n;
      left_ -= n;
      if (left_ == 0) {
        if (!chunked_) {
          in_body_ = false;
          compact();
          if (!keep_) disconnect();
          return 1;
        }
        chunk_data_ = false;  // its CRLF follows
        after_data_ = true;
      }
      if (n > 0) {
        compact();
        return 0;
      }
      if (!fill(d)) return fail();
      continue;
    }
    // A chunk-size line, the CRLF after a chunk's data, or a trailer line.
    size_t e = buf_.find("\r\n", pos_);
    if (e == std::string::npos) {
      if (avail > 4096 || !fill(d)) return fail();
      continue;
    }
    std::string_view line(buf_.data() + pos_, e - pos_);
    pos_ = e + 2;
    if (after_data_) {
      after_data_ = false;
      if (!line.empty()) return fail();
      continue;
    }
    if (trailers_) {
      if (!line.empty()) continue;
      trailers_ = false;
      in_body_ = false;
      compact();
      if (!keep_) disconnect();
      return 1;
    }
    char* endp = nullptr;
    std::string size_text(line.substr(0, line.find(';')));
    unsigned long long size = std::strtoull(size_text.c_str(), &endp, 16);
    if (size_text.empty() || endp != size_text.c_str() + size_text.size()) return fail();
    if (size == 0) {
      trailers_ = true;
      continue;
    }
    left_ = size;
    chunk_data_ = true;
  }
}

bool BlockingHttp::read_full_body(std::string& out, size_t max, msb::Deadline d) {
  for (;;) {
    int r = read_body(out, d);
    if (r < 0) return false;
    if (out.size() > max) {
      disconnect();
      return false;
    }
    if (r == 1) return true;
  }
}

}  // namespace msb_tools
