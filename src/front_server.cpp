#include "mcp_sse_bridge/front_server.h"

#include <dirent.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <httplib.h>

#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <set>
#include <unordered_map>

#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/peer_socket.h"
#include "mcp_sse_bridge/session_token.h"

namespace msb {

bool is_supported_protocol_version(std::string_view v) {
  return v == "2024-11-05" || v == "2025-03-26" || v == "2025-06-18" || v == "2025-11-25";
}

namespace {

constexpr char kSessionHeader[] = "Mcp-Session-Id";

// Headers never copied upstream, whatever --forward-header says: hop-by-hop,
// framing, and cpp-httplib's pseudo-headers that describe our own socket.
bool never_forwarded(std::string_view name) {
  static const char* kBlocked[] = {"host", "connection", "keep-alive", "proxy-connection",
                                   "transfer-encoding", "content-length", "content-type", "te",
                                   "trailer", "upgrade", "cookie", "accept", "mcp-session-id",
                                   "remote_addr", "remote_port", "local_addr", "local_port"};
  std::string lower(name);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (auto* b : kBlocked)
    if (lower == b) return true;
  return false;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// cpp-httplib's ThreadPool starts all its threads at once, and its condition
// variable hands connections to threads in turn, so an idle bridge touches
// every thread's stack. This pool starts a thread only when no idle one can
// take the work (up to `max`), and lets threads above `keep` exit after
// `idle_exit` without work.
class LazyThreadPool : public httplib::TaskQueue {
 public:
  LazyThreadPool(size_t max, size_t keep, std::chrono::seconds idle_exit)
      : max_(max), keep_(keep), idle_exit_(idle_exit) {}
  ~LazyThreadPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    std::unique_lock lk(mu_);
    jobs_.push_back(std::move(fn));
    // Idle threads already woken for earlier jobs still count as idle until
    // they take the lock: compare against the queue, not against zero.
    if (jobs_.size() > idle_ && live_ < max_) {
      ++live_;
      reap_locked();
      threads_.emplace_back([this] { work(); });
    }
    cv_.notify_one();
  }

  void shutdown() override {
    std::vector<std::thread> all;
    {
      std::lock_guard lk(mu_);
      if (shut_) return;
      shut_ = true;
      cv_.notify_all();
      all.swap(threads_);
      for (auto& t : done_) all.push_back(std::move(t));
      done_.clear();
    }
    // Workers finish their current connection first; those are bounded by
    // the server's read/write timeouts and the bridge's own deadlines.
    for (auto& t : all)
      if (t.joinable()) t.join();
  }

 private:
  void work() {
    std::unique_lock lk(mu_);
    for (;;) {
      ++idle_;
      bool got = cv_.wait_for(lk, idle_exit_, [&] { return shut_ || !jobs_.empty(); });
      --idle_;
      if (!jobs_.empty()) {
        auto fn = std::move(jobs_.front());
        jobs_.pop_front();
        lk.unlock();
        fn();
        lk.lock();
        continue;
      }
      if (shut_ || (!got && live_ > keep_)) break;
    }
    --live_;
    // Hand this thread's handle to the reaper list (joined later).
    auto self = std::this_thread::get_id();
    for (auto it = threads_.begin(); it != threads_.end(); ++it)
      if (it->get_id() == self) {
        done_.push_back(std::move(*it));
        threads_.erase(it);
        break;
      }
  }
  // Joins threads that have exited (called with mu_ held; they no longer need it).
  void reap_locked() {
    for (auto& t : done_)
      if (t.joinable() && t.get_id() != std::this_thread::get_id()) t.join();
    done_.clear();
  }

  const size_t max_, keep_;
  const std::chrono::seconds idle_exit_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  std::vector<std::thread> done_;
  size_t live_ = 0, idle_ = 0;
  bool shut_ = false;
};

// What the front side and a running call share: the client's cancellation,
// client responses routed to the call, and an eventfd that wakes the call's
// waits at once when either arrives.
struct CallMailbox {
  CallMailbox() : efd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~CallMailbox() {
    if (efd >= 0) ::close(efd);
  }
  CallMailbox(const CallMailbox&) = delete;
  CallMailbox& operator=(const CallMailbox&) = delete;

