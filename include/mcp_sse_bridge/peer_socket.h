// Finding the socket of an HTTP request, and noticing when its peer left.
//
// cpp-httplib 0.11.4 gives handlers no socket, and its DataSink::is_writable
// cannot see a closed peer; a server must notice a client that went away to
// cancel its work. PeerSockets finds the connection's fd by its addresses
// (cached per connection: accepted fds are stable for the connection's life,
// and every lookup re-checks the addresses). Thread-safe.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace msb {

class PeerSockets {
 public:
  // The fd of the accepted TCP socket with this peer and local port, or -1.
  int find(const std::string& remote_addr, int remote_port, int local_port);

 private:
  std::mutex mu_;
  std::unordered_map<std::string, int> cache_;
};

// True once the peer of `fd` has closed or reset the connection (never blocks).
bool peer_gone(int fd);

}  // namespace msb
