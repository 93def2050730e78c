#include "direct_client.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>

#include "mcp_sse_bridge/upstream_channel.h"
#include "tool_common.h"

namespace msb_tools {

namespace asio = boost::asio;

namespace {

using namespace std::chrono_literals;

asio::awaitable<bool> wait_for(msb::UpstreamChannel& up, std::string id, Deadline d) {
  for (;;) {
    auto m = co_await up.next_message(d, msb::Phase::kRequest);
    if (!m.ok()) co_return false;
    if (m->kind == msb::MsgKind::kResponse && m->id == id) co_return true;
  }
}

// (Each co_await is a statement of its own: g++ 12 miscompiles some
// co_awaits inside conditions.)
asio::awaitable<bool> initialize_steps(msb::UpstreamChannel* up) {
  auto st = co_await up->open(Deadline::after(5s), 5000ms, Deadline::after(10s));
  if (!st) co_return false;
  st = co_await up->post(kInit, Deadline::after(5s), msb::Phase::kInitialize);
  if (!st) co_return false;
  bool answered = co_await wait_for(*up, "0", Deadline::after(5s));
  if (!answered) co_return false;
  st = co_await up->post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})",
                         Deadline::after(5s), msb::Phase::kInitialize);
  co_return st.ok();
}

asio::awaitable<bool> call_steps(msb::UpstreamChannel* up, const std::string* body,
                                 const std::string* id, Deadline d) {
  auto st = co_await up->post(*body, d, msb::Phase::kRequest);
  if (!st) co_return false;
  bool answered = co_await wait_for(*up, *id, d);
  co_return answered;
}

asio::awaitable<void> into(asio::awaitable<bool> step, bool* ok, bool* done) {
  bool r = co_await std::move(step);
  *ok = r;
  *done = true;
}

}  // namespace

struct DirectClient::Impl {
  explicit Impl(const msb::UpstreamConfig& cfg) : up(io.get_executor(), cfg, "") {}

  // Runs one step on this thread until it is done (not until the io_context
  // is out of work: a timer may stay armed between steps).
  bool run(asio::awaitable<bool> step) {
    bool ok = false, done = false;
    io.restart();
    asio::co_spawn(io, into(std::move(step), &ok, &done), asio::detached);
    while (!done && io.run_one() > 0) {
    }
    return ok;
  }

  asio::io_context io{1};
  msb::UpstreamChannel up;
};

DirectClient::DirectClient(const msb::UpstreamConfig& cfg) : impl_(std::make_unique<Impl>(cfg)) {}

DirectClient::~DirectClient() { impl_->up.abort(); }

bool DirectClient::initialize() { return impl_->run(initialize_steps(&impl_->up)); }

bool DirectClient::call(const std::string& body, const std::string& id, Deadline d) {
  return impl_->run(call_steps(&impl_->up, &body, &id, d));
}

}  // namespace msb_tools
