#pragma once

// Transfer: one easy handle and everything it points at (request body, header list, error
// buffer, response). CurlMulti owns it and drives its state; the Transfer only translates the
// request into curl options and curl's write/header callbacks into the user's handlers.

#include <curl/curl.h>

#include <memory>
#include <string>

#include "curl/multi.hpp"

namespace terminals::detail {

class Transfer : public std::enable_shared_from_this<Transfer> {
 public:
  enum class State {
    Pending,  // created, not yet added to the multi (added from a later iteration)
    Running,  // added to the multi
    Done,     // removed; `done` scheduled
  };

  Transfer(CurlMulti& multi, CurlRequest request, CurlStreamHandlers handlers, bool streaming);
  ~Transfer();
  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;

  /// Creates the easy handle and sets every option. An error means the request is unusable
  /// (InvalidArgument) or libcurl is out of memory.
  Status setup();

  /// The outcome once libcurl reported the transfer done with `code`.
  Result<CurlResponse> result(CURLcode code);
  /// "GET http://localhost/v1.43/info via unix:/var/run/docker.sock", for error messages.
  std::string what() const;

  CURL* easy() const noexcept { return easy_; }
  CurlMulti& multi() const noexcept { return multi_; }
  bool head_delivered() const noexcept { return head_delivered_; }

  // State CurlMulti drives.
  State state = State::Pending;
  bool cancelled = false;    // no user callback may run any more
  bool paused = false;       // the user asked for no on_data
  bool curl_paused = false;  // libcurl holds the transfer paused (needs CURLPAUSE_CONT)
  CurlStreamHandlers handlers;

 private:
  // Callback from libcurl: a piece of the response body.
  static size_t on_write(char* data, size_t size, size_t count, void* userp);
  // Callback from libcurl: one response header line (status line and blank line included).
  static size_t on_header(char* data, size_t size, size_t count, void* userp);
  void deliver_head();

  CurlMulti& multi_;
  CurlRequest request_;
  bool streaming_;
  CURL* easy_ = nullptr;
  curl_slist* header_list_ = nullptr;
  CurlResponse response_;
  std::size_t header_bytes_ = 0;
  bool head_delivered_ = false;
  bool body_too_large_ = false;
  bool headers_too_large_ = false;
  char error_buffer_[CURL_ERROR_SIZE] = {};
};

}  // namespace terminals::detail
