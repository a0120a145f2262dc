// WebSocket framing (http/websocket.*): ws_decode_frame, WsMessageReader (the agent's PTY
// socket and the proxy's first-message reader, both fed by clients) and the proxy's
// WsFrameTracker (proxy/ws_frame_tracker.hpp, which follows tunnelled frames without payloads).
// Checked beyond "no crash":
//  - a decoded frame never claims more bytes than given, nor a payload over the limit; every
//    shorter prefix of it asks for more bytes; encoding it again decodes to the same frame;
//  - the message reader gives the same messages and error however the bytes arrive, messages
//    respect the size limit, and what it consumed plus what it leaves is the input;
//  - the tracker finds the same frame boundaries and close frames as the decoder.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "http/websocket.hpp"
#include "proxy/ws_frame_tracker.hpp"

namespace {

using namespace terminals::detail;

constexpr std::size_t kMaxPayload = 4096;

std::vector<std::size_t> cuts_for(std::string_view data) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) h = (h ^ c) * 1099511628211ull;
  std::vector<std::size_t> cuts;
  for (std::size_t pos = 0;;) {
    h = h * 6364136223846793005ull + 1442695040888963407ull;
    pos += 1 + (h >> 33) % (h & 1 ? 3 : 40);
    if (pos >= data.size()) break;
    cuts.push_back(pos);
  }
  return cuts;
}

void check_frames(std::string_view bytes, bool require_mask) {
  std::string_view rest = bytes;
  while (true) {
    const std::string copy(rest);  // exact-size buffer: ASan catches any read past it
    auto r = ws_decode_frame(copy, kMaxPayload, require_mask);
    if (!r || !r->has_value()) return;
    const WsFrame& f = **r;
    FUZZ_CHECK(f.wire_size >= 2 && f.wire_size <= rest.size(), "frame of %zu bytes from %zu", f.wire_size,
               rest.size());
    FUZZ_CHECK(f.payload.size() <= kMaxPayload, "payload of %zu bytes over the limit", f.payload.size());
    FUZZ_CHECK(f.wire_size >= f.payload.size() + 2, "wire size smaller than the payload");
    const bool masked = static_cast<unsigned char>(rest[1]) & 0x80;
    // Every proper prefix is "need more bytes", never a frame or an error.
    for (std::size_t k : {std::size_t{0}, std::size_t{1}, f.wire_size / 2, f.wire_size - 1}) {
      if (k >= f.wire_size) continue;
      const std::string prefix(rest.substr(0, k));
      auto p = ws_decode_frame(prefix, kMaxPayload, require_mask);
      FUZZ_CHECK(p && !p->has_value(), "a %zu-byte prefix of a %zu-byte frame decoded to %s", k, f.wire_size,
                 p ? "a frame" : p.error().message.c_str());
    }
    // Encode again (masked with some key if the original was) and decode: the same frame.
    std::optional<std::uint32_t> key;
    if (masked) key = static_cast<std::uint32_t>(f.payload.size() * 2654435761u);
    const std::string again = ws_encode_frame(f.opcode, f.payload, f.fin, key);
    auto d = ws_decode_frame(again, kMaxPayload, require_mask);
    FUZZ_CHECK(d && d->has_value(), "a re-encoded frame does not decode");
    FUZZ_CHECK((*d)->payload == f.payload && (*d)->fin == f.fin && (*d)->opcode == f.opcode &&
                   (*d)->wire_size == again.size(),
               "a re-encoded frame decodes differently");
    rest.remove_prefix(f.wire_size);
  }
}

struct ReaderRun {
  std::string log;
  std::size_t consumed = 0;  // input bytes minus what take_remaining() gave back
  bool error = false;
};

ReaderRun run_reader(std::string_view bytes, const std::vector<std::size_t>& cuts, bool require_mask) {
  WsMessageReader reader(kMaxPayload, require_mask);
  ReaderRun run;
  std::size_t base = 0;
  std::vector<std::size_t> ends = cuts;
  ends.push_back(bytes.size());
  for (std::size_t end : ends) {
    reader.feed(bytes.substr(base, end - base));
    base = end;
    while (true) {
      auto m = reader.next();
      if (!m) {
        run.log += "ERROR " + m.error().message + "\n";
        run.error = true;
        return run;  // the connection is closed after a protocol error
      }
      if (!m->has_value()) break;
      const auto& msg = **m;
      FUZZ_CHECK(msg.data.size() <= kMaxPayload, "message of %zu bytes over the limit", msg.data.size());
      FUZZ_CHECK(msg.opcode != WsOpcode::Continuation, "a message with the continuation opcode");
      run.log += std::to_string(static_cast<int>(msg.opcode)) + " " + std::to_string(msg.data.size()) + " " +
                 std::to_string(std::hash<std::string>()(msg.data)) + "\n";
    }
  }
  run.consumed = bytes.size() - reader.take_remaining().size();
  return run;
}

// The tracker against the decoder: the decoder's frame ends are the tracker's boundaries.
void check_tracker(std::string_view bytes) {
  std::vector<std::size_t> ends;  // offsets where a frame ends
  std::vector<bool> closes;       // whether a close frame has ended by then
  std::size_t pos = 0;
  bool close = false;
  while (true) {
    // The tracker does not validate frames; compare only over well-formed ones.
    auto r = ws_decode_frame(bytes.substr(pos), SIZE_MAX, /*require_mask=*/false);
    if (!r || !r->has_value()) break;
    close = close || (*r)->opcode == WsOpcode::Close;
    pos += (*r)->wire_size;
    ends.push_back(pos);
    closes.push_back(close);
  }
  WsFrameTracker t;
  FUZZ_CHECK(t.at_boundary(), "a fresh tracker is not at a boundary");
  std::size_t fed = 0;
  std::size_t next_end = 0;
  const auto cuts = cuts_for(bytes);
  std::vector<std::size_t> stops(cuts.begin(), cuts.end());
  stops.insert(stops.end(), ends.begin(), ends.end());
  std::sort(stops.begin(), stops.end());
  for (std::size_t stop : stops) {
    if (stop <= fed || (!ends.empty() && stop > ends.back())) continue;
    t.feed(bytes.substr(fed, stop - fed));
    fed = stop;
    while (next_end < ends.size() && ends[next_end] < fed) ++next_end;
    const bool at_end = next_end < ends.size() && ends[next_end] == fed;
    if (at_end) {
      FUZZ_CHECK(t.at_boundary(), "the tracker is mid-frame at the frame end %zu", fed);
      FUZZ_CHECK(t.close_seen() == closes[next_end], "close_seen %d at %zu", t.close_seen(), fed);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes = fuzz::as_view(data, size);
  for (bool require_mask : {false, true}) {
    check_frames(bytes, require_mask);
    const ReaderRun whole = run_reader(bytes, {}, require_mask);
    const ReaderRun cut = run_reader(bytes, cuts_for(bytes), require_mask);
    FUZZ_CHECK(whole.log == cut.log, "messages differ with the input cut in pieces:\n--- whole\n%s--- cut\n%s",
               whole.log.c_str(), cut.log.c_str());
    if (!whole.error) FUZZ_CHECK(whole.consumed == cut.consumed, "consumed %zu vs %zu", whole.consumed, cut.consumed);
  }
  check_tracker(bytes);
  return 0;
}
