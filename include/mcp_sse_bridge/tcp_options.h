// TcpOptions: socket options of upstream connections, so that the kernel
// reports a peer that vanished (no FIN, no RST) instead of leaving reads
// waiting. Built from the upstream config (--upstream-tcp-keepalive,
// --upstream-tcp-user-timeout, --connect-timeout) and applied by
// UpstreamConnection.
#pragma once

#include "mcp_sse_bridge/deadline.h"

namespace msb {

struct TcpOptions {
  Millis keepalive_idle{0};   // SO_KEEPALIVE: idle time before probes (1 s apart, 3 of them); 0 = off
  Millis user_timeout{0};     // TCP_USER_TIMEOUT: unacknowledged data or probes fail the
                              // connection after this; 0 = the kernel's default (minutes)
  Millis connect_timeout{0};  // bound of one UpstreamConnection::connect; 0 = its deadline only
};

}  // namespace msb
