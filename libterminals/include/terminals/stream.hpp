#pragma once

/// @file stream.hpp
/// `Stream`: a connected byte stream (TCP or unix socket) with write backpressure. It is what a
/// WebSocket upgrade hands over and what tunnels pipe bytes between.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "terminals/endpoint.hpp"
#include "terminals/export.hpp"
#include "terminals/function.hpp"
#include "terminals/result.hpp"

namespace terminals {

class Loop;

class TERMINALS_API Stream {
 public:
  /// Called for every chunk read (the view is valid only during the call), then once with an
  /// error: `Errc::Eof` when the peer closed cleanly, another code on failure. After the error
  /// no more calls are made.
  using ReadHandler = MoveOnlyFunction<void(Result<std::string_view>)>;

  virtual ~Stream() = default;

  /// Starts (or resumes) reading into `handler`, replacing any earlier handler.
  virtual void read_start(ReadHandler handler) = 0;
  /// Pauses reading; `read_resume()` continues with the same handler.
  virtual void read_stop() = 0;
  virtual void read_resume() = 0;

  /// Queues `data` (copied if it cannot be written at once). `done`, if given, runs once the
  /// bytes were handed to the kernel, or with an error (`Cancelled` if the stream closed first).
  /// Returns false when the queue is above the high watermark: stop producing until the drain
  /// handler runs.
  virtual bool write(std::string_view data, Callback<void> done = {}) = 0;
  /// Bytes queued and not yet written.
  virtual std::size_t write_queue_size() const = 0;
  /// Runs each time the queue falls to the low watermark after write() returned false.
  virtual void set_drain_handler(MoveOnlyFunction<void()> on_drain) = 0;
  virtual void set_watermarks(std::size_t low, std::size_t high) = 0;

  /// Half-closes the sending side once everything queued is written.
  virtual void shutdown(Callback<void> done = {}) = 0;
  /// Closes now; queued writes complete with `Cancelled`. Idempotent.
  virtual void close() = 0;
  virtual bool is_open() const = 0;

  /// "127.0.0.1:5000", "[::1]:5000" or "unix" for unix sockets.
  virtual std::string peer() const = 0;
  virtual Loop& loop() const = 0;

  /// Connects to `endpoint`; `done` gets the stream or `Timeout`, `Io`, `InvalidArgument`.
  static void connect(Loop& loop, const Endpoint& endpoint, std::chrono::milliseconds timeout,
                      Callback<std::unique_ptr<Stream>> done);
};

using StreamPtr = std::unique_ptr<Stream>;

}  // namespace terminals
