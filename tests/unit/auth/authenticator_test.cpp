#include <doctest/doctest.h>

#include <string>

#include "auth/authenticator.hpp"

using namespace terminals;
using namespace terminals::detail;

TEST_SUITE("unit") {

TEST_CASE("auth: user id validation accepts UUIDs / names / e-mails and nothing path-like") {
  CHECK(is_valid_user_id("0b6d2a4e-8c1f-4b7e-9a0e-2f8e1c7d5a93"));
  CHECK(is_valid_user_id("alice"));
  CHECK(is_valid_user_id("a"));
  CHECK(is_valid_user_id("alice.smith+test@example.com"));
  CHECK(is_valid_user_id("user_1=x~y"));
  CHECK(is_valid_user_id(std::string(255, 'a')));

  CHECK_FALSE(is_valid_user_id(""));
  CHECK_FALSE(is_valid_user_id(std::string(256, 'a')));
  CHECK_FALSE(is_valid_user_id("."));
  CHECK_FALSE(is_valid_user_id(".."));
  CHECK_FALSE(is_valid_user_id(".hidden"));
  CHECK_FALSE(is_valid_user_id("-rf"));
  CHECK_FALSE(is_valid_user_id("a/b"));
  CHECK_FALSE(is_valid_user_id("a\\b"));
  CHECK_FALSE(is_valid_user_id("../etc"));
  CHECK_FALSE(is_valid_user_id("a b"));
  CHECK_FALSE(is_valid_user_id("a:b"));
  CHECK_FALSE(is_valid_user_id("a\tb"));
  CHECK_FALSE(is_valid_user_id(std::string("a\0b", 3)));
  CHECK_FALSE(is_valid_user_id("a\x7f"));
  CHECK_FALSE(is_valid_user_id("a\r\nX-Evil: 1"));
  CHECK_FALSE(is_valid_user_id("j\xc3\xa9r\xc3\xb4me"));  // non-ASCII

  auto bad = validate_user_id("", "user_id");
  REQUIRE_FALSE(bad.has_value());
  CHECK(auth_http_status(bad.error()) == 400);
  CHECK(bad.error().message == "Invalid user_id: empty");
  CHECK(validate_user_id(std::string(300, 'a')).error().message.find("255") != std::string::npos);
}

TEST_CASE("auth: error status and WebSocket close code mapping") {
  CHECK(auth_http_status(auth_error(400, "x")) == 400);
  CHECK(auth_http_status(auth_error(401, "x")) == 401);
  CHECK(auth_http_status(auth_error(403, "x")) == 403);
  CHECK(auth_http_status(auth_error(502, "x")) == 502);
  CHECK(auth_http_status(auth_error(503, "x")) == 503);
  CHECK(auth_error(401, "x").code == Errc::PolicyDenied);
  CHECK(auth_error(403, "x").code == Errc::PolicyDenied);
  CHECK(auth_error(400, "x").code == Errc::InvalidArgument);
  CHECK(auth_error(502, "x").code == Errc::BackendUnavailable);
  // Errors from elsewhere map by code.
  CHECK(auth_http_status(Error(Errc::PolicyDenied, "x")) == 401);
  CHECK(auth_http_status(Error(Errc::InvalidArgument, "x")) == 400);
  CHECK(auth_http_status(Error(Errc::Timeout, "x")) == 502);
  CHECK(auth_http_status(Error(Errc::UpstreamProtocol, "x")) == 502);
  CHECK(auth_http_status(Error(Errc::Cancelled, "x")) == 503);
  CHECK(auth_http_status(Error(Errc::Internal, "x")) == 500);
  // A curl error's native code is not an HTTP status.
  CHECK(auth_http_status(Error(Errc::BackendUnavailable, "x", ErrorSource::Curl, 7)) == 502);

  CHECK(auth_ws_close_code(auth_error(401, "Invalid token")) == 4001);
  CHECK(auth_ws_close_code(auth_error(502, "Failed to reach Open WebUI")) == 4001);
  CHECK(auth_ws_close_code(auth_error(400, "Missing user_id")) == 4002);
  CHECK(auth_ws_close_code(auth_error(403, "mismatch")) == 4003);
  CHECK(auth_ws_close_code(auth_error(503, "busy")) == 4001);
}

TEST_CASE("auth: bearer token parsing") {
  auto parse = [](std::initializer_list<const char*> values) {
    RequestHead head;
    for (const char* v : values) head.headers.add("Authorization", v);
    auto token = bearer_token(head);  // a view into `head`: copied before it goes
    return token ? Result<std::string>(std::string(*token)) : Result<std::string>(token.error());
  };
  CHECK(parse({"Bearer abc.def"}).value() == "abc.def");
  CHECK(parse({"bearer abc"}).value() == "abc");
  CHECK(parse({"BEARER   abc  "}).value() == "abc");
  auto missing = parse({});
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().message == "Missing Authorization header");
  CHECK(auth_http_status(missing.error()) == 401);
  for (auto r : {parse({"Basic abc"}), parse({"Bearer"}), parse({"Bearer "}), parse({"Bearerabc"}),
                 parse({"Bearer a b"}), parse({"Bearer a", "Bearer b"})}) {
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().message == "Invalid Authorization header");
    CHECK(auth_http_status(r.error()) == 401);
  }
}

}  // TEST_SUITE
