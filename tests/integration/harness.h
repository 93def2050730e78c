// What the integration tests share: the bridge (in-process) in front of the
// fault-switchable example legacy server (in-process), both on 127.0.0.1 port
// 0, driven by independent HTTP clients (cpp-httplib's, and a raw socket for
// what that client will not send). Every client read has a timeout, so a
// hanging bridge fails a test instead of blocking it.
#pragma once

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "legacy_server.h"
#include "mcp_sse_bridge/front_server.h"

using json = nlohmann::json;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

namespace itest {

constexpr auto kClientTimeout = 15s;  // far above every bound asserted below

inline int64_t ms_since(SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t).count();
}

inline msb::Config test_config(int upstream_port) {
  msb::Config c;
  c.upstream.sse_url = *msb::parse_url("http://127.0.0.1:" + std::to_string(upstream_port) + "/sse");
  c.upstream.connect_timeout = 1000ms;
  c.upstream.endpoint_timeout = 600ms;
  c.upstream.initialize_timeout = 1000ms;
  c.upstream.request_timeout = 2000ms;
  c.upstream.max_request_timeout = 6000ms;
  c.upstream.ping_interval = 400ms;
  c.upstream.ping_timeout = 300ms;
  c.listen_host = "127.0.0.1";
  c.listen_port = 0;
  c.keepalive_interval = 15000ms;
  c.loop_threads = 2;
  c.session_secret = "integration-test-secret-0123456789";
  // Per-call sessions by default: these tests inject faults into session
  // setup, which a session warmed before the fault would skip. The warm pool
  // has tests of its own below.
  c.upstream.pool.size = 0;
  return c;
}

struct Reply {
  int status = 0;
  std::string body;
  std::string content_type;
  std::string session_id;
  std::vector<json> messages;  // every JSON-RPC message in the body (SSE or JSON)
  int64_t ms = 0;
  bool transport_ok = false;
  const json& last() const { return messages.back(); }
};

inline std::vector<json> parse_sse_messages(const std::string& body) {
  std::vector<json> out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t end = body.find("\n\n", pos);
    if (end == std::string::npos) end = body.size();
    std::string block = body.substr(pos, end - pos);
    pos = end + 2;
    std::string data;
    size_t lp = 0;
    while (lp < block.size()) {
      size_t le = block.find('\n', lp);
      if (le == std::string::npos) le = block.size();
      std::string line = block.substr(lp, le - lp);
      lp = le + 1;
      if (line.rfind("data: ", 0) == 0) data += line.substr(6);
    }
    if (!data.empty()) out.push_back(json::parse(data));
  }
  return out;
}

class Harness {
 public:
  explicit Harness(example::Options opt = {}, std::function<void(msb::Config&)> tweak = {})
      : upstream_(std::make_unique<example::LegacyServer>(opt)), opt_(opt) {
    upstream_port_ = upstream_->start("127.0.0.1", 0);
    REQUIRE(upstream_port_ > 0);
    cfg_ = test_config(upstream_port_);
    if (tweak) tweak(cfg_);
    bridge_ = std::make_unique<msb::FrontServer>(cfg_);
    std::string why;
    REQUIRE_MESSAGE(bridge_->start(&why), why);
  }
  ~Harness() {
    bridge_->stop();
    if (upstream_) upstream_->stop();
  }

  example::LegacyServer& upstream() { return *upstream_; }
  example::Faults& faults() { return upstream_->faults(); }
  int port() const { return bridge_->port(); }
  msb::FrontServer& bridge() { return *bridge_; }
  const msb::Config& cfg() const { return cfg_; }

  // Stops the upstream (connections are then refused) and later starts a new
  // one on the same port: a server restart.
  void stop_upstream() { upstream_.reset(); }
  void restart_upstream() {
    upstream_.reset();
    upstream_ = std::make_unique<example::LegacyServer>(opt_);
    int p = -1;
    for (int i = 0; i < 50 && p < 0; ++i) {  // the port may linger briefly
      p = upstream_->start("127.0.0.1", upstream_port_);
      if (p < 0) {
        upstream_ = std::make_unique<example::LegacyServer>(opt_);
        std::this_thread::sleep_for(20ms);
      }
    }
    REQUIRE(p == upstream_port_);
  }

