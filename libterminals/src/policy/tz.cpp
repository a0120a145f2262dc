// TimeZone: TZif files (RFC 8536) and POSIX TZ footer rules, read by hand. Why not the C library
// or std::chrono: see terminals/schedule.hpp.

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "policy/civil.hpp"
#include "terminals/schedule.hpp"

namespace terminals {

namespace {

constexpr std::int64_t kDay = 86400;
constexpr const char* kZoneDir = "/usr/share/zoneinfo";
constexpr std::size_t kMaxZoneFile = 1 << 20;  // real files are a few KiB

// A POSIX TZ rule date: "Jn" (1-365, 29 February never counted), "n" (0-365, counted) or
// "Mm.w.d" (weekday d of week w of month m; w = 5 means the last one).
struct DateRule {
  enum class Kind { Julian1, Julian0, MonthWeekDay } kind = Kind::MonthWeekDay;
  int n = 0;
  int month = 0, week = 0, wday = 0;

  // The day number (days since 1970-01-01) of the rule's date in `year`.
  std::int64_t day_in(std::int64_t year) const {
    const std::int64_t jan1 = civil::days_from_civil(year, 1, 1);
    switch (kind) {
      case Kind::Julian1:
        return jan1 + n - 1 + (civil::is_leap(year) && n >= 60 ? 1 : 0);
      case Kind::Julian0:
        return jan1 + n;
      case Kind::MonthWeekDay: {
        const std::int64_t first = civil::days_from_civil(year, month, 1);
        std::int64_t d = first + (wday - civil::weekday(first) + 7) % 7 + (week - 1) * 7;
        while (d >= first + civil::days_in_month(year, month)) d -= 7;  // week 5 = last
        return d;
      }
    }
    return jan1;
  }
};

// The footer: how local time behaves after the last transition listed in the file.
struct PosixRule {
  std::int32_t std_off = 0;  // east positive (POSIX writes it west positive)
  bool has_dst = false;
  std::int32_t dst_off = 0;
  DateRule start, end;
  std::int32_t start_time = 7200, end_time = 7200;  // local seconds after midnight, may be < 0

  std::int32_t offset_at(std::int64_t s) const {
    if (!has_dst) return std_off;
    // Collect the transitions of the neighbouring years and take the latest one at or before s.
    // Works for either hemisphere (start after end in the year) without special cases.
    const std::int64_t year = civil::civil_from_days(civil::floor_div(s + std_off, kDay)).year;
    std::int64_t best = INT64_MIN;
    bool best_is_dst = false;
    for (std::int64_t y = year - 1; y <= year + 1; ++y) {
      const std::int64_t on = start.day_in(y) * kDay + start_time - std_off;
      const std::int64_t off = end.day_in(y) * kDay + end_time - dst_off;
      if (on <= s && on > best) best = on, best_is_dst = true;
      if (off <= s && off > best) best = off, best_is_dst = false;
    }
    return best_is_dst ? dst_off : std_off;
  }
};

class PosixParser {
 public:
  explicit PosixParser(std::string_view s) : s_(s) {}

  bool parse(PosixRule& r) {
    if (!name()) return false;
    std::int32_t off = 0;
    if (!offset(off, 24 * 3600 + 3599)) return false;
    r.std_off = -off;
    if (done()) return true;
    if (!name()) return false;
    r.has_dst = true;
    r.dst_off = r.std_off + 3600;
    if (!done() && peek() != ',') {
      if (!offset(off, 24 * 3600 + 3599)) return false;
      r.dst_off = -off;
    }
    if (done()) {  // no rules: the traditional US rules, as tzcode assumes
      r.start = {DateRule::Kind::MonthWeekDay, 0, 3, 2, 0};
      r.end = {DateRule::Kind::MonthWeekDay, 0, 11, 1, 0};
      return true;
    }
    if (!eat(',') || !date(r.start)) return false;
    if (eat('/') && !offset(r.start_time, 167 * 3600 + 3599)) return false;
    if (!eat(',') || !date(r.end)) return false;
    if (eat('/') && !offset(r.end_time, 167 * 3600 + 3599)) return false;
    return done();
  }

