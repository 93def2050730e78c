// MRTR translation end to end without HTTP: Forwarder::call runs on an event
// loop against the real example legacy server (legacy SSE, 127.0.0.1 port
// 0) with an MrtrSink; the test plays the stateless handler (open the
// requestState, take the parked call, resume it with the retry's front) and
// the 2026-07-28 client (answer inputRequests). Every wait is bounded.
#include <doctest/doctest.h>

#include <boost/asio/post.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "legacy_server.h"
#include "mcp_sse_bridge/event_loop.h"
#include "mcp_sse_bridge/forwarder.h"
#include "mcp_sse_bridge/jsonrpc.h"
#include "mcp_sse_bridge/mrtr_sink.h"
#include "mcp_sse_bridge/parked_calls.h"
#include "mcp_sse_bridge/request_state.h"
#include "mcp_sse_bridge/url.h"

using json = nlohmann::json;
using namespace std::chrono_literals;
using namespace msb;
using Refusal = RequestStateSealer::Refusal;
using Kind = MrtrSink::Outcome::Kind;

namespace {

const std::string kAllCaps = R"({"elicitation":{},"sampling":{},"roots":{}})";

// A round's client-facing sink: records what the call delivers; `gone`
// plays a client that closed its response stream. Used on its loop.
struct FakeFront : CallSink {
  bool deliver(std::string_view j) override {
    std::lock_guard lk(mu);
    delivered.emplace_back(j);
    return !gone.load();
  }
  bool alive() override { return !gone.load(); }
  void set_waker(std::function<void(bool)> w) override {
    std::lock_guard lk(mu);
    waker = std::move(w);
  }
  std::mutex mu;
  std::vector<std::string> delivered;
  std::function<void(bool)> waker;
  std::atomic<bool> gone{false};
};

// Outcomes of rounds, as the handler would receive them.
struct Outcomes {
  MrtrSink::OutcomeFn fn() {
    return [this](MrtrSink::Outcome o) {
      std::lock_guard lk(mu);
      q.push_back(std::move(o));
      cv.notify_all();
    };
  }
  std::optional<MrtrSink::Outcome> wait(std::chrono::milliseconds bound = 8s) {
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, bound, [&] { return !q.empty(); })) return std::nullopt;
    auto o = std::move(q.front());
    q.pop_front();
    return o;
  }
  std::mutex mu;
  std::condition_variable cv;
  std::deque<MrtrSink::Outcome> q;
};

json params_of(const std::string& tool, json args) {
  return json{{"name", tool}, {"arguments", std::move(args)}};
}