  void wake() {
    uint64_t one = 1;
    if (efd >= 0) (void)!::write(efd, &one, sizeof one);
  }
  void drain() {
    uint64_t v;
    if (efd >= 0) (void)!::read(efd, &v, sizeof v);
  }
  void cancel() {
    cancelled.store(true);
    wake();
  }
  void push(Message m) {
    {
      std::lock_guard lk(mu);
      if (responses.size() >= 1024) return;  // a client flooding answers gets them dropped
      responses.push_back(std::move(m));
    }
    wake();
  }
  std::optional<Message> pop() {
    std::lock_guard lk(mu);
    if (responses.empty()) return std::nullopt;
    Message m = std::move(responses.front());
    responses.pop_front();
    return m;
  }

  int efd;
  std::atomic<bool> cancelled{false};
  std::mutex mu;
  std::deque<Message> responses;
};
using MailboxPtr = std::shared_ptr<CallMailbox>;

// In-flight calls by (client session, request id), so that a client's
// notifications/cancelled reaches the call it names; and forwarded server
// requests by (client session, bridge id), so that the client's answer
// reaches the call that forwarded it.
class CallRegistry {
 public:
  void add_call(const std::string& key, const MailboxPtr& m) {
    std::lock_guard lk(mu_);
    calls_[key] = m;
  }
  void remove_call(const std::string& key, const MailboxPtr& m) {
    std::lock_guard lk(mu_);
    auto it = calls_.find(key);
    if (it != calls_.end() && it->second == m) calls_.erase(it);
  }
  bool cancel(const std::string& key) {
    std::lock_guard lk(mu_);
    auto it = calls_.find(key);
    if (it == calls_.end()) return false;
    it->second->cancel();
    return true;
  }
  void add_route(const std::string& key, const MailboxPtr& m) {
    std::lock_guard lk(mu_);
    routes_[key] = m;
  }
  void remove_route(const std::string& key) {
    std::lock_guard lk(mu_);
    routes_.erase(key);
  }
  bool route(const std::string& key, Message m) {
    MailboxPtr box;
    {
      std::lock_guard lk(mu_);
      auto it = routes_.find(key);
      if (it == routes_.end()) return false;
      box = it->second;
    }
    box->push(std::move(m));
    return true;
  }
  void wake_all() {
    std::lock_guard lk(mu_);
    for (auto& [k, m] : calls_) m->wake();
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, MailboxPtr> calls_;
  std::unordered_map<std::string, MailboxPtr> routes_;
};

// A client request whose response is still to be produced.
struct PendingCall {
  Message msg;
  std::string key;  // session + id, for cancellation
  MailboxPtr mailbox;
  bool counted = true;  // still counted in Impl::inflight
};

// The client capability a server-to-client request needs, if any.
std::string_view capability_for(std::string_view method) {
  if (method == "sampling/createMessage") return "sampling";
  if (method == "roots/list") return "roots";
  if (method == "elicitation/create") return "elicitation";
  return {};
}

bool is_loopback_name(std::string_view host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

// "host:port" / "[v6]:port" / "host" -> host (lower case, brackets kept off).
std::string host_part(std::string_view hostport) {
  std::string h;
  if (!hostport.empty() && hostport.front() == '[') {
    auto rb = hostport.find(']');
    h = std::string(hostport.substr(1, rb == std::string_view::npos ? std::string_view::npos : rb - 1));
  } else {
    h = std::string(hostport.substr(0, hostport.rfind(':')));
    if (hostport.find(':') == std::string_view::npos) h = std::string(hostport);
  }
  for (auto& c : h) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return h;
}

void json_error(httplib::Response& res, int status, int code, const std::string& message) {
  res.status = status;
  res.set_content(jsonrpc_plain_error("", code, message), "application/json");
}

}  // namespace

// cpp-httplib 0.11.4 listens with a backlog of 5: a burst of connections
// (64 clients at once) overflows it and the kernel drops SYNs, which clients
// retry only after a second. Raise it once bound.
class Server : public httplib::Server {
 public:
  void raise_backlog(int n) {
    if (svr_sock_ != INVALID_SOCKET) ::listen(svr_sock_, n);
  }
};

struct FrontServer::Impl {
  Config cfg;
  Forwarder forwarder;
  SessionTokens tokens;
  Server svr;
  PeerSockets sockets;
  CallRegistry registry;
  std::atomic<bool> stopping{false};
  std::atomic<int> inflight{0};  // calls admitted and not yet finished
  int bound_port = -1;
  std::thread thread;
  std::mutex run_mu;

