#include <doctest/doctest.h>

#include <string>

#include "agent/process_manager.hpp"

using namespace terminals::detail;

namespace {
const std::string kFFFD = "\xEF\xBF\xBD";

std::string decode_all(std::initializer_list<std::string> chunks, bool finish = true) {
  Utf8Decoder d;
  std::string out;
  for (const auto& c : chunks) out += d.decode(c);
  if (finish) out += d.finish();
  return out;
}
}  // namespace

TEST_SUITE("unit") {

TEST_CASE("agent process output: UTF-8 decoding replaces bad bytes and joins split characters") {
  CHECK(decode_all({"hello\r\n"}) == "hello\r\n");
  // "€" (E2 82 AC) split at every position, and a 4-byte emoji split into single bytes.
  CHECK(decode_all({"a\xE2", "\x82\xAC", "b"}) == "a\xE2\x82\xAC" "b");
  CHECK(decode_all({"a\xE2\x82", "\xAC" "b"}) == "a\xE2\x82\xAC" "b");
  CHECK(decode_all({"\xF0", "\x9F", "\x98", "\x80"}) == "\xF0\x9F\x98\x80");
  {
    Utf8Decoder d;
    CHECK(d.decode("x\xE2\x82").empty() == false);  // "x" comes out, the tail is held back
    CHECK(d.has_pending());
    CHECK(d.decode("\xAC") == "\xE2\x82\xAC");
    CHECK_FALSE(d.has_pending());
  }
  // Invalid input: one U+FFFD per maximal invalid subpart, as Python's errors="replace".
  CHECK(decode_all({"a\xFF" "b"}) == "a" + kFFFD + "b");
  CHECK(decode_all({"\xC0\x80"}) == kFFFD + kFFFD);               // overlong
  CHECK(decode_all({"\xED\xA0\x80"}) == kFFFD + kFFFD + kFFFD);   // surrogate
  CHECK(decode_all({"\xE2\x82" "A"}) == kFFFD + "A");             // cut short by ASCII
  CHECK(decode_all({"\xF4\x90\x80\x80"}) == kFFFD + kFFFD + kFFFD + kFFFD);  // > U+10FFFF
  // A stream that ends inside a character.
  CHECK(decode_all({"ok\xE2\x82"}) == "ok" + kFFFD);
  CHECK(decode_all({"ok\xE2\x82"}, false) == "ok");
}

TEST_CASE("agent process output: input escapes are decoded as documented") {
  CHECK(decode_input_escapes("ls\\n") == "ls\n");
  CHECK(decode_input_escapes("a\\r\\tb\\\\c") == "a\r\tb\\c");
  CHECK(decode_input_escapes("\\x03") == std::string("\x03"));
  CHECK(decode_input_escapes("\\e[A\\E") == "\x1b[A\x1b");
  CHECK(decode_input_escapes("\\033[B") == "\x1b[B");
  CHECK(decode_input_escapes("\\0") == std::string(1, '\0'));
  CHECK(decode_input_escapes("\\a\\b\\f\\v") == "\a\b\f\v");
  CHECK(decode_input_escapes("\\u20ac \\U0001F600") == "\xE2\x82\xAC \xF0\x9F\x98\x80");
  CHECK(decode_input_escapes("\\xff") == std::string("\xFF"));
  // Left as written.
  CHECK(decode_input_escapes("echo \\\"hi\\\"") == "echo \\\"hi\\\"");
  CHECK(decode_input_escapes("trailing\\") == "trailing\\");
  CHECK(decode_input_escapes("\\q \\x4 \\xZZ") == "\\q \\x4 \\xZZ");
  CHECK(decode_input_escapes("\\ud800 \\U00110000") == "\\ud800 \\U00110000");
  CHECK(decode_input_escapes("\\777") == "\\777");
  CHECK(decode_input_escapes("\\\\n") == "\\n");  // an escaped backslash, then a plain n
  CHECK(decode_input_escapes("caf\xC3\xA9\\n") == "caf\xC3\xA9\n");
}

TEST_CASE("agent process output: store keeps absolute indices while dropping the oldest") {
  OutputStore s(3 * (10 + OutputStore::kEntryOverhead));  // room for three 10-byte entries
  for (int i = 0; i < 3; ++i) s.append(std::string(9, 'a') + std::to_string(i));
  CHECK(s.first_offset() == 0);
  CHECK(s.next_offset() == 3);
  auto all = s.read(0, std::nullopt);
  CHECK(all.entries.size() == 3);
  CHECK_FALSE(all.truncated);
  CHECK(all.next_offset == 3);

  for (int i = 3; i < 7; ++i) s.append(std::string(9, 'a') + std::to_string(i));
  CHECK(s.first_offset() == 4);
  CHECK(s.next_offset() == 7);
  auto page = s.read(0, std::nullopt);
  CHECK(page.truncated);  // entries 0..3 were asked for and are gone
  CHECK(page.first_offset == 4);
  REQUIRE(page.entries.size() == 3);
  CHECK(page.entries.front() == "aaaaaaaaa4");
  CHECK(page.next_offset == 7);

  auto from5 = s.read(5, std::nullopt);
  CHECK_FALSE(from5.truncated);
  REQUIRE(from5.entries.size() == 2);
  CHECK(from5.entries[0] == "aaaaaaaaa5");

  // tail with offset 0: the last N, truncated, and next_offset is still the total.
  auto tail = s.read(0, 1);
  REQUIRE(tail.entries.size() == 1);
  CHECK(tail.entries[0] == "aaaaaaaaa6");
  CHECK(tail.truncated);
  CHECK(tail.next_offset == 7);
  auto tail_all = s.read(5, 10);
  CHECK(tail_all.entries.size() == 2);
  CHECK_FALSE(tail_all.truncated);
  auto tail0 = s.read(5, 0);
  CHECK(tail0.entries.empty());
  CHECK(tail0.truncated);

  // Past the end: nothing, and next_offset says where the end is.
  auto beyond = s.read(100, std::nullopt);
  CHECK(beyond.entries.empty());
  CHECK_FALSE(beyond.truncated);
  CHECK(beyond.next_offset == 7);

  // One entry larger than the whole bound stays (it is the newest).
  s.append(std::string(1000, 'z'));
  CHECK(s.first_offset() == 7);
  CHECK(s.next_offset() == 8);
  CHECK(s.read(7, std::nullopt).entries.at(0).size() == 1000);
}

}  // TEST_SUITE
