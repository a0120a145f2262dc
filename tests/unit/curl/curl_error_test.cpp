#include <curl/curl.h>
#include <doctest/doctest.h>

#include "curl/curl_error.hpp"

using namespace terminals;
using terminals::detail::curl_error;
using terminals::detail::errc_for_curl_code;
using terminals::detail::errc_for_http_status;
using terminals::detail::http_status_error;

TEST_SUITE("unit") {

TEST_CASE("curl: errc_for_http_status maps Docker/Kubernetes statuses in one table") {
  struct Row {
    long status;
    Errc code;
  };
  const Row table[] = {
      {400, Errc::InvalidArgument}, {422, Errc::InvalidArgument}, {401, Errc::PolicyDenied},
      {403, Errc::PolicyDenied},    {404, Errc::NotFound},        {409, Errc::AlreadyExists},
      {408, Errc::Timeout},         {413, Errc::LimitExceeded},   {429, Errc::LimitExceeded},
      {500, Errc::BackendUnavailable}, {502, Errc::BackendUnavailable},
      {503, Errc::BackendUnavailable}, {504, Errc::BackendUnavailable},
      {599, Errc::BackendUnavailable},
      {405, Errc::InvalidArgument},  // other 4xx: the request was wrong
      {200, Errc::UpstreamProtocol},  // not an error status: a caller bug, never Internal-silent
      {302, Errc::UpstreamProtocol}, {100, Errc::UpstreamProtocol}, {0, Errc::UpstreamProtocol},
      {600, Errc::UpstreamProtocol},
  };
  for (const auto& row : table) {
    CAPTURE(row.status);
    CHECK(errc_for_http_status(row.status) == row.code);
  }
}

TEST_CASE("curl: http_status_error keeps the status and the start of the body") {
  auto e = http_status_error(404, "GET /containers/x/json", "{\"message\":\"No such container: x\"}\n");
  CHECK(e.code == Errc::NotFound);
  CHECK(e.source == ErrorSource::Http);
  CHECK(e.native == 404);
  CHECK(e.message == "GET /containers/x/json: HTTP 404 Not Found: {\"message\":\"No such container: x\"}");
  auto big = http_status_error(500, "x", std::string(10000, 'a'));
  CHECK(big.code == Errc::BackendUnavailable);
  CHECK(big.message.size() < 700);
  CHECK(big.message.ends_with("..."));
}

TEST_CASE("curl: CURLcode mapping") {
  CHECK(errc_for_curl_code(CURLE_OPERATION_TIMEDOUT) == Errc::Timeout);
  CHECK(errc_for_curl_code(CURLE_COULDNT_CONNECT) == Errc::BackendUnavailable);
  CHECK(errc_for_curl_code(CURLE_COULDNT_RESOLVE_HOST) == Errc::BackendUnavailable);
  CHECK(errc_for_curl_code(CURLE_FILESIZE_EXCEEDED) == Errc::LimitExceeded);
  CHECK(errc_for_curl_code(CURLE_URL_MALFORMAT) == Errc::InvalidArgument);
  CHECK(errc_for_curl_code(CURLE_SSL_CACERT_BADFILE) == Errc::InvalidArgument);
  CHECK(errc_for_curl_code(CURLE_PEER_FAILED_VERIFICATION) == Errc::PolicyDenied);
  CHECK(errc_for_curl_code(CURLE_GOT_NOTHING) == Errc::UpstreamProtocol);
  CHECK(errc_for_curl_code(CURLE_RECV_ERROR) == Errc::Io);
  auto e = curl_error(CURLE_COULDNT_CONNECT, "GET http://localhost/_ping",
                      "Failed to connect to localhost port 80: Connection refused\n");
  CHECK(e.source == ErrorSource::Curl);
  CHECK(e.native == CURLE_COULDNT_CONNECT);
  CHECK(e.message ==
        "GET http://localhost/_ping: Couldn't connect to server: Failed to connect to localhost "
        "port 80: Connection refused");
  // A detail that only repeats the strerror text is not printed twice.
  CHECK(curl_error(CURLE_OPERATION_TIMEDOUT, "x", "Timeout was reached").message ==
        "x: Timeout was reached");
}

}  // TEST_SUITE