  Reply post(const std::string& body, const std::string& sid, bool sse = true,
             httplib::Headers extra = {}, const std::string& ctype = "application/json") {
    httplib::Client cli("127.0.0.1", port());
    cli.set_connection_timeout(2s);
    cli.set_read_timeout(kClientTimeout);
    httplib::Headers h = {{"Accept", sse ? "application/json, text/event-stream" : "application/json"}};
    if (!sid.empty()) h.emplace("Mcp-Session-Id", sid);
    for (auto& kv : extra) h.emplace(kv.first, kv.second);
    auto t0 = SteadyClock::now();
    auto res = cli.Post(cfg_.path, h, body, ctype);
    Reply r;
    r.ms = ms_since(t0);
    if (!res) return r;
    r.transport_ok = true;
    r.status = res->status;
    r.body = res->body;
    r.content_type = res->get_header_value("Content-Type");
    r.session_id = res->get_header_value("Mcp-Session-Id");
    if (r.content_type.rfind("text/event-stream", 0) == 0) {
      r.messages = parse_sse_messages(r.body);
    } else if (!r.body.empty()) {
      auto j = json::parse(r.body, nullptr, false);
      if (j.is_array()) {
        for (auto& e : j) r.messages.push_back(e);
      } else if (!j.is_discarded()) {
        r.messages.push_back(j);
      }
    }
    return r;
  }

  std::string initialize() {
    json init = {{"jsonrpc", "2.0"},
                 {"id", 0},
                 {"method", "initialize"},
                 {"params",
                  {{"protocolVersion", "2025-06-18"},
                   {"capabilities", json::object()},
                   {"clientInfo", {{"name", "bridge-test"}, {"version", "1"}}}}}};
    auto r = post(init.dump(), "");
    REQUIRE(r.status == 200);
    REQUIRE(!r.session_id.empty());
    REQUIRE(r.messages.size() == 1);
    CHECK(r.last()["result"]["serverInfo"]["name"] == "example-legacy-server");
    auto n = post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})", r.session_id);
    CHECK(n.status == 202);
    return r.session_id;
  }

  Reply call_tool(const std::string& sid, json id, const std::string& tool, json args,
                  bool sse = true, json meta = nullptr) {
    json params = {{"name", tool}, {"arguments", std::move(args)}};
    if (!meta.is_null()) params["_meta"] = meta;
    json req = {{"jsonrpc", "2.0"}, {"id", id}, {"method", "tools/call"}, {"params", params}};
    return post(req.dump(), sid, sse);
  }

 private:
  std::unique_ptr<example::LegacyServer> upstream_;
  example::Options opt_;
  int upstream_port_ = 0;
  msb::Config cfg_;
  std::unique_ptr<msb::FrontServer> bridge_;
};

// The first text content of a tool result; a descriptive placeholder when the
// response is not one (the CHECK then fails with it instead of aborting).
inline std::string text_of(const json& resp) {
  if (!resp.contains("result") || !resp["result"].contains("content") || resp["result"]["content"].empty())
    return "<not a tool result: " + resp.dump().substr(0, 300) + ">";
  return resp["result"]["content"][0].value("text", std::string("<no text>"));
}

// Asserts the reply is the bridge's JSON-RPC error for request `id`, of the
// given kind, delivered as HTTP 200.
inline void check_bridge_error(const Reply& r, const json& id, const std::string& kind,
                        const std::string& phase = "") {
  REQUIRE(r.transport_ok);
  CHECK(r.status == 200);
  REQUIRE(!r.messages.empty());
  const json& m = r.last();
  CHECK(m["id"] == id);
  REQUIRE(m.contains("error"));
  CHECK(m["error"]["data"]["bridge"]["kind"] == kind);
  if (!phase.empty()) CHECK(m["error"]["data"]["bridge"]["phase"] == phase);
  CHECK(m["error"]["code"] == (kind == "deadline_exceeded" ? -32001 : -32000));
}

// After a failure, the upstream is made healthy again and the next call works.
inline void check_recovers(Harness& h, const std::string& sid) {
  auto r = h.call_tool(sid, "after", "echo", {{"text", "ok again"}});
  REQUIRE(r.messages.size() >= 1);
  CHECK(r.last()["id"] == "after");
  CHECK(text_of(r.last()) == "ok again");
}


