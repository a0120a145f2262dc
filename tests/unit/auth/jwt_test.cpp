#include <doctest/doctest.h>

#include <string>

#include "auth/jwt.hpp"
#include "util/crypto.hpp"

using namespace terminals;
using namespace terminals::detail;

namespace {

constexpr const char* kSecret = "webui-secret-key";
constexpr std::int64_t kNow = 1'800'000'000;

std::string payload(const std::string& extra = R"(,"exp":1800000600)") {
  return R"({"id":"0b6d2a4e-8c1f-4b7e-9a0e-2f8e1c7d5a93")" + extra + "}";
}

void check_refused(const Result<JwtClaims>& r, const char* reason) {
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::PolicyDenied);
  CHECK(r.error().message.find(reason) != std::string::npos);
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("auth: jwt HS256 valid token yields the id claim") {
  auto token = sign_jwt_hs256(payload(R"(,"exp":1800000600,"nbf":1799999000,"jti":"x")"), kSecret);
  auto r = verify_jwt_hs256(token, kSecret, kNow);
  REQUIRE(r.has_value());
  CHECK(r->id == "0b6d2a4e-8c1f-4b7e-9a0e-2f8e1c7d5a93");
  CHECK(r->exp == 1800000600);
  CHECK(r->nbf == 1799999000);
  // Open WebUI issues tokens without exp when JWT_EXPIRES_IN is -1.
  auto no_exp = verify_jwt_hs256(sign_jwt_hs256(payload(""), kSecret), kSecret, kNow);
  REQUIRE(no_exp.has_value());
  CHECK_FALSE(no_exp->exp.has_value());
  // A float NumericDate is legal.
  CHECK(verify_jwt_hs256(sign_jwt_hs256(payload(R"(,"exp":1800000600.5)"), kSecret), kSecret, kNow).has_value());
}

TEST_CASE("auth: jwt HS256 refuses a bad signature or another secret") {
  auto token = sign_jwt_hs256(payload(), kSecret);
  check_refused(verify_jwt_hs256(token, "another-secret", kNow), "bad signature");
  // Flip one signature character (keeping it valid base64url).
  std::string tampered = token;
  tampered.back() = tampered.back() == 'A' ? 'B' : 'A';
  check_refused(verify_jwt_hs256(tampered, kSecret, kNow), "signature");
  // Swap in another payload under the original signature.
  auto other = sign_jwt_hs256(R"({"id":"admin"})", kSecret);
  auto p1 = token.find('.'), p2 = token.rfind('.');
  auto q1 = other.find('.'), q2 = other.rfind('.');
  std::string spliced = token.substr(0, p1 + 1) + other.substr(q1 + 1, q2 - q1 - 1) + token.substr(p2);
  check_refused(verify_jwt_hs256(spliced, kSecret, kNow), "bad signature");
  // Signature stripped.
  check_refused(verify_jwt_hs256(token.substr(0, p2 + 1), kSecret, kNow), "malformed signature");
}

TEST_CASE("auth: jwt HS256 enforces exp and nbf with leeway") {
  auto expired = sign_jwt_hs256(payload(R"(,"exp":1799999990)"), kSecret);
  check_refused(verify_jwt_hs256(expired, kSecret, kNow), "expired");
  CHECK(verify_jwt_hs256(expired, kSecret, kNow, 30).has_value());  // within the leeway
  auto exactly = sign_jwt_hs256(payload(R"(,"exp":1800000000)"), kSecret);
  check_refused(verify_jwt_hs256(exactly, kSecret, kNow), "expired");
  auto future = sign_jwt_hs256(payload(R"(,"nbf":1800000100)"), kSecret);
  check_refused(verify_jwt_hs256(future, kSecret, kNow), "not yet valid");
  CHECK(verify_jwt_hs256(future, kSecret, kNow, 200).has_value());
  check_refused(verify_jwt_hs256(sign_jwt_hs256(payload(R"(,"exp":"soon")"), kSecret), kSecret, kNow),
                "exp is not a number");
}

TEST_CASE("auth: jwt refuses alg none and every algorithm but HS256") {
  std::string body = payload();
  // alg none with an empty signature, and with a valid-looking one.
  std::string none = base64url_encode(R"({"alg":"none","typ":"JWT"})") + "." + base64url_encode(body) + ".";
  check_refused(verify_jwt_hs256(none, kSecret, kNow), "algorithm none");
  check_refused(verify_jwt_hs256(sign_jwt_raw(R"({"alg":"none"})", body, kSecret), kSecret, kNow), "algorithm none");
  for (const char* alg : {"HS384", "HS512", "RS256", "ES256", "hs256", "HS256 "}) {
    std::string header = std::string(R"({"alg":")") + alg + R"(","typ":"JWT"})";
    check_refused(verify_jwt_hs256(sign_jwt_raw(header, body, kSecret), kSecret, kNow), "is not accepted");
  }
  check_refused(verify_jwt_hs256(sign_jwt_raw(R"({"typ":"JWT"})", body, kSecret), kSecret, kNow), "no alg");
  check_refused(verify_jwt_hs256(sign_jwt_raw(R"({"alg":"HS256","crit":["b64"]})", body, kSecret), kSecret, kNow),
                "critical");
}

TEST_CASE("auth: jwt refuses malformed base64 / JSON / shape") {
  check_refused(verify_jwt_hs256("", kSecret, kNow), "empty");
  check_refused(verify_jwt_hs256("abc", kSecret, kNow), "not a JWT");
  check_refused(verify_jwt_hs256("a.b.c.d", kSecret, kNow), "not a JWT");
  check_refused(verify_jwt_hs256(std::string(9000, 'a'), kSecret, kNow), "too long");
  auto token = sign_jwt_hs256(payload(), kSecret);
  // '+' and padding are not base64url-in-JWT, even though a lenient decoder would accept them.
  std::string plus = token;
  plus[2] = '+';
  check_refused(verify_jwt_hs256(plus, kSecret, kNow), "malformed header");
  check_refused(verify_jwt_hs256(token + "=", kSecret, kNow), "malformed signature");
  // Properly signed, but the header or payload is not a JSON object.
  check_refused(verify_jwt_hs256(sign_jwt_raw("not json", payload(), kSecret), kSecret, kNow), "header is not");
  check_refused(verify_jwt_hs256(sign_jwt_raw(R"(["HS256"])", payload(), kSecret), kSecret, kNow), "header is not");
  check_refused(verify_jwt_hs256(sign_jwt_hs256("{\"id\":", kSecret), kSecret, kNow), "payload is not");
  check_refused(verify_jwt_hs256(sign_jwt_hs256("42", kSecret), kSecret, kNow), "payload is not");
  // Signed but without a usable id.
  check_refused(verify_jwt_hs256(sign_jwt_hs256(R"({"sub":"u"})", kSecret), kSecret, kNow), "no user id");
  check_refused(verify_jwt_hs256(sign_jwt_hs256(R"({"id":""})", kSecret), kSecret, kNow), "no user id");
  check_refused(verify_jwt_hs256(sign_jwt_hs256(R"({"id":7})", kSecret), kSecret, kNow), "no user id");
  // Messages never echo the token.
  auto r = verify_jwt_hs256(token, "wrong-secret", kNow);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message.find(token.substr(0, 20)) == std::string::npos);
}

}  // TEST_SUITE
