// TLS contexts: good files build, bad ones fail at start with a reason that
// names the problem (never at the first connection).
#include <doctest/doctest.h>

#include <string>

#include "mcp_sse_bridge/tls.h"

using namespace msb;

namespace {
const std::string kDir = std::string(TEST_DATA_DIR) + "/tls/";
}

TEST_CASE("tls: server contexts build from a matching pair, with or without a client CA") {
  std::string why;
  auto plain = TlsContext::server({kDir + "server.pem", kDir + "server.key", ""}, &why);
  REQUIRE_MESSAGE(plain, why);
  CHECK(plain->get() != nullptr);
  auto mtls = TlsContext::server({kDir + "server.pem", kDir + "server.key", kDir + "ca.pem"}, &why);
  REQUIRE_MESSAGE(mtls, why);
}

TEST_CASE("tls: a missing file or a key of another certificate is refused with the reason") {
  std::string why;
  CHECK_FALSE(TlsContext::server({kDir + "nope.pem", kDir + "server.key", ""}, &why));
  CHECK(why.find("nope.pem") != std::string::npos);
  why.clear();
  CHECK_FALSE(TlsContext::server({kDir + "server.pem", kDir + "client.key", ""}, &why));
  CHECK_FALSE(why.empty());
  why.clear();
  CHECK_FALSE(TlsContext::client({kDir + "missing-ca.pem", "", "", false}, &why));
  CHECK(why.find("missing-ca.pem") != std::string::npos);
}

TEST_CASE("tls: client contexts verify unless told not to") {
  std::string why;
  auto ca = TlsContext::client({kDir + "ca.pem", "", "", false}, &why);
  REQUIRE_MESSAGE(ca, why);
  CHECK(ca->verify_peer());
  auto with_cert = TlsContext::client({kDir + "ca.pem", kDir + "client.pem", kDir + "client.key", false}, &why);
  REQUIRE_MESSAGE(with_cert, why);
  auto insecure = TlsContext::client({"", "", "", true}, &why);
  REQUIRE_MESSAGE(insecure, why);
  CHECK_FALSE(insecure->verify_peer());
}
