#include "terminals/schedule.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

using namespace terminals;
using namespace std::chrono;

namespace {

using TimePoint = system_clock::time_point;

// "2026-03-29T01:00:00Z" -> instant. Built on std::chrono's calendar, not on the code under test.
TimePoint utc(const char* iso) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  REQUIRE(std::sscanf(iso, "%d-%d-%dT%d:%d:%dZ", &y, &mo, &d, &h, &mi, &s) == 6);
  const sys_days day{year{y} / month{static_cast<unsigned>(mo)} / static_cast<unsigned>(d)};
  return TimePoint(day) + hours(h) + minutes(mi) + seconds(s);
}

std::string iso(TimePoint t) {
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss<system_clock::duration> tod{t - day};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02ld:%02ld:%02ldZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<long>(tod.hours().count()), static_cast<long>(tod.minutes().count()),
                static_cast<long>(tod.seconds().count()));
  std::string out = buf;
  if (tod.subseconds().count() != 0) out += "+" + std::to_string(tod.subseconds().count()) + "ns";
  return out;
}

std::string iso(const std::optional<TimePoint>& t) { return t ? iso(*t) : "none"; }

TimeZone zone(const char* name) {
  auto tz = TimeZone::load(name);
  REQUIRE_MESSAGE(tz.has_value(), tz.error().message);
  return *tz;
}

Schedule sched(const char* spec, const char* tz = "UTC") {
  auto s = Schedule::parse(spec, zone(tz));
  REQUIRE_MESSAGE(s.has_value(), spec, ": ", s.error().message);
  return *s;
}

// The first `n` firings after `from`, as ISO strings.
std::vector<std::string> firings(const Schedule& s, const char* from, int n) {
  std::vector<std::string> out;
  std::optional<TimePoint> t = utc(from);
  for (int i = 0; i < n && t; ++i) {
    t = s.next_after(*t);
    out.push_back(iso(t));
  }
  return out;
}

std::string next(const char* spec, const char* tz, const char* from) {
  return iso(sched(spec, tz).next_after(utc(from)));
}

// The InvalidArgument message for `spec`, or a marker that fails the caller's CHECK.
std::string parse_error(const char* spec, const char* tz = "UTC") {
  auto s = Schedule::parse(spec, zone(tz));
  if (s.has_value()) return "<parsed>";
  if (s.error().code != Errc::InvalidArgument) return "<wrong code>";
  return s.error().message;
}

using V = std::vector<std::string>;

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("schedule: time zones load by IANA name / UTC needs no file") {
  for (const char* name : {"UTC", "Etc/UTC"}) {
    auto tz = TimeZone::load(name);
    REQUIRE(tz.has_value());
    CHECK(tz->name() == name);
    CHECK(tz->offset_at(utc("2026-07-01T00:00:00Z")) == seconds(0));
  }
  auto empty = TimeZone::load("");
  REQUIRE(empty.has_value());
  CHECK(empty->name() == "UTC");
  CHECK(TimeZone().name() == "UTC");

  const TimeZone berlin = zone("Europe/Berlin");
  CHECK(berlin.name() == "Europe/Berlin");
  CHECK(berlin.offset_at(utc("2026-01-15T12:00:00Z")) == hours(1));
  CHECK(berlin.offset_at(utc("2026-07-15T12:00:00Z")) == hours(2));
  // The transitions themselves (zdump -v -c 2026,2027 Europe/Berlin).
  CHECK(berlin.offset_at(utc("2026-03-29T00:59:59Z")) == hours(1));
  CHECK(berlin.offset_at(utc("2026-03-29T01:00:00Z")) == hours(2));
  CHECK(berlin.offset_at(utc("2026-10-25T00:59:59Z")) == hours(2));
  CHECK(berlin.offset_at(utc("2026-10-25T01:00:00Z")) == hours(1));

  const TimeZone ny = zone("America/New_York");
  CHECK(ny.offset_at(utc("2026-03-08T06:59:59Z")) == hours(-5));
  CHECK(ny.offset_at(utc("2026-03-08T07:00:00Z")) == hours(-4));
  CHECK(ny.offset_at(utc("2026-11-01T05:59:59Z")) == hours(-4));
  CHECK(ny.offset_at(utc("2026-11-01T06:00:00Z")) == hours(-5));

  CHECK(zone("Asia/Kolkata").offset_at(utc("2026-07-01T00:00:00Z")) == minutes(330));
}

