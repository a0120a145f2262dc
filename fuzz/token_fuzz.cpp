// Credentials from clients (auth/jwt.*, auth/service_key.*, auth/authenticator.hpp): JWT
// verification, bearer token extraction, service key and user id shapes. Checked beyond
// "no crash":
//  - a token verifies only if it is the one canonical spelling of what was signed: changing any
//    one character of a token we signed makes it fail (base64url has spare bits at the end of a
//    segment; a second spelling of a valid token must not verify);
//  - a payload we sign ourselves verifies exactly when its claims say it should, and the id
//    comes back unchanged;
//  - validate_service_key, is_valid_user_id and bearer_token accept exactly what their
//    comments say.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "auth/authenticator.hpp"
#include "auth/jwt.hpp"
#include "auth/service_key.hpp"
#include "fuzz_check.hpp"
#include "json/json.hpp"
#include "util/crypto.hpp"

namespace {

using namespace terminals::detail;

constexpr std::string_view kSecret = "fuzz-secret-0123456789";
constexpr std::int64_t kNow = 1'800'000'000;

void check_verify(std::string_view token) {
  auto claims = verify_jwt_hs256(token, kSecret, kNow, 30);
  if (!claims) {
    FUZZ_CHECK(claims.error().code == terminals::Errc::PolicyDenied, "unexpected error code");
    // (Messages are fixed phrases: a short or dot-less input may happen to be one of them.)
    if (token.size() >= 8 && std::count(token.begin(), token.end(), '.') == 2) {
      FUZZ_CHECK(claims.error().message.find(token.substr(0, 64)) == std::string::npos,
                 "the error message contains the token");
    }
    return;
  }
  FUZZ_CHECK(!claims->id.empty(), "verified without an id");
  // Only canonical segments verify: each decodes and encodes back to itself.
  std::size_t start = 0;
  for (int i = 0; i < 3; ++i) {
    const std::size_t dot = token.find('.', start);
    const std::string_view seg = token.substr(start, dot == std::string_view::npos ? dot : dot - start);
    auto raw = base64url_decode(seg);
    FUZZ_CHECK(raw && base64url_encode(*raw) == seg, "segment %d '%s' of a verified token is not canonical", i,
               fuzz::printable(seg).c_str());
    start = dot + 1;
  }
}

// The input as a payload, signed by us.
void check_signed(std::string_view payload) {
  const std::string token = sign_jwt_hs256(payload, kSecret);
  auto claims = verify_jwt_hs256(token, kSecret, kNow, 0);
  bool expect = false;
  std::string id;
  const bool too_long = token.size() > kMaxJwtBytes;
  if (auto parsed = parse_json(payload); parsed && parsed->IsObject()) {
    const rapidjson::Value* doc = &*parsed;
    auto sid = json_string(*doc, "id");
    expect = sid && !sid->empty();
    if (sid) id = std::string(*sid);
    for (const char* name : {"exp", "nbf"}) {
      auto it = doc->FindMember(name);
      if (it == doc->MemberEnd()) continue;
      if (!it->value.IsNumber()) {
        expect = false;
        continue;
      }
      const double v = it->value.GetDouble();
      if (v > 9.0e15 || v < -9.0e15) {
        expect = false;
      } else if (std::string_view(name) == "exp") {
        expect = expect && static_cast<double>(kNow) < v;
      } else {
        expect = expect && static_cast<double>(kNow) >= std::floor(v);
      }
    }
    expect = expect && !too_long;
    if (claims) FUZZ_CHECK(claims->id == id, "id '%s' came back as '%s'", id.c_str(), claims->id.c_str());
  }
  if (claims.has_value() != expect) {
    // exp within a second of now is where floating point and integer readings may differ.
    bool borderline = false;
    if (auto parsed = parse_json(payload); parsed && parsed->IsObject()) {
      const rapidjson::Value* doc = &*parsed;
      for (const char* name : {"exp", "nbf"}) {
        auto it = doc->FindMember(name);
        if (it != doc->MemberEnd() && it->value.IsNumber()) {
          borderline = borderline || std::abs(it->value.GetDouble() - static_cast<double>(kNow)) <= 2.0;
        }
      }
    }
    FUZZ_CHECK(borderline, "payload %s: verify says %s", fuzz::printable(payload).c_str(),
               claims ? "valid" : claims.error().message.c_str());
  }
  if (!claims) return;
  // Any one character changed (to another base64url character) must fail.
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : payload) h = (h ^ c) * 1099511628211ull;
  static constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (std::size_t pos : {token.size() - 1, token.find('.') - 1, token.rfind('.') - 1,
                          static_cast<std::size_t>(h % token.size())}) {
    if (token[pos] == '.') continue;
    for (std::size_t k = 0; k < 4; ++k) {
      std::string bad = token;
      bad[pos] = kAlphabet[(kAlphabet.find(token[pos]) + 1 + k * 16 + (h >> 20) % 16) % kAlphabet.size()];
      if (bad == token) continue;
      FUZZ_CHECK(!verify_jwt_hs256(bad, kSecret, kNow, 0), "token changed at %zu still verifies:\n%s\n%s", pos,
                 token.c_str(), bad.c_str());
    }
  }
}

void check_shapes(std::string_view s) {
  bool visible = s.size() >= kMinServiceKeyBytes && s.size() <= 1024;
  for (char c : s) visible = visible && c > 0x20 && c < 0x7f;
  FUZZ_CHECK(static_cast<bool>(validate_service_key(s)) == visible, "validate_service_key('%s')",
             fuzz::printable(s).c_str());

  bool user = !s.empty() && s.size() <= 255;
  for (std::size_t i = 0; user && i < s.size(); ++i) {
    const char c = s[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    user = alnum || (i > 0 && std::string_view("._-@+=~").find(c) != std::string_view::npos);
  }
  FUZZ_CHECK(is_valid_user_id(s) == user, "is_valid_user_id('%s')", fuzz::printable(s).c_str());

  terminals::RequestHead head;
  head.headers.add("Authorization", std::string(s));
  if (auto t = bearer_token(head)) {
    FUZZ_CHECK(!t->empty() && s.find(*t) != std::string_view::npos, "bearer token not from the header");
    for (char c : *t) FUZZ_CHECK(c > 0x20 && c != 0x7f, "bearer token with a space or control character");
    FUZZ_CHECK(s.size() > 7 && terminals::iequals(s.substr(0, 6), "bearer"), "bearer token without the scheme");
  }
  const std::string enc = base64url_encode(s);
  auto dec = base64url_decode(enc);
  FUZZ_CHECK(dec && *dec == s, "base64url round trip");
  (void)base64url_decode(s);  // arbitrary text: an error or some bytes, never a crash
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view s = fuzz::as_view(data, size);
  check_verify(s);
  check_signed(s);
  check_shapes(s);
  return 0;
}
