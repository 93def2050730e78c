#include "legacy_server.h"

#include <httplib.h>

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "mcp_sse_bridge/peer_socket.h"

namespace example {

using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

int level_rank(const std::string& l) {
  static const char* kLevels[] = {"debug", "info", "notice", "warning", "error",
                                  "critical", "alert", "emergency"};
  for (int i = 0; i < 8; ++i)
    if (l == kLevels[i]) return i;
  return 1;
}

std::string random_hex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += d[rng() & 15];
  return s;
}

json tool_list() {
  auto obj = [](json props, json required) {
    return json{{"type", "object"}, {"properties", props}, {"required", required}};
  };
  return json::array({
      {{"name", "echo"}, {"description", "Returns its text"},
       {"inputSchema", obj({{"text", {{"type", "string"}}}}, {"text"})}},
      {{"name", "add"}, {"description", "Adds two numbers"},
       {"inputSchema", obj({{"a", {{"type", "number"}}}, {"b", {{"type", "number"}}}}, {"a", "b"})}},
      {{"name", "sleep"}, {"description", "Sleeps ms milliseconds, reporting progress"},
       {"inputSchema", obj({{"ms", {{"type", "integer"}}}}, {"ms"})}},
      {{"name", "big"}, {"description", "Returns a text result of `bytes` bytes"},
       {"inputSchema", obj({{"bytes", {{"type", "integer"}}}}, {"bytes"})}},
      {{"name", "whoami"}, {"description", "Returns the Authorization header of this session's GET"},
       {"inputSchema", obj(json::object(), json::array())}},
      {{"name", "count"}, {"description", "Adds one to this SSE session's counter and returns it"},
       {"inputSchema", obj(json::object(), json::array())}},
      {{"name", "touch"},
       {"description", "Changes resource `uri`: every session subscribed to it gets "
                       "notifications/resources/updated; returns how many"},
       {"inputSchema", obj({{"uri", {{"type", "string"}}}}, {"uri"})}},
      {{"name", "list_changed"},
       {"description", "Sends notifications/<kind>/list_changed (kind: tools, prompts or "
                       "resources) on this session's stream, then answers"},
       {"inputSchema", obj({{"kind", {{"type", "string"}}}}, {"kind"})}},
      {{"name", "notify_later"},
       {"description", "Answers at once; `ms` later sends notifications/tools/list_changed and a "
                       "notifications/message (`text`) on this session's stream"},
       {"inputSchema", obj({{"ms", {{"type", "integer"}}}, {"text", {{"type", "string"}}}}, {"ms"})}},
      {{"name", "roots"},
       {"description", "Asks the client for its roots (roots/list) and returns the answer"},
       {"inputSchema", obj(json::object(), json::array())}},
      {{"name", "init_params"},
       {"description", "Returns the params of this SSE session's initialize (capabilities, clientInfo)"},
       {"inputSchema", obj(json::object(), json::array())}},
      {{"name", "fail"}, {"description", "Answers with a JSON-RPC error: `code`, `message`"},
       {"inputSchema", obj({{"code", {{"type", "integer"}}}, {"message", {{"type", "string"}}}}, {"code"})}},
      {{"name", "log"}, {"description", "Emits a log message at `level` (`repeat` times, default once)"},
       {"inputSchema", obj({{"level", {{"type", "string"}}}, {"text", {{"type", "string"}}},
                            {"repeat", {{"type", "integer"}}}},
                           {"level", "text"})}},
  });
}

// Tools that ask the client mid-call (server-to-client requests), for the
// bridge's MRTR translation. Each waits up to `wait_ms` (default 30 s) per
// answer; an error answer becomes an isError result naming it.
json asking_tool_list() {
  auto obj = [](json props) {
    props["wait_ms"] = {{"type", "integer"}};
    return json{{"type", "object"}, {"properties", props}, {"required", json::array()}};
  };
  return json::array({
      {{"name", "ask_name"}, {"description", "Asks the user's name (elicitation/create)"},
       {"inputSchema", obj(json::object())}},
      {{"name", "ask_model"}, {"description", "Asks the client's model (sampling/createMessage)"},
       {"inputSchema", obj({{"prompt", {{"type", "string"}}}})}},
      {{"name", "ask_roots"}, {"description", "Asks the client's roots (roots/list)"},
       {"inputSchema", obj(json::object())}},
      {{"name", "ask_twice"},
       {"description", "Asks the user's name, then the model to greet it (two rounds)"},
       {"inputSchema", obj(json::object())}},
      {{"name", "ask_both"},
       {"description", "Asks the user's name and the model at once (two requests `gap_ms` apart, "
                       "one round)"},
       {"inputSchema", obj({{"gap_ms", {{"type", "integer"}}}})}},
  });
}

}  // namespace

struct Session {
  std::string id;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> out;  // serialized messages to send
  bool closed = false;          // stream must end
  bool half_event = false;      // write half an event, then end
  bool silent = false;          // never write again, stay open
  bool initialized = false;
  std::string log_level = "debug";
  std::string authorization;  // of the GET that opened the session (tool whoami)
  long long counter = 0;      // tool count: state kept per SSE session
  std::string init_params;    // of this session's initialize (tool init_params)
  std::set<std::string> cancelled;
  std::map<std::string, std::string> answers;  // client answers to our requests, by id (JSON)
  std::set<std::string> subscriptions;  // resources/subscribe URIs of this session

