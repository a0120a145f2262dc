#include "http/websocket.hpp"

#include <cstring>
#include <utility>

#include "util/crypto.hpp"

namespace terminals::detail {

std::string websocket_accept_key(std::string_view client_key) {
  std::string s(client_key);
  s += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  return base64_encode(sha1_raw(s));
}

std::string ws_encode_frame(WsOpcode opcode, std::string_view payload, bool fin,
                            std::optional<std::uint32_t> mask) {
  std::string out;
  out.reserve(payload.size() + 14);
  out.push_back(static_cast<char>((fin ? 0x80 : 0x00) | static_cast<std::uint8_t>(opcode)));
  const std::uint8_t mask_bit = mask ? 0x80 : 0x00;
  const std::uint64_t n = payload.size();
  if (n < 126) {
    out.push_back(static_cast<char>(mask_bit | n));
  } else if (n <= 0xFFFF) {
    out.push_back(static_cast<char>(mask_bit | 126));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(n & 0xFF));
  } else {
    out.push_back(static_cast<char>(mask_bit | 127));
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  }
  if (!mask) {
    out.append(payload);
    return out;
  }
  unsigned char key[4] = {static_cast<unsigned char>(*mask >> 24), static_cast<unsigned char>(*mask >> 16),
                          static_cast<unsigned char>(*mask >> 8), static_cast<unsigned char>(*mask)};
  out.append(reinterpret_cast<char*>(key), 4);
  std::size_t start = out.size();
  out.append(payload);
  for (std::size_t i = 0; i < payload.size(); ++i) out[start + i] ^= static_cast<char>(key[i & 3]);
  return out;
}

std::string ws_close_payload(std::uint16_t code, std::string_view reason) {
  std::string p;
  p.push_back(static_cast<char>(code >> 8));
  p.push_back(static_cast<char>(code & 0xFF));
  p.append(reason.substr(0, 123));
  return p;
}

Result<std::optional<WsFrame>> ws_decode_frame(std::string_view b, std::size_t max_payload,
                                               bool require_mask) {
  if (b.size() < 2) return std::optional<WsFrame>();
  const auto b0 = static_cast<std::uint8_t>(b[0]);
  const auto b1 = static_cast<std::uint8_t>(b[1]);
  if (b0 & 0x70) return Error(Errc::UpstreamProtocol, "WebSocket frame with reserved bits set");
  const std::uint8_t op = b0 & 0x0F;
  const bool is_control = op & 0x8;
  if (!(op <= 0x2 || (op >= 0x8 && op <= 0xA))) {
    return Error(Errc::UpstreamProtocol, "WebSocket frame with unknown opcode " + std::to_string(op));
  }
  const bool masked = b1 & 0x80;
  if (require_mask && !masked) return Error(Errc::UpstreamProtocol, "unmasked WebSocket frame from a client");
  std::uint64_t len = b1 & 0x7F;
  std::size_t pos = 2;
  if (len == 126) {
    if (b.size() < 4) return std::optional<WsFrame>();
    len = (static_cast<std::uint64_t>(static_cast<std::uint8_t>(b[2])) << 8) | static_cast<std::uint8_t>(b[3]);
    pos = 4;
  } else if (len == 127) {
    if (b.size() < 10) return std::optional<WsFrame>();
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | static_cast<std::uint8_t>(b[2 + i]);
    pos = 10;
  }
  if (is_control && (len > 125 || !(b0 & 0x80))) {
    return Error(Errc::UpstreamProtocol, "WebSocket control frame fragmented or longer than 125 bytes");
  }
  if (len > max_payload) {
    return Error(Errc::LimitExceeded, "WebSocket frame of " + std::to_string(len) +
                                          " bytes exceeds the limit of " + std::to_string(max_payload));
  }
  unsigned char key[4] = {0, 0, 0, 0};
  if (masked) {
    if (b.size() < pos + 4) return std::optional<WsFrame>();
    std::memcpy(key, b.data() + pos, 4);
    pos += 4;
  }
  if (b.size() - pos < len) return std::optional<WsFrame>();
  WsFrame f;
  f.fin = b0 & 0x80;
  f.opcode = static_cast<WsOpcode>(op);
  f.payload.assign(b.substr(pos, static_cast<std::size_t>(len)));
  if (masked) {
    for (std::size_t i = 0; i < f.payload.size(); ++i) f.payload[i] ^= static_cast<char>(key[i & 3]);
  }
  f.wire_size = pos + static_cast<std::size_t>(len);
  return std::optional<WsFrame>(std::move(f));
}

Result<std::optional<WsMessageReader::Message>> WsMessageReader::next() {
  for (;;) {
    auto frame = ws_decode_frame(buffer_, max_message_, require_mask_);
    if (!frame) return std::move(frame).error();
    if (!frame->has_value()) return std::optional<Message>();
    WsFrame f = std::move(**frame);
    buffer_.erase(0, f.wire_size);
    switch (f.opcode) {
      case WsOpcode::Close:
      case WsOpcode::Ping:
      case WsOpcode::Pong:
        return std::optional<Message>(Message{f.opcode, std::move(f.payload)});
      case WsOpcode::Continuation:
        if (!partial_opcode_) return Error(Errc::UpstreamProtocol, "WebSocket continuation without a start");
        break;
      case WsOpcode::Text:
      case WsOpcode::Binary:
        if (partial_opcode_) return Error(Errc::UpstreamProtocol, "WebSocket message interleaved with a fragment");
        partial_opcode_ = f.opcode;
        break;
    }
    if (partial_.size() + f.payload.size() > max_message_) {
      return Error(Errc::LimitExceeded, "WebSocket message exceeds " + std::to_string(max_message_) + " bytes");
    }
    partial_.append(f.payload);
    if (f.fin) {
      Message m{*partial_opcode_, std::exchange(partial_, {})};
      partial_opcode_.reset();
      return std::optional<Message>(std::move(m));
    }
  }
}

}  // namespace terminals::detail