  explicit Impl(Config c)
      : cfg(std::move(c)),
        forwarder(cfg.upstream),
        tokens(cfg.session_secret, cfg.max_revoked_sessions) {
    int threads = cfg.worker_threads;
    svr.new_task_queue = [threads] {
      return new LazyThreadPool(static_cast<size_t>(threads), 4, std::chrono::seconds(30));
    };
    svr.set_tcp_nodelay(true);
    svr.set_keep_alive_max_count(1000);
    svr.set_keep_alive_timeout(5);
    svr.set_read_timeout(30, 0);
    svr.set_write_timeout(30, 0);
    // The POST handler enforces --max-body-size itself (for chunked bodies
    // too, with a message naming the limit); other routes take no body.
    svr.set_payload_max_length(std::numeric_limits<size_t>::max());
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "unknown";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      log::error("handler exception", {{"what", what}});
      json_error(res, 500, -32603, "Internal error in mcp-sse-bridge");
    });
    svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (res.status == 413 && res.body.empty()) {
        res.set_content(jsonrpc_plain_error("", -32600, "Request body too large"),
                        "application/json");
      } else if (res.status == 404 && res.body.empty()) {
        res.set_content("not found: " + req.path + "\n", "text/plain");
      }
    });
    const std::string& p = cfg.path;
    svr.Post(p, [this](const httplib::Request& req, httplib::Response& res,
                       const httplib::ContentReader& reader) {
      if (check_host_and_origin(req, res)) handle_post(req, res, reader);
    });
    svr.Get(p, [this](const httplib::Request& req, httplib::Response& res) {
      if (!check_host_and_origin(req, res)) return;
      res.status = 405;
      res.set_header("Allow", "POST, DELETE");
      res.set_content(jsonrpc_plain_error("", -32000,
                                          "Method Not Allowed: this bridge has no standalone "
                                          "server-to-client stream (GET); use POST"),
                      "application/json");
    });
    svr.Delete(p, [this](const httplib::Request& req, httplib::Response& res) {
      if (check_host_and_origin(req, res)) handle_delete(req, res);
    });
    svr.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
      res.set_content("ok\n", "text/plain");
    });
  }

  // DNS-rebinding and cross-origin guard (spec 2025-11-25: invalid Origin
  // => 403). Returns false after filling res.
  bool check_host_and_origin(const httplib::Request& req, httplib::Response& res) const {
    bool loopback = is_loopback_name(cfg.listen_host);
    auto listed = [](const std::vector<std::string>& list, const std::string& v) {
      for (auto& a : list)
        if (lower(a) == lower(v)) return true;
      return false;
    };
    if (loopback || !cfg.allowed_hosts.empty()) {
      std::string host = req.get_header_value("Host");
      bool ok = (loopback && is_loopback_name(host_part(host))) || listed(cfg.allowed_hosts, host) ||
                listed(cfg.allowed_hosts, host_part(host));
      if (!ok) {
        json_error(res, 403, -32000,
                   "Forbidden: Host '" + host.substr(0, 100) + "' is not allowed (--allowed-host)");
        return false;
      }
    }
    if (req.has_header("Origin")) {
      std::string origin = req.get_header_value("Origin");
      auto url = parse_url(origin);
      bool ok = listed(cfg.allowed_origins, origin) ||
                (loopback && url && is_loopback_name(url->host));
      if (!ok) {
        json_error(res, 403, -32000,
                   "Forbidden: Origin '" + origin.substr(0, 100) + "' is not allowed (--allowed-origin)");
        return false;
      }
    }
    return true;
  }

  std::string forwarded_headers(const httplib::Request& req) const {
    std::string out;
    for (auto& h : cfg.upstream.static_headers) {
      auto colon = h.find(':');
      std::string name = h.substr(0, colon);
      std::string value = h.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      out.append(name).append(": ").append(value).append("\r\n");
    }
    for (auto& name : cfg.forward_headers) {
      if (never_forwarded(name)) continue;
      for (size_t i = 0, n = req.get_header_value_count(name); i < n; ++i) {
        std::string v = req.get_header_value(name, i);
        if (v.find_first_of("\r\n") != std::string::npos) continue;
        out.append(name).append(": ").append(v).append("\r\n");
      }
    }
    return out;
  }

  // Validates headers shared by POST and DELETE. Returns false after filling res.
  bool check_protocol_version(const httplib::Request& req, httplib::Response& res) {
    if (!req.has_header("MCP-Protocol-Version")) return true;
    auto v = req.get_header_value("MCP-Protocol-Version");
    if (is_supported_protocol_version(v)) return true;
    json_error(res, 400, -32000,
               "Bad Request: unsupported MCP-Protocol-Version '" + v.substr(0, 64) +
                   "' (supported: 2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25)");
    return false;
  }

  std::optional<ClientSession> require_session(const httplib::Request& req, httplib::Response& res) {
    if (!req.has_header(kSessionHeader)) {
      json_error(res, 400, -32000, "Bad Request: Mcp-Session-Id header is required");
      return std::nullopt;
    }
    auto s = tokens.verify(req.get_header_value(kSessionHeader));
    if (!s) {
      json_error(res, 404, -32001, "Session not found: unknown, expired or terminated "
                                   "Mcp-Session-Id; send initialize again");
      return std::nullopt;
    }
    return s;
  }

  void handle_delete(const httplib::Request& req, httplib::Response& res) {
    if (!check_protocol_version(req, res)) return;
    auto s = require_session(req, res);
    if (!s) return;
    tokens.revoke(s->id);
    log::info("client session terminated", {{"session", s->id.substr(s->id.size() - 12)}});
    res.status = 200;
  }

  void handle_post(const httplib::Request& req, httplib::Response& res,
                   const httplib::ContentReader& reader) {
    // Content negotiation first: these are the client's mistakes, not the upstream's.
    std::string accept = lower(req.get_header_value("Accept"));
    bool accepts_sse = accept.find("text/event-stream") != std::string::npos;
    bool accepts_json = accept.empty() || accept.find("application/json") != std::string::npos ||
                        accept.find("*/*") != std::string::npos ||
                        accept.find("application/*") != std::string::npos;
    if (!accepts_sse && !accepts_json) {
      json_error(res, 406, -32000,
                 "Not Acceptable: Accept must list application/json and/or text/event-stream");
      return;
    }
    std::string ctype = lower(req.get_header_value("Content-Type"));
    if (ctype.rfind("application/json", 0) != 0) {
      json_error(res, 415, -32000, "Unsupported Media Type: Content-Type must be application/json");
      return;
    }
    if (!check_protocol_version(req, res)) return;
    // Read the body ourselves: set_payload_max_length only bounds bodies that
    // declare a Content-Length, not chunked ones.
    // Past the limit the rest is read and dropped (up to a cap), so that the
    // client reads the 413 instead of a reset from unread bytes.
    std::string body;
    bool too_large = false;
    size_t dropped = 0;
    const size_t drain_cap = std::max<size_t>(cfg.max_body_size, 1 << 20);
    reader([&](const char* data, size_t n) {
      if (too_large || body.size() + n > cfg.max_body_size) {
        too_large = true;
        dropped += n;
        return dropped < drain_cap;
      }
      body.append(data, n);
      return true;
    });
    if (too_large) {
      json_error(res, 413, -32600,
                 "Request body larger than --max-body-size (" + std::to_string(cfg.max_body_size) +
                     " bytes)");
      return;
    }
    auto parsed = parse_body(std::move(body));
    if (!parsed.ok) {
      json_error(res, 400, parsed.error_code, parsed.error_message);
      return;
    }
    // initialize opens a client session; it must stand alone.
    for (auto& m : parsed.messages) {
      if (m.kind == MsgKind::kRequest && m.method == "initialize") {
        if (parsed.batch) {
          json_error(res, 400, -32600, "Invalid Request: initialize must not be part of a batch");
          return;
        }
        handle_initialize(req, res, parsed.messages.front(), accepts_sse);
        return;
      }
    }
    auto session = require_session(req, res);
    if (!session) return;

    std::vector<PendingCall> calls;
    for (auto& m : parsed.messages) {
      if (m.kind == MsgKind::kRequest) {
        std::string key = session->id + "\n" + m.id;
        calls.push_back(PendingCall{std::move(m), std::move(key), nullptr});
        continue;
      }
      if (m.kind == MsgKind::kNotification && m.method == "notifications/cancelled" &&
          !m.cancel_id.empty()) {
        if (registry.cancel(session->id + "\n" + m.cancel_id))
          log::info("client cancelled a call", {{"id", m.cancel_id}});
      } else if (m.kind == MsgKind::kResponse) {
        // An answer to a server-to-client request forwarded by one of this
        // session's calls.
        std::string id = m.id;
        if (!registry.route(session->id + "\n" + id, std::move(m)))
          log::debug("client response matches no forwarded request", {{"id", id}});
      }
      // notifications/initialized is the bridge's to send upstream (per
      // upstream session); other client notifications have no upstream
      // session to go to in per-call mode.
    }
    if (calls.empty()) {
      res.status = 202;  // always, even when the upstream is dead (DESIGN §2.4)
      return;
    }
    // Admission: every call holds a worker thread for its duration.
    int n = static_cast<int>(calls.size());
    if (inflight.fetch_add(n) + n > cfg.max_inflight) {
      inflight.fetch_sub(n);
      res.set_header("Retry-After", "1");
      json_error(res, 503, -32000,
                 "Service Unavailable: " + std::to_string(cfg.max_inflight) +
                     " calls in progress (--max-inflight); retry shortly");
      log::warn("call refused: --max-inflight reached", {{"max_inflight", std::to_string(cfg.max_inflight)}});
      return;
    }
    for (auto& c : calls) {
      c.mailbox = std::make_shared<CallMailbox>();
      registry.add_call(c.key, c.mailbox);
    }
    auto headers = forwarded_headers(req);
    int fd = sockets.find(req.remote_addr, req.remote_port, req.local_port);
    if (accepts_sse) {
      stream_calls(res, std::move(calls), std::move(*session), std::move(headers), fd, parsed.batch);
    } else {
      json_calls(res, std::move(calls), *session, headers, fd, parsed.batch);
    }
  }

  // Answers requests the bridge serves itself; returns nullopt for the rest.
  std::optional<std::string> local_answer(const Message& m, const ClientSession& s) {
    if (m.method == "ping") return R"({"jsonrpc":"2.0","id":)" + m.id + R"(,"result":{}})";
    if (m.method == "resources/subscribe" || m.method == "resources/unsubscribe")
      return jsonrpc_plain_error(
          m.id, -32601,
          m.method + " is not supported through mcp-sse-bridge: resource updates need a "
                     "standalone server-to-client stream (GET), and upstream sessions here "
                     "live only for one call");
    if (m.method == "logging/setLevel") {
      auto j = nlohmann::json::parse(m.raw, nullptr, false);
      if (!j.is_discarded() && j.contains("params") && j["params"].is_object())
        tokens.set_log_level(s.id, j["params"].dump());
    }
    return std::nullopt;
  }

  // Runs one call to completion (or cancellation) and logs it.
  CallResult run_call(PendingCall& c, const ClientSession& s, const std::string& headers,
                      CallSink& sink) {
    auto t0 = Clock::now();
    CallResult r;
    if (auto local = local_answer(c.msg, s)) {
      r.response = std::move(*local);
    } else if (stopping.load()) {
      BridgeError e = make_error(ErrorKind::kShuttingDown, Phase::kConnect, "bridge is shutting down");
      r.error = e;
      r.response = jsonrpc_error_response(c.msg.id, e, 0, cfg.upstream.sse_url.str());
    } else {
      r = forwarder.call(c.msg, &s, tokens.log_level(s.id), headers, sink);
    }
    registry.remove_call(c.key, c.mailbox);
    inflight.fetch_sub(1);
    c.counted = false;
    std::string outcome = r.cancelled ? "cancelled" : r.error ? std::string(to_string(r.error->kind)) : "ok";
    auto fields = {log::Field{"method", c.msg.method}, log::Field{"id", c.msg.id},
                   log::Field{"outcome", outcome}, log::Field{"ms", std::to_string(elapsed_ms(t0))},
                   log::Field{"attempts", std::to_string(r.attempts)},
                   log::Field{"upstream_session", r.upstream_session}};
    if (r.error) {
      log::warn(r.error->message(), fields);
    } else {
      log::info("call", fields);
    }
    return r;
  }

  // What both sinks share: cancellation and wake-ups through the call's
  // mailbox, and the client socket for hang-up detection.
  class SinkBase : public CallSink {
   public:
    SinkBase(Impl& impl, int fd, MailboxPtr box, const ClientSession* session)
        : impl_(impl), fd_(fd), box_(std::move(box)), session_(session) {}
    ~SinkBase() override {
      for (auto& id : routes_) impl_.registry.remove_route(id);
    }
    bool alive() override {
      box_->drain();
      if (gone_ || box_->cancelled.load() || impl_.stopping.load()) return false;
      if (peer_gone(fd_)) gone_ = true;
      return !gone_;
    }
    int wake_fd() const override { return box_->efd; }
    int client_fd() const override { return fd_; }
    std::optional<Message> take_response() override { return box_->pop(); }
    void end_request(std::string_view bridge_id) override {
      std::string key = route_key(bridge_id);
      impl_.registry.remove_route(key);
      routes_.erase(key);
    }
    bool gone() const { return gone_; }
    bool client_cancelled() const { return box_->cancelled.load(); }

   protected:
    // Checks the capability a server request needs against the client's
    // initialize params, and registers the route for the client's answer.
    bool admit_request(std::string_view method, std::string_view bridge_id, std::string* why) {
      auto cap = capability_for(method);
      if (!cap.empty()) {
        if (!caps_) {
          auto j = session_ ? nlohmann::json::parse(session_->init_params, nullptr, false)
                            : nlohmann::json();
          caps_ = (!j.is_discarded() && j.is_object() && j.contains("capabilities") &&
                   j["capabilities"].is_object())
                      ? j["capabilities"]
                      : nlohmann::json::object();
        }
        if (!caps_->contains(std::string(cap))) {
          *why = "the client did not declare the '" + std::string(cap) + "' capability";
          return false;
        }
      }
      std::string key = route_key(bridge_id);
      impl_.registry.add_route(key, box_);
      routes_.insert(key);
      return true;
    }
    std::string route_key(std::string_view bridge_id) const {
      return (session_ ? session_->id : std::string()) + "\n" + std::string(bridge_id);
    }

    Impl& impl_;
    int fd_;
    MailboxPtr box_;
    const ClientSession* session_;
    std::optional<nlohmann::json> caps_;
    std::set<std::string> routes_;
    bool gone_ = false;
  };

  // Sink for a response streamed as text/event-stream.
  class SseSink : public SinkBase {
   public:
    SseSink(Impl& impl, httplib::DataSink& sink, int fd, MailboxPtr box,
            const ClientSession* session)
        : SinkBase(impl, fd, std::move(box), session), sink_(sink), last_write_(Clock::now()) {}
    bool deliver(std::string_view json) override { return write_event(json); }
    bool alive() override {
      if (!SinkBase::alive()) return false;
      auto ka = impl_.cfg.keepalive_interval;
      if (ka.count() > 0 && Clock::now() - last_write_ >= ka) return write_raw(": keepalive\n\n");
      return true;
    }
    bool forward_request(std::string_view method, std::string_view bridge_id,
                         std::string_view json, std::string* why) override {
      if (!admit_request(method, bridge_id, why)) return false;
      if (!write_event(json)) {
        *why = "the client went away";
        return false;
      }
      return true;
    }
    bool write_event(std::string_view json) {
      // cpp-httplib copies each write into a chunk: large messages go out in
      // 1 MiB slices so that the copy stays small.
      constexpr size_t kSlice = 1 << 20;
      if (json.size() <= kSlice) {
        std::string ev;
        ev.reserve(json.size() + 24);
        ev.append("event: message\ndata: ").append(json).append("\n\n");
        return write_raw(ev);
      }
      if (!write_raw("event: message\ndata: ")) return false;
      for (size_t off = 0; off < json.size(); off += kSlice)
        if (!write_raw(json.substr(off, kSlice))) return false;
      return write_raw("\n\n");
    }
    bool write_raw(std::string_view s) {
      if (gone_) return false;
      if (!sink_.write(s.data(), s.size())) gone_ = true;
      last_write_ = Clock::now();
      return !gone_;
    }

   private:
    httplib::DataSink& sink_;
    Clock::time_point last_write_;
  };

  // Sink for an application/json response: notifications are dropped, and
  // server requests cannot be forwarded (there is no stream to carry them).
  class JsonSink : public SinkBase {
   public:
    using SinkBase::SinkBase;
    bool deliver(std::string_view) override { return alive(); }
    bool forward_request(std::string_view, std::string_view, std::string_view,
                         std::string* why) override {
      *why = "the client did not accept text/event-stream for this call";
      return false;
    }
  };

  // A call that ended "cancelled" because the bridge is stopping still owes
  // the client an answer.
  std::string shutdown_answer(const PendingCall& c) {
    BridgeError e = make_error(ErrorKind::kShuttingDown, Phase::kRequest,
                               "bridge is shutting down; the call was abandoned");
    return jsonrpc_error_response(c.msg.id, e, 0, cfg.upstream.sse_url.str());
  }

  void stream_calls(httplib::Response& res, std::vector<PendingCall> calls, ClientSession session,
                    std::string headers, int fd, bool batch) {
    (void)batch;
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    auto state = std::make_shared<std::vector<PendingCall>>(std::move(calls));
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, state, session = std::move(session), headers = std::move(headers), fd](
            size_t, httplib::DataSink& sink) {
          for (auto& c : *state) {
            SseSink s(*this, sink, fd, c.mailbox, &session);
            CallResult r = run_call(c, session, headers, s);
            if (s.gone()) break;
            if (r.cancelled) {
              if (s.client_cancelled()) continue;  // client asked: no response is owed
              if (!stopping.load()) break;
              r.response = shutdown_answer(c);
            }
            if (!s.write_event(r.response)) break;
          }
          sink.done();
          return true;
        },
        [this, state](bool) {
          for (auto& c : *state) {
            registry.remove_call(c.key, c.mailbox);
            if (c.counted) inflight.fetch_sub(1);
            c.counted = false;
          }
        });
  }

  void json_calls(httplib::Response& res, std::vector<PendingCall> calls,
                  const ClientSession& session, const std::string& headers, int fd, bool batch) {
    std::vector<std::string> out;
    for (auto& c : calls) {
      JsonSink s(*this, fd, c.mailbox, &session);
      CallResult r = run_call(c, session, headers, s);
      if (s.gone()) {  // nobody to answer; release the calls never run
        for (auto& rest : calls)
          if (rest.counted) {
            registry.remove_call(rest.key, rest.mailbox);
            inflight.fetch_sub(1);
            rest.counted = false;
          }
        return;
      }
      if (r.cancelled) {
        if (s.client_cancelled()) continue;
        r.response = shutdown_answer(c);
      }
      out.push_back(std::move(r.response));
    }
    if (out.empty()) {
      res.status = 202;
      return;
    }
    std::string body;
    if (batch) {
      body = "[";
      for (size_t i = 0; i < out.size(); ++i) body.append(i ? "," : "").append(out[i]);
      body += "]";
    } else {
      body = std::move(out.front());
    }
    res.status = 200;
    res.set_content(std::move(body), "application/json");
  }

  // Nothing can deliver resource updates (see local_answer): do not let the
  // upstream's initialize result promise them. Other bytes stay as they were.
  static void strip_subscribe(std::string& response) {
    if (response.find("\"subscribe\"") == std::string::npos) return;
    auto j = nlohmann::ordered_json::parse(response, nullptr, false);
    if (j.is_discarded()) return;
    auto p = nlohmann::ordered_json::json_pointer("/result/capabilities/resources");
    if (!j.contains(p) || !j[p].is_object() || !j[p].contains("subscribe")) return;
    j[p].erase("subscribe");
    response = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }

  void handle_initialize(const httplib::Request& req, httplib::Response& res, Message& init,
                         bool accepts_sse) {
    auto j = nlohmann::ordered_json::parse(init.raw, nullptr, false);
    if (j.is_discarded() || !j.contains("params") || !j["params"].is_object()) {
      json_error(res, 400, -32602, "Invalid params: initialize needs a params object");
      return;
    }
    std::string params = j["params"].dump();
    std::string headers = forwarded_headers(req);
    int fd = sockets.find(req.remote_addr, req.remote_port, req.local_port);
    JsonSink sink(*this, fd, std::make_shared<CallMailbox>(), nullptr);
    auto t0 = Clock::now();
    CallResult r;
    if (stopping.load()) {
      r.error = make_error(ErrorKind::kShuttingDown, Phase::kConnect, "bridge is shutting down");
      r.response = jsonrpc_error_response(init.id, *r.error, 0, cfg.upstream.sse_url.str());
    } else {
      r = forwarder.call(init, nullptr, std::nullopt, headers, sink);
    }
    if (r.cancelled) {
      if (sink.gone()) return;
      r.response = jsonrpc_error_response(
          init.id, make_error(ErrorKind::kShuttingDown, Phase::kRequest, "bridge is shutting down"),
          elapsed_ms(t0), cfg.upstream.sse_url.str());
    }
    Message m;
    bool ok = !r.error && parse_message(r.response, m) && m.kind == MsgKind::kResponse && !m.is_error;
    if (ok) strip_subscribe(r.response);
    if (ok) {
      std::string sid = tokens.mint(params);
      forwarder.prewarm(sid, params, headers, std::nullopt);
      res.set_header(kSessionHeader, sid);
      log::info("client session initialized",
                {{"ms", std::to_string(elapsed_ms(t0))}, {"session", sid.substr(sid.size() - 12)}});
    } else {
      log::warn("initialize failed", {{"ms", std::to_string(elapsed_ms(t0))},
                                      {"error", r.error ? r.error->message() : r.response.substr(0, 300)}});
    }
    res.status = 200;
    if (accepts_sse) {
      std::string ev = "event: message\ndata: " + r.response + "\n\n";
      res.set_content(std::move(ev), "text/event-stream");
    } else {
      res.set_content(std::move(r.response), "application/json");
    }
  }
};

