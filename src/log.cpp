#include "mcp_sse_bridge/log.h"

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

namespace msb::log {

namespace {
std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<bool> g_json{false};

// Lines go to stderr from one writer thread: a stalled stderr (a full pipe
// nobody reads) stalls that thread only. The queue is bounded; lines that do
// not fit are counted and reported once the writer gets through again.
struct Queue {
  static constexpr size_t kMaxBytes = 4u << 20;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> lines;
  size_t bytes = 0;
  uint64_t dropped = 0;
  bool started = false;
  bool writing = false;
  bool waiting = false;  // the writer sleeps on cv: only then does a new line wake it
};
Queue& queue() {
  static Queue* q = new Queue;  // never destroyed: the writer may outlive main
  return *q;
}

void writer_loop() {
  // Signals are for the process's own signal thread, never this one (it may
  // start before main blocks them).
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  auto& q = queue();
  std::unique_lock lk(q.mu);
  for (;;) {
    q.waiting = true;
    q.cv.wait(lk, [&] { return !q.lines.empty() || q.dropped; });
    q.waiting = false;
    std::deque<std::string> batch;
    batch.swap(q.lines);
    q.bytes = 0;
    uint64_t dropped = q.dropped;
    q.dropped = 0;
    q.writing = true;
    lk.unlock();
    if (dropped) {
      std::string note = "mcp-sse-bridge: " + std::to_string(dropped) +
                         " log lines dropped: stderr did not keep up\n";
      std::fwrite(note.data(), 1, note.size(), stderr);
    }
    for (auto& l : batch) std::fwrite(l.data(), 1, l.size(), stderr);
    std::fflush(stderr);
    lk.lock();
    q.writing = false;
    q.cv.notify_all();  // flush() waits on this
  }
}

void flush_at_exit() { flush(std::chrono::milliseconds(500)); }
const char* name(Level l) {
  switch (l) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
    default: return "off";
  }
}
}  // namespace

bool RateLimit::allow(uint64_t* suppressed) {
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count();
  int64_t start = window_start_.load(std::memory_order_relaxed);
  if (now - start >= window_ms_ && window_start_.compare_exchange_strong(start, now))
    used_.store(0, std::memory_order_relaxed);
  if (used_.fetch_add(1, std::memory_order_relaxed) >= per_window_) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  *suppressed = dropped_.exchange(0, std::memory_order_relaxed);
  return true;
}

void set_level(Level l) { g_level.store(static_cast<int>(l)); }
void set_json(bool json) { g_json.store(json); }
bool enabled(Level l) { return static_cast<int>(l) >= g_level.load(std::memory_order_relaxed); }

bool parse_level(std::string_view s, Level* out) {
  if (s == "debug") *out = Level::kDebug;
  else if (s == "info") *out = Level::kInfo;
  else if (s == "warn" || s == "warning") *out = Level::kWarn;
  else if (s == "error") *out = Level::kError;
  else if (s == "off") *out = Level::kOff;
  else return false;
  return true;
}

std::string text_value(std::string_view v) {
  // Quoted (JSON-escaped) when it has a space, a quote, '=' or any control
  // byte: a value from a client (a JSON-RPC method) must not be able to end
  // the line and forge another.
  bool quote = v.empty();
  for (unsigned char ch : v)
    if (ch <= 0x20 || ch == 0x7f || ch == '"' || ch == '=') {
      quote = true;
      break;
    }
  if (!quote) return std::string(v);
  return nlohmann::json(std::string(v)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void write(Level l, std::string_view msg, std::initializer_list<Field> fields) {
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char ts[64];
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  std::string line;
  if (g_json.load()) {
    nlohmann::ordered_json j;
    j["ts"] = ts;
    j["level"] = name(l);
    j["msg"] = msg;
    for (auto& [k, v] : fields) j[std::string(k)] = v;
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line.append(ts).append(" ").append(name(l)).append(" ").append(msg);
    for (auto& [k, v] : fields) line.append(" ").append(k).append("=").append(text_value(v));
  }
  line.push_back('\n');
  auto& q = queue();
  std::lock_guard lk(q.mu);
  if (!q.started) {
    q.started = true;
    std::thread(writer_loop).detach();
    std::atexit(flush_at_exit);
  }
  if (q.bytes + line.size() > Queue::kMaxBytes) {
    ++q.dropped;
    return;
  }
  q.bytes += line.size();
  q.lines.push_back(std::move(line));
  // While the writer is busy it takes every queued line on its next round:
  // no wake-up (a futex call) per line under load.
  if (q.waiting) q.cv.notify_all();
}

void flush(std::chrono::milliseconds bound) {
  auto& q = queue();
  std::unique_lock lk(q.mu);
  q.cv.wait_for(lk, bound, [&] { return q.lines.empty() && !q.writing; });
}

}  // namespace msb::log
