#pragma once

// ServerConnection: one accepted HTTP/1.1 connection, and ServerExchangeImpl, the request and
// response handed to the handler. The connection parses with HttpParser, answers requests one
// at a time in order (the parser pauses after each message), streams bodies both ways with
// backpressure and enforces the server's limits and timeouts.
//
// Ownership: the server owns its connections (an intrusive list) and frees them through
// Loop::defer_delete once they release themselves, so a connection is never freed inside one of
// its own callbacks. An exchange is shared with the handler; it points back at its connection
// only while its response is in flight and becomes an inert record afterwards.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "http/parser.hpp"
#include "terminals/loop.hpp"
#include "terminals/server.hpp"

namespace terminals::detail {

class ServerConnection;

/// What a connection needs from the server that owns it.
class ConnectionOwner {
 public:
  virtual Loop& loop() = 0;
  virtual const ServerOptions& options() const = 0;
  virtual void dispatch(ServerExchangePtr exchange) = 0;
  virtual bool shutting_down() const = 0;
  /// The connection has closed or handed its stream off: unlink it and free it later.
  virtual void release(ServerConnection* connection) = 0;

 protected:
  ~ConnectionOwner() = default;
};

class ServerExchangeImpl final : public ServerExchange {
 public:
  ServerExchangeImpl(ServerConnection& connection, Loop& loop, RequestHead&& head,
                     const std::string& peer);

  const RequestHead& request() const override { return head_; }
  const std::string& peer() const override { return peer_; }
  void read_body(BodyHandlers handlers) override;
  void pause_body() override;
  void resume_body() override;
  bool write_head(const ResponseHead& head) override;
  bool write(std::string_view data) override;
  void set_drain_handler(MoveOnlyFunction<void()> on_drain) override;
  void end(std::string_view last_data) override;
  void respond(int status, Headers headers, std::string_view body) override;
  void add_response_header(std::string name, std::string value) override {
    extra_headers_.add(std::move(name), std::move(value));
  }
  void on_abort(MoveOnlyFunction<void()> handler) override;
  bool aborted() const override { return aborted_; }
  bool ended() const override { return ended_; }
  StreamPtr take_upgrade(std::string& leftover) override;
  Loop& loop() const override { return loop_; }

 private:
  friend class ServerConnection;
  enum class Framing : std::uint8_t { None, Length, Chunked, Close };

  bool live() const noexcept { return conn_ && !ended_ && !aborted_; }
  /// Runs `on_end` with `error` from the next loop iteration (for calls that cannot be served).
  void refuse_body(BodyHandlers handlers, Error error);

  ServerConnection* conn_;  // null once the response ended or the connection went away
  Loop& loop_;
  RequestHead head_;
  std::string peer_;

  // Request body.
  BodyHandlers body_;
  std::string stash_;  // body bytes parsed while nobody was reading (at most a read's worth)
  bool reading_ = false;
  bool paused_ = false;
  bool body_done_ = false;  // on_end ran or is scheduled
  bool continue_sent_ = false;

  // Response.
  bool head_request_ = false;
  bool head_written_ = false;
  Headers extra_headers_;  // add_response_header(); merged into the head when it is written
  bool ended_ = false;
  bool aborted_ = false;
  bool abort_notified_ = false;
  Framing framing_ = Framing::None;
  std::uint64_t remaining_ = 0;  // Framing::Length: body bytes still owed
  MoveOnlyFunction<void()> on_drain_;
  std::uint32_t drain_generation_ = 0;
  MoveOnlyFunction<void()> on_abort_;
};

class ServerConnection final : private HttpParser::Listener {
 public:
  /// `counted` is false for connections accepted beyond the limit (they only get a 503).
  ServerConnection(ConnectionOwner& owner, StreamPtr stream, bool counted);
  ~ServerConnection() override;
  ServerConnection(const ServerConnection&) = delete;
  ServerConnection& operator=(const ServerConnection&) = delete;

  /// Starts reading requests.
  void start();
  /// Answers `status` without reading a request, then closes (over the connection limit).
  void reject(int status, std::string_view detail);
  /// The server is shutting down: close now if idle, otherwise after the current response.
  void begin_shutdown();
  /// Closes now; an exchange in flight is aborted with `reason`.
  void close_now(Error reason = Error(Errc::Cancelled, "the server closed the connection"));

  bool counted() const noexcept { return counted_; }

  // The server's intrusive list.
  ServerConnection* prev_ = nullptr;
  ServerConnection* next_ = nullptr;

 private:
  friend class ServerExchangeImpl;