FrontServer::FrontServer(Config cfg) : impl_(std::make_unique<Impl>(std::move(cfg))) {}

FrontServer::~FrontServer() { stop(); }

bool FrontServer::bind(std::string* why) {
  auto& i = *impl_;
  if (i.cfg.listen_port == 0) {
    i.bound_port = i.svr.bind_to_any_port(i.cfg.listen_host);
  } else {
    i.bound_port = i.svr.bind_to_port(i.cfg.listen_host, i.cfg.listen_port) ? i.cfg.listen_port : -1;
  }
  if (i.bound_port <= 0) {
    if (why) *why = "cannot listen on " + i.cfg.listen_host + ":" + std::to_string(i.cfg.listen_port);
    return false;
  }
  i.svr.raise_backlog(4096);
  return true;
}

int FrontServer::port() const { return impl_->bound_port; }

void FrontServer::run() { impl_->svr.listen_after_bind(); }

bool FrontServer::start(std::string* why) {
  if (!bind(why)) return false;
  impl_->thread = std::thread([this] { run(); });
  auto d = Deadline::after(Millis(5000));
  while (!impl_->svr.is_running() && !d.reached())
    std::this_thread::sleep_for(Millis(2));
  if (!impl_->svr.is_running()) {
    if (why) *why = "server did not start within 5s";
    return false;
  }
  return true;
}

void FrontServer::stop() {
  auto& i = *impl_;
  std::lock_guard lk(i.run_mu);
  i.stopping.store(true);
  i.registry.wake_all();
  // stop() before is_running() does nothing in cpp-httplib; wait (bounded).
  if (i.thread.joinable()) {
    auto d = Deadline::after(Millis(5000));
    while (!i.svr.is_running() && !d.reached()) std::this_thread::sleep_for(Millis(2));
  }
  i.svr.stop();
  if (i.thread.joinable()) i.thread.join();
  i.forwarder.stop();
}

const Forwarder& FrontServer::forwarder() const { return impl_->forwarder; }
const Config& FrontServer::config() const { return impl_->cfg; }

}  // namespace msb