TEST_CASE("schedule: the POSIX TZ footer covers years after the file's last transition") {
  // zdump -v -c 2100,2101: Berlin springs forward 2100-03-28 01:00Z and falls back 2100-10-31
  // 01:00Z; Sydney (southern hemisphere: DST spans the new year) 2100-04-03 16:00Z back to
  // +10, 2100-10-02 16:00Z forward to +11.
  const TimeZone berlin = zone("Europe/Berlin");
  CHECK(berlin.offset_at(utc("2100-03-28T00:59:59Z")) == hours(1));
  CHECK(berlin.offset_at(utc("2100-03-28T01:00:00Z")) == hours(2));
  CHECK(berlin.offset_at(utc("2100-10-31T00:59:59Z")) == hours(2));
  CHECK(berlin.offset_at(utc("2100-10-31T01:00:00Z")) == hours(1));
  const TimeZone sydney = zone("Australia/Sydney");
  CHECK(sydney.offset_at(utc("2100-01-01T00:00:00Z")) == hours(11));
  CHECK(sydney.offset_at(utc("2100-04-03T15:59:59Z")) == hours(11));
  CHECK(sydney.offset_at(utc("2100-04-03T16:00:00Z")) == hours(10));
  CHECK(sydney.offset_at(utc("2100-10-02T15:59:59Z")) == hours(10));
  CHECK(sydney.offset_at(utc("2100-10-02T16:00:00Z")) == hours(11));
  CHECK(sydney.offset_at(utc("2100-12-31T23:00:00Z")) == hours(11));
}

TEST_CASE("schedule: zone names that could leave the zoneinfo directory are refused") {
  for (const char* name : {"../etc/passwd", "Europe/../../etc/passwd", "/etc/passwd",
                           "/usr/share/zoneinfo/UTC", "Europe/Berlin;rm", "Europe/Berlin ",
                           "Europe\\Berlin", "Europe/.Berlin", "Europe/Berlin\n"}) {
    const std::string shown = name;
    CAPTURE(shown);
    auto tz = TimeZone::load(name);
    REQUIRE_FALSE(tz.has_value());
    CHECK(tz.error().code == Errc::InvalidArgument);
  }
  CHECK(TimeZone::load("../etc/passwd").error().message.find("'..'") != std::string::npos);
  CHECK(TimeZone::load("/etc/passwd").error().message.find("absolute") != std::string::npos);

  for (const char* name : {"Mars/Olympus_Mons", "Europe", "Europe/"}) {
    const std::string shown = name;
    CAPTURE(shown);
    auto tz = TimeZone::load(name);
    REQUIRE_FALSE(tz.has_value());
    CHECK(tz.error().code == Errc::NotFound);
  }
  CHECK(TimeZone::load("Mars/Olympus_Mons").error().message.find("unknown time zone") !=
        std::string::npos);

  for (std::string_view data : {std::string_view(""), std::string_view("not a zone file"),
                                std::string_view("TZif2\0\0\0", 8)}) {
    auto tz = TimeZone::from_tzif("X", data);
    REQUIRE_FALSE(tz.has_value());
    CHECK(tz.error().code == Errc::InvalidArgument);
  }
}

