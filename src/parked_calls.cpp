#include "mcp_sse_bridge/parked_calls.h"

#include "mcp_sse_bridge/session_token.h"

namespace msb {

namespace {
std::string hex_key() {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : random_bytes(16)) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}
}  // namespace

ParkedCalls::ParkedCalls(size_t max_parked) : max_(max_parked) {}

std::string ParkedCalls::park(std::shared_ptr<MrtrSink> call) {
  std::string key = hex_key();
  std::lock_guard lk(mu_);
  if (stopped_ || calls_.size() >= max_) {
    stats_.refused.fetch_add(1, std::memory_order_relaxed);
    return {};
  }
  calls_.emplace(key, std::move(call));
  stats_.parked.fetch_add(1, std::memory_order_relaxed);
  return key;
}

std::shared_ptr<MrtrSink> ParkedCalls::take_locked(std::string_view key) {
  auto it = calls_.find(std::string(key));
  if (it == calls_.end()) return nullptr;
  auto c = std::move(it->second);
  calls_.erase(it);
  return c;
}

std::shared_ptr<MrtrSink> ParkedCalls::take(std::string_view key) {
  std::lock_guard lk(mu_);
  auto c = take_locked(key);
  if (c) stats_.resumed.fetch_add(1, std::memory_order_relaxed);
  return c;
}

std::shared_ptr<MrtrSink> ParkedCalls::take_expired(std::string_view key) {
  std::lock_guard lk(mu_);
  auto c = take_locked(key);
  if (c) stats_.expired.fetch_add(1, std::memory_order_relaxed);
  return c;
}

std::vector<std::shared_ptr<MrtrSink>> ParkedCalls::stop() {
  std::lock_guard lk(mu_);
  stopped_ = true;
  std::vector<std::shared_ptr<MrtrSink>> all;
  all.reserve(calls_.size());
  for (auto& [k, c] : calls_) all.push_back(std::move(c));
  calls_.clear();
  return all;
}

size_t ParkedCalls::size() const {
  std::lock_guard lk(mu_);
  return calls_.size();
}

}  // namespace msb