inline bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds bound) {
  auto end = SteadyClock::now() + bound;
  while (SteadyClock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

const std::string kTls = std::string(TEST_DATA_DIR) + "/tls/";
const std::string kToken = "test-token-0123456789abcdef";

// A raw TCP client for what cpp-httplib's client will not send (slow heads,
// bytes that are not HTTP). Every read is bounded.
class RawConn {
 public:
  explicit RawConn(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawConn() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }
  // One recv of at most `max` bytes, waiting up to `within` for it; sets
  // *closed when the peer closed.
  std::string read_some(size_t max, std::chrono::milliseconds within, bool* closed) {
    std::string out;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(within.count())) <= 0) return out;
    out.resize(max);
    ssize_t n = ::recv(fd_, out.data(), max, 0);
    if (n <= 0) {
      *closed = true;
      n = 0;
    }
    out.resize(static_cast<size_t>(n));
    return out;
  }
  // Closes with a reset (SO_LINGER 0): the peer's next write fails.
  void reset() {
    if (fd_ < 0) return;
    linger l{1, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    ::close(fd_);
    fd_ = -1;
  }
  bool send(const std::string& s) { return ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size()); }
  // Reads until the peer closes or `within` passes; returns what came.
  std::string read_until_close(std::chrono::milliseconds within, bool* closed) {
    std::string out;
    *closed = false;
    auto end = SteadyClock::now() + within;
    while (SteadyClock::now() < end) {
      pollfd p{fd_, POLLIN, 0};
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - SteadyClock::now()).count());
      if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        *closed = true;
        break;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  struct Response {
    int status = 0;  // 0: no complete response head arrived
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    bool closed = false;  // the peer closed after (or instead of) the response
    std::string header(const std::string& name) const {
      for (auto& [k, v] : headers)
        if (strcasecmp(k.c_str(), name.c_str()) == 0) return v;
      return {};
    }
  };
  // Reads one response framed by Content-Length or chunked encoding, leaving
  // later bytes for the next call. A response with neither is read until the
  // peer closes.
  Response read_response(std::chrono::milliseconds within) {
    Response r;
    auto end = SteadyClock::now() + within;
    auto fill = [&]() {
      pollfd p{fd_, POLLIN, 0};
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(end - SteadyClock::now()).count());
      if (left <= 0 || ::poll(&p, 1, left) <= 0) return false;
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        r.closed = true;
        return false;
      }
      pending_.append(buf, static_cast<size_t>(n));
      return true;
    };
    size_t head_end;
    while ((head_end = pending_.find("\r\n\r\n")) == std::string::npos)
      if (!fill()) return r;
    std::string head = pending_.substr(0, head_end);
    pending_.erase(0, head_end + 4);
    size_t le = head.find("\r\n");
    std::string status_line = head.substr(0, le);
    if (status_line.size() >= 12) r.status = std::atoi(status_line.c_str() + 9);
    long long length = -1;
    while (le != std::string::npos) {
      size_t next = head.find("\r\n", le + 2);
      std::string line = head.substr(le + 2, next == std::string::npos ? std::string::npos : next - le - 2);
      le = next;
      auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      r.headers.emplace_back(line.substr(0, colon), v);
      if (strcasecmp(line.substr(0, colon).c_str(), "Content-Length") == 0) length = std::atoll(v.c_str());
    }
    if (strcasecmp(r.header("Transfer-Encoding").c_str(), "chunked") == 0) {
      for (;;) {
        size_t le2;
        while ((le2 = pending_.find("\r\n")) == std::string::npos)
          if (!fill()) return r;
        size_t n = std::strtoul(pending_.c_str(), nullptr, 16);
        while (pending_.size() < le2 + 2 + n + 2)
          if (!fill()) return r;
        r.body.append(pending_, le2 + 2, n);
        pending_.erase(0, le2 + 2 + n + 2);
        if (n == 0) return r;
      }
    }
    if (length < 0) {
      while (fill()) {
      }
      r.body = std::move(pending_);
      pending_.clear();
      return r;
    }
    while (pending_.size() < static_cast<size_t>(length))
      if (!fill()) break;
    r.body = pending_.substr(0, static_cast<size_t>(length));
    pending_.erase(0, std::min(pending_.size(), static_cast<size_t>(length)));
    return r;
  }
  // True when the peer has closed the connection (within `within`).
  bool peer_closed(std::chrono::milliseconds within) {
    if (!pending_.empty()) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(within.count())) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, MSG_PEEK) == 0;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string pending_;
};

