// The terminal WebSocket at /api/terminals/{id} (open-terminal-api.md §4.6): one socket drives
// one PtySessions session.
//
// Protocol, as the reference speaks it:
// * Handshake: a request without a usable Sec-WebSocket-Key or with a version other than 13
//   gets 400. An unknown or dead session gets a plain HTTP 403 before any upgrade: the
//   reference closes with 4004 before accepting, which Starlette turns into exactly that 403,
//   so clients cannot tell the two apart.
// * The first message must be a TEXT frame {"type":"auth","token":KEY} within 10 s; the key is
//   compared in constant time. A wrong key closes with 4001 "Invalid API key", anything else
//   (timeout, binary, not JSON, another type) with 4001 "Auth timeout or invalid payload".
//   Nothing is sent on success. With no_auth the auth message is still required (clients send
//   it anyway) but its token is not checked.
// * Then binary frames are typed into the terminal; text frames are JSON where only
//   {"type":"resize","cols","rows"} (defaults 80x24) acts and everything else, typed text and
//   {"type":"ping"} included, is ignored. Output goes out as binary frames.
// * The session ends when the socket does (client close, disconnect, protocol error): the
//   reference kills it on disconnect and a session cannot be reattached.
//
// Deliberate differences:
// * When the shell exits, the socket is closed with 1000 once its last output was sent; the
//   reference stops reading and leaves the socket open until the client closes it.
// * A failed auth leaves the session alone: an unauthenticated client must not be able to end
//   someone's terminal. Only a socket that attached ends its session.
// * A second socket for a session that already has one is closed with 4003 after its auth.
// * Messages over 1 MiB close with 1009, unmasked client frames with 1002.
// * Input past PtySessions' 1 MiB backlog for a program that does not read is dropped, as a
//   full tty input queue drops it.
//
// Lifetime: the sockets live in a TerminalSockets registry owned by AgentState, which the agent
// resets before its PtySessions; destroying the registry closes every connection. A socket that
// ends leaves the registry through a deferred task, never inside its own callback. PtySessions
// handlers hold only a weak reference to the socket.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "agent/agent_internal.hpp"
#include "http/websocket.hpp"
#include "json/json.hpp"
#include "terminals/stream.hpp"
#include "util/crypto.hpp"

