// mcp-bridge-cpu: the bridge's CPU per warm tools/call against nginx's CPU per
// proxied MCP call, measured in the same run under the same client load (#12:
// target ≤ 1.5× nginx at c10 and c50).
//
//   reference  nginx (Debian's package, one worker, started by this tool with
//              its own config in a temp dir) proxying POST /mcp to a minimal
//              Streamable HTTP MCP server (RefServer in this process: one epoll
//              thread, JSON answers, keep-alive). CPU = utime+stime of nginx's
//              worker.
//   bridge     the bridge (a child process, --bridge) in front of the same
//              RefServer speaking the legacy HTTP+SSE transport (the 202 and
//              the answer's SSE event in one turn, as the TS and Python SDKs
//              write them; --legacy-upstream example: the example server, a
//              thread per connection and per request), warm pool on. Each client
//              connection is one MCP session (initialize +
//              notifications/initialized first, outside the measurement), then
//              loops tools/call echo. CPU = utime+stime of the bridge process.
//              A fresh bridge process per cell (see restart_bridge).
//
// The client side is one epoll thread (like wrk): N keep-alive connections,
// one call in flight on each, byte-identical requests to both targets (a
// connection the server closes, e.g. after its keep-alive request limit, is
// reopened and counted). Each cell: a warm-up, then a measured window whose
// calls and CPU are read at its two ends. Rounds alternate nginx and bridge
// cells; the tool prints every round and the median ratio per concurrency.
// --placement: by default (`same-core`) every thread, nginx's, the bridge's
// and this tool's, is pinned to one CPU (the first this tool may use), so
// that no wake-up crosses cores and a call's CPU is its work alone. With
// `free` the scheduler places them: on a VM a wake-up on the other core costs
// a cross-core interrupt and an idle exit, and where nginx's one worker lands
// swung its CPU per call 2-3x from round to round (54-134 us at 4,000
// calls/s), and the ratio with it; `split` pins the
// proxy under test to the second CPU and this tool to the first, so that
// every wake-up crosses cores.
//
// Everything binds 127.0.0.1; nginx listens on a port picked free just before
// it starts (retried if taken). Every wait has a deadline, the whole run has
// one (--max-seconds, then children are killed), and nginx and the bridge are
// stopped on exit or on SIGINT/SIGTERM.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "blocking_http.h"
#include "legacy_server.h"
#include "ref_server.h"
#include "tool_common.h"
#include "mcp_sse_bridge/log.h"