template <class Pred>
bool eventually(Pred p, std::chrono::milliseconds bound = 5s) {
  auto end = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < end) {
    if (p()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return p();
}

std::string text_of(const json& resp) {
  if (!resp.contains("result")) return "";
  return resp["result"]["content"][0].value("text", "");
}

struct Harness {
  explicit Harness(std::chrono::milliseconds request_timeout = 10s) {
    port = srv.start("127.0.0.1", 0);
    REQUIRE(port > 0);
    cfg.sse_url = *parse_url("http://127.0.0.1:" + std::to_string(port) + "/sse");
    cfg.connect_timeout = 1000ms;
    cfg.endpoint_timeout = 1000ms;
    cfg.initialize_timeout = 1000ms;
    cfg.request_timeout = request_timeout;
    cfg.max_request_timeout = request_timeout * 2;
    cfg.ping_interval = 400ms;  // liveness probes keep running while a call is parked
    cfg.ping_timeout = 300ms;
    cfg.pool.size = 0;
    fwd = std::make_unique<Forwarder>(cfg);
    loops.start();
  }
  ~Harness() {
    for (auto& c : parked.stop()) c->cancel("the test ends");
    CHECK(eventually([] { return Forwarder::open_sessions() == 0; }));
    std::this_thread::sleep_for(50ms);  // let the calls' last handlers run
    fwd->stop();
    loops.stop();
  }

  // Starts tools/call `tool` (client request id `id`) on loop 0.
  void start(const std::string& tool, json args, const std::string& caps,
             std::shared_ptr<FakeFront> front, Outcomes& out, int id = 1, json meta = nullptr) {
    json p = params_of(tool, std::move(args));
    if (!meta.is_null()) p["_meta"] = std::move(meta);
    std::string raw = json{{"jsonrpc", "2.0"}, {"id", id}, {"method", "tools/call"}, {"params", p}}.dump();
    auto parsed = parse_body(raw);
    REQUIRE(parsed.ok);
    auto b = RequestBinding::of("tools/call", p.dump());
    REQUIRE(b);
    std::promise<void> started;
    EventLoop& l = loops.at(0);
    asio::post(l.io(), [&, req = parsed.messages[0], b = *b, front, caps, id]() mutable {
      auto m = MrtrSink::create(l, parked, sealer, std::move(b), opt);
      ClientSession cs;
      cs.init_params = R"({"protocolVersion":"2025-06-18","capabilities":)" + caps +
                       R"(,"clientInfo":{"name":"mrtr-test","version":"1"}})";
      m->start(*fwd, std::move(req), cs, std::nullopt, "", Clock::now(),
               MrtrSink::Front{front, &l, std::to_string(id), caps, out.fn()});
      started.set_value();
    });
    REQUIRE(started.get_future().wait_for(2s) == std::future_status::ready);
  }

  // The retry, as the stateless handler takes it: open the state against
  // the retry's own params, take the parked call, resume it on loop
  // `loop_index` (1: another loop than the call's). nullopt: resumed.
  std::optional<Refusal> retry(const std::string& tool, json args, const std::string& state,
                               json responses, const std::string& caps,
                               std::shared_ptr<FakeFront> front, Outcomes& out, int id,
                               int loop_index = 1, std::string progress_token = "") {
    json p = params_of(tool, std::move(args));
    p["inputResponses"] = responses;
    p["requestState"] = state;
    if (!progress_token.empty()) p["_meta"] = {{"progressToken", json::parse(progress_token)}};
    auto b = RequestBinding::of("tools/call", p.dump());
    REQUIRE(b);
    auto o = sealer.open(state, *b, RequestStateSealer::now_ms());
    if (!o.claims) return o.refusal;
    auto m = parked.take(o.claims->call_key);
    if (!m) return Refusal::kNotParked;
    m->resume(responses.dump(), MrtrSink::Front{front, &loops.at(loop_index), std::to_string(id),
                                                caps, out.fn(), progress_token});
    return std::nullopt;
  }

  example::LegacyServer srv;
  int port = 0;
  UpstreamConfig cfg;
  std::unique_ptr<Forwarder> fwd;
  ParkedCalls parked{16};
  RequestStateSealer sealer{"mrtr-test-secret-0123456789abcdef", "replica-a"};
  MrtrSink::Options opt;
  EventLoops loops{2};
};

// Waits for the next outcome, of kind `k`, answering request `id`.
std::pair<MrtrSink::Outcome, json> outcome(Outcomes& out, Kind k, int id) {
  auto o = out.wait();
  REQUIRE(o);
  INFO(o->response);
  REQUIRE(o->kind == k);
  json r = json::parse(o->response);
  CHECK(r["id"] == id);
  return {std::move(*o), std::move(r)};
}

// Waits for an input_required outcome and returns its response.
json input_required(Outcomes& out, int id) {
  auto [o, r] = outcome(out, Kind::kInputRequired, id);
  CHECK(r["result"]["resultType"] == "input_required");
  CHECK(r["result"]["requestState"] == o.request_state);
  CHECK_FALSE(r["result"].contains("ttlMs"));
  return r;
}

json complete(Outcomes& out, int id) { return outcome(out, Kind::kComplete, id).second; }

const json kAda = {{"action", "accept"}, {"content", {{"name", "Ada"}}}};
json model_says(const std::string& t) {
  return {{"role", "assistant"}, {"content", {{"type", "text"}, {"text", t}}}, {"model", "m"},
          {"stopReason", "endTurn"}};
}

}  // namespace