namespace terminals::detail {

namespace {

constexpr std::chrono::milliseconds kAuthTimeout{10'000};
// After our close frame (or our reply to the client's), how long the client gets to close the
// connection before we do.
constexpr std::chrono::milliseconds kCloseLinger{2'000};
constexpr std::size_t kMaxMessage = 1u << 20;
// Sockets open at once, most of them waiting for auth at worst: each costs a connection and a
// 1 MiB message buffer for up to kAuthTimeout before it has proven anything.
constexpr std::size_t kMaxSockets = 256;
// Output backpressure: past the high mark the PTY is no longer read until the queue drains.
constexpr std::size_t kWriteLow = 64 * 1024;
constexpr std::size_t kWriteHigh = 256 * 1024;

constexpr std::string_view kInvalidKey = "Invalid API key";
constexpr std::string_view kBadAuth = "Auth timeout or invalid payload";

void send_terminal_error(ServerExchange& ex, int status, std::string_view message,
                         Headers extra = {}) {
  extra.add("Content-Type", "application/json");
  ex.respond(status, std::move(extra),
             JsonWriter().object().field("error", message).end_object().take());
}

// RFC 6455 §4.2.1: the key is 16 random bytes in base64, which is always 24 characters.
bool valid_key(std::string_view key) {
  if (key.size() != 24 || !key.ends_with("==")) return false;
  for (char c : key.substr(0, 22)) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

class TerminalSocket;

/// The open terminal sockets of one agent.
class TerminalSockets {
 public:
  explicit TerminalSockets(Loop& loop) : loop_(loop) {}
  ~TerminalSockets();
  TerminalSockets(const TerminalSockets&) = delete;
  TerminalSockets& operator=(const TerminalSockets&) = delete;

  void add(std::shared_ptr<TerminalSocket> socket);
  /// Drops `socket` in the next iteration (it may be inside its own callback now).
  void release(TerminalSocket* socket);
  Loop& loop() { return loop_; }
  std::size_t size() const { return open_.size(); }

 private:
  Loop& loop_;
  std::map<TerminalSocket*, std::shared_ptr<TerminalSocket>> open_;
};

class TerminalSocket : public std::enable_shared_from_this<TerminalSocket> {
 public:
  TerminalSocket(AgentState& state, TerminalSockets& owner, StreamPtr stream, std::string id)
      : state_(state),
        owner_(owner),
        stream_(std::move(stream)),
        id_(std::move(id)),
        reader_(kMaxMessage, /*require_mask=*/true),
        timer_(owner.loop().create_timer([this] { on_timer(); })) {}

  // Closes the connection (the stream's destructor). Touches neither the state nor the
  // sessions: by now the agent may be tearing them down.
  ~TerminalSocket() = default;

  void start(std::string_view leftover) {
    stream_->set_watermarks(kWriteLow, kWriteHigh);
    stream_->set_drain_handler([this] { on_drain(); });
    stream_->read_start([this](Result<std::string_view> r) { on_read(std::move(r)); });
    timer_->start(kAuthTimeout);
    if (!leftover.empty()) on_bytes(leftover);
  }

 private:
  enum class Phase { Auth, Attached, Closing, Done };

  void on_read(Result<std::string_view> r) {
    if (phase_ == Phase::Done) return;
    if (!r) {
      // The client went away (or the connection broke): the session goes with it.
      end_session();
      finish();
      return;
    }
    on_bytes(*r);
  }

  void on_bytes(std::string_view bytes) {
    reader_.feed(bytes);
    while (phase_ != Phase::Done) {
      auto next = reader_.next();
      if (!next) {
        if (phase_ == Phase::Closing) {
          // Past our close frame only the client's reply mattered; it cannot be found after
          // garbage, so wait for the client to close (or for the linger timer).
          (void)reader_.take_remaining();
          return;
        }
        const bool too_big = next.error().code == Errc::LimitExceeded;
        return close(too_big ? kWsCloseTooBig : kWsCloseProtocolError,
                     too_big ? "Message too big" : "Protocol error");
      }
      if (!next->has_value()) return;
      on_message(std::move(**next));
    }
  }

  void on_message(WsMessageReader::Message m) {
    if (m.opcode == WsOpcode::Close) {
      if (phase_ == Phase::Closing) return finish();  // the reply to our close
      // Echo the client's code, as RFC 6455 §5.5.1 suggests.
      std::string payload = m.data.size() >= 2 ? m.data.substr(0, 2) : std::string();
      return close_with_payload(std::move(payload));
    }
    if (phase_ == Phase::Closing) return;  // data after our close frame is discarded
    if (m.opcode == WsOpcode::Ping) {
      send_frame(WsOpcode::Pong, m.data);
      return;
    }
    if (m.opcode == WsOpcode::Pong) return;
    if (phase_ == Phase::Auth) return on_auth(m);
    if (m.opcode == WsOpcode::Binary) {
      // Errors: the session is gone (its on_exit closes us), the terminal is closing, or 1 MiB
      // of input is already waiting for a program that does not read (dropped, see above).
      (void)state_.terminals->write(id_, m.data, serial_);
      return;
    }
    on_control(m.data);
  }

  void on_auth(const WsMessageReader::Message& m) {
    bool is_auth = false;
    std::optional<std::string_view> token;
    auto doc = parse_json(m.opcode == WsOpcode::Text ? std::string_view(m.data) : "");
    if (doc && doc->IsObject() && json_string(*doc, "type") == "auth") {
      is_auth = true;
      token = json_string(*doc, "token");
    }
    if (!is_auth || (!token && !state_.no_auth)) return close(kWsCloseAuthFailed, kBadAuth);
    if (!state_.no_auth && !constant_time_equals(*token, state_.api_key)) {
      return close(kWsCloseAuthFailed, kInvalidKey);
    }
    timer_->stop();
    if (!state_.terminals) return close(kWsCloseNotFound, "Session not found");
    std::weak_ptr<TerminalSocket> self = weak_from_this();
    SessionHandlers handlers;
    handlers.on_output = [self](std::string_view bytes) {
      if (auto s = self.lock()) s->on_output(bytes);
    };
    handlers.on_exit = [self](std::optional<int> code) {
      if (auto s = self.lock()) s->on_exit(code);
    };
    auto attached = state_.terminals->attach(id_, std::move(handlers));
    if (!attached) {
      // The shell exited since the handshake, or another socket drives this session.
      return attached.error().code == Errc::AlreadyExists
                 ? close(kWsCloseForbidden, "Session already has a connection")
                 : close(kWsCloseNotFound, "Session not found");
    }
    serial_ = *attached;
    phase_ = Phase::Attached;
  }

  // A text frame after auth: only resize acts; anything else (typed text, pings) is ignored.
  void on_control(std::string_view text) {
    auto doc = parse_json(text);
    if (!doc || !doc->IsObject() || json_string(*doc, "type") != "resize") return;
    const std::int64_t cols = json_int(*doc, "cols").value_or(80);
    const std::int64_t rows = json_int(*doc, "rows").value_or(24);
    if (cols < 1 || rows < 1 || cols > 10000 || rows > 10000) return;
    (void)state_.terminals->resize(id_, static_cast<std::uint16_t>(cols),
                                   static_cast<std::uint16_t>(rows), serial_);
  }

  void on_output(std::string_view bytes) {
    if (phase_ != Phase::Attached) return;
    if (!send_frame(WsOpcode::Binary, bytes) && !paused_) {
      paused_ = true;
      (void)state_.terminals->pause(id_, serial_);
    }
  }

  void on_drain() {
    if (!paused_ || phase_ != Phase::Attached) return;
    paused_ = false;
    (void)state_.terminals->resume(id_, serial_);
  }

  // The shell exited (its output was delivered before this) or another create replaced the
  // session. Either way the session is gone already.
  void on_exit(std::optional<int> code) {
    if (phase_ != Phase::Attached) return;
    phase_ = Phase::Closing;  // not attached any more: nothing to end
    close(kWsCloseNormal, code ? "Shell exited" : "Session replaced");
  }

  void on_timer() {
    if (phase_ == Phase::Auth) return close(kWsCloseAuthFailed, kBadAuth);
    finish();  // the client did not close after our close frame
  }

  bool send_frame(WsOpcode opcode, std::string_view payload) {
    return stream_->write(ws_encode_frame(opcode, payload));
  }

  // Ends the PTY session if this socket drives it.
  void end_session() {
    if (phase_ != Phase::Attached) return;
    phase_ = Phase::Closing;
    if (state_.terminals) (void)state_.terminals->destroy(id_, serial_);
  }

  void close(std::uint16_t code, std::string_view reason) {
    close_with_payload(ws_close_payload(code, reason));
  }

  // Sends a close frame, half-closes once it is written and waits (a while) for the client to
  // close the connection.
  void close_with_payload(std::string payload) {
    if (phase_ == Phase::Done || close_sent_) return;
    end_session();
    phase_ = Phase::Closing;
    close_sent_ = true;
    send_frame(WsOpcode::Close, payload);
    stream_->shutdown();
    timer_->start(kCloseLinger);
  }

  void finish() {
    if (phase_ == Phase::Done) return;
    end_session();
    phase_ = Phase::Done;
    timer_->stop();
    stream_->close();
    owner_.release(this);
  }

  AgentState& state_;
  TerminalSockets& owner_;
  StreamPtr stream_;
  std::string id_;
  WsMessageReader reader_;
  std::unique_ptr<Timer> timer_;
  Phase phase_ = Phase::Auth;
  std::uint64_t serial_ = 0;
  bool paused_ = false;
  bool close_sent_ = false;
};

TerminalSockets::~TerminalSockets() = default;

void TerminalSockets::add(std::shared_ptr<TerminalSocket> socket) {
  TerminalSocket* key = socket.get();
  open_.emplace(key, std::move(socket));
}

void TerminalSockets::release(TerminalSocket* socket) {
  auto it = open_.find(socket);
  if (it == open_.end()) return;
  loop_.defer([held = std::move(it->second)] {});
  open_.erase(it);
}

void handle_terminal_upgrade(const std::shared_ptr<AgentState>& state, ServerExchangePtr exchange,
                             std::string session_id) {
  const Headers& headers = exchange->request().headers;
  if (!headers.has_token("Upgrade", "websocket")) {
    return send_terminal_error(*exchange, 400, "Expected a WebSocket upgrade");
  }
  if (headers.get("Sec-WebSocket-Version") != std::optional<std::string_view>("13")) {
    return send_terminal_error(*exchange, 400, "Unsupported WebSocket version",
                               Headers{{"Sec-WebSocket-Version", "13"}});
  }
  auto key = headers.get("Sec-WebSocket-Key");
  if (!key || !valid_key(*key)) {
    return send_terminal_error(*exchange, 400, "Missing or malformed Sec-WebSocket-Key");
  }
  // The reference closes with 4004 before accepting, which its clients see as this 403.
  if (!state->terminals || !state->terminals->get(session_id)) {
    return send_terminal_error(*exchange, 403, "Session not found");
  }
  if (state->terminal_sockets && state->terminal_sockets->size() >= kMaxSockets) {
    return send_terminal_error(*exchange, 503, "Too many terminal connections");
  }
  const std::string accept = websocket_accept_key(*key);
  std::string leftover;
  StreamPtr stream = exchange->take_upgrade(leftover);
  if (!stream) return;  // the client left, or the exchange already answered
  stream->write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n");
  if (!state->terminal_sockets) {
    state->terminal_sockets = std::make_shared<TerminalSockets>(*state->loop);
  }
  auto socket = std::make_shared<TerminalSocket>(*state, *state->terminal_sockets,
                                                 std::move(stream), std::move(session_id));
  state->terminal_sockets->add(socket);
  socket->start(leftover);
}

}  // namespace terminals::detail
