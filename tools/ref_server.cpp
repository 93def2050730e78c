#include "ref_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "tool_common.h"

namespace msb_tools {

namespace {

// The JSON text of the top-level "id" (a number or a string without
// escapes, as the bench and the bridge send them); "" when there is none.
std::string id_of(std::string_view body) {
  auto at = body.find("\"id\":");
  if (at == std::string_view::npos) return {};
  size_t s = at + 5;
  while (s < body.size() && body[s] == ' ') ++s;
  size_t e = s;
  if (e < body.size() && body[e] == '"') {
    e = body.find('"', e + 1);
    if (e == std::string_view::npos) return {};
    ++e;
  } else {
    while (e < body.size() && body[e] != ',' && body[e] != '}' && body[e] != ' ') ++e;
  }
  return std::string(body.substr(s, e - s));
}

bool has_method(std::string_view body) { return body.find("\"method\"") != std::string_view::npos; }

// The JSON-RPC answer to a request with `id`.
std::string answer_json(std::string_view body, const std::string& id) {
  if (body.find("\"method\":\"initialize\"") != std::string_view::npos)
    return R"({"jsonrpc":"2.0","id":)" + id +
           R"(,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"ref","version":"1"}}})";
  if (body.find("\"method\":\"ping\"") != std::string_view::npos)
    return R"({"jsonrpc":"2.0","id":)" + id + R"(,"result":{}})";
  return R"({"jsonrpc":"2.0","id":)" + id + R"(,"result":{"content":[{"type":"text","text":"hello"}]}})";
}

void append_chunk(std::string& out, std::string_view data) {
  char size[20];
  int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  out.append(size, static_cast<size_t>(n)).append(data).append("\r\n");
}

}  // namespace

int RefServer::start() {
  lfd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd_, 1024) != 0) return -1;
  socklen_t len = sizeof a;
  ::getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
  ep_ = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = lfd_;
  ::epoll_ctl(ep_, EPOLL_CTL_ADD, lfd_, &ev);
  th_ = std::thread([this] { loop(); });
  return ntohs(a.sin_port);
}

void RefServer::stop() {
  if (!th_.joinable()) return;
  stop_ = true;
  th_.join();
  for (auto& [fd, c] : conns_) ::close(fd);
  conns_.clear();
  streams_.clear();
  ::close(ep_);
  ::close(lfd_);
}

void RefServer::answer_streamable(std::string_view body, std::string& out) {
  std::string id = id_of(body);
  if (id.empty()) {
    out += "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
    return;
  }
  std::string json = answer_json(body, id);
  out += "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(json.size()) +
         "\r\n\r\n" + json;
}

void RefServer::answer_legacy(std::string_view target, std::string_view body, std::string& out) {
  constexpr std::string_view kKey = "sessionId=";
  auto k = target.find(kKey);
  auto s = k == std::string_view::npos ? streams_.end()
                                       : streams_.find(std::strtoull(target.data() + k + kKey.size(), nullptr, 10));
  if (s == streams_.end()) {
    out += "HTTP/1.1 404 Not Found\r\nContent-Length: 17\r\n\r\nSession not found";
    return;
  }
  out += "HTTP/1.1 202 Accepted\r\nContent-Length: 8\r\n\r\nAccepted";
  std::string id = id_of(body);
  if (id.empty() || !has_method(body)) return;  // a notification or a response
  auto st = conns_.find(s->second);
  if (st == conns_.end()) return;
  append_chunk(st->second.out, "event: message\ndata: " + answer_json(body, id) + "\n\n");
  dirty_stream_ = s->second;
}

void RefServer::open_stream(int fd, Conn& c) {
  c.stream_of = next_session_++;
  streams_[c.stream_of] = fd;
  c.out +=
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "Transfer-Encoding: chunked\r\n\r\n";
  append_chunk(c.out, "event: endpoint\ndata: /message?sessionId=" + std::to_string(c.stream_of) + "\n\n");
}

bool RefServer::serve_requests(int fd, Conn& c) {
  for (;;) {
    size_t he = c.in.find("\r\n\r\n");
    if (he == std::string::npos) return c.in.size() <= 64 * 1024;
    std::string_view head(c.in.data(), he + 2);
    size_t len = 0;
    if (auto cl = header_value(head, "content-length")) len = std::strtoul(std::string(*cl).c_str(), nullptr, 10);
    if (c.in.size() < he + 4 + len) return true;
    std::string_view line = head.substr(0, head.find("\r\n"));
    size_t sp = line.find(' ');
    std::string_view method = line.substr(0, sp);
    std::string_view target = sp == std::string_view::npos ? "" : line.substr(sp + 1, line.find(' ', sp + 1) - sp - 1);
    std::string_view body = std::string_view(c.in).substr(he + 4, len);
    if (mode_ == Mode::kStreamable) {
      answer_streamable(body, c.out);
    } else if (method == "GET" && target.starts_with("/sse")) {
      c.in.clear();
      open_stream(fd, c);
      return true;  // a stream carries no further requests
    } else {
      answer_legacy(target, body, c.out);
    }
    answered_++;
    c.in.erase(0, he + 4 + len);
  }
}

void RefServer::flush(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  if (!c.out.empty()) {
    ssize_t w = ::send(fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (w < 0 && errno != EAGAIN) {
      close_conn(fd);
      return;
    }
    if (w > 0) c.out.erase(0, static_cast<size_t>(w));
  }
  bool want = !c.out.empty();
  if (want != c.want_out) {
    epoll_event ev{};
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0u);
    ev.data.fd = fd;
    ::epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev);
    c.want_out = want;
  }
}

void RefServer::close_conn(int fd) {
  auto it = conns_.find(fd);
  if (it != conns_.end() && it->second.stream_of) streams_.erase(it->second.stream_of);
  ::epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
  ::close(fd);
  conns_.erase(fd);
}

void RefServer::on_readable(int fd, char* buf, size_t cap) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = it->second;
  ssize_t r = ::recv(fd, buf, cap, 0);
  if (r == 0 || (r < 0 && errno != EAGAIN)) {
    close_conn(fd);
    return;
  }
  if (r > 0 && c.stream_of) return;  // nothing is read from a stream
  if (r > 0) c.in.append(buf, static_cast<size_t>(r));
  if (!serve_requests(fd, c)) {
    close_conn(fd);
    return;
  }
  flush(fd);  // the 202 (or the answer) first, then the stream's event
  if (dirty_stream_ >= 0) {
    int s = dirty_stream_;
    dirty_stream_ = -1;
    flush(s);
  }
}

void RefServer::loop() {
  std::vector<epoll_event> evs(256);
  std::vector<char> buf(16384);
  while (!stop_) {
    int n = ::epoll_wait(ep_, evs.data(), static_cast<int>(evs.size()), 100);
    for (int k = 0; k < n; ++k) {
      int fd = evs[k].data.fd;
      if (fd == lfd_) {
        for (;;) {
          int c = ::accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          int one = 1;
          ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event ev{};
          ev.events = EPOLLIN;
          ev.data.fd = c;
          ::epoll_ctl(ep_, EPOLL_CTL_ADD, c, &ev);
          conns_[c];
        }
        continue;
      }
      if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(fd, buf.data(), buf.size());
      else flush(fd);
    }
  }
}

}  // namespace msb_tools
