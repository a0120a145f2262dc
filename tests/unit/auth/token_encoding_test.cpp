// Found by fuzz/token_fuzz.cpp: base64url had spare spellings (and a crash on some malformed
// input), so a JWT signature could be written two ways; integer exp/nbf claims had no range.

#include <doctest/doctest.h>

#include <string>

#include "auth/jwt.hpp"
#include "util/crypto.hpp"

using namespace terminals;
using namespace terminals::detail;

TEST_SUITE("unit") {

TEST_CASE("crypto: base64url_decode refuses malformed input instead of throwing") {
  for (const char* bad : {"====", "=", "A", "A===", "AAAAA", "AB=C", "==AB", "AB===", "ABC=D"}) {
    CAPTURE(bad);
    CHECK_FALSE(base64url_decode(bad).has_value());
  }
  // Padding stays optional.
  CHECK(base64url_decode("aGk=").value() == "hi");
  CHECK(base64url_decode("aGk").value() == "hi");
  CHECK(base64url_decode("YQ==").value() == "a");
  CHECK(base64url_decode("").value().empty());
}

TEST_CASE("crypto: base64url_decode accepts one spelling per byte string") {
  // "YQ" is 'a'; "YR".."YW" carry the same 8 bits plus non-zero spare bits.
  CHECK(base64url_decode("YQ").value() == "a");
  for (const char* other : {"YR", "YS", "YT", "YU", "YV", "YW"}) {
    CAPTURE(other);
    CHECK_FALSE(base64url_decode(other).has_value());
  }
  for (std::string s : {std::string("a"), std::string("ab"), std::string("abc"), std::string("\xff\x00\x80", 3)}) {
    CHECK(base64url_decode(base64url_encode(s)).value() == s);
  }
}

TEST_CASE("auth: jwt a second spelling of a valid signature is refused") {
  const std::string secret = "webui-secret-key";
  const std::string token = sign_jwt_hs256(R"({"id":"alice"})", secret);
  REQUIRE(verify_jwt_hs256(token, secret, 1'800'000'000).has_value());
  // A 32-byte HMAC is 43 characters: the last one carries 4 bits and 2 spare ones.
  static const std::string kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const std::size_t v = kAlphabet.find(token.back());
  int verified = 0;
  for (std::size_t spare = 1; spare < 4; ++spare) {
    std::string other = token;
    other.back() = kAlphabet[(v & ~std::size_t{3}) | ((v + spare) & 3)];
    CAPTURE(other);
    if (verify_jwt_hs256(other, secret, 1'800'000'000)) ++verified;
  }
  CHECK(verified == 0);
}

TEST_CASE("auth: jwt integer exp and nbf beyond the NumericDate range are refused") {
  const std::string secret = "webui-secret-key";
  for (const char* claims : {R"({"id":"a","exp":9223372036854775807})", R"({"id":"a","nbf":-9223372036854775807})",
                             R"({"id":"a","exp":9000000000000001})"}) {
    CAPTURE(claims);
    // With a leeway, exp + leeway used to overflow.
    auto r = verify_jwt_hs256(sign_jwt_hs256(claims, secret), secret, 1'800'000'000, 30);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message.find("out of range") != std::string::npos);
  }
  CHECK(verify_jwt_hs256(sign_jwt_hs256(R"({"id":"a","exp":9000000000000000})", secret), secret, 1'800'000'000, 30));
}

}  // TEST_SUITE
