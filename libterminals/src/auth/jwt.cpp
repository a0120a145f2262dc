#include "auth/jwt.hpp"

#include <cmath>
#include <limits>

#include "json/json.hpp"
#include "util/crypto.hpp"

namespace terminals::detail {

namespace {

Error invalid(std::string_view reason) {
  return Error(Errc::PolicyDenied, "Invalid token: " + std::string(reason));
}

// RFC 7515 segments are unpadded base64url; the shared decoder is more lenient ('+', '/', '='),
// which would let two spellings of one token exist.
bool is_base64url(std::string_view s) {
  for (char c : s) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

Result<rapidjson::Document> decode_object(std::string_view segment, const char* what) {
  if (segment.empty() || !is_base64url(segment)) return invalid(std::string("malformed ") + what);
  auto raw = base64url_decode(segment);
  if (!raw) return invalid(std::string("malformed ") + what);
  auto doc = parse_json(*raw);
  if (!doc || !doc->IsObject()) return invalid(std::string(what) + " is not a JSON object");
  return doc;
}

// A NumericDate claim: absent, or a finite number (pyjwt writes integers; floats are legal).
Result<std::optional<std::int64_t>> numeric_date(const rapidjson::Value& payload, const char* name) {
  auto it = payload.FindMember(name);
  if (it == payload.MemberEnd()) return std::optional<std::int64_t>{};
  if (!it->value.IsNumber()) return invalid(std::string(name) + " is not a number");
  // Integers get the same range as doubles: exp + leeway must not overflow.
  constexpr std::int64_t kMaxDate = 9'000'000'000'000'000;
  if (it->value.IsInt64()) {
    const std::int64_t v = it->value.GetInt64();
    if (v > kMaxDate || v < -kMaxDate) return invalid(std::string(name) + " is out of range");
    return std::optional<std::int64_t>(v);
  }
  double d = it->value.GetDouble();
  if (!std::isfinite(d) || d > 9.0e15 || d < -9.0e15) return invalid(std::string(name) + " is out of range");
  return std::optional<std::int64_t>(static_cast<std::int64_t>(std::floor(d)));
}

}  // namespace

Result<JwtClaims> verify_jwt_hs256(std::string_view token, std::string_view secret,
                                   std::int64_t now, std::int64_t leeway_seconds) {
  if (secret.empty()) return Error(Errc::InvalidArgument, "JWT secret is empty");
  if (token.empty()) return invalid("empty");
  if (token.size() > kMaxJwtBytes) return invalid("too long");
  auto dot1 = token.find('.');
  if (dot1 == std::string_view::npos) return invalid("not a JWT");
  auto dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) {
    return invalid("not a JWT");
  }
  std::string_view header_b64 = token.substr(0, dot1);
  std::string_view payload_b64 = token.substr(dot1 + 1, dot2 - dot1 - 1);
  std::string_view signature_b64 = token.substr(dot2 + 1);

  auto header = decode_object(header_b64, "header");
  if (!header) return std::move(header).error();
  auto alg = json_string(*header, "alg");
  if (!alg) return invalid("header has no alg");
  // Exact match: "none", "hs256", "HS512", "RS256"... are all refused.
  if (*alg != "HS256") return invalid("algorithm " + std::string(alg->substr(0, 16)) + " is not accepted");
  if (header->HasMember("crit")) return invalid("critical header extensions are not supported");

  if (signature_b64.empty() || !is_base64url(signature_b64)) return invalid("malformed signature");
  auto signature = base64url_decode(signature_b64);
  if (!signature) return invalid("malformed signature");
  std::string expected = hmac_sha256_raw(secret, token.substr(0, dot2));
  if (!constant_time_equals(*signature, expected)) return invalid("bad signature");

  auto payload = decode_object(payload_b64, "payload");
  if (!payload) return std::move(payload).error();
  JwtClaims claims;
  auto exp = numeric_date(*payload, "exp");
  if (!exp) return std::move(exp).error();
  auto nbf = numeric_date(*payload, "nbf");
  if (!nbf) return std::move(nbf).error();
  claims.exp = *exp;
  claims.nbf = *nbf;
  if (claims.exp && now >= *claims.exp + leeway_seconds) return invalid("expired");
  if (claims.nbf && now + leeway_seconds < *claims.nbf) return invalid("not yet valid");
  auto id = json_string(*payload, "id");
  if (!id || id->empty()) return invalid("no user id claim");
  claims.id = std::string(*id);
  return claims;
}

std::string sign_jwt_raw(std::string_view header_json, std::string_view payload_json,
                         std::string_view secret) {
  std::string signing_input = base64url_encode(header_json) + "." + base64url_encode(payload_json);
  std::string signature = base64url_encode(hmac_sha256_raw(secret, signing_input));
  return signing_input + "." + signature;
}

std::string sign_jwt_hs256(std::string_view payload_json, std::string_view secret) {
  return sign_jwt_raw(R"({"alg":"HS256","typ":"JWT"})", payload_json, secret);
}

}  // namespace terminals::detail
