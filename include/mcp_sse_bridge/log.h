// Minimal leveled logger: one line per record on stderr, text or JSON.
// Thread-safe; records below the configured level cost one atomic load.
// Never blocks the caller on stderr: lines are queued (bounded, 4 MiB) for a
// writer thread; when stderr stalls, lines past the bound are dropped and
// counted (reported once it moves again).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace msb::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3, kOff = 4 };

void set_level(Level l);
void set_json(bool json);
bool enabled(Level l);
bool parse_level(std::string_view s, Level* out);

using Field = std::pair<std::string_view, std::string>;
void write(Level l, std::string_view msg, std::initializer_list<Field> fields = {});
// A field's value as the text format writes it: as is, or JSON-quoted when it
// holds a space, a quote, '=' or a control byte (so it stays on its line).
std::string text_value(std::string_view v);
// Waits (up to `bound`) until every queued line has been written. Runs at
// exit by itself.
void flush(std::chrono::milliseconds bound);

// Lets at most `per_window` records through per window and counts the rest,
// so that a flood (bad requests from one client) cannot flood the log.
// Thread-safe; allow() takes no lock.
class RateLimit {
 public:
  RateLimit(int per_window, int64_t window_ms) : per_window_(per_window), window_ms_(window_ms) {}
  // True when this record may be written; then *suppressed is the number of
  // records dropped since the last one that was allowed.
  bool allow(uint64_t* suppressed);

 private:
  const int per_window_;
  const int64_t window_ms_;
  std::atomic<int64_t> window_start_{0};
  std::atomic<int> used_{0};
  std::atomic<uint64_t> dropped_{0};
};

inline void debug(std::string_view m, std::initializer_list<Field> f = {}) {
  if (enabled(Level::kDebug)) write(Level::kDebug, m, f);
}
inline void info(std::string_view m, std::initializer_list<Field> f = {}) {
  if (enabled(Level::kInfo)) write(Level::kInfo, m, f);
}
inline void warn(std::string_view m, std::initializer_list<Field> f = {}) {
  if (enabled(Level::kWarn)) write(Level::kWarn, m, f);
}
inline void error(std::string_view m, std::initializer_list<Field> f = {}) {
  if (enabled(Level::kError)) write(Level::kError, m, f);
}

}  // namespace msb::log