TEST_CASE("mrtr: a mid-call elicitation becomes input_required; the retry on another loop completes it") {
  Harness h;
  Outcomes out;
  auto f1 = std::make_shared<FakeFront>();
  auto t0 = std::chrono::steady_clock::now();
  h.start("ask_name", json::object(), kAllCaps, f1, out, 1);
  json r1 = input_required(out, 1);
  auto to_input_required = std::chrono::steady_clock::now() - t0;
  auto& reqs = r1["result"]["inputRequests"];
  REQUIRE(reqs.size() == 1);
  std::string key = reqs.begin().key();
  CHECK(reqs[key]["method"] == "elicitation/create");
  CHECK(reqs[key]["params"]["message"] == "What is your name?");
  CHECK(h.parked.size() == 1);
  CHECK(Forwarder::open_sessions() == 1);  // the upstream call is parked, not ended
  std::string state = r1["result"]["requestState"];

  auto f2 = std::make_shared<FakeFront>();
  auto t1 = std::chrono::steady_clock::now();
  CHECK_FALSE(h.retry("ask_name", json::object(), state, {{key, kAda}}, kAllCaps, f2, out, 2));
  json r2 = complete(out, 2);
  auto resume_to_result = std::chrono::steady_clock::now() - t1;
  CHECK(text_of(r2) == "hello Ada");
  // Resuming costs one POST upstream and the tool's answer: no waiting on
  // timers (the bound is far above the few ms it takes).
  CHECK(resume_to_result < 1000ms);
  if (getenv("MRTR_TIMING"))
    MESSAGE("start -> input_required " << std::chrono::duration<double, std::milli>(to_input_required).count()
            << " ms; retry -> result " << std::chrono::duration<double, std::milli>(resume_to_result).count()
            << " ms");
  CHECK(h.parked.size() == 0);
  CHECK(eventually([] { return Forwarder::open_sessions() == 0; }));
  // The same state again: the call is gone (take-once).
  auto f3 = std::make_shared<FakeFront>();
  CHECK(h.retry("ask_name", json::object(), state, {{key, kAda}}, kAllCaps, f3, out, 3) ==
        Refusal::kNotParked);
}

TEST_CASE("mrtr: a legacy server names the inputRequests key with the bridge's _meta hint") {
  Harness h;
  Outcomes out;
  auto f1 = std::make_shared<FakeFront>();
  h.start("ask_name", {{"input_key", "user_name"}}, kAllCaps, f1, out, 1);
  json r1 = input_required(out, 1);
  auto& reqs = r1["result"]["inputRequests"];
  REQUIRE(reqs.size() == 1);
  REQUIRE(reqs.contains("user_name"));
  // The hint is the bridge's, not the client's: it leaves the params.
  CHECK_FALSE(reqs["user_name"]["params"].contains("_meta"));
  CHECK(reqs["user_name"]["params"]["message"] == "What is your name?");
  auto f2 = std::make_shared<FakeFront>();
  CHECK_FALSE(h.retry("ask_name", {{"input_key", "user_name"}}, r1["result"]["requestState"],
                      {{"user_name", kAda}}, kAllCaps, f2, out, 2));
  CHECK(text_of(complete(out, 2)) == "hello Ada");
  // An unusable hint (a space in it) falls back to the bridge's own key.
  auto f3 = std::make_shared<FakeFront>();
  h.start("ask_name", {{"input_key", "user name"}}, kAllCaps, f3, out, 3);
  json r3 = input_required(out, 3);
  REQUIRE(r3["result"]["inputRequests"].size() == 1);
  CHECK(r3["result"]["inputRequests"].begin().key() == "r1");
}

TEST_CASE("mrtr: sampling and roots round trips") {
  Harness h;
  Outcomes out;
  h.start("ask_model", {{"prompt", "Say hi"}}, kAllCaps, std::make_shared<FakeFront>(), out, 1);
  json r1 = input_required(out, 1);
  std::string key = r1["result"]["inputRequests"].begin().key();
  CHECK(r1["result"]["inputRequests"][key]["method"] == "sampling/createMessage");
  CHECK(r1["result"]["inputRequests"][key]["params"]["maxTokens"] == 50);
  CHECK_FALSE(h.retry("ask_model", {{"prompt", "Say hi"}}, r1["result"]["requestState"],
                      {{key, model_says("hi there")}}, kAllCaps, std::make_shared<FakeFront>(), out, 2));
  CHECK(text_of(complete(out, 2)) == "model said: hi there");

  h.start("ask_roots", json::object(), kAllCaps, std::make_shared<FakeFront>(), out, 3);
  json r3 = input_required(out, 3);
  key = r3["result"]["inputRequests"].begin().key();
  CHECK(r3["result"]["inputRequests"][key]["method"] == "roots/list");
  json roots = {{"roots", json::array({{{"uri", "file:///a"}}, {{"uri", "file:///b"}}})}};
  // Resumed on the call's own loop this time.
  CHECK_FALSE(h.retry("ask_roots", json::object(), r3["result"]["requestState"], {{key, roots}},
                      kAllCaps, std::make_shared<FakeFront>(), out, 4, 0));
  CHECK(text_of(complete(out, 4)) == "roots: file:///a,file:///b");
}

