// TZif parsing (TimeZone::from_tzif, policy/tz.cpp: RFC 8536 data and the POSIX TZ footer).
// Real input comes from the system's tzdata, but the parser must still refuse anything
// malformed cleanly. A zone that parses is used the way schedules use it, for instants within
// system_clock's range, without crashing or overflowing; its offsets stay within the accepted
// range.

#include <chrono>
#include <cstdint>
#include <string>

#include "fuzz_check.hpp"
#include "terminals/schedule.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace std::chrono;
  auto tz = terminals::TimeZone::from_tzif("Fuzz/Zone", fuzz::as_view(data, size));
  if (!tz) {
    FUZZ_CHECK(!tz.error().message.empty(), "an error without a message");
    return 0;
  }
  FUZZ_CHECK(tz->name() == "Fuzz/Zone", "the name was not kept");
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 1099511628211ull;
  for (int k = 0; k < 8; ++k) {
    h = h * 6364136223846793005ull + 1442695040888963407ull;
    // 1900-2200: schedules stay within 1970-2200 plus a search window.
    const sys_seconds u{seconds(-2208988800LL + static_cast<std::int64_t>((h >> 8) % 9467280000ull))};
    const auto off = tz->offset_at(u).count();
    FUZZ_CHECK(off >= -25 * 3600 - 24 * 3600 && off <= 26 * 3600 + 24 * 3600, "offset %lld", static_cast<long long>(off));
    const local_seconds l = tz->to_local(u);
    (void)tz->map_local(l);
    (void)tz->to_utc(l);
  }
  auto s = terminals::Schedule::parse("30 2 * * *", *tz);
  FUZZ_CHECK(s.has_value(), "a valid cron does not parse");
  (void)s->next_after(system_clock::time_point(seconds(1700000000)));
  return 0;
}
