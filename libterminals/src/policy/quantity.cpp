#include "terminals/quantity.hpp"

#include <array>
#include <limits>

namespace terminals {
namespace detail {
namespace {

__extension__ typedef unsigned __int128 U128;  // exact products of 18-digit fractions and 2^60

constexpr std::size_t kMaxQuantityLength = 64;
constexpr int kMaxFractionDigits = 18;
constexpr std::size_t kMaxImageLength = 1024;
constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

/// A non-negative decimal number split at the point, plus whatever follows it (the unit).
struct Number {
  std::uint64_t whole = 0;
  std::uint64_t fraction = 0;  // the fraction's digits as an integer
  int fraction_digits = 0;     // so the fraction is fraction / 10^fraction_digits
  std::string_view unit;
};

/// Parses the number part. `what` ("CPU quantity") prefixes messages.
Result<Number> parse_number(std::string_view text, const char* what, bool space_before_unit) {
  auto fail = [&](const std::string& why) {
    return Error(Errc::InvalidArgument,
                 std::string("invalid ") + what + " " + quoted(text) + ": " + why);
  };
  if (text.size() > kMaxQuantityLength) {
    return Error(Errc::InvalidArgument, std::string("invalid ") + what + ": longer than " +
                                            std::to_string(kMaxQuantityLength) + " characters");
  }
  std::string_view s = trim(text);
  if (s.empty()) return fail("empty");
  if (s.front() == '+' || s.front() == '-') return fail("a sign is not allowed");
  Number n;
  std::size_t i = 0;
  bool any_digit = false;
  for (; i < s.size() && is_digit(s[i]); ++i) {
    any_digit = true;
    auto d = static_cast<std::uint64_t>(s[i] - '0');
    if (n.whole > (kMax - d) / 10) return fail("too large");
    n.whole = n.whole * 10 + d;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t start = i;
    while (i < s.size() && is_digit(s[i])) ++i;
    std::string_view digits = s.substr(start, i - start);
    while (!digits.empty() && digits.back() == '0') digits.remove_suffix(1);  // "1.50" = "1.5"
    if (i > start) any_digit = true;
    if (digits.size() > static_cast<std::size_t>(kMaxFractionDigits)) {
      return fail("more than " + std::to_string(kMaxFractionDigits) + " decimal places");
    }
    for (char c : digits) n.fraction = n.fraction * 10 + static_cast<std::uint64_t>(c - '0');
    n.fraction_digits = static_cast<int>(digits.size());
  }
  if (!any_digit) return fail("expected a number");
  if (space_before_unit) {
    while (i < s.size() && is_space(s[i])) ++i;  // "4 Gi"; s is trimmed, so a unit follows
  }
  n.unit = s.substr(i);
  if (!n.unit.empty() && (n.unit[0] == 'e' || n.unit[0] == 'E') && n.unit.size() > 1 &&
      (is_digit(n.unit[1]) || n.unit[1] == '+' || n.unit[1] == '-')) {
    return fail("exponent notation is not supported");
  }
  if (!n.unit.empty() && n.unit[0] == '.') return fail("more than one decimal point");
  return n;
}

/// whole * multiplier + fraction * multiplier, the fractional part rounded up; nullopt on overflow.
std::optional<std::uint64_t> scale(const Number& n, std::uint64_t multiplier) {
  U128 total = static_cast<U128>(n.whole) * multiplier;
  if (n.fraction != 0) {
    U128 pow10 = 1;
    for (int k = 0; k < n.fraction_digits; ++k) pow10 *= 10;
    U128 part = static_cast<U128>(n.fraction) * multiplier;
    total += (part + pow10 - 1) / pow10;
  }
  if (total > kMax) return std::nullopt;
  return static_cast<std::uint64_t>(total);
}

constexpr std::uint64_t pow_u64(std::uint64_t base, int exp) {
  std::uint64_t r = 1;
  for (int i = 0; i < exp; ++i) r *= base;
  return r;
}

struct Unit {
  std::string_view name;
  std::uint64_t multiplier;
};

// Kubernetes spellings, largest first: format_bytes emits these and takes the first exact one.
constexpr std::array<Unit, 6> kBinary = {{{"Ei", pow_u64(1024, 6)},
                                          {"Pi", pow_u64(1024, 5)},
                                          {"Ti", pow_u64(1024, 4)},
                                          {"Gi", pow_u64(1024, 3)},
                                          {"Mi", pow_u64(1024, 2)},
                                          {"Ki", 1024}}};
constexpr std::array<Unit, 6> kDecimal = {{{"E", pow_u64(1000, 6)},
                                           {"P", pow_u64(1000, 5)},
                                           {"T", pow_u64(1000, 4)},
                                           {"G", pow_u64(1000, 3)},
                                           {"M", pow_u64(1000, 2)},
                                           {"k", 1000}}};

std::optional<std::uint64_t> byte_unit(std::string_view u) {
  if (u.empty() || u == "B") return 1;
  for (const auto& b : kBinary) {
    if (u == b.name) return b.multiplier;
    if (u.size() == 3 && u.substr(0, 2) == b.name && u[2] == 'B') return b.multiplier;  // GiB
  }
  for (const auto& d : kDecimal) {
    if (u == d.name) return d.multiplier;
    if (u.size() == 2 && u[0] == d.name[0] && u[1] == 'B') return d.multiplier;  // GB, kB
  }
  if (u == "K" || u == "KB") return 1000;
  if (u == "g") return pow_u64(1024, 3);  // Docker: "--memory 4g"
  if (u == "t") return pow_u64(1024, 4);
  return std::nullopt;
}

/// Cores in decimal for messages: "4 cores", "1 core", "1.5 cores", "0.001 cores".
std::string cpu_description(std::uint64_t millis) {
  std::string text = std::to_string(millis / 1000);
  if (std::uint64_t frac = millis % 1000; frac != 0) {
    std::string digits = std::to_string(frac + 1000).substr(1);  // zero-padded to 3
    while (digits.back() == '0') digits.pop_back();
    text += "." + digits;
  }
  return text + (millis == 1000 ? " core" : " cores");
}

std::string byte_description(std::uint64_t bytes) {
  return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
}

// One token of an image pattern.
struct GlobToken {
  enum Kind { Literal, Any, Star, DoubleStar, Set } kind = Literal;
  char c = 0;
  std::string set;  // pairs (lo, hi) of inclusive ranges
  bool negated = false;
};

Result<std::vector<GlobToken>> compile_glob(std::string_view p) {
  std::vector<GlobToken> out;
  for (std::size_t i = 0; i < p.size();) {
    GlobToken t;
    if (p[i] == '*') {
      t.kind = GlobToken::Star;
      ++i;
      if (i < p.size() && p[i] == '*') {
        t.kind = GlobToken::DoubleStar;
        while (i < p.size() && p[i] == '*') ++i;
      }
    } else if (p[i] == '?') {
      t.kind = GlobToken::Any;
      ++i;
    } else if (p[i] == '[') {
      t.kind = GlobToken::Set;
      std::size_t j = i + 1;
      if (j < p.size() && (p[j] == '!' || p[j] == '^')) {
        t.negated = true;
        ++j;
      }
      bool first = true;
      bool closed = false;
      while (j < p.size()) {
        if (p[j] == ']' && !first) {
          closed = true;
          break;
        }
        char lo = p[j];
        char hi = lo;
        if (j + 2 < p.size() && p[j + 1] == '-' && p[j + 2] != ']') {
          hi = p[j + 2];
          j += 2;
        }
        t.set.push_back(lo);
        t.set.push_back(hi);
        first = false;
        ++j;
      }
      if (!closed) {
        return Error(Errc::InvalidArgument, "image pattern " + quoted(p) + ": unterminated '['");
      }
      i = j + 1;
    } else {
      t.c = p[i++];
    }
    out.push_back(std::move(t));
  }
  return out;
}

bool token_matches_char(const GlobToken& t, char c) {
  switch (t.kind) {
    case GlobToken::Literal:
      return t.c == c;
    case GlobToken::Any:
      return c != '/';
    case GlobToken::Set: {
      if (c == '/') return false;
      bool in = false;
      for (std::size_t k = 0; k + 1 < t.set.size(); k += 2) {
        if (c >= t.set[k] && c <= t.set[k + 1]) in = true;
      }
      return in != t.negated;
    }
    default:
      return false;
  }
}

/// Set-of-positions simulation: linear in pattern x text, no exponential backtracking.
bool glob_match(const std::vector<GlobToken>& tokens, std::string_view text) {
  std::vector<char> reach(text.size() + 1, 0);
  reach[0] = 1;
  for (const auto& t : tokens) {
    std::vector<char> next(text.size() + 1, 0);
    for (std::size_t p = 0; p <= text.size(); ++p) {
      if (!reach[p]) continue;
      if (t.kind == GlobToken::Star || t.kind == GlobToken::DoubleStar) {
        std::size_t q = p;
        next[q] = 1;
        while (q < text.size() && (t.kind == GlobToken::DoubleStar || text[q] != '/'))
          next[++q] = 1;
      } else if (p < text.size() && token_matches_char(t, text[p])) {
        next[p + 1] = 1;
      }
    }
    reach.swap(next);
  }
  return reach[text.size()] != 0;
}

Status check_bytes(std::string_view field, std::string_view value,
                   const std::optional<std::uint64_t>& cap, const char* setting) {
  auto parsed = parse_bytes(value);
  if (!parsed)
    return Error(Errc::InvalidArgument, std::string(field) + ": " + parsed.error().message);
  if (!cap) return {};
  std::uint64_t v = *parsed;
  if (v == 0) {
    return Error(Errc::PolicyDenied, std::string(field) + " " + quoted(value) +
                                         " means no limit, but " + setting + " is " +
                                         format_bytes(*cap) + " (" + byte_description(*cap) + ")");
  }
  if (v > *cap) {
    std::string canonical = format_bytes(v);
    std::string shown =
        canonical == trim(value) ? byte_description(v) : canonical + " = " + byte_description(v);
    return Error(Errc::PolicyDenied, std::string(field) + " " + quoted(value) + " (" + shown +
                                         ") exceeds " + setting + " " + format_bytes(*cap) + " (" +
                                         byte_description(*cap) + ")");
  }
  return {};
}

}  // namespace
}  // namespace detail

using namespace detail;

Result<std::uint64_t> parse_cpu_millis(std::string_view text) {
  auto n = parse_number(text, "CPU quantity", false);
  if (!n) return std::move(n).error();
  std::uint64_t multiplier = 0;
  if (n->unit.empty()) {
    multiplier = 1000;
  } else if (n->unit == "m") {
    multiplier = 1;
  } else {
    return Error(Errc::InvalidArgument,
                 "invalid CPU quantity " + quoted(text) + ": unknown unit " + quoted(n->unit) +
                     " (use cores such as \"2\" or \"0.5\", or millicores such as \"500m\")");
  }
  auto v = scale(*n, multiplier);
  if (!v)
    return Error(Errc::InvalidArgument, "invalid CPU quantity " + quoted(text) + ": too large");
  return *v;
}

Result<std::uint64_t> parse_bytes(std::string_view text) {
  auto n = parse_number(text, "size", true);
  if (!n) return std::move(n).error();
  auto multiplier = byte_unit(n->unit);
  if (!multiplier) {
    std::string why = "unknown unit " + quoted(n->unit);
    if (n->unit == "m" || n->unit == "mb" || n->unit == "mi") {
      why =
          "ambiguous unit " + quoted(n->unit) +
          " (milli in Kubernetes, mebibytes in Docker); write Mi for mebibytes or M for megabytes";
    } else {
      why += " (use Ki, Mi, Gi, Ti for binary or k, M, G, T for decimal units)";
    }
    return Error(Errc::InvalidArgument, "invalid size " + quoted(text) + ": " + why);
  }
  auto v = scale(*n, *multiplier);
  if (!v) return Error(Errc::InvalidArgument, "invalid size " + quoted(text) + ": too large");
  return *v;
}

std::string format_cpu_millis(std::uint64_t millis) {
  if (millis % 1000 == 0) return std::to_string(millis / 1000);
  return std::to_string(millis) + "m";
}

std::string format_bytes(std::uint64_t bytes) {
  std::string best = std::to_string(bytes);
  if (bytes == 0) return best;
  // Binary first, and only a strictly shorter spelling replaces the best so far: binary wins ties.
  for (const auto* table : {&kBinary, &kDecimal}) {
    for (const auto& u : *table) {
      if (bytes % u.multiplier == 0) {
        std::string s = std::to_string(bytes / u.multiplier) + std::string(u.name);
        if (s.size() < best.size()) best = std::move(s);
        break;  // the largest exact unit of a family is its shortest spelling
      }
    }
  }
  return best;
}

Result<Caps> parse_caps(std::string_view max_cpu, std::string_view max_memory,
                        std::string_view max_storage, std::string_view allowed_images) {
  Caps caps;
  auto nonzero = [](const char* setting, std::uint64_t v) -> Status {
    if (v == 0) {
      return Error(
          Errc::InvalidArgument,
          std::string(setting) + ": a cap of 0 would deny everything; leave it empty for no cap");
    }
    return {};
  };
  if (!trim(max_cpu).empty()) {
    auto v = parse_cpu_millis(max_cpu);
    if (!v) return Error(Errc::InvalidArgument, "TERMINALS_MAX_CPU: " + v.error().message);
    if (auto s = nonzero("TERMINALS_MAX_CPU", *v); !s) return s.error();
    caps.max_cpu_millis = *v;
  }
  if (!trim(max_memory).empty()) {
    auto v = parse_bytes(max_memory);
    if (!v) return Error(Errc::InvalidArgument, "TERMINALS_MAX_MEMORY: " + v.error().message);
    if (auto s = nonzero("TERMINALS_MAX_MEMORY", *v); !s) return s.error();
    caps.max_memory_bytes = *v;
  }
  if (!trim(max_storage).empty()) {
    auto v = parse_bytes(max_storage);
    if (!v) return Error(Errc::InvalidArgument, "TERMINALS_MAX_STORAGE: " + v.error().message);
    if (auto s = nonzero("TERMINALS_MAX_STORAGE", *v); !s) return s.error();
    caps.max_storage_bytes = *v;
  }
  std::string_view rest = allowed_images;
  while (true) {
    std::size_t comma = rest.find(',');
    std::string_view item = trim(rest.substr(0, comma));
    if (!item.empty()) {
      if (item.size() > kMaxImageLength) {
        return Error(Errc::InvalidArgument, "TERMINALS_ALLOWED_IMAGES: a pattern is longer than " +
                                                std::to_string(kMaxImageLength) + " characters");
      }
      auto compiled = compile_glob(item);
      if (!compiled)
        return Error(Errc::InvalidArgument,
                     "TERMINALS_ALLOWED_IMAGES: " + compiled.error().message);
      caps.allowed_images.emplace_back(item);
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return caps;
}

Status check_cpu(std::string_view field, std::string_view value, const Caps& caps) {
  auto parsed = parse_cpu_millis(value);
  if (!parsed)
    return Error(Errc::InvalidArgument, std::string(field) + ": " + parsed.error().message);
  if (!caps.max_cpu_millis) return {};
  std::uint64_t v = *parsed;
  std::uint64_t cap = *caps.max_cpu_millis;
  if (v == 0) {
    return Error(Errc::PolicyDenied, std::string(field) + " " + quoted(value) +
                                         " means no limit, but TERMINALS_MAX_CPU is " +
                                         format_cpu_millis(cap) + " (" + cpu_description(cap) +
                                         ")");
  }
  if (v > cap) {
    return Error(Errc::PolicyDenied, std::string(field) + " " + quoted(value) + " (" +
                                         cpu_description(v) + ") exceeds TERMINALS_MAX_CPU " +
                                         format_cpu_millis(cap));
  }
  return {};
}

Status check_memory(std::string_view field, std::string_view value, const Caps& caps) {
  return check_bytes(field, value, caps.max_memory_bytes, "TERMINALS_MAX_MEMORY");
}

Status check_storage(std::string_view field, std::string_view value, const Caps& caps) {
  return check_bytes(field, value, caps.max_storage_bytes, "TERMINALS_MAX_STORAGE");
}

Status check_image(std::string_view image, const Caps& caps) {
  if (image.empty()) return Error(Errc::InvalidArgument, "image: empty");
  if (image.size() > kMaxImageLength) {
    return Error(Errc::InvalidArgument,
                 "image: longer than " + std::to_string(kMaxImageLength) + " characters");
  }
  for (char c : image) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) {
      return Error(Errc::InvalidArgument,
                   "image " + quoted(image) + ": contains whitespace or a control character");
    }
  }
  if (caps.allowed_images.empty()) return {};
  for (const auto& pattern : caps.allowed_images) {
    auto compiled = compile_glob(pattern);
    if (compiled && glob_match(*compiled, image)) return {};
  }
  return Error(Errc::PolicyDenied, "Image " + quoted(image) + " not in allowed list");
}

}  // namespace terminals