namespace {

using namespace msb_tools;
using msb::Clock;
using msb::Deadline;

// ---- children killed on any exit path ---------------------------------------

std::atomic<pid_t> g_nginx_pgid{-1};
std::atomic<pid_t> g_bridge_pid{-1};
char g_nginx_dir[256];  // nginx's temp dir, removed by the signal handler too

// Removes what nginx and this tool put in the temp dir, with
// async-signal-safe calls only (unlink, rmdir).
void remove_nginx_dir_now() {
  if (!g_nginx_dir[0]) return;
  static const char* const kFiles[] = {"/nginx.conf", "/nginx.pid", "/error.log", "/stderr.log"};
  static const char* const kDirs[] = {"/tmp/body", "/tmp/proxy", "/tmp", ""};
  char path[320];
  auto join = [&](const char* tail) {
    size_t n = 0;
    for (const char* p = g_nginx_dir; *p && n < sizeof path - 1; ++p) path[n++] = *p;
    for (const char* p = tail; *p && n < sizeof path - 1; ++p) path[n++] = *p;
    path[n] = 0;
    return path;
  };
  for (const char* f : kFiles) ::unlink(join(f));
  for (const char* d : kDirs) ::rmdir(join(d));
}

void kill_children_now() {
  pid_t g = g_nginx_pgid.load();
  if (g > 0) ::kill(-g, SIGKILL);
  pid_t b = g_bridge_pid.load();
  if (b > 0) ::kill(b, SIGKILL);
}

void on_fatal_signal(int sig) {
  kill_children_now();
  remove_nginx_dir_now();
  const char* m = sig == SIGALRM ? "mcp-bridge-cpu: --max-seconds reached, stopping\n"
                                 : "mcp-bridge-cpu: interrupted, stopping\n";
  ssize_t ignored = ::write(2, m, std::strlen(m));
  (void)ignored;
  _exit(3);
}

// ---- small HTTP/1.1 pieces (no library: one client drives both targets) ----

struct Response {
  int status = 0;
  bool close = false;   // Connection: close (or HTTP/1.0)
  bool to_eof = false;  // no framing: the body runs to the end of the connection
  std::string sid;      // Mcp-Session-Id
  std::string body;
};

// Parses one response at the front of `in`: bytes consumed (> 0), 0 when
// more bytes are needed, -1 when malformed. Content-Length and chunked bodies;
// a body without either is reported with to_eof (0 returned, caller decides).
long parse_response(const std::string& in, Response& r) {
  size_t he = in.find("\r\n\r\n");
  if (he == std::string::npos) return in.size() > (64 << 10) ? -1 : 0;
  std::string_view head(in.data(), he + 2);
  if (head.size() < 12 || head.compare(0, 5, "HTTP/") != 0) return -1;
  r = Response{};
  r.status = std::atoi(in.c_str() + 9);
  if (r.status < 100) return -1;
  if (head.compare(0, 8, "HTTP/1.0") == 0) r.close = true;
  if (auto c = header_value(head, "connection"); c && msb::iequals(*c, "close")) r.close = true;
  if (auto s = header_value(head, "mcp-session-id")) r.sid = std::string(*s);
  size_t pos = he + 4;
  if (r.status == 204 || r.status == 304 || r.status < 200) return static_cast<long>(pos);
  auto te = header_value(head, "transfer-encoding");
  if (te && msb::iequals(*te, "chunked")) {
    for (;;) {
      size_t le = in.find("\r\n", pos);
      if (le == std::string::npos) return 0;
      size_t size = std::strtoul(in.c_str() + pos, nullptr, 16);
      if (size == 0) {
        // Last chunk, no trailers expected: "0\r\n\r\n".
        if (in.size() < le + 4) return 0;
        return in.compare(le + 2, 2, "\r\n") == 0 ? static_cast<long>(le + 4) : -1;
      }
      if (in.size() < le + 2 + size + 2) return 0;
      r.body.append(in, le + 2, size);
      pos = le + 2 + size + 2;
    }
  }
  if (auto cl = header_value(head, "content-length")) {
    size_t n = std::strtoul(std::string(*cl).c_str(), nullptr, 10);
    if (in.size() < pos + n) return 0;
    r.body.assign(in, pos, n);
    return static_cast<long>(pos + n);
  }
  r.to_eof = true;
  r.close = true;
  return 0;
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// One blocking request/response on `fd` (setup only), bounded by `d`.
bool exchange(int fd, const std::string& req, Response& r, Deadline d) {
  for (size_t off = 0; off < req.size();) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, d.poll_ms(100)) <= 0) {
      if (d.reached()) return false;
      continue;
    }
    ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  std::string in;
  char buf[16384];
  while (!d.reached()) {
    long used = parse_response(in, r);
    if (used > 0) return true;
    if (used < 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, d.poll_ms(100)) <= 0) continue;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    in.append(buf, static_cast<size_t>(n));
  }
  return false;
}

std::string post(int port, const std::string& sid, const std::string& body) {
  std::string h = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                  "\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n";
  if (!sid.empty()) h += "Mcp-Session-Id: " + sid + "\r\nMcp-Protocol-Version: 2025-06-18\r\n";
  return h + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// ---- nginx, configured and started by this tool ------------------------------

int free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

pid_t parent_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto rp = all.rfind(')');
  if (rp == std::string::npos || rp + 4 >= all.size()) return -1;
  // ") S ppid ..."
  return static_cast<pid_t>(std::atol(all.c_str() + rp + 4));
}

cpu_set_t only_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return set;
}

// Pins every thread of this process to `cpu` (/proc/self/task); threads they
// start later inherit the mask. False when a thread could not be pinned (one
// that exited meanwhile does not count).
bool pin_all_threads(int cpu) {
  cpu_set_t set = only_cpu(cpu);
  std::error_code ec;
  bool any = false, ok = true;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    any = true;
    if (::sched_setaffinity(static_cast<pid_t>(std::atol(e.path().filename().c_str())), sizeof set, &set) != 0 &&
        errno != ESRCH)
      ok = false;
  }
  return any && ok;
}

