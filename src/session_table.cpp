#include "mcp_sse_bridge/session_table.h"

#include <thread>

#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/metrics.h"

namespace msb {

SessionTable::SessionTable(const UpstreamConfig& cfg, Metrics& metrics)
    : cfg_(cfg), metrics_(metrics) {}

SessionTable::~SessionTable() = default;

std::shared_ptr<SessionUpstream> SessionTable::acquire(EventLoop& loop, const ClientSession& s,
                                                       const std::string& headers,
                                                       const std::optional<std::string>& log_level,
                                                       bool after_initialize, BridgeError* err) {
  std::shared_ptr<SessionUpstream> up;
  {
    std::lock_guard lk(mu_);
    if (stopping_) {
      *err = make_error(ErrorKind::kShuttingDown, Phase::kConnect, "bridge is shutting down");
      return nullptr;
    }
    if (closed_.count(s.id)) {
      *err = make_error(ErrorKind::kClosed, Phase::kConnect, "the client terminated its session (DELETE)");
      return nullptr;
    }
    auto it = sessions_.find(s.id);
    if (it != sessions_.end()) {
      if (it->second->usable()) return it->second;
      sessions_.erase(it);  // failed or closed: its on_end may not have run yet
    }
    if (sessions_.size() >= cfg_.max_sessions) {
      *err = make_error(ErrorKind::kOverloaded, Phase::kConnect,
                        std::to_string(cfg_.max_sessions) +
                            " client sessions hold an upstream session (--max-upstream-sessions)");
      return nullptr;
    }
    SessionUpstream::Params p{s.id, s.tag, s.init_params, headers, log_level, !after_initialize};
    std::string sid = s.id;
    up = std::make_shared<SessionUpstream>(loop, cfg_, metrics_, std::move(p),
                                           [this, sid](SessionUpstream* self) { forget(sid, self); });
    sessions_.emplace(s.id, up);
  }
  if (!after_initialize) {
    metrics_.session_state_lost();
    log::warn("client session has no upstream session in this process: opening a fresh one "
              "(server-side session state is lost)",
              {{"session", s.tag}});
  }
  up->start();
  return up;
}

std::shared_ptr<SessionUpstream> SessionTable::find(const std::string& sid) {
  std::lock_guard lk(mu_);
  auto it = sessions_.find(sid);
  return it == sessions_.end() ? nullptr : it->second;
}

void SessionTable::forget(const std::string& sid, SessionUpstream* s) {
  std::lock_guard lk(mu_);
  auto it = sessions_.find(sid);
  if (it != sessions_.end() && it->second.get() == s) sessions_.erase(it);
}

boost::asio::awaitable<CallResult> SessionTable::call(EventLoop& loop, const Message& req,
                                                      const ClientSession& s, std::string headers,
                                                      std::optional<std::string> log_level,
                                                      CallSink& sink, Clock::time_point arrival) {
  CallResult out;
  // The client's initialize opens the session and is answered by its open.
  const bool init = req.method == "initialize";
  for (int attempt = 0;; ++attempt) {
    BridgeError err;
    auto up = acquire(loop, s, headers, log_level, init, &err);
    if (!up) {
      out.error = err;
      out.response = jsonrpc_error_response(req.id, err, elapsed_ms(arrival), cfg_.sse_url.str());
      out.attempts = attempt + 1;
      co_return out;
    }
    bool sent = false;
    out = co_await up->call(loop, req, sink, arrival, &sent);
    out.attempts = attempt + 1;
    // The session failed before the request could reach it (it died while
    // idle, or its setup failed): once more on a fresh session, within the
    // call's deadline, as call mode retries a dead warm session.
    if (out.error && !sent && attempt < cfg_.retries && out.error->kind != ErrorKind::kShuttingDown &&
        out.error->kind != ErrorKind::kOverloaded &&
        Clock::now() < arrival + cfg_.request_timeout) {
      log::info("retrying call on a fresh upstream session",
                {{"method", req.method}, {"id", req.id}, {"cause", out.error->message()}});
      continue;
    }
    co_return out;
  }
}

void SessionTable::close(const std::string& sid) {
  std::shared_ptr<SessionUpstream> up;
  {
    std::lock_guard lk(mu_);
    if (closed_.insert(sid).second) {
      closed_order_.push_back(sid);
      if (closed_order_.size() > kMaxClosed) {
        closed_.erase(closed_order_.front());
        closed_order_.pop_front();
      }
    }
    auto it = sessions_.find(sid);
    if (it == sessions_.end()) return;
    up = std::move(it->second);
    sessions_.erase(it);
  }
  up->close(make_error(ErrorKind::kClosed, Phase::kRequest,
                       "the client terminated its session (DELETE)"));
}

void SessionTable::stop() {
  std::unordered_map<std::string, std::shared_ptr<SessionUpstream>> all;
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
    all.swap(sessions_);
  }
  for (auto& [sid, up] : all)
    up->close(make_error(ErrorKind::kShuttingDown, Phase::kRequest,
                         "bridge is shutting down; the call was abandoned"));
  all.clear();
  auto d = Deadline::after(Millis(2000));
  while (SessionUpstream::running() > 0 && !d.reached()) std::this_thread::sleep_for(Millis(10));
}

size_t SessionTable::size() {
  std::lock_guard lk(mu_);
  return sessions_.size();
}

}  // namespace msb
