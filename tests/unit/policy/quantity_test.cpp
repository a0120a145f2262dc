#include "terminals/quantity.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>

using namespace terminals;

namespace {

constexpr std::uint64_t Ki = 1024;
constexpr std::uint64_t Mi = Ki * 1024;
constexpr std::uint64_t Gi = Mi * 1024;
constexpr std::uint64_t Ti = Gi * 1024;
constexpr std::uint64_t Pi = Ti * 1024;
constexpr std::uint64_t Ei = Pi * 1024;

// The error's message if `r` failed with `code`, else a marker that fails the caller's CHECK.
template <class T>
std::string failure(const Result<T>& r, Errc code) {
  if (r.has_value()) return "<succeeded>";
  if (r.error().code != code) return std::string("<wrong code ") + errc_name(r.error().code) + ">";
  return r.error().message;
}

bool denied(const Status& s) { return !s && s.error().code == Errc::PolicyDenied; }
bool invalid(const Status& s) { return !s && s.error().code == Errc::InvalidArgument; }

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

Caps caps_of(std::string_view cpu, std::string_view mem, std::string_view storage,
             std::string_view images) {
  auto c = parse_caps(cpu, mem, storage, images);
  REQUIRE(c.has_value());
  return *c;
}

}  // namespace

TEST_SUITE("unit") {
TEST_CASE("quantity: CPU spellings parse to exact millicores") {
  struct Case {
    const char* text;
    std::uint64_t millis;
  };
  const Case cases[] = {
      {"2", 2000},
      {"0.5", 500},
      {"500m", 500},
      {"2000m", 2000},
      {"1.25", 1250},
      {" 2 ", 2000},
      {"\t1\n", 1000},
      {"0", 0},
      {"0m", 0},
      {"1m", 1},
      {".5", 500},
      {"5.", 5000},
      {"007", 7000},
      {"1.500", 1500},
      {"0.001", 1},
      {"1.0000000000000000000000", 1000},
      {"18446744073709551615m", UINT64_MAX},
      {"64", 64000},
  };
  for (const auto& c : cases) {
    std::string text = c.text;
    CAPTURE(text);
    auto r = parse_cpu_millis(c.text);
    REQUIRE(r.has_value());
    CHECK(*r == c.millis);
  }
}

TEST_CASE("quantity: CPU finer than a millicore rounds up and never to zero") {
  CHECK(parse_cpu_millis("0.0001").value() == 1);
  CHECK(parse_cpu_millis("0.5m").value() == 1);
  CHECK(parse_cpu_millis("1.0001").value() == 1001);
  CHECK(parse_cpu_millis("0.000000000000000001").value() == 1);
  CHECK(parse_cpu_millis("2.9999").value() == 3000);
}

TEST_CASE("quantity: CPU refusals say what is wrong") {
  struct Case {
    const char* text;
    const char* why;
  };
  const Case cases[] = {
      {"", "empty"},
      {"   ", "empty"},
      {"-1", "sign"},
      {"+1", "sign"},
      {"+2000m", "sign"},
      {"abc", "expected a number"},
      {".", "expected a number"},
      {"m", "expected a number"},
      {"1.2.3", "more than one decimal point"},
      {"5k", "unknown unit 'k'"},
      {"2M", "unknown unit 'M'"},
      {"500M", "unknown unit 'M'"},
      {"2 m", "unknown unit"},
      {"1e3", "exponent"},
      {"1E3", "exponent"},
      {"1e-3", "exponent"},
      {"1,5", "unknown unit ',5'"},
      {"2 cores", "unknown unit"},
      {"0x10", "unknown unit"},
      {"18446744073709551616m", "too large"},
      {"18446744073709551615", "too large"},  // fits as cores, not as millicores
      {"18446744073709552", "too large"},
      {"99999999999999999999999", "too large"},
      {"1.0000000000000000001", "decimal places"},
  };
  for (const auto& c : cases) {
    std::string text = c.text;
    CAPTURE(text);
    std::string msg = failure(parse_cpu_millis(c.text), Errc::InvalidArgument);
    CAPTURE(msg);
    CHECK(contains(msg, c.why));
    CHECK(contains(msg, "CPU quantity"));
  }
  std::string long_input(65, '1');
  CHECK(contains(failure(parse_cpu_millis(long_input), Errc::InvalidArgument), "longer than 64"));
}

TEST_CASE("quantity: byte spellings parse to exact bytes") {
  struct Case {
    const char* text;
    std::uint64_t bytes;
  };
  const Case cases[] = {
      {"1048576", 1048576},
      {"0", 0},
      {"123", 123},
      {"123B", 123},
      {"4G", 4000000000ULL},
      {"4GB", 4000000000ULL},
      {"500M", 500000000ULL},
      {"500MB", 500000000ULL},
      {"1k", 1000},
      {"1kB", 1000},
      {"1K", 1000},
      {"1KB", 1000},
      {"2T", 2000000000000ULL},
      {"3P", 3000000000000000ULL},
      {"1E", 1000000000000000000ULL},
      {"4Gi", 4 * Gi},
      {"4GiB", 4 * Gi},
      {"4096Mi", 4 * Gi},
      {"4096MiB", 4 * Gi},
      {"1.5Gi", 1536 * Mi},
      {"512Ki", 512 * Ki},
      {"512KiB", 512 * Ki},
      {"1Ti", Ti},
      {"1Pi", Pi},
      {"15Ei", 15 * Ei},
      {"4g", 4 * Gi},  // Docker
      {"1t", Ti},      // Docker
      {" 4Gi ", 4 * Gi},
      {"4 Gi", 4 * Gi},  // the reference allowed a space before the unit
      {"0.5Ki", 512},
      {".5Gi", 512 * Mi},
      {"0.1k", 100},
      {"18446744073709551615", UINT64_MAX},
      {"0Gi", 0},
  };
  for (const auto& c : cases) {
    std::string text = c.text;
    CAPTURE(text);
    auto r = parse_bytes(c.text);
    REQUIRE(r.has_value());
    CHECK(*r == c.bytes);
  }
}

TEST_CASE("quantity: fractional bytes round up to a whole byte") {
  CHECK(parse_bytes("1.0001k").value() == 1001);
  CHECK(parse_bytes("1.1Gi").value() == 1181116007);  // 1181116006.4
  CHECK(parse_bytes("0.5").value() == 1);
  CHECK(parse_bytes("0.000000000000000001Ei").value() == 2);  // 1.15 bytes
}

TEST_CASE("quantity: byte refusals say what is wrong") {
  struct Case {
    const char* text;
    const char* why;
  };
  const Case cases[] = {
      {"", "empty"},
      {"-1", "sign"},
      {"+4Gi", "sign"},
      {"abc", "expected a number"},
      {"Gi", "expected a number"},
      {"1.2.3Gi", "more than one decimal point"},
      {"512m", "ambiguous unit 'm'"},  // Kubernetes milli vs Docker mebibytes
      {"512mb", "ambiguous"},
      {"512mi", "ambiguous"},
      {"4gi", "unknown unit 'gi'"},
      {"4gb", "unknown unit 'gb'"},
      {"4kb", "unknown unit 'kb'"},
      {"4KI", "unknown unit 'KI'"},
      {"4Gib", "unknown unit 'Gib'"},
      {"1e9", "exponent"},
      {"1E9", "exponent"},
      {"1Z", "unknown unit 'Z'"},
      {"1Zi", "unknown unit"},
      {"4 G i", "unknown unit"},
      {"16Ei", "too large"},
      {"18446744073709551616", "too large"},
      {"18446744073709552k", "too large"},
      {"99999999999999999999Gi", "too large"},
      {"1.0000000000000000001Gi", "decimal places"},
  };
  for (const auto& c : cases) {
    std::string text = c.text;
    CAPTURE(text);
    std::string msg = failure(parse_bytes(c.text), Errc::InvalidArgument);
    CAPTURE(msg);
    CHECK(contains(msg, c.why));
    CHECK(contains(msg, "size"));
  }
  // The ambiguity message tells the user what to write instead.
  CHECK(contains(failure(parse_bytes("512m"), Errc::InvalidArgument), "Mi"));
}

TEST_CASE("quantity: canonical renderings parse back to the same value") {
  CHECK(format_cpu_millis(0) == "0");
  CHECK(format_cpu_millis(2000) == "2");
  CHECK(format_cpu_millis(500) == "500m");
  CHECK(format_cpu_millis(1250) == "1250m");
  CHECK(format_cpu_millis(1) == "1m");
  CHECK(format_bytes(0) == "0");
  CHECK(format_bytes(123) == "123");
  CHECK(format_bytes(4 * Gi) == "4Gi");
  CHECK(format_bytes(1536 * Mi) == "1536Mi");
  CHECK(format_bytes(8000000000ULL) == "8G");
  CHECK(format_bytes(1024) == "1Ki");
  CHECK(format_bytes(1000) == "1k");
  CHECK(format_bytes(1024000) == "1024k");  // shorter than "1000Ki"
  CHECK(format_bytes(Ei) == "1Ei");
  CHECK(format_bytes(UINT64_MAX) == "18446744073709551615");
  const std::uint64_t millis[] = {0, 1, 999, 1000, 1001, 123456789, UINT64_MAX};
  for (std::uint64_t m : millis) {
    CAPTURE(m);
    CHECK(parse_cpu_millis(format_cpu_millis(m)).value() == m);
  }
  const std::uint64_t sizes[] = {0,       1,          999,
                                 1000,    1024,       1536 * Mi,
                                 7 * Ti,  5 * Ei,     3000000000000000000ULL,
                                 4096000, UINT64_MAX, UINT64_MAX - 1};
  for (std::uint64_t b : sizes) {
    CAPTURE(b);
    CHECK(parse_bytes(format_bytes(b)).value() == b);
  }
}

TEST_CASE("quantity: caps parse from the settings") {
  auto none = parse_caps("", " ", "", "");
  REQUIRE(none.has_value());
  CHECK_FALSE(none->max_cpu_millis.has_value());
  CHECK_FALSE(none->max_memory_bytes.has_value());
  CHECK_FALSE(none->max_storage_bytes.has_value());
  CHECK(none->allowed_images.empty());

  auto c = parse_caps("1500m", "4Gi", "10G",
                      " ghcr.io/open-webui/* ,, docker.io/library/ubuntu:2[0-4].04 ,");
  REQUIRE(c.has_value());
  CHECK(c->max_cpu_millis == 1500);
  CHECK(c->max_memory_bytes == 4 * Gi);
  CHECK(c->max_storage_bytes == 10000000000ULL);
  REQUIRE(c->allowed_images.size() == 2);
  CHECK(c->allowed_images[0] == "ghcr.io/open-webui/*");
  CHECK(c->allowed_images[1] == "docker.io/library/ubuntu:2[0-4].04");

  std::string msg = failure(parse_caps("2000M", "", "", ""), Errc::InvalidArgument);
  CHECK(contains(msg, "TERMINALS_MAX_CPU"));
  CHECK(contains(failure(parse_caps("", "4m", "", ""), Errc::InvalidArgument),
                 "TERMINALS_MAX_MEMORY"));
  CHECK(contains(failure(parse_caps("", "", "lots", ""), Errc::InvalidArgument),
                 "TERMINALS_MAX_STORAGE"));
  CHECK(contains(failure(parse_caps("0", "", "", ""), Errc::InvalidArgument), "cap of 0"));
  CHECK(contains(failure(parse_caps("", "0Gi", "", ""), Errc::InvalidArgument), "cap of 0"));
  CHECK(contains(failure(parse_caps("", "", "0", ""), Errc::InvalidArgument), "cap of 0"));
  msg = failure(parse_caps("", "", "", "ghcr.io/x/[abc"), Errc::InvalidArgument);
  CHECK(contains(msg, "TERMINALS_ALLOWED_IMAGES"));
  CHECK(contains(msg, "unterminated"));
}

TEST_CASE("quantity: CPU cap cannot be bypassed by spelling") {
  Caps caps = caps_of("1", "", "", "");
  // The reference compared plain floats, so "2000m" slipped past a cap of 1.
  auto r = check_cpu("cpu_limit", "2000m", caps);
  CHECK(contains(failure(r, Errc::PolicyDenied),
                 "cpu_limit '2000m' (2 cores) exceeds TERMINALS_MAX_CPU 1"));
  CHECK(contains(failure(check_cpu("cpu_limit", "1001m", caps), Errc::PolicyDenied),
                 "(1.001 cores)"));
  CHECK(denied(check_cpu("cpu_limit", "1.0001", caps)));
  CHECK(denied(check_cpu("cpu_limit", " 2 ", caps)));
  CHECK(denied(check_cpu("cpu_limit", "18446744073709551615m", caps)));
  // Zero means "no limit" to Docker and Kubernetes.
  CHECK(
      contains(failure(check_cpu("cpu_limit", "0", caps), Errc::PolicyDenied), "means no limit"));
  CHECK(contains(failure(check_cpu("cpu_limit", "0m", caps), Errc::PolicyDenied),
                 "TERMINALS_MAX_CPU is 1"));
  // Unparseable is InvalidArgument naming the field, never silently unclamped.
  CHECK(
      contains(failure(check_cpu("cpu_limit", "+2", caps), Errc::InvalidArgument), "cpu_limit"));
  CHECK(contains(failure(check_cpu("cpu_limit", "2 cores", caps), Errc::InvalidArgument),
                 "cpu_limit"));
  CHECK(invalid(check_cpu("cpu_limit", "1e3", caps)));
  // At or under the cap.
  CHECK(check_cpu("cpu_limit", "1", caps).has_value());
  CHECK(check_cpu("cpu_limit", "1000m", caps).has_value());
  CHECK(check_cpu("cpu_limit", "1.000", caps).has_value());
  CHECK(check_cpu("cpu_limit", "500m", caps).has_value());
  CHECK(check_cpu("cpu_limit", "0.001", caps).has_value());
  // A fractional cap.
  Caps half = caps_of("0.5", "", "", "");
  CHECK(check_cpu("cpu_limit", "500m", half).has_value());
  CHECK(contains(failure(check_cpu("cpu_limit", "501m", half), Errc::PolicyDenied),
                 "cpu_limit '501m' (0.501 cores) exceeds TERMINALS_MAX_CPU 500m"));
  CHECK(contains(failure(check_cpu("cpu_limit", "0", half), Errc::PolicyDenied),
                 "is 500m (0.5 cores)"));
  // No cap: anything parseable, including 0.
  Caps open = caps_of("", "", "", "");
  CHECK(check_cpu("cpu_limit", "64", open).has_value());
  CHECK(check_cpu("cpu_limit", "0", open).has_value());
  CHECK(invalid(check_cpu("cpu_limit", "lots", open)));
}

TEST_CASE("quantity: memory and storage caps cannot be bypassed by spelling") {
  Caps caps = caps_of("", "4Gi", "10Gi", "");
  // The reference's size parser failed on "8G" and left it unclamped.
  std::string msg = failure(check_memory("memory_limit", "8G", caps), Errc::PolicyDenied);
  CHECK(contains(msg, "memory_limit '8G'"));
  CHECK(contains(msg, "(8000000000 bytes)"));
  CHECK(contains(msg, "exceeds TERMINALS_MAX_MEMORY 4Gi (4294967296 bytes)"));
  CHECK(check_memory("memory_limit", "4096Mi", caps).has_value());  // equal is allowed
  CHECK(check_memory("memory_limit", "4Gi", caps).has_value());
  CHECK(check_memory("memory_limit", "4294967296", caps).has_value());
  CHECK(check_memory("memory_limit", "4g", caps).has_value());  // Docker 4g = 4Gi
  CHECK(check_memory("memory_limit", "4G", caps).has_value());  // 4e9 < 4Gi
  CHECK(check_memory("memory_limit", "1.5Gi", caps).has_value());
  CHECK(check_memory("memory_limit", " 4 Gi ", caps).has_value());
  CHECK(contains(failure(check_memory("memory_limit", "4097Mi", caps), Errc::PolicyDenied),
                 "memory_limit '4097Mi' (4296015872 bytes) exceeds"));
  CHECK(contains(failure(check_memory("memory_limit", "4.5Gi", caps), Errc::PolicyDenied),
                 "memory_limit '4.5Gi' (4608Mi = 4831838208 bytes) exceeds"));
  CHECK(denied(check_memory("memory_limit", "4294967297", caps)));
  CHECK(denied(check_memory("memory_limit", "4.0000001Gi", caps)));
  CHECK(denied(check_memory("memory_limit", "5GB", caps)));
  CHECK(denied(check_memory("memory_limit", "1Ti", caps)));
  CHECK(denied(check_memory("memory_limit", "15Ei", caps)));
  CHECK(contains(failure(check_memory("memory_limit", "0", caps), Errc::PolicyDenied),
                 "means no limit"));
  CHECK(contains(failure(check_memory("memory_limit", "8m", caps), Errc::InvalidArgument),
                 "memory_limit"));
  CHECK(contains(
      failure(check_memory("memory_limit", "99999999999Ei", caps), Errc::InvalidArgument),
      "too large"));
  CHECK(invalid(check_memory("memory_limit", "+8Gi", caps)));

  CHECK(check_storage("storage", "10Gi", caps).has_value());
  CHECK(check_storage("storage", "10240Mi", caps).has_value());
  CHECK(check_storage("storage", "10G", caps).has_value());  // 1e10 < 10Gi
  msg = failure(check_storage("storage", "11G", caps), Errc::PolicyDenied);
  CHECK(contains(msg, "storage '11G'"));
  CHECK(contains(msg, "TERMINALS_MAX_STORAGE 10Gi"));
  CHECK(contains(failure(check_storage("storage", "0Gi", caps), Errc::PolicyDenied),
                 "TERMINALS_MAX_STORAGE"));

  // Caps are independent: no storage cap here.
  Caps mem_only = caps_of("", "1Gi", "", "");
  CHECK(check_storage("storage", "1Ei", mem_only).has_value());
  CHECK(denied(check_memory("memory_limit", "1025Mi", mem_only)));
}

TEST_CASE("quantity: image globs allow a namespace but not its neighbours") {
  Caps caps = caps_of("", "", "", "ghcr.io/open-webui/*");
  CHECK(check_image("ghcr.io/open-webui/open-terminal:latest", caps).has_value());
  CHECK(check_image("ghcr.io/open-webui/open-terminal", caps).has_value());
  CHECK(
      check_image("ghcr.io/open-webui/open-terminal@sha256:0123456789abcdef", caps).has_value());
  CHECK(check_image("ghcr.io/open-webui/open-terminal:1.2@sha256:0123456789abcdef", caps)
            .has_value());
  CHECK(failure(check_image("ghcr.io/evil/x", caps), Errc::PolicyDenied) ==
        "Image 'ghcr.io/evil/x' not in allowed list");
  CHECK(denied(check_image("ghcr.io/open-webui/nested/evil", caps)));
  CHECK(denied(check_image("ghcr.io/open-webui-evil/x", caps)));
  CHECK(denied(check_image("evil.io/ghcr.io/open-webui/x", caps)));
  CHECK(denied(check_image("GHCR.IO/open-webui/x", caps)));
  CHECK(denied(check_image("ghcr.io/open-webui", caps)));
  CHECK(contains(failure(check_image("", caps), Errc::InvalidArgument), "empty"));
  CHECK(contains(failure(check_image("ghcr.io/open-webui/x y", caps), Errc::InvalidArgument),
                 "whitespace"));
  CHECK(invalid(check_image("ghcr.io/open-webui/x\n", caps)));
  CHECK(invalid(check_image(std::string(1025, 'a'), Caps{})));

  // No patterns: any well-formed image.
  CHECK(check_image("anything/at:all", Caps{}).has_value());
}

TEST_CASE("quantity: image globs pin tags and digests with single and double stars and sets") {
  Caps caps = caps_of("", "", "",
                      "ghcr.io/open-webui/open-terminal:v1.*,"
                      "docker.io/library/ubuntu@sha256:abc*,"
                      "registry.local:5000/team/**,"
                      "python:3.1?-slim,"
                      "node:2[02]");
  CHECK(check_image("ghcr.io/open-webui/open-terminal:v1.4", caps).has_value());
  CHECK(denied(check_image("ghcr.io/open-webui/open-terminal:v2.0", caps)));
  CHECK(denied(check_image("ghcr.io/open-webui/open-terminal:latest", caps)));
  CHECK(denied(check_image("ghcr.io/open-webui/open-terminal", caps)));
  CHECK(check_image("docker.io/library/ubuntu@sha256:abcdef", caps).has_value());
  CHECK(denied(check_image("docker.io/library/ubuntu@sha256:fff", caps)));
  CHECK(denied(check_image("docker.io/library/ubuntu:24.04", caps)));
  CHECK(check_image("registry.local:5000/team/a/b/c:tag", caps).has_value());
  CHECK(denied(check_image("registry.local:5001/team/a", caps)));
  CHECK(check_image("python:3.12-slim", caps).has_value());
  CHECK(denied(check_image("python:3.1-slim", caps)));
  CHECK(denied(check_image("python:3.1/-slim", caps)));
  CHECK(check_image("node:20", caps).has_value());
  CHECK(check_image("node:22", caps).has_value());
  CHECK(denied(check_image("node:21", caps)));

  Caps negated = caps_of("", "", "", "img:[!0-9]*");
  CHECK(check_image("img:latest", negated).has_value());
  CHECK(denied(check_image("img:1", negated)));
  Caps bracket = caps_of("", "", "", "img:[]a]");
  CHECK(check_image("img:]", bracket).has_value());
  CHECK(check_image("img:a", bracket).has_value());
  CHECK(denied(check_image("img:b", bracket)));
  // Exact patterns match only themselves.
  Caps exact = caps_of("", "", "", "ghcr.io/open-webui/open-terminal:latest");
  CHECK(check_image("ghcr.io/open-webui/open-terminal:latest", exact).has_value());
  CHECK(denied(check_image("ghcr.io/open-webui/open-terminal:latest2", exact)));
  // Many stars against a long name stay fast (no exponential backtracking).
  Caps stars = caps_of("", "", "", "**a**a**a**a**a**a**a**a**a**a**b");
  CHECK(denied(check_image(std::string(1000, 'a'), stars)));
}

}  // TEST_SUITE