TEST_CASE("schedule: wall-clock times map to UTC across DST changes") {
  using Kind = TimeZone::LocalMapping::Kind;
  const TimeZone berlin = zone("Europe/Berlin");
  auto local = [](const char* iso_text) {
    return local_seconds(floor<seconds>(utc(iso_text)).time_since_epoch());
  };
  auto m = berlin.map_local(local("2026-07-01T12:00:00Z"));
  CHECK(m.kind == Kind::Unique);
  CHECK(iso(TimePoint(m.first)) == "2026-07-01T10:00:00Z");

  m = berlin.map_local(local("2026-03-29T02:30:00Z"));  // skipped: 02:00 CET -> 03:00 CEST
  CHECK(m.kind == Kind::Gap);
  CHECK(iso(TimePoint(m.first)) == "2026-03-29T01:00:00Z");

  m = berlin.map_local(local("2026-10-25T02:30:00Z"));  // 02:30 CEST, then 02:30 CET
  CHECK(m.kind == Kind::Ambiguous);
  CHECK(iso(TimePoint(m.first)) == "2026-10-25T00:30:00Z");
  CHECK(iso(TimePoint(m.second)) == "2026-10-25T01:30:00Z");
  CHECK(iso(TimePoint(berlin.to_utc(local("2026-10-25T02:30:00Z")))) == "2026-10-25T00:30:00Z");

  CHECK(berlin.to_local(floor<seconds>(utc("2026-10-25T01:30:00Z"))) ==
        local("2026-10-25T02:30:00Z"));

  const TimeZone ny = zone("America/New_York");
  m = ny.map_local(local("2026-03-08T02:15:00Z"));
  CHECK(m.kind == Kind::Gap);
  CHECK(iso(TimePoint(m.first)) == "2026-03-08T07:00:00Z");
  m = ny.map_local(local("2026-11-01T01:30:00Z"));
  CHECK(m.kind == Kind::Ambiguous);
  CHECK(iso(TimePoint(m.first)) == "2026-11-01T05:30:00Z");
  CHECK(iso(TimePoint(m.second)) == "2026-11-01T06:30:00Z");
}

TEST_CASE("schedule: aliases") {
  // 2026-11-23 is a Monday.
  CHECK(firings(sched("@weekly"), "2026-11-23T15:00:00Z", 2) ==
        V{"2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z"});
  CHECK(firings(sched("@monthly"), "2026-11-23T15:00:00Z", 3) ==
        V{"2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z"});
  CHECK(firings(sched("@daily"), "2026-11-23T15:00:00Z", 2) ==
        V{"2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"});
  CHECK(firings(sched("@midnight"), "2026-11-23T15:00:00Z", 1) == V{"2026-11-24T00:00:00Z"});
  CHECK(firings(sched("@hourly"), "2026-11-23T15:00:00Z", 2) ==
        V{"2026-11-23T16:00:00Z", "2026-11-23T17:00:00Z"});
  for (const char* spec : {"@yearly", "@annually", "@YEARLY", " @annually\t"})
    CHECK(firings(sched(spec), "2026-11-23T15:00:00Z", 2) ==
          V{"2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"});
  CHECK(sched(" @weekly ").text() == "@weekly");
  CHECK_FALSE(sched("@weekly").one_shot());
  // Strictly after: a firing at t itself is not returned.
  CHECK(next("@daily", "UTC", "2026-11-24T00:00:00Z") == "2026-11-25T00:00:00Z");
}

TEST_CASE("schedule: @weekly and @monthly are local midnight in the schedule's zone") {
  // Berlin: Sunday 2026-11-29 00:00 CET = 2026-11-28 23:00Z; 1 December 00:00 CET.
  CHECK(next("@weekly", "Europe/Berlin", "2026-11-23T15:00:00Z") == "2026-11-28T23:00:00Z");
  CHECK(next("@monthly", "Europe/Berlin", "2026-11-23T15:00:00Z") == "2026-11-30T23:00:00Z");
  CHECK(next("@monthly", "Europe/Berlin", "2026-06-15T00:00:00Z") == "2026-06-30T22:00:00Z");
  // Already Sunday in Berlin while still Saturday in UTC.
  CHECK(next("@weekly", "Europe/Berlin", "2026-11-28T22:59:59Z") == "2026-11-28T23:00:00Z");
  CHECK(next("@weekly", "Europe/Berlin", "2026-11-28T23:00:00Z") == "2026-12-05T23:00:00Z");
  // New York: the week of the spring change: 00:00 EST, then 00:00 EDT.
  CHECK(firings(sched("@weekly", "America/New_York"), "2026-03-02T00:00:00Z", 2) ==
        V{"2026-03-08T05:00:00Z", "2026-03-15T04:00:00Z"});
  CHECK(next("@daily", "Asia/Kolkata", "2026-11-23T00:00:00Z") == "2026-11-23T18:30:00Z");
}

