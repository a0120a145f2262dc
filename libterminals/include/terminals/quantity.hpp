#pragma once

/// @file quantity.hpp
/// CPU and memory/storage quantities as policies spell them, parsed to exact integers, and the
/// operator's hard caps (TERMINALS_MAX_CPU, TERMINALS_MAX_MEMORY, TERMINALS_MAX_STORAGE,
/// TERMINALS_ALLOWED_IMAGES). Every spelling is resolved to millicores or bytes before any
/// comparison, so a cap cannot be sidestepped by writing the same amount another way ("2000m"
/// against a cap of "1", "8G" against "4Gi"). Pure functions: no I/O, no global state.
///
/// Shared syntax of a quantity:
///  - leading and trailing ASCII whitespace is ignored; nothing else may surround it;
///  - a number: digits, optionally with a fraction ("1.5", ".5", "5." as in Kubernetes);
///  - no sign ("+1", "-1"), no exponent ("1e3"), no thousands separators; at most 18 decimals
///    (trailing zeros do not count) and at most 64 characters in all;
///  - a fraction that does not land on a whole unit (millicore, byte) is rounded UP, as
///    Kubernetes does. Rounding up is the safe direction: a non-zero amount never becomes 0 and
///    never becomes smaller than written, so it cannot slip under a cap;
///  - a value that does not fit 64 bits is refused.
///
/// "0" parses (to 0), but Docker and Kubernetes read a zero limit as "no limit", so the cap
/// checks refuse 0 whenever the corresponding cap is set.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/export.hpp"
#include "terminals/result.hpp"

namespace terminals {

/// CPU in millicores. Accepts cores ("2", "0.5", "1.25" -> 2000, 500, 1250) or millicores with a
/// lower-case "m" suffix ("500m", "2000m"). Finer than a millicore rounds up ("0.0001" -> 1,
/// "0.5m" -> 1). Anything else ("", "-1", "abc", "1.2.3", "5k", "1e3", "2M") is InvalidArgument
/// with a message saying what was wrong.
TERMINALS_API Result<std::uint64_t> parse_cpu_millis(std::string_view text);

/// Bytes. Case-sensitive units, spaces allowed between number and unit (as the reference did):
///
///  | spelling                        | meaning                          | from       |
///  |---------------------------------|----------------------------------|------------|
///  | none, "B"                       | bytes                            |            |
///  | k, M, G, T, P, E                | 10^3 .. 10^18                    | Kubernetes |
///  | Ki, Mi, Gi, Ti, Pi, Ei          | 2^10 .. 2^60                     | Kubernetes |
///  | kB KB MB GB TB PB EB            | 10^3 .. 10^18 (SI with "B")      | common     |
///  | KiB MiB GiB TiB PiB EiB         | 2^10 .. 2^60 (IEC with "B")      | common     |
///  | K                               | 10^3 (common misspelling of k)   | common     |
///  | g, t                            | 2^30, 2^40                       | Docker     |
///
/// Refused on purpose: lower-case "m" (Kubernetes milli, Docker mebibytes: the two readings differ
/// by 10^9, so the message asks for "Mi" or "M"), and the other Docker lower-case forms whose
/// meaning collides with Kubernetes or SI ("kb", "mb", "gb", "gi", ...). "k" keeps its Kubernetes
/// meaning (1000), not Docker's 1024. Fractions round up to whole bytes ("1.5Gi" is exact,
/// "0.1k" = 100, "1.0001k" = 1001).
TERMINALS_API Result<std::uint64_t> parse_bytes(std::string_view text);

/// Canonical CPU rendering, valid Kubernetes and accepted by parse_cpu_millis: whole cores as
/// "2", otherwise millicores "500m", "1250m"; 0 is "0".
TERMINALS_API std::string format_cpu_millis(std::uint64_t millis);

/// Canonical byte rendering, valid Kubernetes and accepted by parse_bytes: the shortest exact
/// spelling among plain bytes, binary (Ki..Ei) and decimal (k..E) units, binary on a tie:
/// "4Gi", "1536Mi", "8G", "123", "0".
TERMINALS_API std::string format_bytes(std::uint64_t bytes);

/// The operator's hard caps. An empty optional / empty list means "no cap".
struct Caps {
  std::optional<std::uint64_t> max_cpu_millis;
  std::optional<std::uint64_t> max_memory_bytes;
  std::optional<std::uint64_t> max_storage_bytes;
  /// Image glob patterns (see check_image); empty = any image.
  std::vector<std::string> allowed_images;
};

/// Parses the raw settings. Empty (or all-blank) = no cap. A cap of 0 is refused (it would deny
/// everything; leave the setting empty for no cap). allowed_images is a comma-separated list of
/// patterns; blanks around and empty items are dropped; a malformed pattern (unterminated "[")
/// is refused. Errors are InvalidArgument and name the setting.
TERMINALS_API Result<Caps> parse_caps(std::string_view max_cpu, std::string_view max_memory,
                                      std::string_view max_storage,
                                      std::string_view allowed_images);

/// Checks a policy value against its cap. `field` names it in messages ("cpu_limit").
/// Unparseable -> InvalidArgument naming the field. Over the cap, or 0 while a cap is set
/// ("no limit") -> PolicyDenied naming the field, the value as given, its canonical form and the
/// cap, e.g. "cpu_limit '4000m' (4 cores) exceeds TERMINALS_MAX_CPU 2". Equal to the cap is
/// allowed. Without a cap any parseable value is allowed.
TERMINALS_API Status check_cpu(std::string_view field, std::string_view value, const Caps& caps);
TERMINALS_API Status check_memory(std::string_view field, std::string_view value, const Caps& caps);
TERMINALS_API Status check_storage(std::string_view field, std::string_view value,
                                   const Caps& caps);

/// Checks an image reference against Caps::allowed_images (any pattern matching = allowed; no
/// patterns = any image). Patterns are shell globs matched against the whole reference exactly as
/// written (case-sensitive, no normalisation: "ubuntu" and "docker.io/library/ubuntu" are
/// different strings, so list both spellings if both are wanted):
///  - `*` any run of characters except '/', so "ghcr.io/open-webui/*" allows every image of that
///    namespace with any tag or digest ("open-terminal:latest", "x@sha256:...") but not one
///    nested deeper, and "ghcr.io/*" does not silently allow all of ghcr.io;
///  - `**` any run of characters including '/';
///  - `?` one character except '/'; `[abc]`, `[a-z]`, `[!a-z]` one character from a set.
/// There is no escape character (image references contain no glob metacharacters).
/// An empty image, or one containing whitespace or control characters, is InvalidArgument;
/// no match is PolicyDenied "Image '<image>' not in allowed list".
TERMINALS_API Status check_image(std::string_view image, const Caps& caps);

}  // namespace terminals
