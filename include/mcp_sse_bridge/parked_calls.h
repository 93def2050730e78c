// ParkedCalls: the process-wide registry of stateless calls waiting for their
// client's input (MRTR, 2026-07-28). A call parks here after its client was
// answered `input_required`; the client's retry takes it back by the key
// sealed in its requestState.
//
// - Bounded: at most `max_parked` calls (--mrtr-max-parked); park() refuses
//   beyond that and the caller answers its client with an error.
// - Take-once: a key is handed out by exactly one take(); a second retry with
//   the same requestState, or one that raced the park expiry, finds nothing.
//   Each round parks under a fresh key, so an old state never resumes a
//   later round.
// - Expiry is the parked call's own timer (MrtrSink, on its loop): when it
//   fires the call take()s itself out and cancels its upstream work; losing
//   that race to a retry means the retry owns it.
// - stop() takes every call out for shutdown; the caller cancels each.
//
// Thread-safe: retries arrive on any loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace msb {

class MrtrSink;

struct ParkedStats {
  std::atomic<uint64_t> parked{0};    // calls parked (each round counts)
  std::atomic<uint64_t> resumed{0};   // taken back by a retry
  std::atomic<uint64_t> expired{0};   // taken back by their park expiry
  std::atomic<uint64_t> refused{0};   // park() refused: max_parked reached
};

class ParkedCalls {
 public:
  explicit ParkedCalls(size_t max_parked);

  // Parks `call` under a fresh random key (32 hex digits, unguessable).
  // Returns the key, or "" when max_parked calls are already parked or the
  // registry is stopped.
  std::string park(std::shared_ptr<MrtrSink> call);
  // Takes the call parked under `key`, once; nullptr when none is (unknown,
  // already taken, expired, stopped).
  std::shared_ptr<MrtrSink> take(std::string_view key);
  // Takes the call under `key` for its expiry (counted as expired).
  std::shared_ptr<MrtrSink> take_expired(std::string_view key);
  // Takes every parked call and refuses further parking (shutdown).
  std::vector<std::shared_ptr<MrtrSink>> stop();

  size_t size() const;
  size_t max_parked() const { return max_; }
  const ParkedStats& stats() const { return stats_; }

 private:
  std::shared_ptr<MrtrSink> take_locked(std::string_view key);

  const size_t max_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<MrtrSink>> calls_;
  bool stopped_ = false;
  ParkedStats stats_;
};

}  // namespace msb