TEST_CASE("mrtr: two rounds (elicit, then sample); an old round's state cannot resume the next") {
  Harness h;
  Outcomes out;
  h.start("ask_twice", json::object(), kAllCaps, std::make_shared<FakeFront>(), out, 1,
          {{"progressToken", "p-first"}});
  json r1 = input_required(out, 1);
  std::string k1 = r1["result"]["inputRequests"].begin().key();
  std::string s1 = r1["result"]["requestState"];
  auto f2 = std::make_shared<FakeFront>();
  CHECK_FALSE(h.retry("ask_twice", json::object(), s1, {{k1, kAda}}, kAllCaps, f2, out, 2, 1,
                      R"("p-retry")"));
  json r2 = input_required(out, 2);
  {
    // The progress the tool reported between the rounds reached the retry's
    // client under the retry's own progressToken.
    std::lock_guard lk(f2->mu);
    REQUIRE(f2->delivered.size() == 1);
    json n = json::parse(f2->delivered[0]);
    CHECK(n["method"] == "notifications/progress");
    CHECK(n["params"]["progressToken"] == "p-retry");
    CHECK(n["params"]["progress"] == 1);
  }
  auto& reqs = r2["result"]["inputRequests"];
  REQUIRE(reqs.size() == 1);
  std::string k2 = reqs.begin().key();
  CHECK(k2 != k1);
  CHECK(reqs[k2]["method"] == "sampling/createMessage");
  CHECK(reqs[k2]["params"]["messages"][0]["content"]["text"] == "Greet Ada");
  std::string s2 = r2["result"]["requestState"];
  CHECK(s2 != s1);
  // Round 1's state is spent; the round 2 call is still parked.
  CHECK(h.retry("ask_twice", json::object(), s1, {{k2, model_says("x")}}, kAllCaps,
                std::make_shared<FakeFront>(), out, 3) == Refusal::kNotParked);
  CHECK(h.parked.size() == 1);
  // The state is bound to its request: another tool's retry cannot use it.
  CHECK(h.retry("ask_name", json::object(), s2, {{k2, model_says("x")}}, kAllCaps,
                std::make_shared<FakeFront>(), out, 4) == Refusal::kOtherRequest);
  // Tampered: refused, and the genuine state still works afterwards.
  std::string tampered = s2;
  tampered[tampered.size() / 2] = tampered[tampered.size() / 2] == 'A' ? 'B' : 'A';
  CHECK(h.retry("ask_twice", json::object(), tampered, {{k2, model_says("x")}}, kAllCaps,
                std::make_shared<FakeFront>(), out, 5) == Refusal::kTampered);
  CHECK_FALSE(h.retry("ask_twice", json::object(), s2, {{k2, model_says("Hello, Ada!")}}, kAllCaps,
                      std::make_shared<FakeFront>(), out, 6));
  CHECK(text_of(complete(out, 6)) == "name=Ada; model=Hello, Ada!");
}

