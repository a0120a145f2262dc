#pragma once

// The OS accounts of the local backend's `user` and `sandbox` isolation: one per terminal
// user, named from a hash of the user id and marked as ours, so a user id can never pick an
// existing account ("root", "www-data") and two ids never share one.

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "terminals/result.hpp"

namespace terminals::detail {

/// The comment (GECOS) field that marks an account as created by libterminals.
inline constexpr std::string_view kOsUserMarker = "libterminals terminal user";

/// "t" + the first 24 hex characters of SHA-256("terminals-user:" + user_id): 25 characters,
/// a valid account name whatever the id holds (empty, "..", "a/b", non-ASCII, 300 characters).
std::string os_user_name(std::string_view user_id);

/// A hex digest of the id for directory names (homes/<hash>), the same 24 characters.
std::string user_hash(std::string_view user_id);

struct OsUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

/// Looks the account up, creating it when missing: its own group, `home` as home directory
/// (not created here), our marker as comment, a locked password, ids picked as useradd picks
/// them. An existing account without our marker is refused with PolicyDenied. Blocking (it
/// takes the account databases' lock): call it off the loop. Calls are serialised inside.
Result<OsUser> ensure_os_user(const std::string& name, const std::string& home);

/// The account if it exists and is ours; NotFound or PolicyDenied otherwise. Does not block
/// for long (a passwd lookup).
Result<OsUser> find_os_user(const std::string& name);

/// Deletes the account (userdel) if it exists and is ours; its files are the caller's business.
/// Blocking.
Status remove_os_user(const std::string& name);

/// Runs `argv` (argv[0] an absolute path) with an empty environment, stdin from /dev/null, and
/// waits for it. Returns its output (stdout and stderr, at most 64 KiB) or an Io error naming
/// the command and carrying that output. Blocking.
Result<std::string> run_command_blocking(const std::vector<std::string>& argv);

}  // namespace terminals::detail
