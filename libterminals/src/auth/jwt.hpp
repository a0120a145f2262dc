#pragma once

// Offline verification of Open WebUI session tokens: JWTs signed with HS256 and the Open WebUI
// secret (WEBUI_SECRET_KEY). Only HS256 is accepted: "none", other HMAC sizes and every
// asymmetric algorithm are refused, so a token cannot choose how it is checked.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "terminals/result.hpp"

namespace terminals::detail {

/// The claims the orchestrator uses from a verified token.
struct JwtClaims {
  std::string id;                 ///< Open WebUI's user id claim ("id")
  std::optional<std::int64_t> exp;  ///< expiry, seconds since the epoch (absent: no expiry)
  std::optional<std::int64_t> nbf;  ///< not before, seconds since the epoch
};

/// Longest token accepted (Open WebUI's are ~150 bytes); longer ones are refused unparsed.
inline constexpr std::size_t kMaxJwtBytes = 8 * 1024;

/// Verifies `token` (compact JWS: header.payload.signature, base64url without padding) against
/// `secret` at time `now` (seconds since the epoch), allowing `leeway_seconds` of clock skew for
/// exp and nbf. Checks, in order: size and shape; the header is a JSON object with
/// "alg":"HS256" exactly and no "crit"; the signature (constant time); the payload is a JSON
/// object; exp (if present, a number: now < exp + leeway) and nbf (now + leeway >= nbf); "id"
/// is a non-empty string. Every failure is Errc::PolicyDenied with a short reason ("Invalid
/// token: expired"); messages never contain the token.
Result<JwtClaims> verify_jwt_hs256(std::string_view token, std::string_view secret,
                                   std::int64_t now, std::int64_t leeway_seconds = 0);

/// Signs `payload_json` as an HS256 JWT with header {"alg":"HS256","typ":"JWT"} (tests, tools).
std::string sign_jwt_hs256(std::string_view payload_json, std::string_view secret);
/// Encodes an arbitrary header and payload and signs them with HS256 (tests of refused headers).
std::string sign_jwt_raw(std::string_view header_json, std::string_view payload_json,
                         std::string_view secret);

}  // namespace terminals::detail