  void send(const json& msg) {
    std::lock_guard lk(mu);
    if (closed || silent) return;
    out.push_back(msg.dump());
    cv.notify_all();
  }
  void close() {
    std::lock_guard lk(mu);
    closed = true;
    cv.notify_all();
  }
};

// What the POST handler wants done with its connection once its response is
// written (fault switches; read by PipeliningServer's loop on the same thread).
enum class After { kKeep, kClose, kAbort };
thread_local After tl_after = After::kKeep;
// The request being handled was already buffered when its turn came.
thread_local bool tl_pipelined = false;

// One buffered stream per connection. cpp-httplib 0.11.4 reads each request
// through a fresh SocketStream whose read-ahead buffer dies with it: the
// bytes of a pipelined next request (RFC 9112 §9.3.2) it had read ahead are
// lost, and the client waits until the keep-alive timeout closes the
// connection. Keeping one buffer for the connection's life keeps them.
class ConnectionStream : public httplib::Stream {
 public:
  ConnectionStream(int fd, int read_timeout_ms, int write_timeout_ms)
      : fd_(fd), read_ms_(read_timeout_ms), write_ms_(write_timeout_ms) {}
  bool buffered() const { return pos_ < len_; }
  bool is_readable() const override { return buffered() || wait(POLLIN, read_ms_); }
  bool is_writable() const override { return wait(POLLOUT, write_ms_); }
  ssize_t read(char* ptr, size_t size) override {
    if (!buffered()) {
      if (!wait(POLLIN, read_ms_)) return -1;
      ssize_t n;
      do n = ::recv(fd_, buf_, sizeof buf_, 0);
      while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      pos_ = 0;
      len_ = static_cast<size_t>(n);
    }
    size_t n = std::min(size, len_ - pos_);
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (tl_after == After::kAbort) return -1;  // the connection ends unanswered
    if (!is_writable()) return -1;
    ssize_t n;
    do n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { name(true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { name(false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  bool wait(short events, int ms) const {
    pollfd p{fd_, events, 0};
    int r;
    do r = ::poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    return r > 0;
  }
  void name(bool peer, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if ((peer ? ::getpeername(fd_, reinterpret_cast<sockaddr*>(&a), &len)
              : ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len)) != 0)
      return;
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&a);
      ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
      port = ntohs(in->sin_port);
    } else if (a.ss_family == AF_INET6) {
      auto* in = reinterpret_cast<sockaddr_in6*>(&a);
      ::inet_ntop(AF_INET6, &in->sin6_addr, text, sizeof text);
      port = ntohs(in->sin6_port);
    }
    ip = text;
  }
  int fd_;
  int read_ms_, write_ms_;
  char buf_[4096];
  size_t pos_ = 0, len_ = 0;
};

// cpp-httplib 0.11.4 listens with a backlog of 5; raise it once bound.
template <class Base>
class Backlogged : public Base {
 public:
  using Base::Base;
  void raise_backlog(int n) {
    if (this->svr_sock_ != INVALID_SOCKET) ::listen(this->svr_sock_, n);
  }
};

// Plain HTTP with pipelined requests served in order (ConnectionStream),
// as Node's http, uvicorn and Go's net/http do.
class PipeliningServer : public Backlogged<httplib::Server> {
 private:
  bool process_and_close_socket(socket_t sock) override {
    ConnectionStream strm(sock, static_cast<int>(read_timeout_sec_ * 1000 + read_timeout_usec_ / 1000),
                          static_cast<int>(write_timeout_sec_ * 1000 + write_timeout_usec_ / 1000));
    bool ret = false;
    for (size_t count = keep_alive_max_count_; count > 0 && svr_sock_ != INVALID_SOCKET; --count) {
      if (!strm.buffered() && !idle_wait(sock)) break;
      bool closed = false;
      tl_after = After::kKeep;
      tl_pipelined = strm.buffered();
      ret = process_request(strm, count == 1, closed, nullptr);
      if (!ret || closed || tl_after != After::kKeep) break;
    }
    tl_after = After::kKeep;
    // A lingering close (as nginx does): FIN first, then read what the client
    // still sends for a moment, so that unread bytes do not turn the close
    // into a reset that could destroy the response in flight.
    ::shutdown(sock, SHUT_WR);
    char sink[4096];
    for (int i = 0; i < 20; ++i) {
      pollfd p{sock, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) break;
      if (::recv(sock, sink, sizeof sink, 0) <= 0) break;
    }
    ::close(sock);
    return ret;
  }
  // Waits for the next request up to the keep-alive timeout, in slices so
  // that stop() is not held up.
  bool idle_wait(socket_t sock) const {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(keep_alive_timeout_sec_);
    while (svr_sock_ != INVALID_SOCKET && std::chrono::steady_clock::now() < until) {
      pollfd p{sock, POLLIN, 0};
      int r = ::poll(&p, 1, 50);
      if (r > 0) return true;
      if (r < 0 && errno != EINTR) return false;
    }
    return false;
  }
};
using HttpServer = PipeliningServer;
using HttpsServer = Backlogged<httplib::SSLServer>;

struct LegacyServer::Impl {
  Options opt;
  Faults faults;
  std::unique_ptr<httplib::Server> svr_owner;
  httplib::Server& svr;
  std::function<void(int)> raise_backlog;
  std::thread thread;
  std::mutex headers_mu;
  Headers last_get, last_post;
  std::vector<PostRecord> post_log;  // under headers_mu
  int port = -1;
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::map<std::string, std::shared_ptr<Session>> sessions;
  std::atomic<int> sessions_opened{0}, premature{0}, cancellations{0}, open_streams{0};
  std::atomic<int> sse_requests{0};  // every GET /sse, refused ones included
  std::atomic<int> subscribes{0}, unsubscribes{0};
  std::atomic<int> workers{0};
  msb::PeerSockets peers;  // to notice clients that closed their SSE stream
  std::string last_cancelled;

  static std::unique_ptr<httplib::Server> make_server(const Options& o) {
    if (o.tls_cert.empty()) return std::make_unique<HttpServer>();
    auto s = std::make_unique<HttpsServer>(o.tls_cert.c_str(), o.tls_key.c_str());
    if (!s->is_valid()) throw std::runtime_error("example server: cannot load " + o.tls_cert);
    return s;
  }
  static Headers copy_headers(const httplib::Request& req) {
    Headers h;
    for (auto& [k, v] : req.headers)
      if (k != "REMOTE_ADDR" && k != "REMOTE_PORT" && k != "LOCAL_ADDR" && k != "LOCAL_PORT")
        h.emplace_back(k, v);
    return h;
  }

  explicit Impl(Options o) : opt(o), svr_owner(make_server(o)), svr(*svr_owner) {
    raise_backlog = [this](int n) {
      if (opt.tls_cert.empty()) static_cast<HttpServer&>(svr).raise_backlog(n);
      else static_cast<HttpsServer&>(svr).raise_backlog(n);
    };
    int n = opt.threads;
    svr.new_task_queue = [n] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
    svr.set_tcp_nodelay(true);
    svr.set_keep_alive_max_count(10000);
    svr.Get("/sse", [this](const httplib::Request& req, httplib::Response& res) { on_sse(req, res); });
    auto post = [this](const httplib::Request& req, httplib::Response& res) { on_post(req, res); };
    svr.Post("/message", post);
    svr.Post("/messages/", post);
  }

  std::string eol() const { return opt.python_style ? "\r\n" : "\n"; }

  void on_sse(const httplib::Request& req, httplib::Response& res) {
    sse_requests++;
    if (int st = faults.sse_status.load()) {
      res.status = st;
      res.set_content("sse refused by fault switch", "text/plain");
      return;
    }
    if (faults.sse_wrong_type.load()) {
      res.set_content("<html>not an event stream</html>", "text/html");
      return;
    }
    auto s = std::make_shared<Session>();
    s->id = opt.python_style ? random_hex(32) : random_hex(8) + "-" + random_hex(4) + "-" +
                                                    random_hex(4) + "-" + random_hex(4) + "-" +
                                                    random_hex(12);
    {
      std::lock_guard lk(mu);
      sessions[s->id] = s;
    }
    s->authorization = req.get_header_value("Authorization");
    {
      std::lock_guard lk(headers_mu);
      last_get = copy_headers(req);
    }
    sessions_opened++;
    open_streams++;
    std::string host = req.get_header_value("Host");
    bool drop_before = faults.drop_before_endpoint.load();
    bool no_endpoint = faults.no_endpoint.load();
    bool drop_after = faults.drop_after_endpoint.load();
    bool foreign = faults.endpoint_foreign.load();
    int delay = faults.delay_endpoint_ms.load();
    res.set_header("Cache-Control", "no-cache");
    int peer_fd = peers.find(req.remote_addr, req.remote_port, req.local_port);
    auto started = std::make_shared<bool>(false);
    auto last_ping = std::make_shared<std::chrono::steady_clock::time_point>(std::chrono::steady_clock::now());
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, s, started, last_ping, drop_before, no_endpoint, drop_after, foreign, delay, peer_fd](
            size_t, httplib::DataSink& sink) {
          const std::string nl = eol();
          if (!*started) {
            *started = true;
            if (drop_before) return false;
            if (delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
            if (!no_endpoint) {
              std::string ep = opt.python_style ? "/messages/?session_id=" + s->id
                                                : "/message?sessionId=" + s->id;
              if (foreign) ep = "http://169.254.169.254" + ep;
              std::string ev = "event: endpoint" + nl + "data: " + ep + nl + nl;
              if (!sink.write(ev.data(), ev.size())) return false;
            }
            if (drop_after) return false;
            return true;
          }
          if (stopping.load() || msb::peer_gone(peer_fd)) return false;
          std::deque<std::string> batch;
          bool half = false, closed = false, silent = false;
          {
            std::unique_lock lk(s->mu);
            s->cv.wait_for(lk, 25ms, [&] { return !s->out.empty() || s->closed || s->half_event; });
            batch.swap(s->out);
            half = s->half_event;
            closed = s->closed;
            silent = s->silent;
          }
          if (silent || no_endpoint) return true;  // open, saying nothing
          for (auto& m : batch) {
            std::string ev = "event: message" + nl;
            if (faults.multiline_data) {  // a line per line of the pretty-printed JSON: the client joins them with '\n'
              std::string pretty = json::parse(m, nullptr, false).dump(1), line;
              std::istringstream lines(pretty);
              while (std::getline(lines, line)) ev += "data: " + line + nl;
              ev += nl;
            } else {
              ev += "data: " + m + nl + nl;
            }
            if (!sink.write(ev.data(), ev.size())) return false;
          }
          if (half) {
            std::string ev = "event: message" + nl + "data: {\"jsonrpc\":\"2.0\",\"id\":";
            sink.write(ev.data(), ev.size());
            return false;
          }
          if (closed) return false;
          if (opt.ping_comment_ms > 0 &&
              std::chrono::steady_clock::now() - *last_ping >= std::chrono::milliseconds(opt.ping_comment_ms)) {
            *last_ping = std::chrono::steady_clock::now();
            std::string c = ": ping - keepalive" + nl + nl;
            if (!sink.write(c.data(), c.size())) return false;
          }
          return true;
        },
        [this, s](bool) {
          s->close();
          std::lock_guard lk(mu);
          sessions.erase(s->id);
          open_streams--;
        });
  }

  void on_post(const httplib::Request& req, httplib::Response& res) {
    {
      std::lock_guard lk(headers_mu);
      last_post = copy_headers(req);
    }
    std::string sid = req.has_param("sessionId") ? req.get_param_value("sessionId")
                                                 : req.get_param_value("session_id");
    std::shared_ptr<Session> s;
    {
      std::lock_guard lk(mu);
      auto it = sessions.find(sid);
      if (it != sessions.end()) s = it->second;
    }
    if (!s) {
      res.status = 404;
      res.set_content("Could not find session", "text/plain");
      return;
    }
    json msg = json::parse(req.body, nullptr, false);
    if (msg.is_discarded() || !msg.is_object()) {
      res.status = 400;
      res.set_content("Could not parse message", "text/plain");
      return;
    }
    std::string method = msg.value("method", "");
    {
      std::lock_guard lk(headers_mu);
      if (post_log.size() < 10000) post_log.push_back({method, req.remote_port, tl_pipelined});
    }
    if (method == "notifications/initialized") {
      if (faults.initialized_abort.load() > 0) {
        faults.initialized_abort.fetch_sub(1);
        tl_after = After::kAbort;
        return;
      }
      if (faults.initialized_conn_close.load()) {
        res.set_header("Connection", "close");
        tl_after = After::kClose;
      } else if (faults.initialized_then_close.load()) {
        tl_after = After::kClose;
      }
      if (int st = faults.initialized_status.load()) {
        handle(*s, msg);
        res.status = st;
        res.set_content("initialized refused by fault switch", "text/plain");
        return;
      }
    }
    if (method == "tools/call" && msg.contains("id")) {
      if (int st = faults.post_status.load()) {
        res.status = st;
        res.set_content("post refused by fault switch", "text/plain");
        return;
      }
      if (faults.drop_then_404.load() > 0) {
        // The session dies as the request arrives: its stream ends first,
        // then the POST is refused as for an unknown session.
        faults.drop_then_404.fetch_sub(1);
        s->close();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        res.status = 404;
        res.set_content("Could not find session", "text/plain");
        return;
      }
      if (faults.post_hang.load()) {
        // Never answered: the request's connection is held until stop
        // (bounded, so that a forgotten switch cannot wedge a test).
        for (int i = 0; i < 600 && !stopping.load() && faults.post_hang.load(); ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        res.status = 202;
        return;
      }
      if (faults.black_hole.load()) {
        res.status = 202;
        res.set_content("Accepted", "text/plain");
        return;
      }
      if (faults.drop_on_call.load()) {
        s->close();
        res.status = 202;
        res.set_content("Accepted", "text/plain");
        return;
      }
      if (faults.drop_mid_event.load()) {
        std::lock_guard lk(s->mu);
        s->half_event = true;
        s->cv.notify_all();
        res.status = 202;
        res.set_content("Accepted", "text/plain");
        return;
      }
      if (faults.half_open.load()) {
        std::lock_guard lk(s->mu);
        s->silent = true;
        s->out.clear();
        res.status = 202;
        res.set_content("Accepted", "text/plain");
        return;
      }
    }
    res.status = 202;
    res.set_content("Accepted", "text/plain");
    if (!msg.contains("id") || !msg.contains("method")) {
      // Notifications and responses are handled before the 202, in arrival
      // order (as python-sdk and the TS SDK keep per-session order): a
      // request POSTed after `initialized` was accepted sees it.
      handle(*s, msg);
      return;
    }
    workers++;
    std::thread([this, s, msg = std::move(msg)] {
      handle(*s, msg);
      workers--;
    }).detach();
  }

  static json result(const json& id, json r) {
    return json{{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(r)}};
  }
  static json error(const json& id, int code, const std::string& m) {
    return json{{"jsonrpc", "2.0"}, {"id", id}, {"error", {{"code", code}, {"message", m}}}};
  }
  static json text(const std::string& t) {
    return json{{"content", json::array({{{"type", "text"}, {"text", t}}})}};
  }

  void handle(Session& s, const json& msg) {
    std::string method = msg.value("method", "");
    if (method.empty()) {
      // A client answer to one of our requests (tool roots).
      if (msg.contains("id")) {
        std::lock_guard lk(s.mu);
        if (s.answers.size() < 64) s.answers[msg["id"].dump()] = msg.dump();
        s.cv.notify_all();
      }
      return;
    }
    if (!msg.contains("id")) {
      if (method == "notifications/initialized") {
        if (faults.drop_after_initialized.load()) return s.close();
        std::lock_guard lk(s.mu);
        s.initialized = true;
      } else if (method == "notifications/cancelled") {
        std::string rid = msg["params"].value("requestId", json()).dump();
        {
          std::lock_guard lk(s.mu);
          s.cancelled.insert(rid);
        }
        {
          std::lock_guard lk2(mu);  // never under s.mu: stop() takes mu, then each session's
          last_cancelled = rid;
        }
        // Counted last: a test that waits for the count then reads last_cancelled_id() must
        // see this cancellation's id.
        cancellations++;
      }
      return;
    }
    const json& id = msg["id"];
    json params = msg.value("params", json::object());
    if (method != "initialize" && method != "ping") {
      bool ok;
      {
        std::lock_guard lk(s.mu);
        ok = s.initialized;
      }
      if (!ok) {  // python-sdk 1.6: the session dies
        premature++;
        s.close();
        return;
      }
    }
    if (method == "initialize") {
      {
        std::lock_guard lk(s.mu);
        s.init_params = params.dump();
      }
      std::string v = params.value("protocolVersion", "2024-11-05");
      if (v != "2024-11-05" && v != "2025-03-26" && v != "2025-06-18") v = "2024-11-05";
      json resources = opt.resource_subscribe ? json{{"subscribe", true}} : json::object();
      s.send(result(id, {{"protocolVersion", v},
                         {"capabilities", {{"tools", json::object()},
                                           {"logging", json::object()},
                                           {"resources", resources}}},
                         {"serverInfo", {{"name", "example-legacy-server"}, {"version", "0.1.0"}}}}));
    } else if (method == "ping") {
      s.send(result(id, json::object()));
    } else if (method == "tools/list") {
      json tools = tool_list();
      for (auto& t : asking_tool_list()) tools.push_back(t);
      s.send(result(id, {{"tools", tools}}));
    } else if (method == "logging/setLevel") {
      {
        std::lock_guard lk(s.mu);
        s.log_level = params.value("level", "info");
      }
      s.send(result(id, json::object()));
    } else if (method == "tools/call") {
      call_tool(s, id, params);
    } else if (method.rfind("resources/", 0) == 0) {
      resources_request(s, id, method, params);
    } else {
      s.send(error(id, -32601, "Method not found: " + method));
    }
  }

  // Resources: example://counter (this session's counter) and any example://
  // URI (its text is the URI); subscriptions per session (tool touch).
  void resources_request(Session& s, const json& id, const std::string& method, const json& params) {
    std::string uri = params.value("uri", std::string());
    if (method == "resources/list") {
      s.send(result(id, {{"resources", json::array({{{"uri", "example://counter"},
                                                     {"name", "counter"},
                                                     {"mimeType", "text/plain"}}})}}));
    } else if (method == "resources/read") {
      std::string text = uri;
      if (uri == "example://counter") {
        std::lock_guard lk(s.mu);
        text = std::to_string(s.counter);
      }
      s.send(result(id, {{"contents", json::array({{{"uri", uri}, {"mimeType", "text/plain"}, {"text", text}}})}}));
    } else if ((method == "resources/subscribe" || method == "resources/unsubscribe") &&
               !opt.resource_subscribe) {
      s.send(error(id, -32601, "Method not found: " + method));
    } else if ((method == "resources/subscribe" || method == "resources/unsubscribe") && !uri.empty()) {
      (method == "resources/subscribe" ? subscribes : unsubscribes)++;
      {
        std::lock_guard lk(s.mu);
        if (method == "resources/unsubscribe") s.subscriptions.erase(uri);
        else if (s.subscriptions.size() < 1024) s.subscriptions.insert(uri);
      }
      s.send(result(id, json::object()));
    } else {
      s.send(error(id, -32602, "Invalid params: " + method + " needs params.uri"));
    }
  }

  // Sends notifications/resources/updated to every session subscribed to
  // `uri`; returns how many.
  int touch_resource(const std::string& uri) {
    std::vector<std::shared_ptr<Session>> all;
    {
      std::lock_guard lk(mu);
      for (auto& [sid, sp] : sessions) all.push_back(sp);
    }
    int n = 0;
    for (auto& sp : all) {
      bool sub;
      {
        std::lock_guard lk(sp->mu);
        sub = sp->subscriptions.count(uri) > 0;
      }
      if (!sub) continue;
      sp->send(json{{"jsonrpc", "2.0"}, {"method", "notifications/resources/updated"}, {"params", {{"uri", uri}}}});
      ++n;
    }
    return n;
  }

  // Sessions subscribed to `uri` now.
  int subscribed(const std::string& uri) {
    std::vector<std::shared_ptr<Session>> all;
    {
      std::lock_guard lk(mu);
      for (auto& [sid, sp] : sessions) all.push_back(sp);
    }
    int n = 0;
    for (auto& sp : all) {
      std::lock_guard lk(sp->mu);
      n += sp->subscriptions.count(uri) > 0;
    }
    return n;
  }

  // Sends `note` (a notification) on every open SSE session; returns how many.
  int broadcast(const json& note) {
    std::vector<std::shared_ptr<Session>> all;
    {
      std::lock_guard lk(mu);
      for (auto& [sid, sp] : sessions) all.push_back(sp);
    }
    for (auto& sp : all) sp->send(note);
    return static_cast<int>(all.size());
  }

  void call_tool(Session& s, const json& id, const json& params) {
    std::string name = params.value("name", "");
    json args = params.value("arguments", json::object());
    if (name == "echo") {
      s.send(result(faults.id_as_string && id.is_number() ? json(id.dump()) : id, text(args.value("text", ""))));
    } else if (name == "add") {
      double sum = args.value("a", 0.0) + args.value("b", 0.0);
      json n = sum == static_cast<double>(static_cast<long long>(sum)) ? json(static_cast<long long>(sum)) : json(sum);
      s.send(result(id, text(n.dump())));
    } else if (name == "sleep") {
      int ms = args.value("ms", 0);
      json token;
      if (params.contains("_meta") && params["_meta"].contains("progressToken"))
        token = params["_meta"]["progressToken"];
      int steps = std::max(1, std::min(ms / 100, 50));
      auto next = std::chrono::steady_clock::now();
      for (int i = 1; i <= steps; ++i) {
        next += std::chrono::milliseconds(ms / steps);
        while (std::chrono::steady_clock::now() < next) {  // 20 ms slices: stop() stays prompt
          std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
              20ms, next - std::chrono::steady_clock::now()));
          std::lock_guard lk(s.mu);
          if (s.closed || s.cancelled.count(id.dump()) || stopping.load()) return;
        }
        if (!token.is_null())
          s.send(json{{"jsonrpc", "2.0"},
                      {"method", "notifications/progress"},
                      {"params", {{"progressToken", token}, {"progress", i}, {"total", steps}}}});
      }
      s.send(result(id, text("slept " + std::to_string(ms) + " ms")));
    } else if (name == "big") {
      int64_t n = args.value("bytes", int64_t{0});
      if (n < 0 || n > (int64_t{1} << 30)) {
        s.send(error(id, -32602, "bytes out of range"));
        return;
      }
      s.send(result(id, text(std::string(static_cast<size_t>(n), 'x'))));
    } else if (name == "whoami") {
      std::string auth;
      {
        std::lock_guard lk(s.mu);
        auth = s.authorization;
      }
      s.send(result(id, text(auth)));
    } else if (name == "init_params") {
      std::string p;
      {
        std::lock_guard lk(s.mu);
        p = s.init_params;
      }
      s.send(result(id, text(p)));
    } else if (name == "fail") {
      s.send(error(id, args.value("code", -32603), args.value("message", std::string("failed"))));
    } else if (name == "touch") {
      int n = touch_resource(args.value("uri", std::string()));
      s.send(result(id, text(std::to_string(n))));
    } else if (name == "list_changed") {
      std::string kind = args.value("kind", std::string("tools"));
      if (kind != "tools" && kind != "prompts" && kind != "resources") {
        s.send(result(id, {{"content", json::array({{{"type", "text"}, {"text", "unknown kind " + kind}}})},
                           {"isError", true}}));
        return;
      }
      s.send(json{{"jsonrpc", "2.0"}, {"method", "notifications/" + kind + "/list_changed"}});
      s.send(result(id, text("sent")));
    } else if (name == "count") {
      long long n;
      {
        std::lock_guard lk(s.mu);
        n = ++s.counter;
      }
      s.send(result(id, text(std::to_string(n))));
    } else if (name == "notify_later") {
      int ms = std::max(0, std::min(args.value("ms", 0), 60000));
      std::string what = args.value("text", std::string("later"));
      s.send(result(id, text("scheduled")));
      std::shared_ptr<Session> sp;
      {
        std::lock_guard lk(mu);
        auto it = sessions.find(s.id);
        if (it != sessions.end()) sp = it->second;
      }
      if (!sp) return;
      workers++;
      std::thread([this, sp, ms, what] {
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (std::chrono::steady_clock::now() < end && !stopping.load())
          std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
              20ms, end - std::chrono::steady_clock::now()));
        if (!stopping.load()) {
          sp->send(json{{"jsonrpc", "2.0"}, {"method", "notifications/tools/list_changed"}});
          sp->send(json{{"jsonrpc", "2.0"},
                        {"method", "notifications/message"},
                        {"params", {{"level", "info"}, {"logger", "example"}, {"data", what}}}});
        }
        workers--;
      }).detach();
    } else if (name == "roots") {
      // A server-to-client request (roots/list) during the call; the result
      // is the client's answer as received (or "no answer" after 5 s).
      std::string rid = "srv-" + random_hex(6);
      s.send(json{{"jsonrpc", "2.0"}, {"id", rid}, {"method", "roots/list"}});
      std::string key = json(rid).dump(), answer = "no answer";
      auto end = std::chrono::steady_clock::now() + 5s;
      {
        std::unique_lock lk(s.mu);
        while (std::chrono::steady_clock::now() < end && !s.closed && !stopping.load()) {
          if (auto it = s.answers.find(key); it != s.answers.end()) {
            answer = it->second;
            s.answers.erase(it);
            break;
          }
          s.cv.wait_for(lk, 20ms);
        }
      }
      s.send(result(id, text(answer)));
    } else if (name == "log") {
      std::string level = args.value("level", "info");
      bool emit;
      {
        std::lock_guard lk(s.mu);
        emit = level_rank(level) >= level_rank(s.log_level);
      }
      // `repeat` (default 1): that many messages, as fast as they go (a
      // server flooding a slow client: the backpressure tests).
      int repeat = std::clamp(args.value("repeat", 1), 1, 100000);
      for (int i = 0; emit && i < repeat; ++i)
        s.send(json{{"jsonrpc", "2.0"},
                    {"method", "notifications/message"},
                    {"params", {{"level", level}, {"logger", "example"}, {"data", args.value("text", "")}}}});
      s.send(result(id, text(emit ? "logged" : "filtered")));
    } else if (asking_tool(s, id, name, args, params.value("_meta", json::object()))) {
    } else {
      s.send(result(id, {{"content", json::array({{{"type", "text"}, {"text", "unknown tool: " + name}}})},
                         {"isError", true}}));
    }
  }

  // Sends the client a request during call `call_id` and waits for its
  // answer (the whole JSON-RPC response), or null after `wait`, on the
  // call's cancellation, the session's end or stop().
  json ask(Session& s, const json& call_id, const std::string& method, json params,
           std::chrono::milliseconds wait) {
    std::string rid = "ask-" + random_hex(8);
    json req{{"jsonrpc", "2.0"}, {"id", rid}, {"method", method}};
    if (!params.is_null()) req["params"] = std::move(params);
    s.send(req);
    std::string key = json(rid).dump();
    auto end = std::chrono::steady_clock::now() + wait;
    std::unique_lock lk(s.mu);
    while (std::chrono::steady_clock::now() < end && !s.closed && !stopping.load() &&
           !s.cancelled.count(call_id.dump())) {
      if (auto it = s.answers.find(key); it != s.answers.end()) {
        json a = json::parse(it->second, nullptr, false);
        s.answers.erase(it);
        return a.is_discarded() ? json() : a;
      }
      s.cv.wait_for(lk, 20ms);
    }
    return json();
  }

  // The MRTR test tools (asking_tool_list()). False: not one of them.
  bool asking_tool(Session& s, const json& id, const std::string& name, const json& args,
                   const json& params_meta) {
    auto wait = std::chrono::milliseconds(std::clamp(args.value("wait_ms", 30000), 0, 120000));
    // An answer's text, or why there is none (error answer, no answer).
    auto failed = [](const json& a) -> std::optional<std::string> {
      if (a.is_null()) return "no answer";
      if (a.contains("error"))
        return "error " + a["error"].value("code", json(0)).dump() + ": " +
               a["error"].value("message", std::string());
      if (!a.contains("result") || !a["result"].is_object()) return "malformed answer";
      return std::nullopt;
    };
    auto fail = [&](const std::string& what, const std::string& why) {
      s.send(result(id, {{"content", json::array({{{"type", "text"}, {"text", what + " failed: " + why}}})},
                         {"isError", true}}));
    };
    auto elicit = [&]() {
      json params = {{"message", "What is your name?"},
                     {"requestedSchema",
                      {{"type", "object"},
                       {"properties", {{"name", {{"type", "string"}}}}},
                       {"required", {"name"}}}}};
      // input_key: name the key a 2026-07-28 client sees (the bridge's hint).
      if (args.contains("input_key") && args["input_key"].is_string())
        params["_meta"] = {{"mcp-sse-bridge/inputKey", args["input_key"]}};
      return ask(s, id, "elicitation/create", std::move(params), wait);
    };
    auto name_of = [](const json& r) {
      std::string action = r.value("action", "");
      if (action != "accept") return "(" + action + ")";
      return r.value("content", json::object()).value("name", std::string("?"));
    };
    auto sample_params = [](const std::string& prompt) {
      return json{{"messages", json::array({{{"role", "user"}, {"content", {{"type", "text"}, {"text", prompt}}}}})},
                  {"maxTokens", 50}};
    };
    auto text_of = [](const json& r) {
      return r.value("content", json::object()).value("text", std::string("?"));
    };
    if (name == "ask_name") {
      json a = elicit();
      if (auto e = failed(a)) return fail("elicitation", *e), true;
      s.send(result(id, text("hello " + name_of(a["result"]))));
    } else if (name == "ask_model") {
      json a = ask(s, id, "sampling/createMessage", sample_params(args.value("prompt", std::string("Say hi"))), wait);
      if (auto e = failed(a)) return fail("sampling", *e), true;
      s.send(result(id, text("model said: " + text_of(a["result"]))));
    } else if (name == "ask_roots") {
      json a = ask(s, id, "roots/list", json(), wait);
      if (auto e = failed(a)) return fail("roots", *e), true;
      std::string uris;
      for (auto& r : a["result"].value("roots", json::array()))
        uris += (uris.empty() ? "" : ",") + r.value("uri", std::string());
      s.send(result(id, text("roots: " + uris)));
    } else if (name == "ask_twice") {
      json a = elicit();
      if (auto e = failed(a)) return fail("elicitation", *e), true;
      std::string who = name_of(a["result"]);
      if (auto m = params_meta.find("progressToken"); m != params_meta.end())
        s.send(json{{"jsonrpc", "2.0"}, {"method", "notifications/progress"},
                    {"params", {{"progressToken", *m}, {"progress", 1}, {"total", 2}}}});
      json b = ask(s, id, "sampling/createMessage", sample_params("Greet " + who), wait);
      if (auto e = failed(b)) return fail("sampling", *e), true;
      s.send(result(id, text("name=" + who + "; model=" + text_of(b["result"]))));
    } else if (name == "ask_both") {
      // Both requests go out before either answer is awaited.
      std::string r1 = "ask-" + random_hex(8), r2 = "ask-" + random_hex(8);
      s.send(json{{"jsonrpc", "2.0"}, {"id", r1}, {"method", "elicitation/create"},
                  {"params", {{"message", "What is your name?"},
                              {"requestedSchema", {{"type", "object"}, {"properties", {{"name", {{"type", "string"}}}}}}}}}});
      // `gap_ms` apart: what a tool's two awaits in separate ticks look like.
      int gap = std::clamp(args.value("gap_ms", 0), 0, 1000);
      if (gap > 0) std::this_thread::sleep_for(std::chrono::milliseconds(gap));
      s.send(json{{"jsonrpc", "2.0"}, {"id", r2}, {"method", "sampling/createMessage"},
                  {"params", sample_params("Say hi")}});
      json a, b;
      auto end = std::chrono::steady_clock::now() + wait;
      {
        std::unique_lock lk(s.mu);
        while (std::chrono::steady_clock::now() < end && !s.closed && !stopping.load() &&
               !s.cancelled.count(id.dump()) && (a.is_null() || b.is_null())) {
          for (auto [rid, slot] : {std::pair{&r1, &a}, std::pair{&r2, &b}}) {
            if (auto it = s.answers.find(json(*rid).dump()); it != s.answers.end()) {
              *slot = json::parse(it->second, nullptr, false);
              s.answers.erase(it);
            }
          }
          s.cv.wait_for(lk, 20ms);
        }
      }
      if (auto e = failed(a)) return fail("elicitation", *e), true;
      if (auto e = failed(b)) return fail("sampling", *e), true;
      s.send(result(id, text("name=" + name_of(a["result"]) + "; model=" + text_of(b["result"]))));
    } else {
      return false;
    }
    return true;
  }
};