TEST_CASE("schedule: cron fields, lists, ranges, steps and names") {
  CHECK(firings(sched("*/15 * * * *"), "2026-11-23T15:07:00Z", 3) ==
        V{"2026-11-23T15:15:00Z", "2026-11-23T15:30:00Z", "2026-11-23T15:45:00Z"});
  CHECK(firings(sched("1-5/2 * * * *"), "2026-11-23T15:00:00Z", 4) ==
        V{"2026-11-23T15:01:00Z", "2026-11-23T15:03:00Z", "2026-11-23T15:05:00Z",
          "2026-11-23T16:01:00Z"});
  CHECK(firings(sched("5/20 * * * *"), "2026-11-23T15:00:00Z", 4) ==
        V{"2026-11-23T15:05:00Z", "2026-11-23T15:25:00Z", "2026-11-23T15:45:00Z",
          "2026-11-23T16:05:00Z"});
  CHECK(firings(sched("0,30 9,17 * * *"), "2026-11-23T10:00:00Z", 3) ==
        V{"2026-11-23T17:00:00Z", "2026-11-23T17:30:00Z", "2026-11-24T09:00:00Z"});
  CHECK(firings(sched("0 0 * * mon-fri"), "2026-11-27T12:00:00Z", 2) ==  // Fri -> Mon, Tue
        V{"2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z"});
  CHECK(firings(sched("0 0 * * SAT,Sun"), "2026-11-23T12:00:00Z", 2) ==
        V{"2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z"});
  CHECK(firings(sched("0 3 1 jan,JUL *"), "2026-11-23T12:00:00Z", 2) ==
        V{"2027-01-01T03:00:00Z", "2027-07-01T03:00:00Z"});
  CHECK(firings(sched("0 3 1 feb-apr/2 *"), "2026-11-23T12:00:00Z", 2) ==
        V{"2027-02-01T03:00:00Z", "2027-04-01T03:00:00Z"});
  // Weekday 7 and 0 are both Sunday.
  CHECK(next("0 0 * * 7", "UTC", "2026-11-23T12:00:00Z") == "2026-11-29T00:00:00Z");
  CHECK(next("0 0 * * 0", "UTC", "2026-11-23T12:00:00Z") == "2026-11-29T00:00:00Z");
  CHECK(next("0 0 * * 5-7", "UTC", "2026-11-23T12:00:00Z") == "2026-11-27T00:00:00Z");
  // "?" is "*" in the day fields; tabs and repeated spaces separate fields.
  CHECK(next("0 0 ? * mon", "UTC", "2026-11-23T12:00:00Z") == "2026-11-30T00:00:00Z");
  CHECK(next("  0\t0  1 * *  ", "UTC", "2026-11-23T12:00:00Z") == "2026-12-01T00:00:00Z");
  CHECK(sched("  0\t0  1 * *  ").text() == "0\t0  1 * *");
}

