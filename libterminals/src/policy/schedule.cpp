// Schedule: cron, "@" aliases and one-shot ISO times, evaluated in wall-clock time of a zone.
// Syntax and DST rules: terminals/schedule.hpp.

#include "terminals/schedule.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "policy/civil.hpp"

namespace terminals {

namespace {

using std::chrono::seconds;
using std::chrono::sys_seconds;

constexpr std::int64_t kDay = 86400;
// 29 February can be 8 years apart (2096 -> 2104); one more for the partial first year.
constexpr std::int64_t kSearchYears = 9;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

constexpr std::array<const char*, 12> kMonthNames = {"jan", "feb", "mar", "apr", "may", "jun",
                                                     "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr std::array<const char*, 7> kDayNames = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

struct FieldDef {
  int number;         // 1-based position, for messages
  const char* label;  // "hour"
  int lo, hi;
  const char* const* names;  // names[i] is value name_base + i
  int name_count;
  int name_base;
  bool day_field;  // accepts "?"
};

constexpr FieldDef kFields[5] = {
    {1, "minute", 0, 59, nullptr, 0, 0, false},
    {2, "hour", 0, 23, nullptr, 0, 0, false},
    {3, "day of month", 1, 31, nullptr, 0, 0, true},
    {4, "month", 1, 12, kMonthNames.data(), 12, 1, false},
    {5, "day of week", 0, 7, kDayNames.data(), 7, 0, true},
};

Error field_error(const FieldDef& f, const std::string& why) {
  return Error(Errc::InvalidArgument,
               "cron field " + std::to_string(f.number) + " (" + f.label + "): " + why);
}

// One parsed field: a bit per allowed value.
struct Field {
  std::uint64_t mask = 0;
  bool star = false;  // the field text starts with "*" or "?" (Vixie's day-matching rule)
  bool last = false;  // "L" in day of month
};

// A number or a name; `text` is non-empty.
Result<int> field_value(const FieldDef& f, std::string_view text) {
  if (is_digit(text.front())) {
    long v = 0;
    for (char c : text) {
      if (!is_digit(c))
        return field_error(f, "'" + std::string(text) + "' is not a number");
      v = v * 10 + (c - '0');
      if (v > 1000000) break;
    }
    if (v < f.lo || v > f.hi)
      return field_error(f, std::to_string(v) + " is out of range " + std::to_string(f.lo) +
                                "-" + std::to_string(f.hi));
    return static_cast<int>(v);
  }
  for (int i = 0; i < f.name_count; ++i)
    if (iequals(text, f.names[i])) return f.name_base + i;
  std::string why = "'" + std::string(text) + "' is not a number";
  if (f.names != nullptr)
    why += std::string(" or a name (") + f.names[0] + ".." + f.names[f.name_count - 1] + ")";
  return field_error(f, why);
}

Result<Field> parse_field(const FieldDef& f, std::string_view text) {
  Field out;
  out.star = text.front() == '*' || (f.day_field && text.front() == '?');
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string_view item =
        text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (item.empty()) return field_error(f, "empty item in list '" + std::string(text) + "'");

    std::string_view base = item;
    int step = 1;
    bool has_step = false;
    if (const std::size_t slash = item.find('/'); slash != std::string_view::npos) {
      base = item.substr(0, slash);
      const std::string_view st = item.substr(slash + 1);
      if (st.empty()) return field_error(f, "'" + std::string(item) + "' has no step after '/'");
      long v = 0;
      for (char c : st) {
        if (!is_digit(c)) return field_error(f, "step '" + std::string(st) + "' is not a number");
        v = v * 10 + (c - '0');
        if (v > 1000000) break;
      }
      const int max_step = f.hi - f.lo + 1;
      if (v < 1 || v > max_step)
        return field_error(f, "step " + std::to_string(v) + " is out of range 1-" +
                                  std::to_string(max_step));
      step = static_cast<int>(v);
      has_step = true;
      if (base.empty()) return field_error(f, "'" + std::string(item) + "' has no range before '/'");
    }

    int lo = 0, hi = 0;
    if (base == "*" || (f.day_field && base == "?")) {
      lo = f.lo;
      hi = f.hi;
    } else if (f.number == 3 && (base == "L" || base == "l")) {
      if (has_step) return field_error(f, "'L' (last day of the month) takes no step");
      out.last = true;
      lo = 1, hi = 0;  // no plain values
    } else if (const std::size_t dash = base.find('-', 1); dash != std::string_view::npos) {
      const std::string_view a = base.substr(0, dash), b = base.substr(dash + 1);
      if (b.empty()) return field_error(f, "range '" + std::string(base) + "' has no end");
      auto va = field_value(f, a);
      if (!va) return va.error();
      auto vb = field_value(f, b);
      if (!vb) return vb.error();
      lo = *va;
      hi = *vb;
      if (lo > hi)
        return field_error(f, "range " + std::string(base) + " runs backwards (" +
                                  std::to_string(lo) + " > " + std::to_string(hi) + ")");
    } else {
      if (base.front() == '-') return field_error(f, "'" + std::string(base) + "' is negative");
      auto v = field_value(f, base);
      if (!v) return v.error();
      lo = *v;
      hi = has_step ? f.hi : *v;  // "5/15" = 5-max/15, as croniter reads it
    }
    for (int v = lo; v <= hi; v += step) out.mask |= std::uint64_t{1} << v;
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (f.number == 5 && (out.mask & (std::uint64_t{1} << 7))) {  // 7 is Sunday too
    out.mask &= ~(std::uint64_t{1} << 7);
    out.mask |= 1;
  }
  return out;
}

int next_bit(std::uint64_t mask, int from, int hi) {
  for (int v = from; v <= hi; ++v)
    if (mask & (std::uint64_t{1} << v)) return v;
  return -1;
}

const char* const kSyntaxHint =
    "use @hourly, @daily, @weekly, @monthly, @yearly, a 5-field cron expression "
    "(minute hour day-of-month month day-of-week) or an ISO time such as 2026-12-01T03:00";

}  // namespace

struct Schedule::Spec {
  std::string text;
  bool one_shot = false;
  TimePoint at;  // one-shot
  std::uint64_t minutes = 0, hours = 0, doms = 0, months = 0, dows = 0;
  bool dom_last = false, dom_star = false, dow_star = false;

