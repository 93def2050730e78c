#include "mcp_sse_bridge/url_probe.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>

#include <optional>

#include "mcp_sse_bridge/tls.h"
#include "mcp_sse_bridge/upstream_connection.h"

namespace msb {

namespace {

asio::awaitable<void> get_status(const Url* url, Deadline d, std::optional<Expected<int>>* out) {
  TlsClientOptions insecure;
  insecure.insecure = true;
  UpstreamConnection conn(co_await asio::this_coro::executor, &insecure);
  auto head = co_await conn.request(*url, "GET", url->target, "", "", d);
  conn.close();
  if (head)
    *out = head->status;
  else
    *out = head.error();
}

}  // namespace

Expected<int> probe_url(const Url& url, Deadline d) {
  asio::io_context io(1);
  std::optional<Expected<int>> out;
  asio::co_spawn(io, get_status(&url, d, &out), asio::detached);
  // Until the answer (the request's own timers bound it by d), not until the
  // io_context is out of work.
  while (!out && io.run_one() > 0) {
  }
  if (!out) return make_error(ErrorKind::kInternal, Phase::kConnect, "probe did not finish");
  return std::move(*out);
}

}  // namespace msb