TEST_CASE("schedule: Vixie day matching: restricted day of month and weekday are OR-ed") {
  // Both restricted: the 1st or any Monday.
  CHECK(firings(sched("0 0 1 * mon"), "2026-11-23T12:00:00Z", 3) ==
        V{"2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z", "2026-12-07T00:00:00Z"});
  CHECK(firings(sched("0 0 13 * fri"), "2026-11-23T12:00:00Z", 3) ==
        V{"2026-11-27T00:00:00Z", "2026-12-04T00:00:00Z", "2026-12-11T00:00:00Z"});
  // A field starting with "*" makes it AND: odd days that are Mondays.
  CHECK(firings(sched("0 0 */2 * mon"), "2026-11-23T12:00:00Z", 2) ==
        V{"2026-12-07T00:00:00Z", "2026-12-21T00:00:00Z"});
  CHECK(next("0 0 1 * *", "UTC", "2026-11-23T12:00:00Z") == "2026-12-01T00:00:00Z");
  CHECK(next("0 0 * * mon", "UTC", "2026-11-23T12:00:00Z") == "2026-11-30T00:00:00Z");
}

TEST_CASE("schedule: month ends and leap years") {
  // The 31st: only months that have one.
  CHECK(firings(sched("0 0 31 * *"), "2026-04-01T00:00:00Z", 4) ==
        V{"2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z", "2026-08-31T00:00:00Z",
          "2026-10-31T00:00:00Z"});
  CHECK(firings(sched("0 0 30 * *"), "2027-01-31T00:00:00Z", 2) ==
        V{"2027-03-30T00:00:00Z", "2027-04-30T00:00:00Z"});
  // 29 February: leap years only; 2100 is not one, so 2096 is followed by 2104.
  CHECK(firings(sched("0 0 29 2 *"), "2026-01-01T00:00:00Z", 3) ==
        V{"2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2036-02-29T00:00:00Z"});
  CHECK(next("0 0 29 2 *", "UTC", "2096-03-01T00:00:00Z") == "2104-02-29T00:00:00Z");
  CHECK(next("0 0 29 feb *", "Europe/Berlin", "2027-06-01T00:00:00Z") == "2028-02-28T23:00:00Z");
  // "L": the last day of each month.
  CHECK(firings(sched("0 0 L * *"), "2028-01-15T00:00:00Z", 3) ==
        V{"2028-01-31T00:00:00Z", "2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z"});
  CHECK(next("0 0 L 2 *", "UTC", "2026-03-01T00:00:00Z") == "2027-02-28T00:00:00Z");
  // Never: parses, but has no next firing.
  for (const char* spec : {"0 0 30 2 *", "0 0 31 4 *", "0 0 31 apr,jun,sep,nov *"}) {
    const std::string shown = spec;
    CAPTURE(shown);
    CHECK(next(spec, "UTC", "2026-01-01T00:00:00Z") == "none");
  }
}

TEST_CASE("schedule: DST spring forward fires once, right after the gap") {
  // Europe/Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST at 01:00Z.
  CHECK(firings(sched("30 2 * * *", "Europe/Berlin"), "2026-03-28T12:00:00Z", 3) ==
        V{"2026-03-29T01:00:00Z",
          "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"});
  // Several skipped times and the first valid one collapse into one firing at the jump.
  CHECK(firings(sched("*/15 * * * *", "Europe/Berlin"), "2026-03-29T00:40:00Z", 4) ==
        V{"2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z",
          "2026-03-29T01:30:00Z"});
  CHECK(firings(sched("0 * * * *", "Europe/Berlin"), "2026-03-28T23:30:00Z", 3) ==
        V{"2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"});
  // America/New_York, 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00Z.
  CHECK(firings(sched("30 2 * * *", "America/New_York"), "2026-03-07T12:00:00Z", 3) ==
        V{"2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"});
  // A one-shot inside the gap too.
  CHECK(iso(sched("2026-03-29T02:30", "Europe/Berlin").next_after(utc("2026-01-01T00:00:00Z"))) ==
        "2026-03-29T01:00:00Z");
}

