#pragma once

// UvStream: Stream over a libuv TCP or pipe handle, and the listener that produces them.

#include <uv.h>

#include <memory>
#include <string>

#include "terminals/endpoint.hpp"
#include "terminals/loop.hpp"
#include "terminals/stream.hpp"
#include "uv/handle.hpp"

namespace terminals::detail {

union StreamStorage {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
};

class UvStream final : public Stream {
 public:
  /// Takes an initialised, connected handle.
  UvStream(Loop& loop, std::unique_ptr<UvHandle<StreamStorage>> handle, std::string peer);
  ~UvStream() override;

  void read_start(ReadHandler handler) override;
  void read_stop() override;
  void read_resume() override;
  bool write(std::string_view data, Callback<void> done) override;
  std::size_t write_queue_size() const override;
  void set_drain_handler(MoveOnlyFunction<void()> on_drain) override;
  void set_watermarks(std::size_t low, std::size_t high) override;
  void shutdown(Callback<void> done) override;
  void close() override;
  bool is_open() const override { return handle_ != nullptr; }
  std::string peer() const override { return peer_; }
  Loop& loop() const override { return loop_; }

 private:
  struct WriteReq;
  void on_read(ssize_t nread, const uv_buf_t* buf);
  void on_written(std::size_t bytes);
  void fail_reading(Error error);

  Loop& loop_;
  std::unique_ptr<UvHandle<StreamStorage>> handle_;
  std::string peer_;
  ReadHandler read_handler_;
  MoveOnlyFunction<void()> drain_handler_;
  std::size_t queued_ = 0;
  std::size_t low_watermark_ = 64 * 1024;
  std::size_t high_watermark_ = 256 * 1024;
  bool above_high_ = false;
  bool reading_ = false;
  bool read_done_ = false;  // EOF or error delivered
  std::shared_ptr<char> alive_ = std::make_shared<char>();  // for deferred tasks that need `this`
};

/// Accepts connections on an endpoint. `on_accept` gets each new stream (or an accept error).
class Listener {
 public:
  using AcceptHandler = MoveOnlyFunction<void(Result<StreamPtr>)>;
  struct Options {
    int backlog = SOMAXCONN;
    int unix_mode = 0600;
  };

  static Result<std::unique_ptr<Listener>> create(Loop& loop, const Endpoint& endpoint,
                                                  Options options, AcceptHandler on_accept);
  ~Listener();
  Endpoint local_endpoint() const { return bound_; }
  /// Stops accepting (the socket is closed; a unix socket file is removed).
  void close();

 private:
  Listener(Loop& loop, AcceptHandler on_accept) : loop_(loop), on_accept_(std::move(on_accept)) {}
  void on_connection(int status);

  Loop& loop_;
  AcceptHandler on_accept_;
  std::unique_ptr<UvHandle<StreamStorage>> handle_;
  Endpoint bound_;
  bool is_unix_ = false;
};

/// "127.0.0.1:5000" / "[::1]:5000" for a TCP handle's peer.
std::string tcp_peer_name(const uv_tcp_t* tcp);

}  // namespace terminals::detail