  bool day_matches(std::int64_t y, int m, int d, std::int64_t days) const {
    const bool dom = (doms & (std::uint64_t{1} << d)) ||
                     (dom_last && d == civil::days_in_month(y, m));
    const bool dow = dows & (std::uint64_t{1} << civil::weekday(days));
    return (dom_star || dow_star) ? (dom && dow) : (dom || dow);
  }

  // The first matching wall-clock minute at or after `from` (minute-aligned local seconds), or
  // nullopt once past `limit_year`.
  std::optional<std::int64_t> next_match(std::int64_t from, std::int64_t limit_year) const {
    std::int64_t days = civil::floor_div(from, kDay);
    const std::int64_t secs = from - days * kDay;
    int hour = static_cast<int>(secs / 3600);
    int minute = static_cast<int>(secs % 3600 / 60);
    civil::Date date = civil::civil_from_days(days);
    auto next_day = [&] {
      hour = minute = 0;
      if (++date.day > civil::days_in_month(date.year, date.month)) {
        date.day = 1;
        if (++date.month > 12) date.month = 1, ++date.year;
      }
    };
    while (date.year <= limit_year) {
      if (!(months & (std::uint64_t{1} << date.month))) {
        hour = minute = 0;
        date.day = 1;
        if (++date.month > 12) date.month = 1, ++date.year;
        continue;
      }
      days = civil::days_from_civil(date.year, date.month, date.day);
      if (!day_matches(date.year, date.month, date.day, days)) {
        next_day();
        continue;
      }
      const int h = next_bit(hours, hour, 23);
      if (h < 0) {
        next_day();
        continue;
      }
      if (h != hour) hour = h, minute = 0;
      const int mi = next_bit(minutes, minute, 59);
      if (mi < 0) {
        minute = 0;
        if (++hour > 23) next_day();
        continue;
      }
      return days * kDay + hour * 3600 + mi * 60;
    }
    return std::nullopt;
  }
};

namespace {

Status parse_cron(std::string_view spec, Schedule::Spec& out) {
  std::vector<std::string_view> fields;
  std::size_t i = 0;
  while (i < spec.size()) {
    while (i < spec.size() && is_space(spec[i])) ++i;
    const std::size_t start = i;
    while (i < spec.size() && !is_space(spec[i])) ++i;
    if (i > start) fields.push_back(spec.substr(start, i - start));
  }
  if (fields.size() != 5)
    return Error(Errc::InvalidArgument,
                 "cron expression '" + std::string(spec) +
                     "' needs 5 fields (minute hour day-of-month month day-of-week), got " +
                     std::to_string(fields.size()));
  Field parsed[5];
  for (int f = 0; f < 5; ++f) {
    auto r = parse_field(kFields[f], fields[static_cast<std::size_t>(f)]);
    if (!r) return r.error();
    parsed[f] = *r;
  }
  out.minutes = parsed[0].mask;
  out.hours = parsed[1].mask;
  out.doms = parsed[2].mask;
  out.dom_last = parsed[2].last;
  out.dom_star = parsed[2].star;
  out.months = parsed[3].mask;
  out.dows = parsed[4].mask;
  out.dow_star = parsed[4].star;
  return {};
}

// Reads exactly `n` digits at s[i...].
bool digits(std::string_view s, std::size_t& i, int n, int& out) {
  if (s.size() - i < static_cast<std::size_t>(n)) return false;
  int v = 0;
  for (int k = 0; k < n; ++k) {
    if (!is_digit(s[i])) return false;
    v = v * 10 + (s[i++] - '0');
  }
  out = v;
  return true;
}

Result<Schedule::TimePoint> parse_iso(std::string_view s, const TimeZone& tz) {
  const std::string q = "one-shot time '" + std::string(s) + "': ";
  const Error shape(Errc::InvalidArgument,
                    q + "expected YYYY-MM-DD[THH:MM[:SS[.fraction]]][Z|+HH:MM|-HH:MM]");
  std::size_t i = 0;
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  std::int64_t nanos = 0;
  if (!digits(s, i, 4, y) || s[i++] != '-' || !digits(s, i, 2, mo) || i >= s.size() ||
      s[i++] != '-' || !digits(s, i, 2, d))
    return shape;
  bool has_time = false, has_offset = false;
  int offset = 0;
  if (i < s.size()) {
    if (s[i] != 'T' && s[i] != 't' && s[i] != ' ') return shape;
    ++i;
    has_time = true;
    if (!digits(s, i, 2, h) || i >= s.size() || s[i++] != ':' || !digits(s, i, 2, mi))
      return shape;
    if (i < s.size() && s[i] == ':') {
      ++i;
      if (!digits(s, i, 2, sec)) return shape;
      if (i < s.size() && (s[i] == '.' || s[i] == ',')) {
        ++i;
        int n = 0;
        std::int64_t scale = 100000000;
        while (i < s.size() && is_digit(s[i])) {
          if (n < 9) nanos += (s[i] - '0') * scale, scale /= 10;
          ++i, ++n;
        }
        if (n == 0) return shape;
      }
    }
    if (i < s.size()) {
      has_offset = true;
      if (s[i] == 'Z' || s[i] == 'z') {
        ++i;
      } else if (s[i] == '+' || s[i] == '-') {
        const int sign = s[i++] == '-' ? -1 : 1;
        int oh = 0, om = 0;
        if (!digits(s, i, 2, oh)) return shape;
        if (i < s.size()) {
          if (s[i] == ':') ++i;
          if (!digits(s, i, 2, om)) return shape;
        }
        if (oh > 23 || om > 59)
          return Error(Errc::InvalidArgument, q + "offset is out of range (at most +/-23:59)");
        offset = sign * (oh * 3600 + om * 60);
      } else {
        return shape;
      }
      if (i != s.size()) return shape;
    }
  }
  (void)has_time;
  auto range = [&](const char* what, int v, int lo, int hi) -> std::optional<Error> {
    if (v >= lo && v <= hi) return std::nullopt;
    return Error(Errc::InvalidArgument, q + what + " " + std::to_string(v) +
                                            " is out of range " + std::to_string(lo) + "-" +
                                            std::to_string(hi));
  };
  if (auto e = range("month", mo, 1, 12)) return *e;
  if (auto e = range("day", d, 1, civil::days_in_month(y, mo))) return *e;
  if (auto e = range("hour", h, 0, 23)) return *e;
  if (auto e = range("minute", mi, 0, 59)) return *e;
  if (auto e = range("second", sec, 0, 59)) return *e;
  // Stay well inside system_clock's range (nanoseconds: years 1678-2262).
  if (auto e = range("year", y, 1970, 2200)) return *e;

  const std::int64_t local = civil::days_from_civil(y, mo, d) * kDay + h * 3600 + mi * 60 + sec;
  const sys_seconds at = has_offset
                             ? sys_seconds(seconds(local - offset))
                             : tz.to_utc(std::chrono::local_seconds(seconds(local)));
  return Schedule::TimePoint(at) +
         std::chrono::duration_cast<Schedule::TimePoint::duration>(std::chrono::nanoseconds(nanos));
}

}  // namespace

Result<Schedule> Schedule::parse(std::string_view spec_text, const TimeZone& tz) {
  const std::string_view s = trim(spec_text);
  auto spec = std::make_shared<Spec>();
  spec->text = std::string(s);
  if (s.empty())
    return Error(Errc::InvalidArgument, std::string("reset schedule is empty; ") + kSyntaxHint);

  if (s.size() >= 5 && is_digit(s[0]) && is_digit(s[1]) && is_digit(s[2]) && is_digit(s[3]) &&
      s[4] == '-') {
    auto at = parse_iso(s, tz);
    if (!at) return at.error();
    spec->one_shot = true;
    spec->at = *at;
  } else if (s.front() == '@') {
    static constexpr std::pair<const char*, const char*> kAliases[] = {
        {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"},  {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    };
    const char* cron = nullptr;
    for (const auto& [name, expansion] : kAliases)
      if (iequals(s, name)) cron = expansion;
    if (cron == nullptr)
      return Error(Errc::InvalidArgument,
                   "'" + std::string(s) + "' is not a known schedule alias; " + kSyntaxHint);
    if (Status st = parse_cron(cron, *spec); !st) return st.error();
  } else {
    if (Status st = parse_cron(s, *spec); !st) return st.error();
  }
  Schedule out;
  out.spec_ = std::move(spec);
  out.tz_ = tz;
  return out;
}

std::optional<Schedule::TimePoint> Schedule::next_after(TimePoint t) const {
  if (spec_->one_shot) {
    if (spec_->at > t) return spec_->at;
    return std::nullopt;
  }
  const sys_seconds ts = std::chrono::floor<seconds>(t);
  const std::int64_t lt = tz_.to_local(ts).time_since_epoch().count();
  // Every wall-clock minute up to lt maps to an instant at or before t (the mapping is monotonic
  // and lt maps to t or to its earlier twin), so the search starts at the next minute and skips
  // the minutes of a repeated hour whose first occurrence is already past.
  std::int64_t from = civil::floor_div(lt, 60) * 60 + 60;
  const std::int64_t limit_year =
      civil::civil_from_days(civil::floor_div(lt, kDay)).year + kSearchYears;
  const std::int64_t max_s =
      std::chrono::floor<seconds>(TimePoint::max()).time_since_epoch().count() - 2 * kDay;
  while (true) {
    const auto local = spec_->next_match(from, limit_year);
    if (!local || *local > max_s) return std::nullopt;
    const sys_seconds at = tz_.to_utc(std::chrono::local_seconds(seconds(*local)));
    if (TimePoint(at) > t) return TimePoint(at);
    from = *local + 60;
  }
}

bool Schedule::one_shot() const { return spec_->one_shot; }

const std::string& Schedule::text() const { return spec_->text; }

const TimeZone& Schedule::time_zone() const { return tz_; }

bool reset_due(const Schedule& schedule,
               std::optional<std::chrono::system_clock::time_point> last_applied,
               std::chrono::system_clock::time_point first_seen,
               std::chrono::system_clock::time_point now) {
  const auto since = last_applied && *last_applied > first_seen ? *last_applied : first_seen;
  if (now <= since) return false;
  const auto firing = schedule.next_after(since);
  return firing && *firing <= now;
}

}  // namespace terminals