TEST_CASE("mrtr: requests sent together share one input_required; missing inputs are asked again") {
  // The tool sends its two requests 10 ms apart: inside the collection window.
  Harness h;
  Outcomes out;
  h.start("ask_both", {{"gap_ms", 10}}, kAllCaps, std::make_shared<FakeFront>(), out, 1);
  json r1 = input_required(out, 1);
  auto reqs = r1["result"]["inputRequests"];
  REQUIRE(reqs.size() == 2);
  std::string ke, ks;
  for (auto& [k, v] : reqs.items()) (v["method"] == "elicitation/create" ? ke : ks) = k;
  REQUIRE(!ke.empty());
  REQUIRE(!ks.empty());
  // Only the elicitation answered (plus a key nobody asked for, and a
  // non-object answer for the sampling request).
  CHECK_FALSE(h.retry("ask_both", {{"gap_ms", 10}}, r1["result"]["requestState"],
                      {{ke, kAda}, {"made-up", {{"x", 1}}}, {ks, "not an object"}}, kAllCaps,
                      std::make_shared<FakeFront>(), out, 2));
  json r2 = input_required(out, 2);
  auto again = r2["result"]["inputRequests"];
  REQUIRE(again.size() == 1);
  CHECK(again.contains(ks));  // asked again under the same key
  CHECK(again[ks]["method"] == "sampling/createMessage");
  CHECK_FALSE(h.retry("ask_both", {{"gap_ms", 10}}, r2["result"]["requestState"],
                      {{ks, model_says("hi")}}, kAllCaps, std::make_shared<FakeFront>(), out, 3));
  CHECK(text_of(complete(out, 3)) == "name=Ada; model=hi");
}

TEST_CASE("mrtr: a request that arrives while the call is parked is asked on the retry, with the client's capabilities") {
  // The tool's second request comes 300 ms after the first: past the
  // collection window, while the call is parked (no front attached).
  Harness h;
  Outcomes out;
  h.start("ask_both", {{"gap_ms", 300}}, kAllCaps, std::make_shared<FakeFront>(), out, 1);
  json r1 = input_required(out, 1);
  auto reqs = r1["result"]["inputRequests"];
  REQUIRE(reqs.size() == 1);
  std::string ke = reqs.begin().key();
  CHECK(reqs[ke]["method"] == "elicitation/create");
  std::this_thread::sleep_for(500ms);  // the sampling request arrives meanwhile
  CHECK_FALSE(h.retry("ask_both", {{"gap_ms", 300}}, r1["result"]["requestState"], {{ke, kAda}}, kAllCaps,
                      std::make_shared<FakeFront>(), out, 2));
  json r2 = input_required(out, 2);
  auto again = r2["result"]["inputRequests"];
  REQUIRE(again.size() == 1);
  std::string ks = again.begin().key();
  CHECK(again[ks]["method"] == "sampling/createMessage");
  CHECK_FALSE(h.retry("ask_both", {{"gap_ms", 300}}, r2["result"]["requestState"], {{ks, model_says("hi")}},
                      kAllCaps, std::make_shared<FakeFront>(), out, 3));
  CHECK(text_of(complete(out, 3)) == "name=Ada; model=hi");
}

TEST_CASE("mrtr: a capability the client did not declare is refused upstream; the tool falls back") {
  Harness h;
  Outcomes out;
  // Sampling and roots declared, elicitation not.
  h.start("ask_name", json::object(), R"({"sampling":{},"roots":{}})", std::make_shared<FakeFront>(),
          out, 1);
  json r = complete(out, 1);
  CHECK(r["result"]["isError"] == true);
  std::string t = text_of(r);
  CHECK(t.find("elicitation failed: error -32601") != std::string::npos);
  CHECK(t.find("did not declare the 'elicitation' capability") != std::string::npos);
  CHECK(h.parked.size() == 0);
}

TEST_CASE("mrtr: a parked call that is never resumed expires: upstream cancelled, session closed") {
  Harness h;
  h.opt.park_timeout = 400ms;
  Outcomes out;
  int cancels = h.srv.cancellations();
  h.start("ask_name", {{"wait_ms", 20000}}, kAllCaps, std::make_shared<FakeFront>(), out, 1);
  json r1 = input_required(out, 1);
  CHECK(Forwarder::open_sessions() == 1);
  auto t0 = std::chrono::steady_clock::now();
  CHECK(eventually([&] { return h.parked.size() == 0; }, 3s));
  auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited < 1500ms);
  CHECK(eventually([] { return Forwarder::open_sessions() == 0; }, 3s));
  CHECK(eventually([&] { return h.srv.cancellations() > cancels; }, 3s));
  CHECK(eventually([&] { return h.srv.open_streams() == 0; }, 3s));
  CHECK(h.parked.stats().expired.load() == 1);
  // The late retry gets a clear refusal, never a hang.
  std::string key = r1["result"]["inputRequests"].begin().key();
  auto refusal = h.retry("ask_name", {{"wait_ms", 20000}}, r1["result"]["requestState"], {{key, kAda}},
                         kAllCaps, std::make_shared<FakeFront>(), out, 2);
  REQUIRE(refusal);
  CHECK(*refusal == Refusal::kExpired);
}

