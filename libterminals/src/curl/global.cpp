#include "curl/global.hpp"

#include <curl/curl.h>

#include <mutex>

#include "curl/curl_error.hpp"

namespace terminals::detail {

Status curl_global_init_once() {
  static std::once_flag once;
  static CURLcode rc = CURLE_OK;
  std::call_once(once, [] { rc = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (rc != CURLE_OK) return curl_error(rc, "initialise libcurl (curl_global_init)", {});
  return {};
}

}  // namespace terminals::detail