TEST_CASE("schedule: DST fall back fires once, at the first occurrence") {
  // Europe/Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET at 01:00Z; 02:30 occurs at
  // 00:30Z and 01:30Z.
  CHECK(firings(sched("30 2 * * *", "Europe/Berlin"), "2026-10-24T12:00:00Z", 2) ==
        V{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"});
  // Asked during the repeated hour, after the first 02:30: the second one is not a firing.
  CHECK(next("30 2 * * *", "Europe/Berlin", "2026-10-25T01:10:00Z") == "2026-10-26T01:30:00Z");
  // Hourly: 02:00 once (CEST), then 03:00 CET.
  CHECK(firings(sched("0 * * * *", "Europe/Berlin"), "2026-10-24T23:30:00Z", 3) ==
        V{"2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z"});
  CHECK(firings(sched("15 * * * *", "Europe/Berlin"), "2026-10-25T00:00:00Z", 2) ==
        V{"2026-10-25T00:15:00Z", "2026-10-25T02:15:00Z"});
  // America/New_York, 2026-11-01: 02:00 EDT falls back to 01:00 EST at 06:00Z.
  CHECK(firings(sched("30 1 * * *", "America/New_York"), "2026-10-31T12:00:00Z", 2) ==
        V{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"});
  CHECK(next("30 1 * * *", "America/New_York", "2026-11-01T06:10:00Z") == "2026-11-02T06:30:00Z");
  // A daily midnight reset is unaffected: 00:00 EDT, then 00:00 EST.
  CHECK(firings(sched("@daily", "America/New_York"), "2026-10-31T12:00:00Z", 2) ==
        V{"2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"});
}

TEST_CASE("schedule: one-shot ISO times") {
  const TimePoint before = utc("2026-01-01T00:00:00Z");
  struct Case {
    const char* spec;
    const char* tz;
    const char* at;
  };
  for (const Case& c : {
           Case{"2026-12-01T03:00", "UTC", "2026-12-01T03:00:00Z"},
           Case{"2026-12-01T03:00", "Europe/Berlin", "2026-12-01T02:00:00Z"},
           Case{"2026-12-01T03:00:00Z", "Europe/Berlin", "2026-12-01T03:00:00Z"},
           Case{"2026-12-01t03:00:00z", "UTC", "2026-12-01T03:00:00Z"},
           Case{"2026-12-01 03:00+01:00", "UTC", "2026-12-01T02:00:00Z"},
           Case{"2026-12-01 03:00+01:00", "America/New_York", "2026-12-01T02:00:00Z"},
           Case{"2026-12-01T03:00-0530", "UTC", "2026-12-01T08:30:00Z"},
           Case{"2026-12-01T03:00:15+02", "UTC", "2026-12-01T01:00:15Z"},
           Case{"2026-12-01", "Europe/Berlin", "2026-11-30T23:00:00Z"},
           Case{"2026-07-01T00:00", "America/New_York", "2026-07-01T04:00:00Z"},
           Case{"2026-10-25T02:30", "Europe/Berlin", "2026-10-25T00:30:00Z"},  // first of two
       }) {
    const std::string spec = c.spec, tz = c.tz, at = c.at;
    CAPTURE(spec);
    CAPTURE(tz);
    const Schedule s = sched(c.spec, c.tz);
    CHECK(s.one_shot());
    CHECK(s.text() == spec);
    CHECK(iso(s.next_after(before)) == at);
    CHECK(iso(s.next_after(utc(c.at))) == "none");  // strictly after
  }
  const Schedule frac = sched("2026-12-01T03:00:00.25Z");
  CHECK(iso(frac.next_after(before)) == "2026-12-01T03:00:00Z+250000000ns");
  // In the past: no firing.
  CHECK(iso(sched("2020-01-01T00:00Z").next_after(before)) == "none");
  CHECK(iso(sched("2026-12-01T03:00").next_after(utc("2026-12-01T02:59:59Z"))) ==
        "2026-12-01T03:00:00Z");
}

TEST_CASE("schedule: errors name the field and the rule") {
  CHECK(parse_error("0 24 * * *") == "cron field 2 (hour): 24 is out of range 0-23");
  CHECK(parse_error("60 0 * * *") == "cron field 1 (minute): 60 is out of range 0-59");
  CHECK(parse_error("0 0 0 * *") == "cron field 3 (day of month): 0 is out of range 1-31");
  CHECK(parse_error("0 0 32 * *") == "cron field 3 (day of month): 32 is out of range 1-31");
  CHECK(parse_error("0 0 * 13 *") == "cron field 4 (month): 13 is out of range 1-12");
  CHECK(parse_error("0 0 * * 8") == "cron field 5 (day of week): 8 is out of range 0-7");
  CHECK(parse_error("0 0 * * fre") ==
        "cron field 5 (day of week): 'fre' is not a number or a name (sun..sat)");
  CHECK(parse_error("0 0 * janu *") ==
        "cron field 4 (month): 'janu' is not a number or a name (jan..dec)");
  CHECK(parse_error("0 mon * * *") == "cron field 2 (hour): 'mon' is not a number");
  CHECK(parse_error("*/0 * * * *") == "cron field 1 (minute): step 0 is out of range 1-60");
  CHECK(parse_error("*/x * * * *") == "cron field 1 (minute): step 'x' is not a number");
  CHECK(parse_error("*/ * * * *") == "cron field 1 (minute): '*/' has no step after '/'");
  CHECK(parse_error("0 5-1 * * *") == "cron field 2 (hour): range 5-1 runs backwards (5 > 1)");
  CHECK(parse_error("0 0 * * fri-mon") ==
        "cron field 5 (day of week): range fri-mon runs backwards (5 > 1)");
  CHECK(parse_error("0 1- * * *") == "cron field 2 (hour): range '1-' has no end");
  CHECK(parse_error("0 -1 * * *") == "cron field 2 (hour): '-1' is negative");
  CHECK(parse_error("0 1,,2 * * *") == "cron field 2 (hour): empty item in list '1,,2'");
  CHECK(parse_error("0 ? * * *") == "cron field 2 (hour): '?' is not a number");
  CHECK(parse_error("0 0 L/2 * *") ==
        "cron field 3 (day of month): 'L' (last day of the month) takes no step");
  CHECK(parse_error("0 0 * *") ==
        "cron expression '0 0 * *' needs 5 fields (minute hour day-of-month month "
        "day-of-week), got 4");
  CHECK(parse_error("0 0 0 * * *").find("needs 5 fields") != std::string::npos);  // no seconds
  CHECK(parse_error("@reboot").find("'@reboot' is not a known schedule alias") == 0);
  CHECK(parse_error("@fortnightly").find("is not a known schedule alias") != std::string::npos);
  CHECK(parse_error("").find("reset schedule is empty") == 0);
  CHECK(parse_error("   ").find("reset schedule is empty") == 0);
  CHECK(parse_error("weekly").find("needs 5 fields") != std::string::npos);

  CHECK(parse_error("2026-13-01T00:00") ==
        "one-shot time '2026-13-01T00:00': month 13 is out of range 1-12");
  CHECK(parse_error("2026-02-29T00:00") ==
        "one-shot time '2026-02-29T00:00': day 29 is out of range 1-28");
  CHECK(parse_error("2026-04-31") == "one-shot time '2026-04-31': day 31 is out of range 1-30");
  CHECK(parse_error("2026-12-01T24:00") ==
        "one-shot time '2026-12-01T24:00': hour 24 is out of range 0-23");
  CHECK(parse_error("2026-12-01T03:60") ==
        "one-shot time '2026-12-01T03:60': minute 60 is out of range 0-59");
  CHECK(parse_error("2026-12-01T03:00:60") ==
        "one-shot time '2026-12-01T03:00:60': second 60 is out of range 0-59");
  CHECK(parse_error("2026-12-01T03:00+24:00") ==
        "one-shot time '2026-12-01T03:00+24:00': offset is out of range (at most +/-23:59)");
  for (const char* bad : {"2026-12-01X03:00", "2026-12-1", "2026-12-01T3:00", "2026-12-01T03",
                          "2026-12-01T03:00 Z", "2026-12-01T03:00+1", "2026-12-01T03:00:00.",
                          "2026-12-01T03:00Europe/Berlin", "2026-"}) {
    const std::string shown = bad;
    CAPTURE(shown);
    CHECK(parse_error(bad).find(
              "expected YYYY-MM-DD[THH:MM[:SS[.fraction]]][Z|+HH:MM|-HH:MM]") !=
          std::string::npos);
  }
  CHECK(Schedule::parse("2026-02-29T00:00", TimeZone()).error().code == Errc::InvalidArgument);
  CHECK(parse_error("2028-02-29T00:00") == "<parsed>");
}

TEST_CASE("schedule: reset_due across a restart neither skips nor repeats a firing") {
  const Schedule daily = sched("@daily");
  const TimePoint created = utc("2026-11-20T12:00:00Z");

  // Before the first midnight: not due. At and after it: due.
  CHECK_FALSE(reset_due(daily, std::nullopt, created, utc("2026-11-20T23:59:59Z")));
  CHECK(reset_due(daily, std::nullopt, created, utc("2026-11-21T00:00:00Z")));
  CHECK(reset_due(daily, std::nullopt, created, utc("2026-11-21T00:01:00Z")));

  // Applied at 00:01 and persisted; the server restarts at 10:00: not due again.
  std::optional<TimePoint> last = utc("2026-11-21T00:01:00Z");
  CHECK_FALSE(reset_due(daily, last, created, utc("2026-11-21T10:00:00Z")));
  CHECK_FALSE(reset_due(daily, last, created, utc("2026-11-21T23:59:59Z")));

  // Down from 10:00 on the 21st until 09:00 on the 23rd (two midnights missed): due at the first
  // check after the restart, once; after applying, not again until the next midnight.
  CHECK(reset_due(daily, last, created, utc("2026-11-23T09:00:00Z")));
  last = utc("2026-11-23T09:00:00Z");
  CHECK_FALSE(reset_due(daily, last, created, utc("2026-11-23T09:01:00Z")));
  CHECK_FALSE(reset_due(daily, last, created, utc("2026-11-23T23:59:00Z")));
  CHECK(reset_due(daily, last, created, utc("2026-11-24T00:00:00Z")));

  // A clock behind the persisted instants: never due.
  CHECK_FALSE(reset_due(daily, last, created, utc("2026-11-01T00:00:00Z")));

  // A last_applied older than first_seen belongs to an earlier schedule and is ignored.
  CHECK_FALSE(reset_due(daily, utc("2026-01-01T00:00:00Z"), created, utc("2026-11-20T13:00:00Z")));
}

TEST_CASE("schedule: reset_due for one-shot resets") {
  const Schedule once = sched("2026-12-01T03:00", "Europe/Berlin");  // 02:00Z
  const TimePoint created = utc("2026-11-20T12:00:00Z");
  CHECK_FALSE(reset_due(once, std::nullopt, created, utc("2026-12-01T01:59:59Z")));
  CHECK(reset_due(once, std::nullopt, created, utc("2026-12-01T02:00:00Z")));
  // Down across the instant: due after the restart.
  CHECK(reset_due(once, std::nullopt, created, utc("2026-12-05T00:00:00Z")));
  // Applied: never again, however many restarts.
  const std::optional<TimePoint> last = utc("2026-12-05T00:00:00Z");
  CHECK_FALSE(reset_due(once, last, created, utc("2026-12-05T00:00:01Z")));
  CHECK_FALSE(reset_due(once, last, created, utc("2030-01-01T00:00:00Z")));
  // A terminal first seen after the instant is not reset (the reference resets every key first
  // evaluated after a past one-shot).
  CHECK_FALSE(reset_due(once, std::nullopt, utc("2026-12-02T00:00:00Z"),
                        utc("2026-12-03T00:00:00Z")));
}

}  // TEST_SUITE
