// TLS contexts (OpenSSL) for both sides of the bridge.
//
// Client side (upstream HTTPS): peers are verified against the system CAs, or
// only against --upstream-ca when given; the host name (or IP address) of the
// URL must match the certificate. --upstream-insecure turns verification off.
//
// Server side (--tls-cert/--tls-key, optional --tls-client-ca for mTLS): the
// handshake itself is driven by FrontServer on a non-blocking socket with a
// deadline; this file only builds and validates the context.
#pragma once

#include <memory>
#include <string>

typedef struct ssl_ctx_st SSL_CTX;

namespace msb {

struct TlsClientOptions {
  std::string ca_file;    // PEM bundle; empty = system CAs
  std::string cert_file;  // client certificate (PEM), optional
  std::string key_file;   // its private key (PEM)
  bool insecure = false;  // no verification at all
};

struct TlsServerOptions {
  std::string cert_file;       // PEM chain
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // when set, clients must present a certificate it signed
};

// An SSL_CTX owner. Thread-safe to share once built.
class TlsContext {
 public:
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // nullptr with a reason (file, OpenSSL's words) on failure.
  static std::shared_ptr<TlsContext> client(const TlsClientOptions& o, std::string* why);
  static std::shared_ptr<TlsContext> server(const TlsServerOptions& o, std::string* why);

  SSL_CTX* get() const { return ctx_; }
  bool verify_peer() const { return verify_; }

 private:
  TlsContext(SSL_CTX* ctx, bool verify) : ctx_(ctx), verify_(verify) {}
  SSL_CTX* ctx_;
  bool verify_;
};

// OpenSSL's queued errors as one line (and clears them).
std::string tls_error_text();

}  // namespace msb
