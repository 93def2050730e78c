#include "mcp_sse_bridge/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace msb {

std::string tls_error_text() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

namespace {

bool fail(std::string* why, const std::string& what) {
  if (why) *why = what + ": " + tls_error_text();
  return false;
}

bool load_pair(SSL_CTX* ctx, const std::string& cert, const std::string& key, std::string* why) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1)
    return fail(why, "cannot load certificate " + cert);
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1)
    return fail(why, "cannot load private key " + key);
  if (SSL_CTX_check_private_key(ctx) != 1)
    return fail(why, "private key " + key + " does not match certificate " + cert);
  return true;
}

}  // namespace

std::shared_ptr<TlsContext> TlsContext::client(const TlsClientOptions& o, std::string* why) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return fail(why, "SSL_CTX_new"), nullptr;
  std::shared_ptr<TlsContext> out(new TlsContext(ctx, !o.insecure));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
  // A stream cut without close_notify is an ordinary EOF here (the SSE
  // stream's end is what matters; the error kind says "closed").
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
  if (o.insecure) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if (o.ca_file.empty()) {
      if (SSL_CTX_set_default_verify_paths(ctx) != 1) return fail(why, "system CA store"), nullptr;
    } else if (SSL_CTX_load_verify_locations(ctx, o.ca_file.c_str(), nullptr) != 1) {
      return fail(why, "cannot load CA file " + o.ca_file), nullptr;
    }
  }
  if (!o.cert_file.empty() || !o.key_file.empty()) {
    if (o.cert_file.empty() || o.key_file.empty()) {
      if (why) *why = "a client certificate needs both the certificate and the key file";
      return nullptr;
    }
    if (!load_pair(ctx, o.cert_file, o.key_file, why)) return nullptr;
  }
  return out;
}

std::shared_ptr<TlsContext> TlsContext::server(const TlsServerOptions& o, std::string* why) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return fail(why, "SSL_CTX_new"), nullptr;
  std::shared_ptr<TlsContext> out(new TlsContext(ctx, !o.client_ca_file.empty()));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
  if (!load_pair(ctx, o.cert_file, o.key_file, why)) return nullptr;
  if (!o.client_ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, o.client_ca_file.c_str(), nullptr) != 1)
      return fail(why, "cannot load client CA file " + o.client_ca_file), nullptr;
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(o.client_ca_file.c_str());
    if (names) SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    // With peer verification OpenSSL refuses to resume a session (an
    // internal_error alert, TLS 1.2 and 1.3) unless a session id context
    // names this server: clients that cache sessions (curl, Node's https
    // agent, Go) failed every connection after their first.
    static const unsigned char kSidCtx[] = "mcp-sse-bridge";
    SSL_CTX_set_session_id_context(ctx, kSidCtx, sizeof kSidCtx - 1);
  }
  return out;
}

}  // namespace msb
