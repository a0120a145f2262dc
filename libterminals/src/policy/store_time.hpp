#pragma once

// The timestamp format of the policy store's files and the audit log: ISO-8601 UTC with
// microseconds, "2026-03-29T01:00:00.123456Z" (fixed width, so it sorts as text).

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "policy/civil.hpp"

namespace terminals::detail {

inline std::string format_store_time(std::chrono::system_clock::time_point t) {
  const std::int64_t us = std::chrono::floor<std::chrono::microseconds>(t).time_since_epoch().count();
  const std::int64_t secs = civil::floor_div(us, 1'000'000);
  const std::int64_t days = civil::floor_div(secs, 86'400);
  const std::int64_t sod = secs - days * 86'400;
  const civil::Date date = civil::civil_from_days(days);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04lld-%02d-%02dT%02d:%02d:%02d.%06dZ", static_cast<long long>(date.year),
                date.month, date.day, static_cast<int>(sod / 3600), static_cast<int>(sod / 60 % 60),
                static_cast<int>(sod % 60), static_cast<int>(us - secs * 1'000'000));
  return buf;
}

/// Exactly the format above; anything else is empty.
inline std::optional<std::chrono::system_clock::time_point> parse_store_time(std::string_view s) {
  if (s.size() != 27 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
      s[19] != '.' || s[26] != 'Z') {
    return std::nullopt;
  }
  auto num = [&](std::size_t from, std::size_t len) -> std::int64_t {
    std::int64_t v = 0;
    for (std::size_t i = from; i < from + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return -1;
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  const std::int64_t y = num(0, 4), mo = num(5, 2), d = num(8, 2), h = num(11, 2), mi = num(14, 2),
                     sec = num(17, 2), frac = num(20, 6);
  if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > civil::days_in_month(y, static_cast<int>(mo)) || h < 0 ||
      h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59 || frac < 0) {
    return std::nullopt;
  }
  const std::int64_t days = civil::days_from_civil(y, static_cast<int>(mo), static_cast<int>(d));
  const std::int64_t us = ((days * 86'400 + h * 3600 + mi * 60 + sec) * 1'000'000) + frac;
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::microseconds(us)));
}

}  // namespace terminals::detail
