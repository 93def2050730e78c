// The client side of one stateless (2026-07-28) call: the request's own
// response, as one JSON body or as a per-request SSE stream.
//
// The stream carries only notifications about this request: its progress
// (the request's progressToken) and, when the request set _meta logLevel,
// notifications/message; everything else the upstream session emits
// (list_changed, resources/updated…) belongs to subscriptions/listen and is
// dropped here. The stream starts lazily — at the first such notification or
// keepalive — so that a call that ends before then is answered with the
// status its answer needs (an upstream -32021 is a 400) in one write.
// Closing the stream cancels the call (the mailbox's hang-up). The stream
// head carries X-Accel-Buffering: no. Loop thread only.
#pragma once

#include <string>
#include <string_view>

#include "mcp_sse_bridge/response_sink.h"

namespace msb {

class ListenHub;

class StatelessSink : public SseSink {
 public:
  struct Options {
    bool sse = false;            // the client accepts text/event-stream
    std::string progress_token;  // the request's params._meta.progressToken (raw JSON), if any
    bool logs = false;           // the request set _meta logLevel
    ListenHub* listen = nullptr;  // takes the list_changed notifications of the session
    std::string profile;          // ... for the listeners of these upstream headers only
  };
  StatelessSink(CallRegistry& registry, const Lifecycle& life, std::shared_ptr<Exchange> ex,
                MailboxPtr box, Metrics& metrics, Duration keepalive, HttpResponse base,
                Options o);

  bool deliver(std::string_view json) override;
  bool alive() override;
  // THE MRTR SEAM. The 2026-07-28 era has no server-to-client requests: a
  // legacy upstream's elicitation/create, sampling/createMessage or
  // roots/list during a stateless call is refused here (the upstream gets
  // a JSON-RPC error and the call goes on). MRTR (#15 item 4) replaces this
  // with an `input_required` result and a parked upstream call.
  bool forward_request(std::string_view method, std::string_view bridge_id, std::string_view json,
                       std::string* why) override;

  // Sends the call's final response (`status` applies unless the stream has
  // started, which is then 200). Once.
  void finish(int status, const std::string& response);
  // Ends the exchange without an answer: the client has gone.
  void abandon();

 private:
  void start();
  HttpResponse base_;
  Options opt_;
  Duration keepalive_;
  Clock::time_point created_;
  bool started_ = false;
};

}  // namespace msb