 private:
  bool done() const { return i_ >= s_.size(); }
  char peek() const { return done() ? '\0' : s_[i_]; }
  bool eat(char c) {
    if (peek() != c) return false;
    ++i_;
    return true;
  }
  static bool alpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
  static bool digit(char c) { return c >= '0' && c <= '9'; }

  bool name() {
    if (eat('<')) {
      const std::size_t start = i_;
      while (!done() && peek() != '>') ++i_;
      if (!eat('>')) return false;
      return i_ - 1 - start >= 3;
    }
    const std::size_t start = i_;
    while (!done() && alpha(peek())) ++i_;
    return i_ - start >= 3;
  }

  bool number(int& out, int max) {
    if (!digit(peek())) return false;
    long v = 0;
    while (digit(peek())) {
      v = v * 10 + (s_[i_++] - '0');
      if (v > max) return false;
    }
    out = static_cast<int>(v);
    return true;
  }

  // [+-]hh[:mm[:ss]] in seconds.
  bool offset(std::int32_t& out, int max_seconds) {
    int sign = 1;
    if (eat('-')) sign = -1;
    else eat('+');
    int h = 0, m = 0, sec = 0;
    if (!number(h, 167)) return false;
    if (eat(':')) {
      if (!number(m, 59)) return false;
      if (eat(':') && !number(sec, 59)) return false;
    }
    const int v = h * 3600 + m * 60 + sec;
    if (v > max_seconds) return false;
    out = sign * v;
    return true;
  }

