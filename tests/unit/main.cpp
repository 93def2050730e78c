// The test runner's main. Like the bridge's own main (src/main.cpp), it
// ignores SIGPIPE: the components under test, and the fake peers the tests run
// on raw sockets and TLS (SSL_write has no MSG_NOSIGNAL), write to peers that
// may have closed, and must see EPIPE, not die of the signal. Without this a
// filtered run (-tc="*upstream connection*") died of SIGPIPE when a fake TLS
// server wrote to a client that had already left.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <csignal>

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
