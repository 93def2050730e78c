#include "mcp_sse_bridge/call_registry.h"


namespace msb {

CallMailbox::CallMailbox() = default;
CallMailbox::~CallMailbox() = default;

void CallMailbox::set_notify(std::function<void(bool)> f) {
  std::lock_guard lk(notify_mu_);
  notify_ = std::move(f);
}

void CallMailbox::notify(bool urgent) {
  std::lock_guard lk(notify_mu_);
  if (notify_) notify_(urgent);
}

void CallMailbox::wake() { notify(true); }

void CallMailbox::cancel() {
  cancelled.store(true);
  notify(true);
}

void CallMailbox::hangup() {
  gone.store(true);
  notify(true);
}

void CallMailbox::push(Message m) {
  {
    std::lock_guard lk(mu);
    if (responses.size() >= 1024) return;  // a client flooding answers gets them dropped
    responses.push_back(std::move(m));
  }
  notify(false);
}

std::optional<Message> CallMailbox::pop() {
  std::lock_guard lk(mu);
  if (responses.empty()) return std::nullopt;
  Message m = std::move(responses.front());
  responses.pop_front();
  return m;
}

void CallRegistry::add_call(const std::string& key, const MailboxPtr& m) {
  std::lock_guard lk(mu_);
  calls_[key] = m;
}

void CallRegistry::remove_call(const std::string& key, const MailboxPtr& m) {
  std::lock_guard lk(mu_);
  auto it = calls_.find(key);
  if (it != calls_.end() && it->second == m) calls_.erase(it);
}

bool CallRegistry::cancel(const std::string& key) {
  std::lock_guard lk(mu_);
  auto it = calls_.find(key);
  if (it == calls_.end()) return false;
  it->second->cancel();
  return true;
}

void CallRegistry::add_route(const std::string& key, const MailboxPtr& m) {
  std::lock_guard lk(mu_);
  routes_[key] = m;
}

void CallRegistry::remove_route(const std::string& key) {
  std::lock_guard lk(mu_);
  routes_.erase(key);
}

bool CallRegistry::route(const std::string& key, Message m) {
  MailboxPtr box;
  {
    std::lock_guard lk(mu_);
    auto it = routes_.find(key);
    if (it == routes_.end()) return false;
    box = it->second;
  }
  box->push(std::move(m));
  return true;
}

void CallRegistry::wake_all() {
  std::lock_guard lk(mu_);
  for (auto& [k, m] : calls_) m->wake();
}

}  // namespace msb
