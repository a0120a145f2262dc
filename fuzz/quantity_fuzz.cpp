// Quantities and caps (terminals/quantity.hpp, policy/quantity.cpp). Checked beyond "no crash":
//  - whatever parses formats canonically and parses back to the same value, for CPU and bytes;
//  - any 64-bit value formats and parses back exactly;
//  - surrounding whitespace never changes a value; a fraction only rounds up;
//  - check_cpu/check_memory agree with comparing the parsed value to the cap;
//  - image globs without '[' or '**' match as fnmatch(FNM_PATHNAME | FNM_NOESCAPE) does.

#include <fnmatch.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "fuzz_check.hpp"
#include "terminals/quantity.hpp"

namespace {

using namespace terminals;

void check_cpu_text(std::string_view text) {
  auto v = parse_cpu_millis(text);
  if (!v) {
    FUZZ_CHECK(v.error().code == Errc::InvalidArgument, "CPU error code");
    return;
  }
  const std::string canonical = format_cpu_millis(*v);
  auto back = parse_cpu_millis(canonical);
  FUZZ_CHECK(back && *back == *v, "CPU '%s' -> %llu -> '%s' does not parse back", fuzz::printable(text).c_str(),
             static_cast<unsigned long long>(*v), canonical.c_str());
  auto padded = parse_cpu_millis(" \t" + std::string(text) + "\n ");
  if (text.size() + 4 <= 64) FUZZ_CHECK(padded && *padded == *v, "whitespace changed a CPU value");
  Caps caps;
  caps.max_cpu_millis = 1500;
  const bool allowed = static_cast<bool>(check_cpu("cpu_limit", text, caps));
  FUZZ_CHECK(allowed == (*v != 0 && *v <= 1500), "check_cpu disagrees for '%s' = %llu", fuzz::printable(text).c_str(),
             static_cast<unsigned long long>(*v));
}

void check_bytes_text(std::string_view text) {
  auto v = parse_bytes(text);
  if (!v) {
    FUZZ_CHECK(v.error().code == Errc::InvalidArgument, "size error code");
    return;
  }
  const std::string canonical = format_bytes(*v);
  auto back = parse_bytes(canonical);
  FUZZ_CHECK(back && *back == *v, "size '%s' -> %llu -> '%s' does not parse back", fuzz::printable(text).c_str(),
             static_cast<unsigned long long>(*v), canonical.c_str());
  FUZZ_CHECK(canonical.size() <= std::to_string(*v).size(), "canonical form longer than plain bytes");
  Caps caps;
  caps.max_memory_bytes = 3ull << 30;
  const bool allowed = static_cast<bool>(check_memory("memory_limit", text, caps));
  FUZZ_CHECK(allowed == (*v != 0 && *v <= (3ull << 30)), "check_memory disagrees for '%s'", fuzz::printable(text).c_str());
  // Rounding is up: the whole part times the unit is a lower bound. Cheap to see for "N.F<unit>"
  // spellings: dropping the fraction never gives a larger value.
  const std::size_t dot = text.find('.');
  if (dot != std::string_view::npos && dot > 0) {
    std::size_t unit = dot + 1;
    while (unit < text.size() && text[unit] >= '0' && text[unit] <= '9') ++unit;
    auto floor = parse_bytes(std::string(text.substr(0, dot)) + std::string(text.substr(unit)));
    if (floor) FUZZ_CHECK(*floor <= *v, "'%s' is smaller than its whole part", fuzz::printable(text).c_str());
  }
}

void check_value(std::uint64_t v) {
  auto c = parse_cpu_millis(format_cpu_millis(v));
  FUZZ_CHECK(c && *c == v, "format_cpu_millis(%llu) = '%s' does not parse back", static_cast<unsigned long long>(v),
             format_cpu_millis(v).c_str());
  auto b = parse_bytes(format_bytes(v));
  FUZZ_CHECK(b && *b == v, "format_bytes(%llu) = '%s' does not parse back", static_cast<unsigned long long>(v),
             format_bytes(v).c_str());
}

void check_glob(std::string_view pattern, std::string_view image) {
  auto caps = parse_caps("", "", "", pattern);
  if (!caps || caps->allowed_images.size() != 1) return;
  const Status st = check_image(image, *caps);
  if (!st && st.error().code != Errc::PolicyDenied) return;  // not an image reference at all
  const std::string& p = caps->allowed_images[0];
  // Sets and "**" are ours alone; fnmatch stops at a NUL.
  if (p.find('[') != std::string::npos || p.find("**") != std::string::npos ||
      p.find('\0') != std::string::npos) {
    return;
  }
  const std::string i(image);
  const bool fn = fnmatch(p.c_str(), i.c_str(), FNM_PATHNAME | FNM_NOESCAPE) == 0;
  FUZZ_CHECK(fn == static_cast<bool>(st), "'%s' %s by '%s', fnmatch says the opposite", fuzz::printable(i).c_str(),
             st ? "allowed" : "denied", fuzz::printable(p).c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::as_view(data, size);
  check_cpu_text(text);
  check_bytes_text(text);
  if (size >= 8) {
    std::uint64_t v = 0;
    std::memcpy(&v, data, 8);
    check_value(v);
    check_value(v >> (data[0] & 63));
  }
  // "pattern|image": the glob against fnmatch.
  if (const std::size_t bar = text.find('|'); bar != std::string_view::npos) {
    check_glob(text.substr(0, bar), text.substr(bar + 1));
  }
  auto caps = parse_caps(text, text, text, text);
  (void)caps;
  return 0;
}