inline bool has_header(const example::Headers& hs, const std::string& name) {
  for (auto& [k, v] : hs)
    if (strcasecmp(k.c_str(), name.c_str()) == 0) return true;
  return false;
}
inline std::string header_value(const example::Headers& hs, const std::string& name) {
  for (auto& [k, v] : hs)
    if (strcasecmp(k.c_str(), name.c_str()) == 0) return v;
  return {};
}

// A session-era POST of `body` to /mcp as bytes (keep-alive; `sse`: it also
// accepts text/event-stream; `http` "1.0" or "1.1").
inline std::string post_bytes(const std::string& sid, const std::string& body, bool sse = false,
                              const std::string& http = "1.1") {
  return "POST /mcp HTTP/" + http + "\r\nHost: 127.0.0.1\r\nAccept: application/json" +
         (sse ? ", text/event-stream" : "") + "\r\nContent-Type: application/json\r\nMcp-Session-Id: " + sid +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Sends a POST by hand and returns the socket, so the test can walk away.
inline int raw_post(int port, const std::string& sid, const std::string& body) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  std::string req = post_bytes(sid, body, true);
  REQUIRE(send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
  return fd;
}

// A listening socket on 127.0.0.1, any port (written to *port).
inline int loopback_listener(int backlog, int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(fd, backlog) == 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// Connections that each hold one of the bridge's connection slots
// (--max-connections): a partial request head that never completes (until
// --client-read-timeout).
inline std::vector<std::unique_ptr<RawConn>> hold_connections(int port, int n) {
  std::vector<std::unique_ptr<RawConn>> hold;
  for (int i = 0; i < n; ++i) {
    hold.push_back(std::make_unique<RawConn>(port));
    REQUIRE(hold.back()->connected());
    hold.back()->send("POST /mcp HTTP/1.1\r\n");
  }
  std::this_thread::sleep_for(200ms);
  return hold;
}

// A loopback address whose connects hang: a listener with a full accept
// queue (never accepted) makes the kernel drop further SYNs, as a black-holed
// path does. Closed with the object.
class BlackholeListener {
 public:
  BlackholeListener() {
    fd_ = loopback_listener(0, &port_);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    // Fill the queue: connects that complete at once are queued; once one
    // does not complete within 200 ms, SYNs are being dropped.
    for (int i = 0; i < 8; ++i) {
      int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      fillers_.push_back(c);
      ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a);
      pollfd p{c, POLLOUT, 0};
      if (::poll(&p, 1, 200) == 0) break;
    }
  }
  ~BlackholeListener() {
    for (int c : fillers_) ::close(c);
    ::close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::vector<int> fillers_;
};

inline std::string init_body() {
  return json{{"jsonrpc", "2.0"},
              {"id", 0},
              {"method", "initialize"},
              {"params",
               {{"protocolVersion", "2025-06-18"},
                {"capabilities", json::object()},
                {"clientInfo", {{"name", "ops-test"}, {"version", "1"}}}}}}
      .dump();
}

inline std::string scrape(int port, const httplib::Headers& h = {}, int* status = nullptr) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(kClientTimeout);
  auto r = cli.Get("/metrics", h);
  if (status) *status = r ? r->status : 0;
  return r ? r->body : std::string();
}

// The value of one series line ("name{labels} v") in a scrape; -1 if absent.
inline double series(const std::string& scrape_text, const std::string& name_and_labels) {
  auto pos = scrape_text.find("\n" + name_and_labels + " ");
  if (pos == std::string::npos) return -1;
  pos += name_and_labels.size() + 2;
  return std::stod(scrape_text.substr(pos, scrape_text.find('\n', pos) - pos));
}

}  // namespace itest
using namespace itest;
