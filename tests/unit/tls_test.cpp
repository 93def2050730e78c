// TLS contexts: good files build, bad ones fail at start with a reason that
// names the problem (never at the first connection).
#include <doctest/doctest.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

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

namespace {
// One TLS 1.2 handshake in memory between a client SSL and a server SSL of
// `server_ctx`, resuming `resume` when given. Bounded. Returns the client
// SSL (caller frees) or null when the handshake failed.
SSL* handshake(SSL_CTX* client_ctx, SSL_CTX* server_ctx, SSL_SESSION* resume) {
  SSL* c = SSL_new(client_ctx);
  SSL* s = SSL_new(server_ctx);
  BIO *cb = nullptr, *sb = nullptr;
  BIO_new_bio_pair(&cb, 0, &sb, 0);
  SSL_set_bio(c, cb, cb);
  SSL_set_bio(s, sb, sb);
  SSL_set_connect_state(c);
  SSL_set_accept_state(s);
  if (resume) SSL_set_session(c, resume);
  bool cd = false, sd = false;
  for (int i = 0; i < 100 && !(cd && sd); ++i) {
    if (!cd) {
      int r = SSL_do_handshake(c);
      if (r == 1) cd = true;
      else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ) break;
    }
    if (!sd) {
      int r = SSL_do_handshake(s);
      if (r == 1) sd = true;
      else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ) break;
    }
  }
  SSL_free(s);
  if (cd && sd) return c;
  SSL_free(c);
  return nullptr;
}
}  // namespace

TEST_CASE("tls: with a client CA (mTLS) a client can resume its session") {
  // OpenSSL refuses resumption with peer verification on unless the server
  // names a session id context: every connection after a caching client's
  // first failed with an internal_error alert.
  std::string why;
  auto server = TlsContext::server({kDir + "server.pem", kDir + "server.key", kDir + "ca.pem"}, &why);
  REQUIRE_MESSAGE(server, why);
  SSL_CTX* cctx = SSL_CTX_new(TLS_client_method());
  REQUIRE(cctx);
  SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);  // the session is set up by the handshake
  REQUIRE(SSL_CTX_use_certificate_file(cctx, (kDir + "client.pem").c_str(), SSL_FILETYPE_PEM) == 1);
  REQUIRE(SSL_CTX_use_PrivateKey_file(cctx, (kDir + "client.key").c_str(), SSL_FILETYPE_PEM) == 1);
  SSL* first = handshake(cctx, server->get(), nullptr);
  REQUIRE(first);
  SSL_SESSION* sess = SSL_get1_session(first);
  REQUIRE(sess);
  SSL* second = handshake(cctx, server->get(), sess);
  CHECK(second);
  if (second) CHECK(SSL_session_reused(second) == 1);
  SSL_free(second);
  SSL_SESSION_free(sess);
  SSL_free(first);
  SSL_CTX_free(cctx);
}
