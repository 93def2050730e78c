#include "mcp_sse_bridge/peer_socket.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>

namespace msb {

namespace {
bool matches(int fd, const std::string& remote_addr, int remote_port, int local_port) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  sockaddr_storage local{}, peer{};
  socklen_t ll = sizeof local, pl = sizeof peer;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0) return false;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0) return false;
  char buf[INET6_ADDRSTRLEN] = {0};
  int lport = 0, pport = 0;
  if (local.ss_family == AF_INET) {
    lport = ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
    auto* p = reinterpret_cast<sockaddr_in*>(&peer);
    pport = ntohs(p->sin_port);
    inet_ntop(AF_INET, &p->sin_addr, buf, sizeof buf);
  } else if (local.ss_family == AF_INET6) {
    lport = ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port);
    auto* p = reinterpret_cast<sockaddr_in6*>(&peer);
    pport = ntohs(p->sin6_port);
    inet_ntop(AF_INET6, &p->sin6_addr, buf, sizeof buf);
  } else {
    return false;
  }
  return lport == local_port && pport == remote_port && remote_addr == buf;
}
}  // namespace

int PeerSockets::find(const std::string& remote_addr, int remote_port, int local_port) {
  std::string key = remote_addr + "|" + std::to_string(remote_port) + "|" + std::to_string(local_port);
  {
    std::lock_guard lk(mu_);
    auto it = cache_.find(key);
    if (it != cache_.end() && matches(it->second, remote_addr, remote_port, local_port))
      return it->second;
  }
  int found = -1;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      int fd = std::atoi(e->d_name);
      if (fd > 2 && matches(fd, remote_addr, remote_port, local_port)) {
        found = fd;
        break;
      }
    }
    closedir(d);
  }
  std::lock_guard lk(mu_);
  if (found >= 0) {
    if (cache_.size() > 100000) cache_.clear();
    cache_[key] = found;
  }
  return found;
}

bool peer_gone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

}  // namespace msb
