#pragma once

// The orchestrator's service key: the bearer secret Open WebUI (or an operator) presents for
// admin routes and for the data plane with X-User-Id. Unlike the reference, a key the
// orchestrator generates is kept across restarts (in the data directory, mode 0600) instead of
// changing on every start and being printed each time.

#include <optional>
#include <string>

#include "terminals/result.hpp"

namespace terminals::detail {

struct ServiceKey {
  std::string key;
  bool generated = false;  ///< created now: the caller shows it once (never logged again)
  std::string path;        ///< the file it came from or went to; empty for the environment
};

/// Shortest key accepted from the environment or the key file.
inline constexpr std::size_t kMinServiceKeyBytes = 16;

/// Checks a key's shape: kMinServiceKeyBytes..1024 bytes of visible ASCII (it travels in an
/// Authorization header). InvalidArgument names the problem, never the key.
Status validate_service_key(std::string_view key);

/// Where the key comes from, in order:
///  1. `from_env` (TERMINALS_API_KEY), when given and non-empty (an empty value counts as
///     unset, as in the reference). Validated with validate_service_key.
///  2. `<data_dir>/service-key`, when it exists: opened without following symlinks, must be a
///     regular file owned by this user with no group/other permission bits (PolicyDenied
///     otherwise, saying to chmod 600 it); trailing whitespace is ignored; the key is
///     validated.
///  3. Otherwise a new random_token(32) is written to that file: created 0600 under a temporary
///     name, fsynced, then linked into place (link, not rename, so a key another process wrote
///     first is kept and returned instead). `data_dir` is created (0700) if missing.
/// Errors: InvalidArgument (empty data_dir, bad key), PolicyDenied (unsafe file), Io.
Result<ServiceKey> load_or_create_service_key(const std::string& data_dir,
                                              std::optional<std::string> from_env);

}  // namespace terminals::detail
