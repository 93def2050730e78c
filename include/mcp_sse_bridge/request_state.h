// The `requestState` of an MRTR `input_required` result (2026-07-28): a
// sealed token naming the parked upstream call that the client's retry
// resumes.
//
// requestState is attacker-controlled (spec, basic/patterns/mrtr "Server
// Requirements"): it is authenticated with HMAC-SHA256 under the bridge's
// session secret (the same secret as session ids, so every replica given the
// same secret verifies it) and binds
//   - the request: method, name (tool or prompt name, resource uri), a digest
//     of the params without `_meta`, `inputResponses` and `requestState`, and
//     the principal (a tag of the client's credentials, "" without auth);
//   - the parked call's key in ParkedCalls and the round number;
//   - the replica that parked it (a per-process tag: a parked call lives in
//     one process's memory, so a retry that reaches another replica, or this
//     one after a restart, is told so instead of hanging);
//   - an expiry (unix ms).
// Sealed, not encrypted: the client can read the claims; none is secret.
//
// Format: "msb1." base64url(claims JSON) "." base64url(mac). The prefix lets
// the stateless handler tell the bridge's own states from an upstream's that
// must pass through unchanged (is_ours()).
//
// Thread-safe (immutable after construction).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace msb {

// What a requestState is bound to: the request it was issued for.
struct RequestBinding {
  std::string method;     // tools/call | prompts/get | resources/read
  std::string name;       // params.name (tools/call, prompts/get) or params.uri (resources/read)
  std::string digest;     // hex SHA-256 of the canonical params (see of())
  std::string principal;  // who may resume it: a tag of the credentials, "" without auth

  // The binding of a request: `params_json` its params (JSON text). The
  // digest covers every param except `_meta`, `inputResponses` and
  // `requestState`, with object keys sorted, so a retry with the same params
  // in another key order matches. nullopt when params is not a JSON object.
  static std::optional<RequestBinding> of(std::string_view method, std::string_view params_json,
                                          std::string principal = {});
  bool operator==(const RequestBinding&) const = default;
};

struct RequestStateClaims {
  std::string call_key;   // the parked call in ParkedCalls (fresh per round)
  std::string replica;    // tag of the process that parked it
  RequestBinding binding;
  int round = 1;          // 1 for the first input_required of a call
  int64_t expires_ms = 0; // unix time in ms after which it is refused
};

class RequestStateSealer {
 public:
  // Why open() refused a state. Each maps to one clear JSON-RPC error.
  enum class Refusal {
    kMalformed,     // not a requestState of this bridge's format, or oversized
    kTampered,      // MAC does not verify (edited, or sealed under another secret)
    kExpired,       // past its expiry
    kOtherReplica,  // parked by another replica (or before this bridge restarted)
    kOtherRequest,  // issued for a different request (method, name, params or principal)
    kNotParked,     // valid, but no call waits under it (already resumed, expired, cancelled);
                    // set by the caller when ParkedCalls::take() finds nothing
  };
  struct Opened {
    std::optional<RequestStateClaims> claims;  // set when accepted
    Refusal refusal = Refusal::kMalformed;     // meaningful when !claims
  };

  // `secret` must be non-empty (the session secret); `replica` this
  // process's tag (see new_replica_tag()).
  RequestStateSealer(std::string secret, std::string replica);

  const std::string& replica() const { return replica_; }
  std::string seal(const RequestStateClaims& c) const;
  // Verifies `state` against the retry's own binding at `now_ms` (unix ms).
  // Checks, in order: format, MAC, expiry, replica, binding.
  Opened open(std::string_view state, const RequestBinding& retry, int64_t now_ms) const;

  // True when `state` has this bridge's format prefix (it may still fail
  // open()); other states belong to the upstream and pass through.
  static bool is_ours(std::string_view state);
  // A fresh random replica tag (12 hex digits).
  static std::string new_replica_tag();
  // Unix time in ms.
  static int64_t now_ms();
  // The JSON-RPC error (code -32602) for a refusal, for request `raw_id`;
  // `park_timeout` names the bound in the expiry message.
  static std::string error_response(std::string_view raw_id, Refusal r,
                                    std::string_view park_timeout);
  static std::string_view to_string(Refusal r);

  static constexpr size_t kMaxStateLength = 4096;

  // The principal of a request's credentials (its Authorization and the
  // headers it has forwarded upstream): a keyed tag (HMAC under the
  // secret), so that a state's readable claims do not let anyone test
  // guesses of a credential offline. "" for no credentials at all.
  std::string principal_of(std::string_view credentials) const;

 private:
  std::string mac(std::string_view data) const;
  std::string secret_;
  std::string replica_;
};

}  // namespace msb
