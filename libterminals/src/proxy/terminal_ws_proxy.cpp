// The WebSocket half of the terminal proxy (see terminal_proxy.hpp for the contract).
//
// Differences from the reference (§3.4, weak point 13): close codes pass through both ways (we
// copy bytes, not messages); when one side ends the other is told at once and the tunnel ends
// within a short linger instead of lingering until the other side happens to send; traffic
// counts as activity, so an interactive-only terminal is not reaped mid-session; no message
// size limit is imposed on the tunnel (the agent has its own).
//
// Lifetime: tunnels live in ProxyShared::tunnels; one that ends leaves through a deferred task,
// never inside its own callback. Stream and timer callbacks hold weak references.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "http/websocket.hpp"
#include "json/json.hpp"
#include "proxy/proxy_internal.hpp"
#include "proxy/ws_frame_tracker.hpp"
#include "terminals/log.hpp"
#include "terminals/stream.hpp"
#include "util/crypto.hpp"

namespace terminals::detail {

namespace {

constexpr std::chrono::milliseconds kAuthTimeout{10'000};
constexpr std::size_t kMaxAuthMessage = 64 * 1024;
// The token check or terminal resolution (which may start the terminal) gets this long.
constexpr std::chrono::milliseconds kResolveTimeout{180'000};
// Client bytes kept while the agent is not connected yet; beyond, reading pauses.
constexpr std::size_t kMaxPending = 1u << 20;
constexpr std::size_t kMaxAgentHead = 16 * 1024;
// After a close frame or one side's end, how long the other side gets to finish.
constexpr std::chrono::milliseconds kLinger{2'000};
constexpr std::chrono::milliseconds kRetryInterval{100};
constexpr std::size_t kWriteLow = 64 * 1024;
constexpr std::size_t kWriteHigh = 256 * 1024;

constexpr std::uint16_t kWsCloseGoingAway = 1001;
constexpr std::uint16_t kWsCloseInternal = 1011;
constexpr std::uint16_t kWsCloseBadGateway = 1014;

// RFC 6455 §4.2.1: 16 random bytes in base64 are always 24 characters.
bool valid_client_key(std::string_view key) {
  if (key.size() != 24 || !key.ends_with("==")) return false;
  return std::all_of(key.begin(), key.end() - 2, [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
  });
}

void send_error(ServerExchange& ex, int status, std::string_view message, Headers extra = {}) {
  extra.add("Content-Type", "application/json");
  ex.respond(status, std::move(extra), JsonWriter().object().field("error", message).end_object().take());
}

std::string hex_to_raw(std::string_view hex) {
  std::string out;
  auto nibble = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>((nibble(hex[i]) << 4) | nibble(hex[i + 1])));
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

class WsTunnel : public std::enable_shared_from_this<WsTunnel> {
 public:
  WsTunnel(ProxyShared& shared, StreamPtr client, const ProxyTarget& target,
           TerminalProxy::WsOptions options)
      : shared_(shared),
        client_(std::move(client)),
        endpoint_(target.endpoint),
        api_key_(target.api_key),
        upstream_target_(std::move(options.upstream_target)),
        retry_for_(options.retry_connect_for),
        activity_(std::move(options.on_activity)),
        on_open_(std::move(options.on_open)),
        on_close_(std::move(options.on_close)),
        on_unreachable_(std::move(options.on_unreachable)),
        check_(std::move(options.check_client_token)),
        resolve_(std::move(options.resolve_target)),
        reader_(kMaxAuthMessage, /*require_mask=*/true) {}

  // Closes both connections (the streams' destructors); touches nothing shared.
  ~WsTunnel() = default;

  void start(std::string_view leftover) {
    std::weak_ptr<WsTunnel> weak = weak_from_this();
    timer_ = shared_.loop.create_timer([weak] {
      if (auto self = weak.lock()) self->on_timer();
    });
    timer_->start(kAuthTimeout);
    client_->set_watermarks(kWriteLow, kWriteHigh);
    client_->set_drain_handler([weak] {
      if (auto self = weak.lock(); self && self->phase_ == Phase::Open) self->agent_->read_resume();
    });
    client_->read_start([weak](Result<std::string_view> r) {
      if (auto self = weak.lock()) self->on_client_read(std::move(r));
    });
    if (!leftover.empty()) on_auth_bytes(leftover);
  }

  /// The proxy is going away.
  void abort() { finish(); }

 private:
  enum class Phase { Auth, Checking, Connecting, Open, Closing, Done };

  // ---- client side

  void on_client_read(Result<std::string_view> r) {
    if (phase_ == Phase::Done) return;
    if (!r) {
      if (phase_ != Phase::Open) return finish();
      client_eof_ = true;
      agent_->shutdown();  // the agent ends the session when its socket does
      return agent_eof_ ? finish() : linger();
    }
    switch (phase_) {
      case Phase::Auth: return on_auth_bytes(*r);
      case Phase::Checking:
      case Phase::Connecting:
        // Kept for the agent; reading goes on meanwhile so that a client that leaves is seen.
        pending_.append(*r);
        if (pending_.size() > kMaxPending) client_->read_stop();
        return;
      case Phase::Open: return to_agent(*r);
      case Phase::Closing:
        client_frames_.feed(*r);
        if (client_frames_.close_seen()) finish();  // the client's answer to our close frame
        return;
      case Phase::Done: return;
    }
  }

  void on_auth_bytes(std::string_view bytes) {
    reader_.feed(bytes);
    while (phase_ == Phase::Auth) {
      auto next = reader_.next();
      if (!next) {
        const bool too_big = next.error().code == Errc::LimitExceeded;
        return close_client(kWsCloseAuthFailed, too_big ? "Auth message too large" : "Auth failed");
      }
      if (!next->has_value()) return;
      WsMessageReader::Message m = std::move(**next);
      switch (m.opcode) {
        case WsOpcode::Ping:
          client_->write(ws_encode_frame(WsOpcode::Pong, m.data));
          continue;
        case WsOpcode::Pong: continue;
        case WsOpcode::Close:
          client_frames_ = WsFrameTracker();
          return close_client_payload(m.data.size() >= 2 ? m.data.substr(0, 2) : std::string(), true);
        case WsOpcode::Text: return on_auth_message(m.data);
        default: return close_client(kWsCloseAuthFailed, "Auth failed");
      }
    }
  }

  void on_auth_message(std::string_view text) {
    auto doc = parse_json(text);
    if (!doc) return close_client(kWsCloseAuthFailed, "Auth timeout or invalid payload");
    if (!doc->IsObject()) return close_client(kWsCloseAuthFailed, "Auth failed");
    if (json_string(*doc, "type") != std::optional<std::string_view>("auth")) {
      return close_client(kWsCloseAuthFailed, "Expected auth message");
    }
    auto token = json_string(*doc, "token");
    if (!token || (!check_ && !resolve_)) return close_client(kWsCloseAuthFailed, "Invalid token");
    // Frames after the auth message go to the agent as they are, once it is connected.
    pending_ = reader_.take_remaining();
    if (pending_.size() > kMaxPending) client_->read_stop();
    phase_ = Phase::Checking;
    // Resolving may provision the terminal, which takes longer than the auth message may.
    timer_->start(kResolveTimeout);
    std::weak_ptr<WsTunnel> weak = weak_from_this();
    Loop& loop = shared_.loop;
    if (resolve_) {
      resolve_(std::string(*token), [weak, &loop](Result<ProxyTarget> target) {
        loop.defer([weak, target = std::move(target)]() mutable {
          if (auto self = weak.lock()) self->on_resolved(std::move(target));
        });
      });
      return;
    }
    check_(std::string(*token), [weak, &loop](bool ok) {
      // Whether the checker answers now or later, we continue from a fresh iteration.
      loop.defer([weak, ok] {
        if (auto self = weak.lock()) self->on_checked(ok);
      });
    });
  }

  void on_resolved(Result<ProxyTarget> target) {
    if (phase_ != Phase::Checking) return;
    if (!target) {
      const Error& e = target.error();
      const int n = e.native;
      const bool usable = (n >= 4000 && n <= 4999) || (n >= 1000 && n <= 1014 && n != 1004 &&
                                                       n != 1005 && n != 1006);
      return close_client(usable ? static_cast<std::uint16_t>(n) : kWsCloseForbidden, e.message);
    }
    endpoint_ = target->endpoint;
    api_key_ = std::move(target->api_key);
    on_checked(true);
  }

  void on_checked(bool ok) {
    if (phase_ != Phase::Checking) return;
    if (!ok) return close_client(kWsCloseAuthFailed, "Invalid token");
    phase_ = Phase::Connecting;
    timer_->stop();
    retry_deadline_ = shared_.loop.now_ms() + static_cast<std::uint64_t>(retry_for_.count());
    connect();
  }

  // ---- agent side

  void connect() {
    std::weak_ptr<WsTunnel> weak = weak_from_this();
    Stream::connect(shared_.loop, endpoint_, shared_.options.connect_timeout,
                    [weak](Result<StreamPtr> r) {
                      if (auto self = weak.lock()) self->on_connected(std::move(r));
                    });
  }

  void on_connected(Result<StreamPtr> r) {
    if (phase_ != Phase::Connecting) return;  // the stream, if any, closes with `r`
    if (!r) {
      const Error& e = r.error();
      if (is_refused_connect(e) && retry_for_.count() > 0) {
        const std::uint64_t now = shared_.loop.now_ms();
        if (now < retry_deadline_) {
          timer_->start(std::min(kRetryInterval, std::chrono::milliseconds(retry_deadline_ - now)));
          return;
        }
      }
      log(LogLevel::Warning, "proxy",
          "terminal socket: connecting to the agent (" + endpoint_kind(endpoint_) + ") failed: " + e.message);
      if (is_refused_connect(e) && on_unreachable_) {
        auto notify = std::move(on_unreachable_);
        on_unreachable_ = nullptr;
        notify();
      }
      return close_client(kWsCloseBadGateway, e.code == Errc::Timeout ? "Terminal connect timed out"
                                                                      : "Terminal unreachable");
    }
    agent_ = std::move(r).value();
    auto key_hex = random_hex(16);
    if (!key_hex) return close_client(kWsCloseInternal, "Internal error");
    const std::string key = base64_encode(hex_to_raw(*key_hex));
    expected_accept_ = websocket_accept_key(key);
    std::string host = endpoint_.kind == Endpoint::Kind::Unix
                           ? std::string("localhost")
                           : (endpoint_.host.find(':') != std::string::npos ? "[" + endpoint_.host + "]"
                                                                             : endpoint_.host) +
                                 ":" + std::to_string(endpoint_.port);
    agent_->set_watermarks(kWriteLow, kWriteHigh);
    std::weak_ptr<WsTunnel> weak = weak_from_this();
    agent_->set_drain_handler([weak] {
      if (auto self = weak.lock(); self && self->phase_ == Phase::Open) self->client_->read_resume();
    });
    agent_->read_start([weak](Result<std::string_view> rr) {
      if (auto self = weak.lock()) self->on_agent_read(std::move(rr));
    });
    agent_->write("GET " + upstream_target_ + " HTTP/1.1\r\nHost: " + host +
                  "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
                  "\r\nSec-WebSocket-Version: 13\r\n\r\n");
    timer_->start(shared_.options.connect_timeout);  // for the handshake's answer
  }

  void on_agent_read(Result<std::string_view> r) {
    if (phase_ == Phase::Done) return;
    if (!r) {
      if (phase_ == Phase::Connecting) {
        return close_client(kWsCloseBadGateway, "Terminal closed the connection during the handshake");
      }
      if (phase_ != Phase::Open) return;
      agent_eof_ = true;
      if (!agent_frames_.close_seen()) {
        // Gone without a close frame: tell the client why, where a frame may begin.
        if (!agent_frames_.at_boundary()) return finish();
        client_->write(ws_encode_frame(WsOpcode::Close,
                                       ws_close_payload(kWsCloseInternal, "Terminal connection lost")));
      }
      client_->shutdown();
      return client_eof_ ? finish() : linger();
    }
    if (phase_ == Phase::Connecting) return on_handshake_bytes(*r);
    if (phase_ == Phase::Open) to_client(*r);
  }

  void on_handshake_bytes(std::string_view bytes) {
    head_.append(bytes);
    const auto end = head_.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (head_.size() > kMaxAgentHead) return close_client(kWsCloseBadGateway, "Terminal handshake failed");
      return;
    }
    std::string_view head(head_.data(), end);
    int status = 0;
    if (head.size() >= 12 && head.starts_with("HTTP/1.")) {
      for (char c : head.substr(9, 3)) status = c >= '0' && c <= '9' ? status * 10 + (c - '0') : -1000;
    }
    std::optional<std::string_view> accept;
    std::size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos && pos < head.size()) {
      const std::size_t start = pos + 2;
      const std::size_t stop = std::min(head.find("\r\n", start), head.size());
      std::string_view line = head.substr(start, stop - start);
      const auto colon = line.find(':');
      if (colon != std::string_view::npos && iequals(trim(line.substr(0, colon)), "sec-websocket-accept")) {
        accept = trim(line.substr(colon + 1));
      }
      pos = stop < head.size() ? stop : std::string_view::npos;
    }
    if (status != 101) {
      log(LogLevel::Warning, "proxy", "terminal socket: the agent answered the handshake with " +
                                          std::to_string(status));
      // The agent answers an unknown session with 403 before upgrading.
      if (status == 403 || status == 404) return close_client(kWsCloseNotFound, "Session not found");
      return close_client(kWsCloseBadGateway, "Terminal rejected the connection");
    }
    if (accept != std::optional<std::string_view>(expected_accept_)) {
      return close_client(kWsCloseBadGateway, "Terminal handshake failed");
    }
    std::string leftover = head_.substr(end + 4);
    head_.clear();
    head_.shrink_to_fit();
    open(leftover);
  }

  void open(std::string_view leftover) {
    phase_ = Phase::Open;
    timer_->start(shared_.options.idle_timeout);
    opened_ = true;
    if (on_open_) on_open_();
    if (phase_ != Phase::Open) return;
    std::uint32_t mask = 0;
    if (auto m = random_hex(4)) {
      for (char c : hex_to_raw(*m)) mask = (mask << 8) | static_cast<unsigned char>(c);
    }
    // The only frame we make for the agent: the auth message, with the terminal's key.
    agent_->write(ws_encode_frame(
        WsOpcode::Text,
        JsonWriter().object().field("type", "auth").field("token", api_key_).end_object().take(),
        true, mask));
    // Resumed first, so that a full agent queue after the pending bytes stops it again.
    client_->read_resume();
    std::string pending = std::exchange(pending_, {});
    if (!pending.empty()) to_agent(pending);
    if (!leftover.empty()) to_client(leftover);
  }

  // ---- the tunnel

  void to_agent(std::string_view bytes) {
    touch();
    if (!agent_->write(bytes)) client_->read_stop();  // resumed by the agent's drain
  }

  void to_client(std::string_view bytes) {
    touch();
    agent_frames_.feed(bytes);
    if (!client_->write(bytes)) agent_->read_stop();  // resumed by the client's drain
  }

  void touch() {
    if (!lingering_) timer_->start(shared_.options.idle_timeout);
    activity_.ping(shared_.loop);
  }

  void linger() {
    if (lingering_) return;
    lingering_ = true;
    timer_->start(kLinger);
  }

  void on_timer() {
    switch (phase_) {
      case Phase::Auth: return close_client(kWsCloseAuthFailed, "Auth timeout or invalid payload");
      case Phase::Checking: return close_client(kWsCloseInternal, "Timed out resolving the terminal");
      case Phase::Connecting:
        if (!agent_) return connect();  // the retry interval passed
        return close_client(kWsCloseBadGateway, "Terminal handshake timed out");
      case Phase::Open:
        if (lingering_) return finish();
        log(LogLevel::Info, "proxy", "terminal socket idle, closed");
        if (!agent_frames_.at_boundary()) return finish();
        client_frames_ = WsFrameTracker();
        return close_client(kWsCloseGoingAway, "Idle timeout");
      case Phase::Closing: return finish();
      case Phase::Done: return;
    }
  }

  // Only where the client's stream is at a frame boundary: before the tunnel opened, or when
  // the agent's stream was checked to be at one.
  void close_client(std::uint16_t code, std::string_view reason) {
    close_client_payload(ws_close_payload(code, reason), false);
  }

  void close_client_payload(std::string payload, bool reply) {
    if (phase_ == Phase::Done || phase_ == Phase::Closing) return;
    if (phase_ != Phase::Open) {
      client_frames_.feed(reader_.take_remaining());
      client_frames_.feed(std::exchange(pending_, {}));
    }
    phase_ = Phase::Closing;
    if (agent_) agent_->close();
    client_->read_resume();
    client_->write(ws_encode_frame(WsOpcode::Close, payload));
    client_->shutdown();
    if (reply) return finish();  // the client closed first: nothing more to wait for
    timer_->start(kLinger);
  }

  void finish() {
    if (phase_ == Phase::Done) return;
    phase_ = Phase::Done;
    if (timer_) timer_->stop();
    client_->close();
    if (agent_) agent_->close();
    if (opened_ && on_close_) {
      auto on_close = std::move(on_close_);
      on_close();
    }
    release();
  }

  void release() {
    auto it = shared_.tunnels.find(this);
    if (it == shared_.tunnels.end()) return;
    shared_.loop.defer([held = std::move(it->second)] {});
    shared_.tunnels.erase(it);
  }

  ProxyShared& shared_;
  StreamPtr client_;
  StreamPtr agent_;
  Endpoint endpoint_;
  std::string api_key_;
  std::string upstream_target_;
  std::chrono::milliseconds retry_for_;
  ActivityLimiter activity_;
  MoveOnlyFunction<void()> on_open_;
  MoveOnlyFunction<void()> on_close_;
  MoveOnlyFunction<void()> on_unreachable_;
  MoveOnlyFunction<void(std::string, MoveOnlyFunction<void(bool)>)> check_;
  MoveOnlyFunction<void(std::string, MoveOnlyFunction<void(Result<ProxyTarget>)>)> resolve_;
  WsMessageReader reader_;
  WsFrameTracker client_frames_;  // client -> us, for its answer to our close
  WsFrameTracker agent_frames_;   // agent -> client
  std::unique_ptr<Timer> timer_;
  std::string pending_;
  std::string head_;
  std::string expected_accept_;
  std::uint64_t retry_deadline_ = 0;
  Phase phase_ = Phase::Auth;
  bool opened_ = false;
  bool client_eof_ = false;
  bool agent_eof_ = false;
  bool lingering_ = false;
};

void close_all_tunnels(ProxyShared& shared) {
  auto tunnels = std::move(shared.tunnels);
  shared.tunnels.clear();
  for (auto& [ptr, tunnel] : tunnels) tunnel->abort();
  // Destroyed here: the proxy is not inside a tunnel's callback.
}

void start_ws_tunnel(const std::shared_ptr<ProxyShared>& shared, ServerExchangePtr exchange,
                     const ProxyTarget& target, TerminalProxy::WsOptions options) {
  const RequestHead& req = exchange->request();
  const Headers& headers = req.headers;
  if (req.method != "GET" || !req.upgrade || !headers.has_token("Upgrade", "websocket")) {
    return send_error(*exchange, 400, "Expected a WebSocket upgrade");
  }
  if (headers.get("Sec-WebSocket-Version") != std::optional<std::string_view>("13")) {
    return send_error(*exchange, 426, "Unsupported WebSocket version (13 is)",
                      Headers{{"Sec-WebSocket-Version", "13"}});
  }
  auto key = headers.get("Sec-WebSocket-Key");
  if (!key || !valid_client_key(*key)) {
    return send_error(*exchange, 400, "Missing or malformed Sec-WebSocket-Key");
  }
  if (shared->closed) return send_error(*exchange, 503, "The terminal proxy is shutting down");
  if (shared->tunnels.size() >= shared->options.max_tunnels) {
    return send_error(*exchange, 503, "Too many terminal connections");
  }
  const std::string accept = websocket_accept_key(*key);
  if (options.upstream_target.empty()) options.upstream_target = req.target;
  std::string leftover;
  StreamPtr stream = exchange->take_upgrade(leftover);
  if (!stream) return;  // the client left, or the exchange already answered
  stream->write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n\r\n");
  auto tunnel = std::make_shared<WsTunnel>(*shared, std::move(stream), target, std::move(options));
  shared->tunnels.emplace(tunnel.get(), tunnel);
  tunnel->start(leftover);
}

}  // namespace terminals::detail