  bool date(DateRule& d) {
    if (eat('J')) {
      d.kind = DateRule::Kind::Julian1;
      return number(d.n, 365) && d.n >= 1;
    }
    if (eat('M')) {
      d.kind = DateRule::Kind::MonthWeekDay;
      return number(d.month, 12) && d.month >= 1 && eat('.') && number(d.week, 5) &&
             d.week >= 1 && eat('.') && number(d.wday, 6);
    }
    d.kind = DateRule::Kind::Julian0;
    return number(d.n, 365);
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

std::uint32_t be32(const unsigned char* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

std::int64_t be64(const unsigned char* p) {
  return static_cast<std::int64_t>((std::uint64_t{be32(p)} << 32) | be32(p + 4));
}

Error malformed(std::string_view name, std::string_view why) {
  return Error(Errc::InvalidArgument,
               "time zone '" + std::string(name) + "': malformed TZif data (" + std::string(why) +
                   ")");
}

std::shared_ptr<const TimeZone::Data> utc_data(std::string name);

}  // namespace

struct TimeZone::Data {
  std::string name;
  std::vector<std::int64_t> trans;        // transition instants, UTC seconds, ascending
  std::vector<std::int32_t> trans_off;    // offset in effect from each transition on
  std::int32_t initial_off = 0;           // before the first transition (time type 0)
  bool has_footer = false;
  PosixRule footer;

  std::int32_t offset_at(std::int64_t s) const {
    if (has_footer && (trans.empty() || s >= trans.back())) return footer.offset_at(s);
    const auto it = std::upper_bound(trans.begin(), trans.end(), s);
    if (it == trans.begin()) return initial_off;
    return trans_off[static_cast<std::size_t>(it - trans.begin() - 1)];
  }
};

namespace {

std::shared_ptr<const TimeZone::Data> utc_data(std::string name) {
  auto d = std::make_shared<TimeZone::Data>();
  d->name = std::move(name);
  return d;
}

}  // namespace

TimeZone::TimeZone() {
  static const std::shared_ptr<const Data> utc = utc_data("UTC");
  data_ = utc;
}

const std::string& TimeZone::name() const { return data_->name; }

Result<TimeZone> TimeZone::load(std::string_view name) {
  if (name.empty() || name == "UTC" || name == "Etc/UTC") {
    TimeZone tz;
    if (!name.empty()) tz.data_ = utc_data(std::string(name));
    return tz;
  }
  const std::string quoted = "'" + std::string(name) + "'";
  if (name.size() > 255)
    return Error(Errc::InvalidArgument, "time zone name is longer than 255 characters");
  for (char c : name) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '/' || c == '_' || c == '+' || c == '-' || c == '.';
    if (!ok)
      return Error(Errc::InvalidArgument,
                   "time zone " + quoted +
                       ": only letters, digits and / _ + - are allowed in a zone name");
  }
  if (name.find("..") != std::string_view::npos || name.find('.') != std::string_view::npos)
    return Error(Errc::InvalidArgument,
                 "time zone " + quoted + ": '.' and '..' are not allowed in a zone name");
  if (name.front() == '/')
    return Error(Errc::InvalidArgument,
                 "time zone " + quoted + ": a zone name is relative to " + kZoneDir +
                     ", not an absolute path");

  const std::string path = std::string(kZoneDir) + "/" + std::string(name);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    return Error(Errc::NotFound,
                 "unknown time zone " + quoted + " (no file " + path +
                     "; use an IANA name such as Europe/Berlin, is tzdata installed?)");
  std::ifstream in(path, std::ios::binary);
  std::string data;
  if (in) {
    data.resize(kMaxZoneFile + 1);
    in.read(data.data(), static_cast<std::streamsize>(data.size()));
    data.resize(static_cast<std::size_t>(in.gcount()));
  }
  if (!in && !in.eof())
    return Error(Errc::Io, "time zone " + quoted + ": cannot read " + path);
  if (data.size() > kMaxZoneFile) return malformed(name, "file larger than 1 MiB");
  return from_tzif(name, data);
}

Result<TimeZone> TimeZone::from_tzif(std::string_view name, std::string_view bytes) {
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const std::size_t size = bytes.size();
  std::size_t pos = 0;

  struct Header {
    std::uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
    char version;
  };
  auto read_header = [&](Header& h) -> bool {
    if (size - pos < 44 || std::string_view(bytes.data() + pos, 4) != "TZif") return false;
    h.version = bytes[pos + 4];
    const unsigned char* c = p + pos + 20;
    h.isutcnt = be32(c);
    h.isstdcnt = be32(c + 4);
    h.leapcnt = be32(c + 8);
    h.timecnt = be32(c + 12);
    h.typecnt = be32(c + 16);
    h.charcnt = be32(c + 20);
    pos += 44;
    return true;
  };
  auto block_size = [](const Header& h, std::uint64_t time_size) {
    return std::uint64_t{h.timecnt} * time_size + h.timecnt + std::uint64_t{h.typecnt} * 6 +
           h.charcnt + std::uint64_t{h.leapcnt} * (time_size + 4) + h.isstdcnt + h.isutcnt;
  };

  Header h{};
  if (!read_header(h)) return malformed(name, "no TZif header");
  std::uint64_t time_size = 4;
  if (h.version >= '2') {
    const std::uint64_t skip = block_size(h, 4);
    if (skip > size - pos) return malformed(name, "truncated version 1 block");
    pos += static_cast<std::size_t>(skip);
    if (!read_header(h)) return malformed(name, "no second TZif header");
    time_size = 8;
  }
  if (h.leapcnt != 0)
    return Error(Errc::InvalidArgument, "time zone '" + std::string(name) +
                                            "': zones with leap seconds are not supported");
  if (h.typecnt == 0 || h.typecnt > 256) return malformed(name, "bad number of local time types");
  if (block_size(h, time_size) > size - pos) return malformed(name, "truncated data block");

  auto d = std::make_shared<Data>();
  d->name = std::string(name);
  const unsigned char* times = p + pos;
  const unsigned char* idx = times + h.timecnt * time_size;
  const unsigned char* types = idx + h.timecnt;
  std::vector<std::int32_t> type_off(h.typecnt);
  for (std::uint32_t i = 0; i < h.typecnt; ++i)
    type_off[i] = static_cast<std::int32_t>(be32(types + 6 * i));
  for (std::int32_t off : type_off)
    if (off < -25 * 3600 || off > 26 * 3600) return malformed(name, "offset out of range");
  d->initial_off = type_off[0];
  d->trans.reserve(h.timecnt);
  d->trans_off.reserve(h.timecnt);
  for (std::uint32_t i = 0; i < h.timecnt; ++i) {
    const std::int64_t t = time_size == 8 ? be64(times + 8 * i)
                                          : static_cast<std::int32_t>(be32(times + 4 * i));
    if (!d->trans.empty() && t <= d->trans.back())
      return malformed(name, "transitions out of order");
    if (idx[i] >= h.typecnt) return malformed(name, "bad local time type index");
    d->trans.push_back(t);
    d->trans_off.push_back(type_off[idx[i]]);
  }
  pos += static_cast<std::size_t>(block_size(h, time_size));

  if (time_size == 8) {
    if (pos >= size || bytes[pos] != '\n') return malformed(name, "no footer");
    const std::size_t end = bytes.find('\n', pos + 1);
    if (end == std::string_view::npos) return malformed(name, "unterminated footer");
    const std::string_view footer = bytes.substr(pos + 1, end - pos - 1);
    if (!footer.empty()) {
      if (!PosixParser(footer).parse(d->footer))
        return malformed(name, "bad POSIX TZ footer '" + std::string(footer) + "'");
      d->has_footer = true;
    }
  }
  TimeZone tz;
  tz.data_ = std::move(d);
  return tz;
}

std::chrono::seconds TimeZone::offset_at(TimePoint utc) const {
  const auto s = std::chrono::floor<std::chrono::seconds>(utc).time_since_epoch().count();
  return std::chrono::seconds(data_->offset_at(s));
}

std::chrono::local_seconds TimeZone::to_local(std::chrono::sys_seconds utc) const {
  const std::int64_t s = utc.time_since_epoch().count();
  return std::chrono::local_seconds(std::chrono::seconds(s + data_->offset_at(s)));
}

TimeZone::LocalMapping TimeZone::map_local(std::chrono::local_seconds local) const {
  using std::chrono::seconds;
  using std::chrono::sys_seconds;
  const std::int64_t l = local.time_since_epoch().count();
  // The offsets a day either side cover both sides of any transition near `l` (transitions are
  // far more than two days apart in every real zone).
  const std::int32_t before = data_->offset_at(l - kDay);
  const std::int32_t after = data_->offset_at(l + kDay);
  std::int64_t valid[2];
  int n = 0;
  for (std::int32_t o : {before, after}) {
    if (n == 1 && o == before) break;
    const std::int64_t u = l - o;
    if (data_->offset_at(u) == o) valid[n++] = u;
  }
  LocalMapping m;
  if (n == 2 && valid[0] != valid[1]) {
    m.kind = LocalMapping::Kind::Ambiguous;
    m.first = sys_seconds(seconds(std::min(valid[0], valid[1])));
    m.second = sys_seconds(seconds(std::max(valid[0], valid[1])));
    return m;
  }
  if (n >= 1 || before == after) {
    const std::int64_t u = n >= 1 ? valid[0] : l - before;
    m.first = m.second = sys_seconds(seconds(u));
    return m;
  }
  // A gap: find the transition, the first instant whose offset differs from the one at `lo`.
  std::int64_t lo = l - std::max(before, after);
  std::int64_t hi = l - std::min(before, after);
  const std::int32_t lo_off = data_->offset_at(lo);
  while (hi - lo > 1) {
    const std::int64_t mid = lo + (hi - lo) / 2;
    if (data_->offset_at(mid) == lo_off) lo = mid;
    else hi = mid;
  }
  m.kind = LocalMapping::Kind::Gap;
  m.first = m.second = sys_seconds(seconds(hi));
  return m;
}

std::chrono::sys_seconds TimeZone::to_utc(std::chrono::local_seconds local) const {
  return map_local(local).first;
}

}  // namespace terminals