// Pins the calling thread to `cpu`; a child it starts (fork, posix_spawn)
// starts with that mask, and so do all the child's threads.
bool pin_this_thread(int cpu) {
  cpu_set_t set = only_cpu(cpu);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

class Nginx {
 public:
  ~Nginx() { stop(); }

  // Writes the config and starts nginx; up to 3 attempts with a fresh port.
  bool start(const std::string& bin, int upstream_port, std::string& why) {
    char tmpl[] = "/tmp/msb-nginx-XXXXXX";
    if (!::mkdtemp(tmpl)) {
      why = "mkdtemp failed";
      return false;
    }
    dir_ = tmpl;
    std::snprintf(g_nginx_dir, sizeof g_nginx_dir, "%s", dir_.c_str());
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = free_loopback_port();
      write_conf(upstream_port);
      if (launch(bin, why)) return true;
      stop_master();
    }
    return false;
  }

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }

  // The worker processes: children of the master.
  std::vector<pid_t> workers() const {
    std::vector<pid_t> out;
    if (master_ <= 0) return out;
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator("/proc", ec)) {
      const std::string name = e.path().filename().string();
      if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
      pid_t p = static_cast<pid_t>(std::atol(name.c_str()));
      if (parent_of(p) == master_) out.push_back(p);
    }
    return out;
  }

  void stop() {
    stop_master();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      dir_.clear();
      g_nginx_dir[0] = 0;
    }
  }

 private:
  void write_conf(int upstream_port) {
    std::filesystem::create_directories(dir_ + "/tmp");
    std::ofstream f(dir_ + "/nginx.conf", std::ios::trunc);
    f << "# written by mcp-bridge-cpu\n"
         "worker_processes 1;\n"
         "daemon off;\n"
         "pid " << dir_ << "/nginx.pid;\n"
         "error_log " << dir_ << "/error.log warn;\n"
         "events { worker_connections 4096; }\n"
         "http {\n"
         "  access_log off;\n"
         "  client_body_temp_path " << dir_ << "/tmp/body;\n"
         "  proxy_temp_path " << dir_ << "/tmp/proxy;\n"
         "  upstream mcp {\n"
         "    server 127.0.0.1:" << upstream_port << ";\n"
         "    keepalive 128;\n"
         "  }\n"
         "  server {\n"
         "    listen 127.0.0.1:" << port_ << ";\n"
         "    location /mcp {\n"
         "      proxy_pass http://mcp;\n"
         "      proxy_http_version 1.1;\n"
         "      proxy_set_header Connection \"\";\n"
         "      proxy_buffering off;\n"
         "    }\n"
         "  }\n"
         "}\n";
  }

  bool launch(const std::string& bin, std::string& why) {
    std::string conf = dir_ + "/nginx.conf", prefix = dir_ + "/", out = dir_ + "/stderr.log";
    pid_t pid = ::fork();
    if (pid < 0) {
      why = "fork failed";
      return false;
    }
    if (pid == 0) {
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      int nul = ::open("/dev/null", O_RDONLY);
      if (nul >= 0) ::dup2(nul, 0);
      ::execl(bin.c_str(), bin.c_str(), "-c", conf.c_str(), "-p", prefix.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    ::setpgid(pid, pid);
    master_ = pid;
    g_nginx_pgid = pid;
    // Ready when the port accepts and a worker exists (bounded: 5 s).
    auto d = Deadline::after(5s);
    while (!d.reached()) {
      int st;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        master_ = -1;
        g_nginx_pgid = -1;
        std::ifstream e(out), l(dir_ + "/error.log");
        std::string text((std::istreambuf_iterator<char>(e)), std::istreambuf_iterator<char>());
        std::string text2((std::istreambuf_iterator<char>(l)), std::istreambuf_iterator<char>());
        why = "nginx exited (status " + std::to_string(WIFEXITED(st) ? WEXITSTATUS(st) : -1) +
              (WIFEXITED(st) && WEXITSTATUS(st) == 127 ? ", could not exec" : "") + "): " + text + text2;
        return false;
      }
      int fd = connect_loopback(port_, false, true);
      if (fd >= 0) {
        ::close(fd);
        if (!workers().empty()) return true;
      }
      std::this_thread::sleep_for(20ms);
    }
    why = "nginx did not accept on 127.0.0.1:" + std::to_string(port_) + " within 5 s";
    return false;
  }

  void stop_master() {
    if (master_ <= 0) return;
    ::kill(-master_, SIGTERM);  // fast shutdown of master and workers (one process group)
    for (int i = 0; i < 300; ++i) {
      int st;
      if (::waitpid(master_, &st, WNOHANG) == master_) break;
      std::this_thread::sleep_for(10ms);
    }
    ::kill(-master_, SIGKILL);  // whatever is left of the group
    ::waitpid(master_, nullptr, WNOHANG);
    master_ = -1;
    g_nginx_pgid = -1;
  }

  std::string dir_;
  int port_ = -1;
  pid_t master_ = -1;
};

// ---- the client load ------------------------------------------------------------

struct CellResult {
  uint64_t calls = 0, errors = 0, reconnects = 0;
  double secs = 0, cpu_us = 0, user_us = 0, p50_us = 0;
  bool ok = false;
  std::string why;
  double cpu_per_call() const { return calls ? cpu_us / static_cast<double>(calls) : 0; }
  double user_per_call() const { return calls ? user_us / static_cast<double>(calls) : 0; }
  double calls_per_s() const { return secs > 0 ? static_cast<double>(calls) / secs : 0; }
};

