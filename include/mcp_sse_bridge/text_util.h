// ASCII text helpers for protocol tokens (header names, schemes, hosts),
// written once. Locale-independent; no allocation unless a string is returned.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace msb {

inline char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Case-insensitive equality of ASCII tokens (header names compare this way).
inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

// Whether `s` starts with / contains `token`, ASCII case-insensitively
// (`token` in lower case). No allocation: these run per request.
inline bool istarts_with(std::string_view s, std::string_view token) {
  return s.size() >= token.size() && iequals(s.substr(0, token.size()), token);
}
inline bool icontains(std::string_view s, std::string_view token) {
  if (token.empty()) return true;
  for (size_t i = 0; i + token.size() <= s.size(); ++i)
    if (ascii_lower(s[i]) == token.front() && istarts_with(s.substr(i), token)) return true;
  return false;
}

inline std::string lower(std::string_view s) {
  std::string o(s);
  for (auto& c : o) c = ascii_lower(c);
  return o;
}

// Without leading and trailing spaces, tabs (and trailing CRs).
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Hash for unordered containers keyed by std::string that are looked up by
// std::string_view without building a string (with std::equal_to<>).
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace msb
