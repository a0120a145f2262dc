#include <doctest/doctest.h>

#include <set>

#include "util/crypto.hpp"

using namespace terminals;
using namespace terminals::detail;

TEST_SUITE("unit") {

TEST_CASE("crypto: random keys are unique / of the right size and alphabet") {
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    auto t = random_token(32).value();
    CHECK(t.size() == 43);  // 32 bytes base64url without padding
    CHECK(t.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
          std::string::npos);
    seen.insert(t);
  }
  CHECK(seen.size() == 200);
  CHECK(random_hex(3).value().size() == 6);
}

TEST_CASE("crypto: constant-time comparison / digests and base64 against known vectors") {
  CHECK(constant_time_equals("secret", "secret"));
  CHECK_FALSE(constant_time_equals("secret", "secreT"));
  CHECK_FALSE(constant_time_equals("secret", "secret2"));
  CHECK_FALSE(constant_time_equals("", "x"));
  CHECK(constant_time_equals("", ""));
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(base64_encode("hello") == "aGVsbG8=");
  CHECK(base64url_encode("\xfb\xff") == "-_8");
  CHECK(base64url_decode("-_8").value() == "\xfb\xff");
  CHECK(base64url_decode("aGVsbG8").value() == "hello");
  CHECK_FALSE(base64url_decode("a*b"));
  // RFC 4231 test case 2: 5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843.
  CHECK(base64_encode(hmac_sha256_raw("Jefe", "what do ya want for nothing?")) ==
        "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
}

}  // TEST_SUITE
