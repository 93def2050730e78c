#include "mcp_sse_bridge/resolver.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <cstring>

namespace msb {

namespace {
struct Pending {
  std::string host;
  int port = 0;
  bool done = false;
  Resolved result;
};
}  // namespace

struct Resolver::State {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Pending>> queue;
  std::map<std::string, std::shared_ptr<Pending>> inflight;  // one lookup per name at a time
  struct Cached {
    Resolved r;
    Clock::time_point expires;
  };
  std::map<std::string, Cached> cache;
  int threads = 0;
  bool stop = false;
  uint64_t lookups = 0;
  Millis timeout{0};
  Millis cache_ttl{0};
};

namespace {

bool numeric(const std::string& host, int port, Resolved& r) {
  sockaddr_storage ss{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    r.addrs.push_back(ss);
    r.lens.push_back(sizeof(sockaddr_in));
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    r.addrs.push_back(ss);
    r.lens.push_back(sizeof(sockaddr_in6));
    return true;
  }
  return false;
}

}  // namespace

Resolver& Resolver::shared() {
  static Resolver* r = new Resolver(Options{});  // never destroyed: lookups may outlive main
  return *r;
}

void Resolver::set_limits(Millis timeout, Millis cache_ttl) {
  std::lock_guard lk(st_->mu);
  st_->timeout = timeout;
  st_->cache_ttl = cache_ttl;
}

Resolver::Resolver(Options o)
    : threads_(std::max(1, o.threads)), max_pending_(o.max_pending), st_(std::make_shared<State>()) {
  st_->timeout = o.timeout;
  st_->cache_ttl = o.cache_ttl;
}

Resolver::~Resolver() {  // only for instances other than shared()
  {
    std::lock_guard lk(st_->mu);
    st_->stop = true;
  }
  st_->cv.notify_all();
}

uint64_t Resolver::lookups() const {
  std::lock_guard lk(st_->mu);
  return st_->lookups;
}

Resolved Resolver::resolve(const std::string& host, int port, Deadline d) {
  Resolved r;
  if (numeric(host, port, r)) return r;
  std::string key = host + ":" + std::to_string(port);
  auto& st = *st_;
  std::unique_lock lk(st.mu);
  const Millis timeout = st.timeout;
  auto until = Deadline::earliest(d, Deadline::after(timeout));
  auto now = Clock::now();
  if (auto it = st.cache.find(key); it != st.cache.end()) {
    if (it->second.expires > now) return it->second.r;
    st.cache.erase(it);
  }
  std::shared_ptr<Pending> p;
  if (auto it = st.inflight.find(key); it != st.inflight.end()) {
    p = it->second;  // join the lookup already under way
  } else {
    if (st.queue.size() >= max_pending_) {
      r.error = "resolve " + host + ": resolver busy (" + std::to_string(max_pending_) +
                " lookups queued)";
      return r;
    }
    p = std::make_shared<Pending>();
    p->host = host;
    p->port = port;
    st.inflight[key] = p;
    st.queue.push_back(p);
    // Threads start on demand, up to the cap, so an idle bridge has none.
    if (st.threads < threads_) {
      ++st.threads;
      std::thread(work, st_).detach();
    }
    st.cv.notify_one();
  }
  if (!st.cv.wait_until(lk, until.when(), [&] { return p->done; })) {
    r.timed_out = true;
    r.error = "resolve " + host + ": no answer within " + std::to_string(timeout.count()) +
              "ms (--resolve-timeout)";
    return r;
  }
  return p->result;
}

void Resolver::work(std::shared_ptr<State> sp) {
  auto& st = *sp;
  std::unique_lock lk(st.mu);
  for (;;) {
    st.cv.wait(lk, [&] { return st.stop || !st.queue.empty(); });
    if (st.stop) return;
    auto p = st.queue.front();
    st.queue.pop_front();
    ++st.lookups;
    lk.unlock();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    Resolved out;
    int rc = getaddrinfo(p->host.c_str(), std::to_string(p->port).c_str(), &hints, &res);
    if (rc != 0) {
      out.error = std::string("resolve ") + p->host + ": " + gai_strerror(rc);
    } else {
      for (auto* ai = res; ai; ai = ai->ai_next) {
        sockaddr_storage ss{};
        std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        out.addrs.push_back(ss);
        out.lens.push_back(ai->ai_addrlen);
      }
      freeaddrinfo(res);
    }
    lk.lock();
    std::string key = p->host + ":" + std::to_string(p->port);
    st.inflight.erase(key);
    if (st.cache_ttl.count() > 0) {
      // Failures are kept briefly too, so a flood of calls to a name that
      // does not resolve costs one lookup a second, not one each.
      auto ttl = out.addrs.empty() ? std::min<Millis>(st.cache_ttl, Millis(1000)) : st.cache_ttl;
      if (st.cache.size() >= 256) st.cache.clear();
      st.cache[key] = State::Cached{out, Clock::now() + ttl};
    }
    p->result = std::move(out);
    p->done = true;
    st.cv.notify_all();
  }
}

}  // namespace msb
