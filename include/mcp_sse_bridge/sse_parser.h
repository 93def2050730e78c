// Incremental parser for text/event-stream (WHATWG HTML "server-sent events").
//
// Bytes arrive in arbitrary slices (chunk boundaries are not event
// boundaries); the parser keeps the partial line and event between calls.
// Handles LF, CRLF and lone CR line ends (a CR at the end of one slice and an
// LF at the start of the next are one line end), comments, multi-line data,
// `id`, `retry` and a leading BOM. An event larger than the limit is an error
// that ends the stream: the parser stays failed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace msb {

struct SseEvent {
  std::string type = "message";  // `event:` field, "message" when absent
  std::string data;              // `data:` lines joined with '\n'
  std::string id;                // last `id:` seen (the stream's last event id)
  std::optional<uint64_t> retry; // `retry:` in this event, if any
};

class SseParser {
 public:
  // Where completed events go (feed_to); feed() adapts any callable.
  class Sink {
   public:
    virtual void on_event(SseEvent& ev) = 0;

   protected:
    ~Sink() = default;
  };

  // max_event_bytes bounds one event (its data plus the line being read).
  explicit SseParser(size_t max_event_bytes) : max_event_(max_event_bytes) {}
  // `id:` values longer than this are ignored (the last id is kept).
  static constexpr size_t kMaxIdBytes = 1024;

  // Feeds a slice. Calls on_event(SseEvent&) for every event completed by
  // it, in order. Returns false once an event exceeded the limit (then and on
  // every later call).
  template <class Fn>
  bool feed(std::string_view bytes, Fn&& on_event) {
    struct Adapter final : Sink {
      explicit Adapter(Fn& f) : f(f) {}
      void on_event(SseEvent& ev) override { f(ev); }
      Fn& f;
    } sink(on_event);
    return feed_to(bytes, sink);
  }
  bool feed_to(std::string_view bytes, Sink& sink);

  bool failed() const { return failed_; }
  uint64_t comments() const { return comments_; }
  uint64_t events() const { return events_; }

 private:
  void process_line(std::string_view line, Sink& sink);

  size_t max_event_;
  std::string line_;        // partial line carried between slices
  std::string data_;        // data buffer of the event being built
  std::string type_;        // event type of the event being built
  std::string last_id_;     // last event id (persists across events)
  std::optional<uint64_t> retry_;
  bool saw_data_ = false;
  bool after_cr_ = false;   // last slice ended in CR: a leading LF is part of that line end
  bool bom_checked_ = false;
  bool failed_ = false;
  uint64_t comments_ = 0;
  uint64_t events_ = 0;
};

}  // namespace msb
