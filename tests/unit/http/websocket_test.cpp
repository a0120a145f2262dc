#include <doctest/doctest.h>

#include <vector>

#include "http/websocket.hpp"

using namespace terminals;
using namespace terminals::detail;

TEST_SUITE("unit") {

TEST_CASE("websocket: accept key from RFC 6455") {
  CHECK(websocket_accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_CASE("websocket: frames round-trip at every length class / masked and unmasked") {
  for (std::size_t n : {std::size_t(0), std::size_t(5), std::size_t(125), std::size_t(126),
                        std::size_t(65535), std::size_t(65536), std::size_t(200000)}) {
    CAPTURE(n);
    std::string payload(n, 'a');
    for (std::size_t i = 0; i < n; ++i) payload[i] = static_cast<char>(i * 31);
    for (bool masked : {false, true}) {
      auto wire = ws_encode_frame(WsOpcode::Binary, payload, true,
                                  masked ? std::optional<std::uint32_t>(0x12345678) : std::nullopt);
      // Incomplete prefixes ask for more bytes.
      auto partial = ws_decode_frame(std::string_view(wire).substr(0, wire.size() - 1), 1 << 20, masked);
      REQUIRE(partial);
      CHECK_FALSE(partial->has_value());
      auto f = ws_decode_frame(wire + "next", 1 << 20, masked);
      REQUIRE(f);
      REQUIRE(f->has_value());
      CHECK((*f)->payload == payload);
      CHECK((*f)->wire_size == wire.size());
      CHECK((*f)->opcode == WsOpcode::Binary);
    }
  }
}

TEST_CASE("websocket: protocol violations are errors / not crashes") {
  // Unmasked from a client.
  CHECK_FALSE(ws_decode_frame(ws_encode_frame(WsOpcode::Text, "x"), 100, true));
  // Reserved bit.
  std::string rsv = ws_encode_frame(WsOpcode::Text, "x");
  rsv[0] = static_cast<char>(rsv[0] | 0x40);
  CHECK_FALSE(ws_decode_frame(rsv, 100, false));
  // Unknown opcode 3.
  std::string op3 = ws_encode_frame(WsOpcode::Text, "x");
  op3[0] = static_cast<char>(0x83);
  CHECK_FALSE(ws_decode_frame(op3, 100, false));
  // Fragmented control frame and a too-long ping.
  CHECK_FALSE(ws_decode_frame(ws_encode_frame(WsOpcode::Ping, "x", false), 100, false));
  CHECK_FALSE(ws_decode_frame(ws_encode_frame(WsOpcode::Ping, std::string(126, 'p')), 1000, false));
  // Over the size limit (a 64-bit length claiming petabytes must not allocate).
  const std::string huge("\x82\x7f\x00\x10\x00\x00\x00\x00\x00\x00", 10);
  auto r = ws_decode_frame(huge, 1 << 20, false);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::LimitExceeded);
}

TEST_CASE("websocket: message reader reassembles fragments around control frames") {
  WsMessageReader reader(1 << 20, true);
  std::string wire = ws_encode_frame(WsOpcode::Text, R"({"type":"au)", false, 1) +
                     ws_encode_frame(WsOpcode::Ping, "p", true, 2) +
                     ws_encode_frame(WsOpcode::Continuation, R"(th","token":"k"})", true, 3) +
                     ws_encode_frame(WsOpcode::Binary, "ls\n", true, 4);
  // Feed in odd pieces.
  std::vector<WsMessageReader::Message> got;
  for (std::size_t i = 0; i < wire.size(); i += 3) {
    reader.feed(std::string_view(wire).substr(i, 3));
    for (;;) {
      auto m = reader.next();
      REQUIRE(m);
      if (!m->has_value()) break;
      got.push_back(std::move(**m));
    }
  }
  REQUIRE(got.size() == 3);
  CHECK(got[0].opcode == WsOpcode::Ping);
  CHECK(got[1].opcode == WsOpcode::Text);
  CHECK(got[1].data == R"({"type":"auth","token":"k"})");
  CHECK(got[2].opcode == WsOpcode::Binary);
  CHECK(got[2].data == "ls\n");
  CHECK(reader.take_remaining().empty());
  CHECK(ws_close_payload(4001, "Invalid API key") == std::string("\x0f\xa1Invalid API key"));
}

}  // TEST_SUITE
