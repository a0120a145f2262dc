#pragma once

// A small WebSocket client for tests, on a Stream on the test's own loop (driven by run_until):
// it sends the handshake, checks Sec-WebSocket-Accept, masks what it sends (as clients must)
// and collects what the server sends: binary output, text messages and the close frame.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http/websocket.hpp"
#include "support/loop_runner.hpp"
#include "support/raw_client.hpp"
#include "terminals/endpoint.hpp"
#include "terminals/stream.hpp"

namespace test {

class WsClient {
 public:
  /// Connects to `endpoint` and sends the upgrade request for `path` (with `extra_headers`,
  /// each ending in CRLF), then waits for the response head. With `key` empty the
  /// Sec-WebSocket-Key header is left out.
  WsClient(terminals::Loop& loop, const terminals::Endpoint& endpoint, const std::string& path,
           std::string key = "dGhlIHNhbXBsZSBub25jZQ==", std::string extra_headers = {})
      : loop_(loop), raw_(loop, endpoint) {
    if (!raw_.connected()) return;
    std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    if (!key.empty()) request += "Sec-WebSocket-Key: " + key + "\r\n";
    if (extra_headers.find("Sec-WebSocket-Version") == std::string::npos) {
      request += "Sec-WebSocket-Version: 13\r\n";
    }
    request += extra_headers + "\r\n";
    raw_.send(request);
    run_until(loop_, [&] {
      pump();
      return head_done_ || raw_.closed;
    });
    if (status == 101 && !key.empty()) {
      accept_ok = accept == terminals::detail::websocket_accept_key(key);
    }
  }

  bool upgraded() const { return status == 101 && accept_ok; }

  void send_text(std::string_view text) { send(terminals::detail::WsOpcode::Text, text); }
  void send_binary(std::string_view bytes) { send(terminals::detail::WsOpcode::Binary, bytes); }
  void send_ping(std::string_view payload) { send(terminals::detail::WsOpcode::Ping, payload); }
  void send_close(std::uint16_t code) {
    send(terminals::detail::WsOpcode::Close, terminals::detail::ws_close_payload(code, "bye"));
  }
  /// Raw bytes (e.g. an unmasked or oversized frame).
  void send_raw(std::string_view bytes) { raw_.send(bytes); }
  /// Stops and restarts reading the socket (a slow client, for backpressure).
  void pause_reading() { raw_.stream->read_stop(); }
  void resume_reading() { raw_.stream->read_resume(); }
  /// Drops the connection without a close frame.
  void disconnect() { raw_.stream->close(); }

  void send(terminals::detail::WsOpcode opcode, std::string_view payload) {
    mask_ = mask_ * 1103515245u + 12345u;
    raw_.send(terminals::detail::ws_encode_frame(opcode, payload, true, mask_));
  }

  bool wait(const std::function<bool()>& pred,
            std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return run_until(loop_, [&] {
      pump();
      return pred();
    }, timeout);
  }
  bool wait_output(std::string_view s, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return wait([&] { return output.find(s) != std::string::npos; }, timeout);
  }
  /// Until the server's close frame arrived.
  bool wait_close_frame(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return wait([&] { return close_code.has_value(); }, timeout);
  }
  /// Until the connection is closed (by the server, or by us after its close frame).
  bool wait_disconnected(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return wait([&] { return raw_.closed || !raw_.stream->is_open(); }, timeout);
  }

  int status = 0;                  ///< of the handshake response
  std::string response_head;       ///< the handshake response head (or a whole error response)
  std::string accept;              ///< its Sec-WebSocket-Accept
  bool accept_ok = false;
  std::string output;              ///< binary messages, concatenated
  std::vector<std::string> texts;  ///< text messages
  std::vector<std::string> pongs;
  std::optional<std::uint16_t> close_code;
  std::string close_reason;
  std::string protocol_error;

 private:
  // Moves what RawClient received into the handshake head or the frame reader.
  void pump() {
    if (!head_done_) {
      auto end = raw_.received.find("\r\n\r\n");
      if (end == std::string::npos) return;
      response_head = raw_.received.substr(0, end + 4);
      raw_.received.erase(0, end + 4);
      head_done_ = true;
      if (response_head.size() > 12) status = std::stoi(response_head.substr(9, 3));
      auto pos = response_head.find("Sec-WebSocket-Accept: ");
      if (pos != std::string::npos) {
        auto stop = response_head.find("\r\n", pos);
        accept = response_head.substr(pos + 22, stop - pos - 22);
      }
      if (status != 101) {
        response_head += raw_.received;  // the error body
        raw_.received.clear();
        return;
      }
    }
    if (status != 101) return;
    reader_.feed(raw_.received);
    raw_.received.clear();
    for (;;) {
      auto m = reader_.next();
      if (!m) {
        protocol_error = m.error().message;
        return;
      }
      if (!m->has_value()) return;
      auto& msg = **m;
      using terminals::detail::WsOpcode;
      switch (msg.opcode) {
        case WsOpcode::Binary: output += msg.data; break;
        case WsOpcode::Text: texts.push_back(msg.data); break;
        case WsOpcode::Pong: pongs.push_back(msg.data); break;
        case WsOpcode::Close:
          if (!close_code && msg.data.size() >= 2) {
            close_code = static_cast<std::uint16_t>(
                (static_cast<unsigned char>(msg.data[0]) << 8) | static_cast<unsigned char>(msg.data[1]));
            close_reason = msg.data.substr(2);
            // Answer like a well-behaved client; the server then closes the connection.
            if (raw_.stream->is_open()) send(WsOpcode::Close, msg.data.substr(0, 2));
          }
          break;
        default: break;
      }
    }
  }

  terminals::Loop& loop_;
  RawClient raw_;
  terminals::detail::WsMessageReader reader_{64u << 20, /*require_mask=*/false};
  bool head_done_ = false;
  std::uint32_t mask_ = 0x9e3779b9u;
};

}  // namespace test