TEST_CASE("mrtr: time parked does not count against --request-timeout") {
  Harness h(1200ms);
  Outcomes out;
  h.start("ask_name", json::object(), kAllCaps, std::make_shared<FakeFront>(), out, 1);
  json r1 = input_required(out, 1);
  std::this_thread::sleep_for(1800ms);  // the client takes longer than the call's whole budget
  std::string key = r1["result"]["inputRequests"].begin().key();
  CHECK_FALSE(h.retry("ask_name", json::object(), r1["result"]["requestState"], {{key, kAda}},
                      kAllCaps, std::make_shared<FakeFront>(), out, 2));
  CHECK(text_of(complete(out, 2)) == "hello Ada");
}

TEST_CASE("mrtr: a retry whose client has hung up cancels the call upstream") {
  Harness h;
  Outcomes out;
  int cancels = h.srv.cancellations();
  h.start("ask_twice", json::object(), kAllCaps, std::make_shared<FakeFront>(), out, 1);
  json r1 = input_required(out, 1);
  std::string k1 = r1["result"]["inputRequests"].begin().key();
  // The retry's front (on the other loop) closes its stream at once: the
  // call must notice before round 2 would ask it anything.
  auto f2 = std::make_shared<FakeFront>();
  f2->gone = true;
  CHECK_FALSE(h.retry("ask_twice", json::object(), r1["result"]["requestState"], {{k1, kAda}},
                      kAllCaps, f2, out, 2));
  // Its wake-up fires too (a real sink may fire it more than once).
  asio::post(h.loops.at(1).io(), [f2] {
    std::function<void(bool)> w;
    {
      std::lock_guard lk(f2->mu);
      w = f2->waker;
    }
    if (w) w(true);
  });
  auto o = out.wait();
  REQUIRE(o);
  CHECK(o->kind == Kind::kCancelled);
  CHECK(json::parse(o->response)["id"] == 2);
  CHECK(eventually([&] { return h.srv.cancellations() > cancels; }, 3s));
  CHECK(eventually([] { return Forwarder::open_sessions() == 0; }, 3s));
  CHECK(h.parked.size() == 0);
}

TEST_CASE("mrtr: a full registry answers the client with an error and cancels the call") {
  Harness h;
  ParkedCalls tiny(0);
  Outcomes out;
  // Use a registry that cannot hold a call.
  EventLoop& l = h.loops.at(0);
  std::string raw = json{{"jsonrpc", "2.0"}, {"id", 1}, {"method", "tools/call"},
                         {"params", params_of("ask_name", json::object())}}
                        .dump();
  auto parsed = parse_body(raw);
  auto b = RequestBinding::of("tools/call", params_of("ask_name", json::object()).dump());
  std::promise<void> started;
  asio::post(l.io(), [&] {
    auto m = MrtrSink::create(l, tiny, h.sealer, *b, h.opt);
    ClientSession cs;
    cs.init_params = R"({"protocolVersion":"2025-06-18","capabilities":{}})";
    m->start(*h.fwd, parsed.messages[0], cs, std::nullopt, "", Clock::now(),
             MrtrSink::Front{std::make_shared<FakeFront>(), &l, "1", kAllCaps, out.fn()});
    started.set_value();
  });
  REQUIRE(started.get_future().wait_for(2s) == std::future_status::ready);
  auto o = out.wait();
  REQUIRE(o);
  CHECK(o->kind == Kind::kComplete);
  json r = json::parse(o->response);
  CHECK(r["id"] == 1);
  CHECK(r["error"]["message"].get<std::string>().find("--mrtr-max-parked") != std::string::npos);
  CHECK(eventually([] { return Forwarder::open_sessions() == 0; }, 3s));
}