// Drives `nconn` keep-alive connections to 127.0.0.1:port, at most one
// tools/call in flight on each, for warmup + window; counts calls and reads
// `cpu()` (µs) at the window's two ends. With `rate` > 0 the calls are
// offered at that many per second in all (a connection whose call returned
// waits for the next slot), so that both targets do the same work per second;
// with 0 each connection sends its next call at once (closed loop). With
// `mcp_session`, each connection first opens its own MCP session (initialize
// + notifications/initialized).
template <class CpuFn>
CellResult run_cell(int port, int nconn, bool mcp_session, CpuFn cpu, std::chrono::milliseconds warmup,
                    std::chrono::milliseconds window, double rate) {
  CellResult res;
  struct C {
    int fd = -1;
    std::string sid, out, in;
    size_t off = 0;
    long seq = 0;
    bool want_out = false;
    Clock::time_point sent;
  };
  std::vector<C> cs(static_cast<size_t>(nconn));
  auto close_all = [&] {
    for (auto& c : cs)
      if (c.fd >= 0) ::close(c.fd);
  };
  // Setup, outside the measurement: connect (and open the MCP session).
  for (auto& c : cs) {
    c.fd = connect_loopback(port, false, true);
    if (c.fd < 0) {
      res.why = "connect failed";
      close_all();
      return res;
    }
    if (mcp_session) {
      Response r;
      if (!exchange(c.fd, post(port, "", kInit), r, Deadline::after(10s)) || r.status != 200 || r.sid.empty()) {
        res.why = "initialize failed (HTTP " + std::to_string(r.status) + ")";
        close_all();
        return res;
      }
      c.sid = r.sid;
      if (!exchange(c.fd, post(port, c.sid, R"({"jsonrpc":"2.0","method":"notifications/initialized"})"), r,
                    Deadline::after(10s)) ||
          r.status != 202) {
        res.why = "notifications/initialized not accepted (HTTP " + std::to_string(r.status) + ")";
        close_all();
        return res;
      }
      if (r.close) {  // the server ended the connection: start the loop on a new one
        ::close(c.fd);
        c.fd = connect_loopback(port, false, true);
        if (c.fd < 0) {
          res.why = "reconnect failed";
          close_all();
          return res;
        }
      }
    }
    set_nonblocking(c.fd);
  }

  int ep = ::epoll_create1(EPOLL_CLOEXEC);
  auto arm = [&](size_t i, bool add) {
    epoll_event ev{};
    ev.events = EPOLLIN | (cs[i].want_out ? EPOLLOUT : 0u);
    ev.data.u64 = i;
    ::epoll_ctl(ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, cs[i].fd, &ev);
  };
  uint64_t calls = 0, errors = 0, reconnects = 0;
  bool in_window = false;
  std::vector<double> lat;
  lat.reserve(1 << 16);
  auto flush = [&](size_t i) -> bool {
    C& c = cs[i];
    while (c.off < c.out.size()) {
      ssize_t n = ::send(c.fd, c.out.data() + c.off, c.out.size() - c.off, MSG_NOSIGNAL);
      if (n > 0) {
        c.off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == ENOTCONN || errno == EINPROGRESS)) break;
      return false;
    }
    bool want = c.off < c.out.size();
    if (want != c.want_out) {
      c.want_out = want;
      arm(i, false);
    }
    return true;
  };
  auto send_next = [&](size_t i) -> bool {
    C& c = cs[i];
    ++c.seq;
    c.out = post(port, c.sid, call_body(static_cast<int>(c.seq), "echo", R"({"text":"hello"})"));
    c.off = 0;
    c.in.clear();
    c.sent = Clock::now();
    return flush(i);
  };
  auto reopen = [&](size_t i) {
    C& c = cs[i];
    ::epoll_ctl(ep, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    ++reconnects;
    c.fd = connect_loopback(port, true, true);
    c.want_out = true;  // writable once connected
    if (c.fd >= 0) arm(i, true);
  };
  // Connections waiting for a slot (rate > 0), and the slots used so far.
  std::deque<size_t> idle;
  uint64_t issued = 0;
  auto t_start = Clock::now();
  auto next_call = [&](size_t i) -> bool {
    if (rate > 0) {
      idle.push_back(i);
      return true;
    }
    return send_next(i);
  };
  auto release_slots = [&](Clock::time_point now) {
    if (rate <= 0) return;
    auto due = static_cast<uint64_t>(std::chrono::duration<double>(now - t_start).count() * rate) + 1;
    while (issued < due && !idle.empty()) {
      size_t i = idle.front();
      idle.pop_front();
      ++issued;
      if (cs[i].fd >= 0 && !send_next(i)) {
        ++errors;
        reopen(i);
        if (cs[i].fd >= 0) send_next(i);
      }
    }
    if (idle.empty() && issued < due) issued = due - 1;  // saturated: do not bank slots for a burst later
  };
  for (size_t i = 0; i < cs.size(); ++i) {
    arm(i, true);
    if (rate > 0) {
      idle.push_back(i);
    } else if (!send_next(i)) {
      reopen(i);
      send_next(i);
    }
  }

  auto t_win = t_start + warmup, t_end = t_win + window;
  Clock::time_point w0{};
  uint64_t calls0 = 0, errors0 = 0, rec0 = 0;
  double cpu0 = 0, user0 = 0;
  std::vector<epoll_event> evs(512);
  char buf[16384];
  for (;;) {
    auto now = Clock::now();
    if (!in_window && now >= t_win) {
      cpu0 = cpu(&user0);
      w0 = Clock::now();
      calls0 = calls;
      errors0 = errors;
      rec0 = reconnects;
      in_window = true;
    }
    if (now >= t_end) {
      double user1 = 0, cpu1 = cpu(&user1);
      auto w1 = Clock::now();
      res.calls = calls - calls0;
      res.errors = errors - errors0;
      res.reconnects = reconnects - rec0;
      res.cpu_us = cpu1 - cpu0;
      res.user_us = user1 - user0;
      res.secs = std::chrono::duration<double>(w1 - w0).count();
      break;
    }
    release_slots(now);
    auto next = in_window ? t_end : t_win;
    int wait_ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count()) + 1;
    if (!idle.empty()) wait_ms = 1;  // the next slot is at most 1 ms away at any rate worth running
    int n = ::epoll_wait(ep, evs.data(), static_cast<int>(evs.size()), std::min(wait_ms, 100));
    for (int k = 0; k < n; ++k) {
      size_t i = evs[k].data.u64;
      C& c = cs[i];
      if (c.fd < 0) continue;
      if ((evs[k].events & EPOLLOUT) && c.want_out) {
        if (!flush(i)) {
          ++errors;
          reopen(i);
          if (c.fd >= 0) send_next(i);
          continue;
        }
      }
      if (!(evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
      ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
      if (r < 0 && errno == EAGAIN) continue;
      bool eof = r <= 0;
      if (r > 0) c.in.append(buf, static_cast<size_t>(r));
      Response resp;
      long used = parse_response(c.in, resp);
      bool complete = used > 0 || (eof && resp.to_eof);
      if (complete) {
        if (resp.to_eof) resp.body = c.in.substr(c.in.find("\r\n\r\n") + 4);
        std::string want_id = "\"id\":" + std::to_string(c.seq);
        bool good = resp.status == 200 && resp.body.find(want_id) != std::string::npos &&
                    resp.body.find("\"result\"") != std::string::npos;
        if (good) {
          ++calls;
          if (in_window)
            lat.push_back(std::chrono::duration<double, std::micro>(Clock::now() - c.sent).count());
        } else {
          ++errors;
        }
        if (resp.close || eof) reopen(i);
        if (cs[i].fd >= 0 && !next_call(i)) {
          ++errors;
          reopen(i);
          if (cs[i].fd >= 0) send_next(i);
        }
      } else if (eof || used < 0) {
        ++errors;  // the call was lost with its connection
        reopen(i);
        if (cs[i].fd >= 0) send_next(i);
      }
    }
  }
  ::close(ep);
  close_all();
  res.p50_us = percentile(lat, 0.5);
  // A figure over failed calls would be no figure: more than 1 % fails the cell.
  res.ok = res.calls > 0 && res.errors * 100 <= res.calls;
  if (res.calls == 0) res.why = "no call completed in the window (" + std::to_string(res.errors) + " errors)";
  else if (!res.ok) res.why = "more than 1 % of the calls failed";
  return res;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mcp-bridge-cpu: bridge CPU per warm tools/call against nginx CPU per proxied MCP call, "
               "same run, same client load"};
  std::string bridge_bin = "./build-release/mcp-sse-bridge";
  std::string nginx_bin = "/usr/sbin/nginx";
  std::string conc = "10,50";
  int rounds = 3, warmup_ms = 400, window_ms = 2500, max_seconds = 240;
  double target = 1.5, rate = 4000;
  std::vector<std::string> bridge_flags;
  std::string legacy_upstream = "ref";
  std::string placement = "same-core";
  bool direct = false;
  app.add_option("--bridge", bridge_bin, "Path of the mcp-sse-bridge binary")->capture_default_str();
  app.add_option("--nginx", nginx_bin, "Path of the nginx binary")->capture_default_str();
  app.add_option("--concurrency", conc, "Client connections per cell, comma-separated")->capture_default_str();
  app.add_option("--rounds", rounds, "Rounds (each: nginx and bridge at every concurrency)")->capture_default_str();
  app.add_option("--warmup-ms", warmup_ms, "Warm-up of each cell before the measured window")->capture_default_str();
  app.add_option("--window-ms", window_ms, "Measured window of each cell")->capture_default_str();
  app.add_option("--rate", rate,
                 "Calls offered per second to each target, in all: both do the same work per second, so "
                 "neither is charged for waking more often (0: closed loop, each connection's next call as "
                 "soon as its last returns)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--target", target, "Target: bridge CPU per call / nginx CPU per call at most this")
      ->capture_default_str();
  app.add_option("--max-seconds", max_seconds, "Bound on the whole run; children are killed after it")
      ->capture_default_str();
  app.add_option("--bridge-flag", bridge_flags,
                 "Bridge flag (repeatable; replaces the defaults --pool-size 128 --pool-fillers 4 "
                 "--max-inflight 200), e.g. --bridge-flag=--pool-size=64");
  app.add_option("--legacy-upstream", legacy_upstream,
                 "The bridge's upstream: ref (the legacy twin of nginx's upstream: one epoll thread, "
                 "the 202 and the answer's event written in one turn, as the TS and Python SDKs do) or "
                 "example (the example server: a thread per connection and per request)")
      ->capture_default_str()
      ->check(CLI::IsMember({"ref", "example"}));
  app.add_option("--placement", placement,
                 "Where the threads run: same-core (everything on the first CPU this tool may use: no "
                 "wake-up crosses cores, a call's CPU is its work alone), free (the scheduler places them: "
                 "a cell's figure then depends on where the proxy lands, 2-3x apart for nginx on a VM) or "
                 "split (the proxy under test on the second CPU, this tool's client load and upstreams on "
                 "the first: every wake-up crosses cores); the same for nginx and the bridge")
      ->capture_default_str()
      ->check(CLI::IsMember({"free", "same-core", "split"}));
  app.add_flag("--direct", direct,
               "Also run a direct cell per round (the same client straight to the Streamable HTTP "
               "server, no proxy) and print each proxy's calls/s as a ratio to it: the reference for "
               "bridged/direct throughput targets (meaningful with --rate 0, the closed loop)");
  CLI11_PARSE(app, argc, argv);
  if (bridge_flags.empty())
    bridge_flags = {"--pool-size", "128", "--pool-fillers", "4", "--max-inflight", "200"};
  std::vector<int> levels;
  {
    std::stringstream ss(conc);
    std::string item;
    while (std::getline(ss, item, ',')) levels.push_back(std::stoi(item));
  }
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGINT, on_fatal_signal);
  ::signal(SIGTERM, on_fatal_signal);
  ::signal(SIGALRM, on_fatal_signal);
  ::alarm(static_cast<unsigned>(max_seconds));
  msb::log::set_level(msb::log::Level::kError);

  // The two upstreams, in this process.
  RefServer ref(RefServer::Mode::kStreamable);
  int ref_port = ref.start();
  RefServer ref_legacy(RefServer::Mode::kLegacySse);
  example::Options opt;
  opt.threads = 512;
  example::LegacyServer example_legacy(opt);
  int legacy_port =
      legacy_upstream == "ref" ? ref_legacy.start() : example_legacy.start("127.0.0.1", 0);
  if (ref_port <= 0 || legacy_port <= 0) {
    std::fprintf(stderr, "mcp-bridge-cpu: error: cannot start the upstream servers\n");
    return 2;
  }

  // Placement: the first CPU this tool may use runs the tool (the upstream
  // servers' threads exist now; the client threads start later from this
  // one and inherit its mask); nginx and the bridge start from this thread
  // switched to the proxy's CPU, so that they and every thread they create
  // begin there (pinning them after the start would race their own thread
  // creation, and the bridge sizes its loops from the mask it starts with).
  const bool pin = placement != "free";
  int tool_cpu = 0, proxy_cpu = 0;
  if (pin) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    std::vector<int> cpus;
    if (::sched_getaffinity(0, sizeof allowed, &allowed) == 0)
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &allowed)) cpus.push_back(c);
    if (cpus.empty() || (placement == "split" && cpus.size() < 2)) {
      std::fprintf(stderr, "mcp-bridge-cpu: error: --placement %s needs %s CPU this tool may use\n",
                   placement.c_str(), placement == "split" ? "a second" : "a");
      return 2;
    }
    tool_cpu = cpus[0];
    proxy_cpu = placement == "split" ? cpus[1] : cpus[0];
    if (!pin_all_threads(tool_cpu)) {
      std::fprintf(stderr, "mcp-bridge-cpu: error: cannot pin this tool to CPU %d\n", tool_cpu);
      return 2;
    }
  }
  // Runs `start` with this thread on the proxy's CPU, then back on the tool's.
  auto on_proxy_cpu = [&](auto start) {
    if (pin && !pin_this_thread(proxy_cpu)) {
      std::fprintf(stderr, "mcp-bridge-cpu: error: cannot pin to CPU %d\n", proxy_cpu);
      kill_children_now();
      remove_nginx_dir_now();
      std::exit(2);
    }
    bool ok = start();
    // Back on the tool's CPU: this thread, and a helper thread the start
    // made here (start_bridge's stderr reader).
    if (pin) pin_all_threads(tool_cpu);
    return ok;
  };
  Nginx nginx;
  std::string why;
  if (!on_proxy_cpu([&] { return nginx.start(nginx_bin, ref_port, why); })) {
    std::fprintf(stderr, "mcp-bridge-cpu: error: cannot start nginx (%s): %s\n", nginx_bin.c_str(), why.c_str());
    return 2;
  }
  // A fresh bridge per cell: pooled upstream sessions of the previous cell's
  // (departed) clients would otherwise fill --pool-size for up to
  // --pool-max-idle-age and push the new clients' calls to cold.
  Child bridge;
  auto restart_bridge = [&]() {
    g_bridge_pid = -1;
    bridge.stop();
    if (!on_proxy_cpu([&] { return start_bridge(bridge, bridge_bin, legacy_port, bridge_flags); })) {
      std::fprintf(stderr, "mcp-bridge-cpu: error: cannot start the bridge (%s)\n", bridge_bin.c_str());
      kill_children_now();  // nginx's process group
      remove_nginx_dir_now();
      std::exit(2);
    }
    g_bridge_pid = bridge.pid;
  };
  restart_bridge();

  auto nginx_cpu = [&](double* user) {
    double s = 0, u = 0;
    for (pid_t w : nginx.workers()) {
      double wu = 0;
      s += cpu_us(w, &wu);
      u += wu;
    }
    *user = u;
    return s;
  };
  auto bridge_cpu = [&](double* user) { return cpu_us(bridge.pid, user); };

  std::printf("mcp-bridge-cpu: %u cores; nginx %s (1 worker, upstream keepalive, proxy_buffering off) -> "
              "reference Streamable HTTP server; bridge -> %s; tool: echo\n",
              std::thread::hardware_concurrency(), nginx_bin.c_str(),
              legacy_upstream == "ref" ? "reference legacy SSE server (same epoll loop)"
                                       : "example legacy server (thread per connection)");
  if (placement == "free") std::printf("placement: free (the scheduler places every thread)\n");
  else if (placement == "same-core") std::printf("placement: same-core (every thread on CPU %d)\n", tool_cpu);
  else
    std::printf("placement: split (nginx / the bridge on CPU %d, client and upstreams on CPU %d)\n", proxy_cpu,
                tool_cpu);
  std::printf("%d rounds; each cell: %d ms warm-up, %d ms measured; CPU = utime+stime from /proc; %s\n\n",
              rounds, warmup_ms, window_ms,
              rate > 0 ? ("calls offered at " + std::to_string(static_cast<long>(rate)) + "/s to both").c_str()
                       : "closed loop");
  std::printf("%-5s %-5s %-6s %10s %8s %12s %10s %8s %8s %8s %6s\n", "round", "conc", "target", "calls/s", "p50 us",
              "CPU us/call", "of it user", "calls", "errors", "reconn", "moves");
  std::fflush(stdout);

  std::vector<std::vector<double>> ratios(levels.size());
  std::vector<std::vector<double>> ng_cpu(levels.size()), br_cpu(levels.size());
  // With --direct: each proxy's calls/s over the direct cell's of the same round.
  std::vector<std::vector<double>> ng_tput(levels.size()), br_tput(levels.size());
  bool failed = false;
  // The bridge's client connections moved between its loops during the cell
  // (its /metrics; "?" when unreadable, "-" in nginx's rows): moving spreads a call
  // over two threads, which costs CPU per call, so a ratio read with moves
  // is not the packed figure.
  auto bridge_moves = [&bridge]() -> std::string {
    msb_tools::BlockingHttp http("127.0.0.1", bridge.port);
    msb_tools::BlockingHttp::Head head;
    std::string body;
    auto d = msb::Deadline::after(std::chrono::milliseconds(2000));
    if (!http.request("GET", "/metrics", "", "", d, head) || head.status != 200 ||
        !http.read_full_body(body, 1 << 20, d))
      return "?";
    std::string_view key = "\nmcp_bridge_connection_moves_total ";
    auto at = body.find(key);
    if (at == std::string::npos) return "?";
    auto from = at + key.size();
    return body.substr(from, body.find('\n', from) - from);
  };
  auto row = [rate](int round, int c, const char* name, const CellResult& r, const std::string& moves) {
    // Below the offered rate the two did not do the same work per second.
    bool behind = rate > 0 && r.ok && r.calls_per_s() < 0.95 * rate;
    std::printf("%-5d %-5d %-6s %10.0f %8.0f %12.1f %10.1f %8llu %8llu %8llu %6s%s%s%s\n", round, c, name,
                r.calls_per_s(), r.p50_us, r.cpu_per_call(), r.user_per_call(), static_cast<unsigned long long>(r.calls),
                static_cast<unsigned long long>(r.errors), static_cast<unsigned long long>(r.reconnects), moves.c_str(),
                r.ok ? "" : "  FAILED: ", r.ok ? "" : r.why.c_str(),
                behind ? "  (below the offered rate: saturated)" : "");
    std::fflush(stdout);
  };
  auto wu = std::chrono::milliseconds(warmup_ms), win = std::chrono::milliseconds(window_ms);
  for (int round = 1; round <= rounds; ++round) {
    for (size_t li = 0; li < levels.size(); ++li) {
      int c = levels[li];
      CellResult d;
      if (direct) {
        d = run_cell(ref_port, c, false, [](double* user) { return *user = 0, 0.0; }, wu, win, rate);
        row(round, c, "direct", d, "-");
      }
      CellResult n = run_cell(nginx.port(), c, false, nginx_cpu, wu, win, rate);
      row(round, c, "nginx", n, "-");
      if (round > 1 || li > 0) restart_bridge();
      CellResult b = run_cell(bridge.port, c, true, bridge_cpu, wu, win, rate);
      row(round, c, "bridge", b, bridge_moves());
      if (direct && d.ok && d.calls_per_s() > 0) {
        if (n.ok) ng_tput[li].push_back(n.calls_per_s() / d.calls_per_s());
        if (b.ok) br_tput[li].push_back(b.calls_per_s() / d.calls_per_s());
      }
      if (!n.ok || !b.ok || n.cpu_per_call() <= 0) {
        failed = true;
        continue;
      }
      double ratio = b.cpu_per_call() / n.cpu_per_call();
      ratios[li].push_back(ratio);
      ng_cpu[li].push_back(n.cpu_per_call());
      br_cpu[li].push_back(b.cpu_per_call());
      std::printf("%-5d %-5d ratio  bridge/nginx CPU per call = %.2fx\n", round, c, ratio);
      std::fflush(stdout);
    }
  }

  std::printf("\n");
  bool all_met = !failed;
  for (size_t li = 0; li < levels.size(); ++li) {
    int c = levels[li];
    if (ratios[li].empty()) {
      std::printf("c%d: no complete round\n", c);
      std::printf("TARGET|cpu-c%d|bridge CPU per warm call / nginx CPU per proxied call, c%d|<= %.2fx|n/a|MISSED\n",
                  c, c, target);
      all_met = false;
      continue;
    }
    double m = median(ratios[li]);
    std::string each;
    for (double r : ratios[li]) {
      char one[32];
      std::snprintf(one, sizeof one, "%s%.2f", each.empty() ? "" : ", ", r);
      each += one;
    }
    bool met = m <= target;
    all_met = all_met && met;
    std::printf("c%d: bridge CPU per warm call / nginx CPU per proxied call = %.2f\u00d7 (target \u2264 %.1f)  "
                "median of [%s]; nginx %.1f us/call, bridge %.1f us/call (medians)  %s\n",
                c, m, target, each.c_str(), median(ng_cpu[li]), median(br_cpu[li]), met ? "MET" : "MISSED");
    char measured[64];
    std::snprintf(measured, sizeof measured, "%.2fx", m);
    std::printf("TARGET|cpu-c%d|bridge CPU per warm call / nginx CPU per proxied call, c%d|<= %.2fx|%s|%s\n", c, c,
                target, measured, met ? "MET" : "MISSED");
  }
  // Not TARGET lines: the issue's throughput targets are mcp-bridge-bench's
  // (bridged legacy calls against a direct legacy client); this is what the
  // reference proxy reaches against its own direct path on this machine.
  for (size_t li = 0; direct && li < levels.size(); ++li) {
    if (ng_tput[li].empty() || br_tput[li].empty()) continue;
    std::printf("c%d throughput (%s): nginx-proxied/direct calls/s = %.2f, bridged/direct = %.2f (medians; "
                "direct: the same client straight to the Streamable HTTP server)\n",
                levels[li], rate > 0 ? "offered load, not a throughput figure" : "closed loop",
                median(ng_tput[li]), median(br_tput[li]));
    if (rate <= 0)
      std::printf("REFERENCE|tput-c%d|nginx-proxied/direct calls/s, c%d, closed loop (the reference proxy on this "
                  "machine)|%.2f (bridge %.2f)\n",
                  levels[li], levels[li], median(ng_tput[li]), median(br_tput[li]));
  }
  std::fflush(stdout);
  bridge.stop();
  g_bridge_pid = -1;
  nginx.stop();
  example_legacy.stop();
  ref_legacy.stop();
  ref.stop();
  return failed ? 2 : (all_met ? 0 : 1);
}
