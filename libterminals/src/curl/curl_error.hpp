#pragma once

// Error mapping for the curl layer: CURLcode → Errc, and the one table that turns HTTP statuses
// from the Docker Engine and Kubernetes APIs into Errc. Kept free of libcurl types in the
// signatures that callers (backends, unit tests) use, so they need not include curl.h.

#include <string_view>

#include "terminals/result.hpp"

namespace terminals::detail {

/// The Errc a CURLcode means to callers: Timeout, BackendUnavailable (could not connect or
/// resolve, unix socket missing), LimitExceeded, InvalidArgument (bad URL, bad TLS files),
/// PolicyDenied (peer certificate not trusted), UpstreamProtocol, Io, Internal.
Errc errc_for_curl_code(int curl_code) noexcept;

/// An Error for a failed transfer: "`what`: <curl_easy_strerror>: <error buffer>", with
/// source Curl and native = the CURLcode. `detail` is CURLOPT_ERRORBUFFER's text (may be empty).
Error curl_error(int curl_code, std::string_view what, std::string_view detail);

/// The Errc an HTTP error status means: 404 NotFound, 409 AlreadyExists, 401/403 PolicyDenied,
/// 400/422 InvalidArgument, 408 Timeout, 413/429 LimitExceeded, 5xx BackendUnavailable; other
/// 4xx InvalidArgument; anything else (a 1xx/2xx/3xx passed by mistake) UpstreamProtocol.
Errc errc_for_http_status(long status) noexcept;

/// An Error for an HTTP error response: "`what`: HTTP 404 Not Found: <start of body>", with
/// source Http and native = the status. The body (Docker and Kubernetes put a JSON message
/// there) is cut to a few hundred bytes.
Error http_status_error(long status, std::string_view what, std::string_view body);

}  // namespace terminals::detail
