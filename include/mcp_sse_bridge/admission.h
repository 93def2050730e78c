// Admission: the caps on work in progress, and how a refusal is answered.
//   --max-inflight           calls at once, initialize included (503 + Retry-After)
//   --max-calls-per-session  calls at once per client session (429 + Retry-After)
// Every refusal, whatever layer makes it, goes through Refusals: counted by
// status, logged (capacity refusals at warn) at most 20 lines per 10 s, and
// answered as a JSON-RPC error carrying the request's id where it is known.
// Thread-safe.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>
#include <unordered_map>

#include "mcp_sse_bridge/http_exchange.h"
#include "mcp_sse_bridge/log.h"
#include "mcp_sse_bridge/request_policy.h"
#include "mcp_sse_bridge/text_util.h"

namespace msb {

class Metrics;

// Whether the bridge takes new work (shared by every layer of the client side).
struct Lifecycle {
  std::atomic<bool> draining{false};  // no new calls; /readyz false; connections close
  std::atomic<bool> stopping{false};  // remaining calls are answered with shutting_down
};

class Refusals {
 public:
  explicit Refusals(Metrics& m) : metrics_(m) {}
  // Counts, logs and builds the answer.
  HttpResponse answer(const Rejection& r, std::string_view id = "");
  // The same for a batch: a JSON array with one error per request id (each
  // pending request gets its answer), or a single error with id null when
  // `ids` is empty.
  HttpResponse answer(const Rejection& r, const std::vector<std::string>& ids);
  // Counts and logs a refusal answered elsewhere.
  void note(int status, std::string_view why, std::string_view id = "");

 private:
  Metrics& metrics_;
  log::RateLimit limit_{20, 10000};
};

class Admission {
 public:
  Admission(int max_inflight, int max_per_session)
      : max_inflight_(max_inflight), max_per_session_(max_per_session) {}

  // Takes n global slots; false (nothing taken) above --max-inflight.
  bool admit(int n);
  void release(int n = 1);
  // Takes n slots of a client session; false above --max-calls-per-session.
  bool admit_session(std::string_view sid, int n);
  void release_session(std::string_view sid);

  int inflight() const { return inflight_.load(); }
  Rejection inflight_refusal() const;
  Rejection session_refusal() const;

 private:
  const int max_inflight_;
  const int max_per_session_;
  std::atomic<int> inflight_{0};
  std::mutex mu_;
  std::unordered_map<std::string, int, StringHash, std::equal_to<>> per_session_;
};

}  // namespace msb
