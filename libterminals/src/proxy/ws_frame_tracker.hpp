#pragma once

// WsFrameTracker, the terminal proxy's view of a tunnelled WebSocket direction (in a header of
// its own so that fuzz/websocket_fuzz.cpp can check it against ws_decode_frame).

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

namespace terminals::detail {

/// Follows frame boundaries in one direction of a tunnel without keeping payloads: where a
/// frame of our own may be inserted, and whether a close frame went by.
class WsFrameTracker {
 public:
  void feed(std::string_view bytes) {
    while (!bytes.empty()) {
      if (remaining_ > 0) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, bytes.size()));
        remaining_ -= n;
        bytes.remove_prefix(n);
        continue;
      }
      header_.push_back(bytes.front());
      bytes.remove_prefix(1);
      if (header_.size() < 2) continue;
      const auto b1 = static_cast<unsigned char>(header_[1]);
      const std::size_t len7 = b1 & 0x7f;
      const std::size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((b1 & 0x80) ? 4 : 0);
      if (header_.size() < need) continue;
      std::uint64_t len = len7;
      if (len7 >= 126) {
        len = 0;
        const std::size_t bytes_len = len7 == 126 ? 2 : 8;
        for (std::size_t i = 0; i < bytes_len; ++i) len = (len << 8) | static_cast<unsigned char>(header_[2 + i]);
      }
      if ((static_cast<unsigned char>(header_[0]) & 0x0f) == 0x8) close_seen_ = true;
      remaining_ = len;
      header_.clear();
    }
  }
  bool at_boundary() const { return remaining_ == 0 && header_.empty(); }
  bool close_seen() const { return close_seen_; }

 private:
  std::string header_;
  std::uint64_t remaining_ = 0;
  bool close_seen_ = false;
};

}  // namespace terminals::detail
