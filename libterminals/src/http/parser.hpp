#pragma once

// HttpParser: the one place llhttp is used. It turns bytes into RequestHead / ResponseHead,
// body chunks and message ends, enforces the header limits, and pauses after each message so
// that pipelined requests are answered one at a time, in order.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "terminals/http.hpp"
#include "terminals/result.hpp"

namespace terminals::detail {

class HttpParser {
 public:
  enum class Kind { Request, Response };

  struct Limits {
    std::size_t max_header_bytes = 16 * 1024;  // request/status line + header names and values
    std::size_t max_headers = 100;
  };

  /// Receives parse events. Views are valid only during the call.
  class Listener {
   public:
    virtual ~Listener() = default;
    virtual void on_request_head(RequestHead&& /*head*/) {}
    /// Return true to tell the parser the response has no body (a reply to HEAD, a 1xx, ...).
    virtual bool on_response_head(ResponseHead&& /*head*/) { return false; }
    virtual void on_body(std::string_view /*data*/) {}
    virtual void on_message_complete() {}
  };

  enum class State {
    Ok,       // all input consumed, more may come
    Paused,   // a message completed; `consumed` bytes were used, call resume() and feed the rest
    Upgrade,  // an upgrade/CONNECT head completed; bytes after `consumed` belong to the tunnel
    Error,    // malformed input or a limit: see `error` and `http_status` (400 or 431)
  };

  struct Outcome {
    State state = State::Ok;
    std::size_t consumed = 0;
    int http_status = 0;  // for State::Error on a request parser: the status to answer with
    Error error;
  };

  HttpParser(Kind kind, Limits limits, Listener& listener);
  ~HttpParser();
  HttpParser(const HttpParser&) = delete;
  HttpParser& operator=(const HttpParser&) = delete;

  /// Feeds bytes. Never call again after Error or Upgrade.
  Outcome execute(std::string_view data);
  /// Continues after State::Paused.
  void resume();
  /// Signals EOF: completes a response whose body runs to the end of the connection.
  /// Returns an error if the message was cut short.
  Status finish();
  /// True while a message has started (bytes were seen) but not completed.
  bool in_message() const noexcept;
  /// Whether the connection may carry another message after the current one.
  bool should_keep_alive() const noexcept;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace terminals::detail
