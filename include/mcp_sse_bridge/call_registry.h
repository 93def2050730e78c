// What the client side and a running call share (CallMailbox): the client's
// cancellation, the client's hang-up, client responses routed to the call,
// and the call's wake-up, called at once when any of them comes (from
// whatever thread brings it; the call's side posts it to its loop).
// CallRegistry finds them: in-flight calls by (client session, request id),
// so that notifications/cancelled reaches the call it names; forwarded
// server requests by (client session, bridge id), so that the client's
// answer reaches the call that forwarded it. Thread-safe.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "mcp_sse_bridge/jsonrpc.h"

namespace msb {

struct CallMailbox {
  CallMailbox();
  ~CallMailbox();
  CallMailbox(const CallMailbox&) = delete;
  CallMailbox& operator=(const CallMailbox&) = delete;

  // Installs (or, with nullptr, removes) the wake-up. `urgent`: stop now.
  void set_notify(std::function<void(bool urgent)> f);
  void wake();    // urgent: the bridge is stopping
  void cancel();  // the client cancelled the call: no response is owed
  void hangup();  // the client went away: nobody to answer
  void push(Message m);  // a client response routed to this call
  std::optional<Message> pop();

  std::atomic<bool> cancelled{false};
  std::atomic<bool> gone{false};
  std::mutex mu;
  std::deque<Message> responses;

 private:
  void notify(bool urgent);
  std::mutex notify_mu_;
  std::function<void(bool)> notify_;
};
using MailboxPtr = std::shared_ptr<CallMailbox>;

class CallRegistry {
 public:
  void add_call(const std::string& key, const MailboxPtr& m);
  void remove_call(const std::string& key, const MailboxPtr& m);
  bool cancel(const std::string& key);
  void add_route(const std::string& key, const MailboxPtr& m);
  void remove_route(const std::string& key);
  bool route(const std::string& key, Message m);
  void wake_all();

 private:
  std::mutex mu_;
  std::unordered_map<std::string, MailboxPtr> calls_;
  std::unordered_map<std::string, MailboxPtr> routes_;
};

}  // namespace msb
