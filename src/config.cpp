#include "mcp_sse_bridge/config.h"

#include <cctype>


namespace msb {

std::optional<Duration> parse_duration(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 12) return std::nullopt;
  uint64_t n = std::stoull(std::string(s.substr(0, i)));
  std::string_view unit = s.substr(i);
  uint64_t mult;
  if (unit == "ms") mult = 1;
  else if (unit == "s" || unit.empty()) mult = 1000;
  else if (unit == "m" || unit == "min") mult = 60000;
  else if (unit == "h") mult = 3600000;
  else return std::nullopt;
  // At most a year: a deadline is now plus the duration on a nanosecond
  // clock, which a few hundred years overflow (every call then failed at
  // once as past its deadline).
  if (n > kMaxDurationMs / mult) return std::nullopt;
  return Duration(static_cast<int64_t>(n * mult));
}

std::optional<uint64_t> parse_size(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 15) return std::nullopt;
  uint64_t n = std::stoull(std::string(s.substr(0, i)));
  std::string_view unit = s.substr(i);
  uint64_t mult;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KiB") mult = 1ull << 10;
  else if (unit == "MiB") mult = 1ull << 20;
  else if (unit == "GiB") mult = 1ull << 30;
  else if (unit == "KB" || unit == "kB") mult = 1000;
  else if (unit == "MB") mult = 1000 * 1000;
  else if (unit == "GB") mult = 1000ull * 1000 * 1000;
  else return std::nullopt;
  if (n > kMaxSize / mult) return std::nullopt;  // no wrap-around (17179869185GiB was 1GiB)
  return n * mult;
}

std::string format_duration(Duration d) {
  auto ms = d.count();
  if (ms == 0) return "0";
  if (ms % 3600000 == 0) return std::to_string(ms / 3600000) + "h";
  if (ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

}  // namespace msb
