// Reset schedules (terminals/schedule.hpp): cron, "@" aliases and one-shot ISO times, evaluated
// in real zones with DST (read from the system's tzdata; UTC only if it is missing). Checked
// beyond "no crash":
//  - the next firing is strictly after t, lands on a whole minute, and is also the next firing
//    for any instant between t and it; the one after it is later still;
//  - reset_due agrees with next_after on both sides of a firing;
//  - a one-shot fires once, at its instant;
//  - wall-clock conversions of the zone are consistent (an instant's local time maps back to it).

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "terminals/schedule.hpp"

namespace {

using namespace std::chrono;
using terminals::Schedule;
using terminals::TimeZone;
using TimePoint = system_clock::time_point;

const std::vector<TimeZone>& zones() {
  static const std::vector<TimeZone> all = [] {
    std::vector<TimeZone> z{TimeZone()};
    // Northern and southern DST, a 30-minute DST shift, a zone that dropped DST.
    for (const char* name : {"Europe/Berlin", "America/Santiago", "Australia/Lord_Howe", "America/New_York",
                             "Asia/Kolkata"}) {
      if (auto tz = TimeZone::load(name)) z.push_back(*tz);
    }
    return z;
  }();
  return all;
}

long long secs(TimePoint t) { return duration_cast<seconds>(t.time_since_epoch()).count(); }

void check_zone(const TimeZone& tz, TimePoint t) {
  const sys_seconds u = floor<seconds>(t);
  const local_seconds l = tz.to_local(u);
  const auto m = tz.map_local(l);
  using Kind = TimeZone::LocalMapping::Kind;
  FUZZ_CHECK(m.kind != Kind::Gap, "%s: local time of %lld is in a gap", tz.name().c_str(),
             static_cast<long long>(u.time_since_epoch().count()));
  FUZZ_CHECK(m.first == u || (m.kind == Kind::Ambiguous && m.second == u), "%s: local time of %lld maps elsewhere",
             tz.name().c_str(), static_cast<long long>(u.time_since_epoch().count()));
  FUZZ_CHECK(tz.to_utc(l) <= u, "%s: to_utc later than the instant", tz.name().c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view spec = fuzz::as_view(data, size);
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : spec) h = (h ^ c) * 1099511628211ull;
  const TimeZone& tz = zones()[h % zones().size()];
  // Some instant in 2000-2100, to the nanosecond.
  const TimePoint t = TimePoint(seconds(946684800 + static_cast<std::int64_t>((h >> 8) % 3155760000ull))) +
                      nanoseconds(h % 1000000000);
  check_zone(tz, t);

  auto s = Schedule::parse(spec, tz);
  if (!s) {
    FUZZ_CHECK(s.error().code == terminals::Errc::InvalidArgument, "unexpected error code");
    FUZZ_CHECK(!s.error().message.empty(), "an error without a message");
    return 0;
  }
  FUZZ_CHECK(s->text().size() <= spec.size() && spec.find(s->text()) != std::string_view::npos,
             "text() is not the trimmed spec");
  const auto n1 = s->next_after(t);
  if (!n1) {
    // (A later t may still find one: the search window is bounded, see schedule.hpp.)
    FUZZ_CHECK(!terminals::reset_due(*s, std::nullopt, t, t + hours(24 * 30)), "due without a firing");
    return 0;
  }
  FUZZ_CHECK(*n1 > t, "next_after(%lld) = %lld is not later", secs(t), secs(*n1));
  if (!s->one_shot()) {
    FUZZ_CHECK(n1->time_since_epoch() % seconds(60) == nanoseconds(0), "cron firing %lld not on a minute", secs(*n1));
    check_zone(tz, *n1);
  }
  // Every instant in [t, n1) has n1 as its next firing.
  for (TimePoint mid : {*n1 - nanoseconds(1), t + (*n1 - t) / 2, *n1 - seconds(61)}) {
    if (mid < t) continue;
    const auto n = s->next_after(mid);
    FUZZ_CHECK(n && *n == *n1, "next_after(%lld) = %lld, but next_after(%lld) = %lld", secs(t), secs(*n1), secs(mid),
               n ? secs(*n) : -1LL);
  }
  FUZZ_CHECK(terminals::reset_due(*s, std::nullopt, t, *n1), "not due at the firing");
  FUZZ_CHECK(!terminals::reset_due(*s, std::nullopt, t, *n1 - nanoseconds(1)), "due before the firing");
  FUZZ_CHECK(!terminals::reset_due(*s, *n1, t, *n1), "due again right after being applied");
  const auto n2 = s->next_after(*n1);
  if (s->one_shot()) {
    FUZZ_CHECK(!n2, "a one-shot fires twice");
  } else if (n2) {
    FUZZ_CHECK(*n2 > *n1, "the firing after %lld is %lld", secs(*n1), secs(*n2));
  }
  return 0;
}
