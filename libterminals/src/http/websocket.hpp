#pragma once

// WebSocket (RFC 6455) framing: the handshake key, frame encoding and an incremental decoder.
// Used by the agent's PTY socket and by the proxy, which reads only the client's first message
// (to swap the credentials in it) and then tunnels raw bytes.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "terminals/result.hpp"

namespace terminals::detail {

enum class WsOpcode : std::uint8_t {
  Continuation = 0x0,
  Text = 0x1,
  Binary = 0x2,
  Close = 0x8,
  Ping = 0x9,
  Pong = 0xA,
};

/// Sec-WebSocket-Accept for a client's Sec-WebSocket-Key.
std::string websocket_accept_key(std::string_view client_key);

/// One encoded frame. Clients must mask (`mask` set), servers must not.
std::string ws_encode_frame(WsOpcode opcode, std::string_view payload, bool fin = true,
                            std::optional<std::uint32_t> mask = std::nullopt);
/// A close frame's payload: the code in network order, then the reason (truncated to fit 125).
std::string ws_close_payload(std::uint16_t code, std::string_view reason);

struct WsFrame {
  bool fin = true;
  WsOpcode opcode = WsOpcode::Binary;
  std::string payload;  // unmasked
  std::size_t wire_size = 0;  // bytes the frame took on the wire
};

/// Decodes the first whole frame of `buffer`: nullopt if more bytes are needed, an error for a
/// protocol violation (reserved bits, bad opcode, oversized or fragmented control frame, a
/// payload over `max_payload`, a missing mask when `require_mask`).
Result<std::optional<WsFrame>> ws_decode_frame(std::string_view buffer, std::size_t max_payload,
                                               bool require_mask);

/// Reassembles fragmented messages from decoded frames and answers nothing by itself: control
/// frames are returned as they come.
class WsMessageReader {
 public:
  struct Message {
    WsOpcode opcode;  // Text, Binary, Close, Ping or Pong
    std::string data;
  };
  WsMessageReader(std::size_t max_message, bool require_mask)
      : max_message_(max_message), require_mask_(require_mask) {}

  /// Appends bytes. Then call next() until it yields nullopt.
  void feed(std::string_view bytes) { buffer_.append(bytes); }
  /// The next complete message, nullopt when more bytes are needed, or a protocol error.
  Result<std::optional<Message>> next();
  /// Bytes received but not yet consumed into a message (for handing the rest to a tunnel).
  std::string take_remaining() { return std::exchange(buffer_, {}); }

 private:
  std::size_t max_message_;
  bool require_mask_;
  std::string buffer_;
  std::string partial_;
  std::optional<WsOpcode> partial_opcode_;
};

/// Close codes used by the reference orchestrator and Open Terminal.
inline constexpr std::uint16_t kWsCloseNormal = 1000;
inline constexpr std::uint16_t kWsCloseProtocolError = 1002;
inline constexpr std::uint16_t kWsCloseTooBig = 1009;
inline constexpr std::uint16_t kWsCloseAuthFailed = 4001;      // bad token / key
inline constexpr std::uint16_t kWsCloseMissingUser = 4002;     // user_id query missing
inline constexpr std::uint16_t kWsCloseForbidden = 4003;       // user mismatch / denied
inline constexpr std::uint16_t kWsCloseNotFound = 4004;        // unknown session

}  // namespace terminals::detail
