#pragma once

/// @file schedule.hpp
/// Scheduled terminal resets: when does a policy's reset schedule fire, in which time zone, and
/// is a reset due now. Pure computation over immutable values: no clock is read, nothing global
/// is touched, so values can be shared between threads freely.
///
/// Time zones are read by hand from the TZif files of the system tz database
/// (/usr/share/zoneinfo, Debian package tzdata), including the POSIX TZ footer that describes
/// every year after the last listed transition. We do not use the C library: localtime_r and
/// mktime follow the process-global TZ variable, and switching it per call (setenv + tzset) is
/// not thread-safe. libstdc++ 12 (Debian 12) has no std::chrono time zone database, and no
/// library Debian packages that we may depend on does this.
///
/// Schedule syntax (the reference accepts the same spellings, evaluated with croniter):
///  - "@weekly" (Sunday 00:00 local), "@monthly" (the 1st, 00:00), "@daily" / "@midnight",
///    "@hourly", "@yearly" / "@annually" (1 January 00:00); case-insensitive.
///  - A 5-field cron expression "minute hour day-of-month month day-of-week" (fields separated by
///    spaces or tabs). Each field is a comma-separated list of items; an item is "*", a value
///    "5", a range "1-5", or one of those with a step: "*/15", "1-30/2", and "5/15" (= 5-max/15,
///    as croniter reads it). Months accept jan..dec, weekdays sun..sat (case-insensitive, also
///    in ranges: "mon-fri"); weekday 0 and 7 are both Sunday; "?" is "*" in the two day fields;
///    "L" in day-of-month is the last day of the month. Ranges must not run backwards ("5-1").
///    Day matching follows Vixie cron: if either day field starts with "*", both must match;
///    if both are restricted, a day matching either one fires ("0 0 1 * mon": the 1st and
///    every Monday).
///  - A one-shot ISO 8601 time: "2026-12-01", "2026-12-01T03:00", "2026-12-01T03:00:30.5",
///    with "T" or a space between date and time, and an optional offset "Z", "+01:00", "+0100"
///    or "+01". Without an offset it is a wall-clock time in the schedule's time zone.
///
/// Wall-clock rules (cron and one-shot times are wall-clock times in the schedule's zone):
///  - a local time that does not exist (the hour skipped when clocks spring forward) fires at the
///    first instant after the gap, i.e. at the jump itself (as cronie/Vixie run jobs of the
///    skipped hour right after the jump); several such times collapse into that one firing;
///  - a local time that occurs twice (clocks fall back) fires once, at its first occurrence.
///    This also holds for wildcard hours ("0 * * * *" fires once for the repeated 02:00), where
///    cronie would run the job in both hours: for resets, fewer is the safe side.
///
/// The search for the next firing is bounded (9 years, enough for 29 February across the
/// non-leap year 2100); a cron that never fires in that window ("0 0 30 2 *", "0 0 31 4 *")
/// has no next firing.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "terminals/export.hpp"
#include "terminals/result.hpp"

namespace terminals {

/// An IANA time zone (or UTC): the offset from UTC at any instant, and wall-clock conversions.
/// Immutable and cheap to copy (the rules are shared).
class TERMINALS_API TimeZone {
 public:
  using TimePoint = std::chrono::system_clock::time_point;

  /// UTC.
  TimeZone();

  /// "UTC", "Etc/UTC" and "" are UTC without touching the file system. Any other name is read
  /// from /usr/share/zoneinfo/<name>. Names with "..", a leading "/", or characters outside
  /// [A-Za-z0-9/_+-] are InvalidArgument (they could escape the directory); an unknown zone is
  /// NotFound; an unreadable or malformed file is InvalidArgument naming the zone. Unlike the
  /// reference, an unknown name never falls back to UTC silently.
  static Result<TimeZone> load(std::string_view name);

  /// Parses TZif data (RFC 8536, versions 1-4) under the given name; what `load` does after
  /// reading the file. Zones with leap seconds ("right/...") are refused.
  static Result<TimeZone> from_tzif(std::string_view name, std::string_view data);

  /// The name given to `load` ("UTC" for "").
  const std::string& name() const;

  /// Offset of local time from UTC at `utc` (east positive: Europe/Berlin in summer is +7200 s).
  std::chrono::seconds offset_at(TimePoint utc) const;

  /// The wall-clock time at `utc`.
  std::chrono::local_seconds to_local(std::chrono::sys_seconds utc) const;

  /// How a wall-clock time maps to UTC.
  struct LocalMapping {
    enum class Kind {
      Unique,     ///< exactly one instant: `first`
      Ambiguous,  ///< occurs twice (fall back): `first` and `second`, `first` < `second`
      Gap,        ///< does not exist (spring forward): `first` = `second` = the end of the gap
    };
    Kind kind = Kind::Unique;
    std::chrono::sys_seconds first;
    std::chrono::sys_seconds second;
  };
  LocalMapping map_local(std::chrono::local_seconds local) const;

  /// The instant a schedule fires for a wall-clock time: the only one, the first of two, or the
  /// end of a gap (see the file comment).
  std::chrono::sys_seconds to_utc(std::chrono::local_seconds local) const;

  struct Data;  // the parsed rules (internal)

 private:
  std::shared_ptr<const Data> data_;
};

/// A parsed reset schedule in a time zone. Immutable and cheap to copy.
class TERMINALS_API Schedule {
 public:
  using TimePoint = std::chrono::system_clock::time_point;

  /// Parses `spec` (leading and trailing whitespace ignored) as described in the file comment.
  /// Errors are InvalidArgument naming the field and the rule, e.g.
  /// "cron field 2 (hour): 24 is out of range 0-23".
  static Result<Schedule> parse(std::string_view spec, const TimeZone& tz);

  /// The first firing strictly after `t`; nullopt for a one-shot at or before `t`, or a cron
  /// that cannot fire within the search window.
  std::optional<TimePoint> next_after(TimePoint t) const;

  /// True for an ISO time, false for cron and "@" forms.
  bool one_shot() const;

  /// The spec as given to `parse`, without surrounding whitespace.
  const std::string& text() const;

  const TimeZone& time_zone() const;

  struct Spec;  // the parsed fields (internal)

 private:
  Schedule() = default;
  std::shared_ptr<const Spec> spec_;
  TimeZone tz_;
};

/// Whether a scheduled reset is due now: did the schedule fire in (since, now], where `since` is
/// the later of `last_applied` and `first_seen`?
///
///  - `last_applied`: when a reset under this schedule was last applied, persisted by the caller.
///    Store the time the reset was applied (the `now` of the check that returned true), not the
///    firing instant: firings missed while the server was down then collapse into one reset
///    instead of one reset per missed firing.
///  - `first_seen`: when this terminal came under this schedule (created, or the schedule or its
///    time zone last changed). A firing before it never counts: a one-shot already in the past
///    when a terminal is created, or a changed schedule whose earlier firing fell before the
///    change, does not reset it (the reference resets every key first seen after a past
///    one-shot). A `last_applied` older than `first_seen` belongs to an earlier schedule and is
///    ignored.
///
/// Because the check depends only on persisted instants and the current time, a restart neither
/// skips a firing that happened while the server was down (it is due at the first check after
/// the restart) nor repeats one that was already applied.
TERMINALS_API bool reset_due(const Schedule& schedule,
                             std::optional<std::chrono::system_clock::time_point> last_applied,
                             std::chrono::system_clock::time_point first_seen,
                             std::chrono::system_clock::time_point now);

}  // namespace terminals