  enum class Phase : std::uint8_t {
    Idle,     // keep-alive: waiting for the next request's first byte
    Head,     // receiving a request head (a fresh connection starts here)
    Body,     // head parsed, body still arriving (delivered, stashed or discarded)
    Done,     // request complete, response in flight (or waiting for the write queue to drain)
    Upgrade,  // an upgrade head was parsed; the parser is finished, the stream can be taken
    Closing,  // last response queued: flushing, half-closed, draining what the client sends
    Closed,
  };
  enum class Wait : std::uint8_t { None, Idle, Head, Body, Closing };

  // HttpParser::Listener (called from inside HttpParser::execute).
  void on_request_head(RequestHead&& head) override;
  void on_body(std::string_view data) override;
  void call_on_data(std::string_view data);

  void on_read(Result<std::string_view> r);
  void on_read_error(const Error& error);
  void process(std::string_view fresh);
  void on_message_end();
  void on_upgrade_head();
  void on_parse_error(const HttpParser::Outcome& outcome);
  void on_body_limit();
  void next_request();
  void continue_after_drain();
  void schedule_process();

  // Body delivery.
  void schedule_body_delivery();
  void deliver_body();
  void deliver_body_end_if_ready();

  // Response.
  bool start_response(ServerExchangeImpl& ex, int status, std::string_view reason,
                      const Headers& headers, std::optional<std::uint64_t> length,
                      bool flush_later, const Headers* extra = nullptr);
  bool write_body(ServerExchangeImpl& ex, std::string_view data, bool last);
  void response_done(ServerExchangeImpl& ex);
  bool send(std::string_view data);
  bool write_raw(std::string_view data);
  bool send_out();
  void schedule_flush();
  bool above_high() const;
  void on_drain();

  // Exchange operations.
  void read_body(ServerExchangeImpl& ex, BodyHandlers&& handlers);
  void pause_body(ServerExchangeImpl& ex);
  void resume_body(ServerExchangeImpl& ex);
  void end(ServerExchangeImpl& ex, std::string_view last);
  StreamPtr take_upgrade(ServerExchangeImpl& ex, std::string& leftover);

  // Closing and errors.
  void fail_exchange(Error error);
  void send_error_and_close(int status, std::string_view detail);
  void close_graceful();
  void on_shutdown_done();

  // Reading and timers.
  bool want_read() const;
  void update_reading();
  void refresh_wait();
  void set_wait(Wait wait, std::uint64_t deadline_ms);
  void on_timer();

  ConnectionOwner& owner_;
  Loop& loop_;
  const ServerOptions& opts_;
  StreamPtr stream_;
  HttpParser parser_;
  std::unique_ptr<Timer> timer_;
  std::shared_ptr<ServerExchangeImpl> exchange_;  // the request whose response is in flight
  std::string peer_;
  std::string buffer_;  // bytes read but not parsed yet: pipelined requests, upgrade leftover
  std::string out_;     // response bytes being assembled: a corked head, chunk framing,
                        // the answers to pipelined requests parsed from one read
  std::string reject_detail_;
  std::shared_ptr<char> alive_ = std::make_shared<char>();  // for deferred tasks that need `this`

  Phase phase_ = Phase::Head;
  Wait wait_ = Wait::None;
  std::uint64_t deadline_ = 0;   // of `wait_`, in loop milliseconds
  std::uint64_t timer_due_ = 0;  // when the timer is armed to fire, 0 if not armed
  std::uint64_t head_start_ = 0;
  std::uint64_t body_received_ = 0;
  int reject_status_ = 0;  // a limit hit while parsing: answered once execute() returns

  bool counted_;
  bool reading_ = false;            // whether we asked the stream to read
  bool processing_ = false;         // inside process(): the loop picks up the next request
  bool msg_complete_ = false;       // the current request has been read completely
  bool parser_dead_ = false;        // after an error or an upgrade: no more requests
  bool upgrade_ready_ = false;      // the parser stopped at the end of an upgrade head
  bool pending_dispatch_ = false;   // an upgrade head waits for its leftover before dispatch
  bool keep_alive_ = true;          // the request allows another one after it
  bool close_after_response_ = false;
  bool response_started_ = false;   // a response head for the current request was queued
  bool flush_scheduled_ = false;
  bool delivery_scheduled_ = false;
  bool process_scheduled_ = false;
  bool wait_drain_ = false;         // next request held back until the write queue drains
  bool shutdown_done_ = false;
  bool peer_eof_ = false;
};

}  // namespace terminals::detail