LegacyServer::LegacyServer(Options o) : impl_(std::make_unique<Impl>(o)) {}
LegacyServer::~LegacyServer() { stop(); }

int LegacyServer::start(const std::string& host, int port) {
  auto& i = *impl_;
  if (port == 0) {
    i.port = i.svr.bind_to_any_port(host);
  } else {
    i.port = i.svr.bind_to_port(host, port) ? port : -1;
  }
  if (i.port <= 0) return -1;
  i.raise_backlog(4096);
  i.thread = std::thread([&i] { i.svr.listen_after_bind(); });
  for (int k = 0; k < 2500 && !i.svr.is_running(); ++k) std::this_thread::sleep_for(2ms);
  return i.svr.is_running() ? i.port : -1;
}

void LegacyServer::stop() {
  auto& i = *impl_;
  if (!i.thread.joinable()) return;
  i.stopping = true;
  {
    std::lock_guard lk(i.mu);
    for (auto& [id, s] : i.sessions) s->close();
  }
  i.svr.stop();
  i.thread.join();
  // Tool threads check `stopping` between slices; give them a bounded moment.
  for (int k = 0; k < 2500 && i.workers.load() > 0; ++k) std::this_thread::sleep_for(2ms);
}

void LegacyServer::kill_streams() {
  std::lock_guard lk(impl_->mu);
  for (auto& [id, s] : impl_->sessions) s->close();
}

