#include "curl/curl_error.hpp"

#include <curl/curl.h>

#include <string>

#include "terminals/http.hpp"

namespace terminals::detail {

Errc errc_for_curl_code(int curl_code) noexcept {
  switch (static_cast<CURLcode>(curl_code)) {
    case CURLE_OK: return Errc::Internal;  // not an error: a caller bug
    case CURLE_OPERATION_TIMEDOUT: return Errc::Timeout;
    // Nothing listens (connection refused, unix socket file missing) or the name does not
    // resolve: the engine is not reachable.
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return Errc::BackendUnavailable;
    case CURLE_FILESIZE_EXCEEDED:
    case CURLE_TOO_MANY_REDIRECTS: return Errc::LimitExceeded;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_NOT_BUILT_IN:
    case CURLE_SSL_CERTPROBLEM:     // our client certificate file is unusable
    case CURLE_SSL_CACERT_BADFILE:  // our CA file is unusable
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_CIPHER: return Errc::InvalidArgument;
    // The peer's certificate is not trusted (or does not match the host): our trust policy
    // refused it. Retrying will not help; the configuration (CA) must change.
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_LOGIN_DENIED: return Errc::PolicyDenied;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3: return Errc::UpstreamProtocol;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_FAILED_INIT: return Errc::Internal;
    case CURLE_ABORTED_BY_CALLBACK: return Errc::Cancelled;
    default: return Errc::Io;  // send/recv errors, TLS handshake failures, ...
  }
}

Error curl_error(int curl_code, std::string_view what, std::string_view detail) {
  std::string msg(what);
  msg += ": ";
  msg += curl_easy_strerror(static_cast<CURLcode>(curl_code));
  // The error buffer usually repeats the strerror text with specifics ("Failed to connect to
  // localhost port 80 after 0 ms: Connection refused"); keep it only when it adds something.
  while (!detail.empty() && (detail.back() == '\n' || detail.back() == '\r')) detail.remove_suffix(1);
  if (!detail.empty() && detail != curl_easy_strerror(static_cast<CURLcode>(curl_code))) {
    msg += ": ";
    msg += detail;
  }
  return Error(errc_for_curl_code(curl_code), std::move(msg), ErrorSource::Curl, curl_code);
}

Errc errc_for_http_status(long status) noexcept {
  switch (status) {
    case 400:
    case 422: return Errc::InvalidArgument;
    case 401:
    case 403: return Errc::PolicyDenied;
    case 404: return Errc::NotFound;
    case 408: return Errc::Timeout;
    case 409: return Errc::AlreadyExists;
    case 413:
    case 429: return Errc::LimitExceeded;
    default: break;
  }
  if (status >= 500 && status <= 599) return Errc::BackendUnavailable;
  if (status >= 400 && status <= 499) return Errc::InvalidArgument;
  return Errc::UpstreamProtocol;
}

Error http_status_error(long status, std::string_view what, std::string_view body) {
  constexpr std::size_t kMaxBodyInMessage = 512;
  std::string msg(what);
  msg += ": HTTP ";
  msg += std::to_string(status);
  msg += ' ';
  msg += status_reason(static_cast<int>(status));
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.remove_suffix(1);
  if (!body.empty()) {
    msg += ": ";
    msg += body.substr(0, kMaxBodyInMessage);
    if (body.size() > kMaxBodyInMessage) msg += "...";
  }
  return Error(errc_for_http_status(status), std::move(msg), ErrorSource::Http,
               static_cast<int>(status));
}

}  // namespace terminals::detail
