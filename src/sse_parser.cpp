#include "mcp_sse_bridge/sse_parser.h"

#include <cstring>

namespace msb {

bool SseParser::feed_to(std::string_view in, Sink& sink) {
  if (failed_) return false;
  if (!bom_checked_) {
    // The BOM may itself be split across slices: hold back up to 3 bytes.
    static constexpr std::string_view kBom = "\xEF\xBB\xBF";
    std::string joined = line_ + std::string(in);
    if (joined.size() < kBom.size() && kBom.substr(0, joined.size()) == joined) {
      line_ = std::move(joined);
      return true;
    }
    line_.clear();
    bom_checked_ = true;
    if (joined.compare(0, kBom.size(), kBom) == 0) joined.erase(0, kBom.size());
    return feed_to(joined, sink);
  }
  if (after_cr_ && !in.empty()) {
    after_cr_ = false;
    if (in.front() == '\n') in.remove_prefix(1);
  }
  const char* p = in.data();
  const char* end = p + in.size();
  // Positions of the next CR and LF, searched once each and reused: scanning
  // from every line start again would be quadratic on many short lines.
  const char* next_cr = nullptr;
  const char* next_lf = nullptr;
  while (p < end) {
    if (next_cr < p) {
      next_cr = static_cast<const char*>(std::memchr(p, '\r', end - p));
      if (!next_cr) next_cr = end;
    }
    if (next_lf < p) {
      next_lf = static_cast<const char*>(std::memchr(p, '\n', end - p));
      if (!next_lf) next_lf = end;
    }
    const char* eol = next_cr < next_lf ? next_cr : next_lf;
    if (eol == end) {
      if (line_.size() + data_.size() + (end - p) > max_event_) {
        failed_ = true;
        return false;
      }
      line_.append(p, end - p);
      break;
    }
    std::string_view line;
    if (line_.empty()) {
      line = std::string_view(p, eol - p);
    } else {
      line_.append(p, eol - p);
      line = line_;
    }
    if (line.size() + data_.size() > max_event_) {
      failed_ = true;
      return false;
    }
    if (!line_.empty() && data_.empty() && line_.compare(0, 5, "data:") == 0) {
      // A long data line assembled across slices: take its buffer instead of
      // copying it (a 64 MiB message would otherwise be resident twice).
      size_t skip = line_.size() > 5 && line_[5] == ' ' ? 6 : 5;
      data_.swap(line_);
      data_.erase(0, skip);
      data_.push_back('\n');
      saw_data_ = true;
    } else {
      process_line(line, sink);
    }
    line_.clear();
    if (*eol == '\r') {
      if (eol + 1 == end) {
        after_cr_ = true;
        p = end;
        break;
      }
      p = eol[1] == '\n' ? eol + 2 : eol + 1;
    } else {
      p = eol + 1;
    }
  }
  return true;
}

void SseParser::process_line(std::string_view line, Sink& sink) {
  if (line.empty()) {  // dispatch
    if (!saw_data_) {
      type_.clear();
      retry_.reset();
      return;
    }
    SseEvent ev;
    ev.type = type_.empty() ? std::string("message") : std::move(type_);
    if (!data_.empty() && data_.back() == '\n') data_.pop_back();
    ev.data = std::move(data_);
    ev.id = last_id_;
    ev.retry = retry_;
    data_.clear();
    type_.clear();
    retry_.reset();
    saw_data_ = false;
    ++events_;
    sink.on_event(ev);
    return;
  }
  if (line.front() == ':') {
    ++comments_;
    return;
  }
  std::string_view field = line, value;
  if (auto colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    // (Sized once: the buffer was handed over with the last event.)
    if (data_.empty()) data_.reserve(value.size() + 1);
    data_.append(value);
    data_.push_back('\n');
    saw_data_ = true;
  } else if (field == "event") {
    type_.assign(value);
  } else if (field == "id") {
    // An id is copied into every later event: a long one (the event limit
    // allows 128 MiB) would make each small event a large copy and pin the
    // loop. Ids longer than kMaxIdBytes are ignored, as ids with NUL are.
    if (value.size() <= kMaxIdBytes && value.find('\0') == std::string_view::npos) last_id_.assign(value);
  } else if (field == "retry") {
    if (!value.empty() && value.size() <= 18 &&
        value.find_first_not_of("0123456789") == std::string_view::npos) {
      retry_ = std::stoull(std::string(value));
    }
  }
  // Unknown fields are ignored, as the standard says.
}

}  // namespace msb