void LegacyServer::silence_sessions() {
  std::lock_guard lk(impl_->mu);
  for (auto& [id, s] : impl_->sessions) {
    std::lock_guard sl(s->mu);
    s->silent = true;
    s->out.clear();
    s->cv.notify_all();
  }
}

int LegacyServer::port() const { return impl_->port; }
Faults& LegacyServer::faults() { return impl_->faults; }
int LegacyServer::sessions_opened() const { return impl_->sessions_opened.load(); }
int LegacyServer::touch_resource(const std::string& uri) { return impl_->touch_resource(uri); }
int LegacyServer::subscribed(const std::string& uri) const { return impl_->subscribed(uri); }
int LegacyServer::subscribe_requests() const { return impl_->subscribes.load(); }
int LegacyServer::unsubscribe_requests() const { return impl_->unsubscribes.load(); }
int LegacyServer::broadcast(const std::string& method) {
  return impl_->broadcast(json{{"jsonrpc", "2.0"}, {"method", method}});
}
int LegacyServer::sse_requests() const { return impl_->sse_requests.load(); }
int LegacyServer::premature_requests() const { return impl_->premature.load(); }
int LegacyServer::cancellations() const { return impl_->cancellations.load(); }
int LegacyServer::open_streams() const { return impl_->open_streams.load(); }
Headers LegacyServer::last_get_headers() const {
  std::lock_guard lk(impl_->headers_mu);
  return impl_->last_get;
}
Headers LegacyServer::last_post_headers() const {
  std::lock_guard lk(impl_->headers_mu);
  return impl_->last_post;
}
std::vector<PostRecord> LegacyServer::post_log() const {
  std::lock_guard lk(impl_->headers_mu);
  return impl_->post_log;
}
std::string LegacyServer::last_cancelled_id() const {
  std::lock_guard lk(impl_->mu);
  return impl_->last_cancelled;
}

}  // namespace example
