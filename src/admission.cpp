#include "mcp_sse_bridge/admission.h"

#include "mcp_sse_bridge/error.h"
#include "mcp_sse_bridge/metrics.h"

namespace msb {

HttpResponse Refusals::answer(const Rejection& r, std::string_view id) {
  note(r.status, r.message, id);
  HttpResponse res;
  res.status = r.status;
  for (auto& [k, v] : r.headers) res.set_header(k, v);
  res.content_type = "application/json";
  res.body = jsonrpc_plain_error(id, r.code, r.message, r.data_json);
  return res;
}

HttpResponse Refusals::answer(const Rejection& r, const std::vector<std::string>& ids) {
  if (ids.empty()) return answer(r);
  HttpResponse res = answer(r, ids.front());
  std::string body(1, '[');
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) body.push_back(',');
    body += jsonrpc_plain_error(ids[i], r.code, r.message, r.data_json);
  }
  body.push_back(']');
  res.body = std::move(body);
  return res;
}

void Refusals::note(int status, std::string_view why, std::string_view id) {
  metrics_.http_refused(status);
  uint64_t suppressed = 0;
  if (!limit_.allow(&suppressed)) return;
  auto lvl = status == 429 || status == 503 ? log::Level::kWarn : log::Level::kInfo;
  if (!log::enabled(lvl)) return;
  log::write(lvl, "request refused",
             {{"status", std::to_string(status)},
              {"id", std::string(id)},
              {"why", std::string(why.substr(0, 300))},
              {"suppressed", std::to_string(suppressed)}});
}

bool Admission::admit(int n) {
  if (inflight_.fetch_add(n) + n > max_inflight_) {
    inflight_.fetch_sub(n);
    return false;
  }
  return true;
}

void Admission::release(int n) { inflight_.fetch_sub(n); }

bool Admission::admit_session(std::string_view sid, int n) {
  std::lock_guard lk(mu_);
  auto it = per_session_.find(sid);
  if (it == per_session_.end()) {
    if (n > max_per_session_) return false;
    per_session_.emplace(std::string(sid), n);
    return true;
  }
  if (it->second + n > max_per_session_) return false;
  it->second += n;
  return true;
}

void Admission::release_session(std::string_view sid) {
  std::lock_guard lk(mu_);
  auto it = per_session_.find(sid);
  if (it != per_session_.end() && --it->second <= 0) per_session_.erase(it);
}

Rejection Admission::inflight_refusal() const {
  Rejection r{503, -32000,
              "Service Unavailable: " + std::to_string(max_inflight_) +
                  " calls in progress (--max-inflight); retry shortly"};
  r.headers.emplace_back("Retry-After", "1");
  return r;
}

Rejection Admission::session_refusal() const {
  Rejection r{429, -32000,
              "Too Many Requests: " + std::to_string(max_per_session_) +
                  " calls in progress on this session (--max-calls-per-session); retry shortly"};
  r.headers.emplace_back("Retry-After", "1");
  return r;
}

}  // namespace msb
