#pragma once

// Small file-system helpers shared by the backends: private directories and files created
// without following symlinks, atomic replacement, and a tree removal that stays put.

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "terminals/result.hpp"

namespace terminals::detail {

/// Up to `max` bytes of a file; empty when it cannot be read.
std::string read_text(const std::string& path, std::size_t max = 1 << 20);

/// The last `bytes` bytes of a file, trailing newlines and blanks trimmed (log tails in errors).
std::string tail_of(const std::string& path, std::size_t bytes);

/// Writes `content` to `path` (mode 0600, owned by uid:gid when given) via a temporary file and
/// rename, so a reader sees the old or the new content, never a part. No fsync: see files.cpp.
Status write_private_file(const std::string& path, std::string_view content, std::optional<uid_t> uid,
                          gid_t gid);

/// Like write_private_file (mode 0600, never following a symlink at the temporary name), but
/// durable: the temporary file is fsync'ed before the rename and the directory after it, so once
/// this returns the new content survives a crash or power loss, and before that the old one does.
Status write_durable_file(const std::string& path, std::string_view content);

/// Unlinks `path` (a missing file is fine) and fsyncs its directory, so the removal is durable.
Status remove_durable_file(const std::string& path);

/// fsync on a directory: makes creations, renames and removals of its entries durable.
Status sync_directory(const std::string& dir);

/// mkdir -p with `mode` on the last component, owned by uid:gid when given. Refuses symlinks on
/// the way (PolicyDenied): a user must not redirect where we create things.
Status make_private_dir(const std::string& path, mode_t mode, std::optional<uid_t> uid, gid_t gid);

/// rm -rf that never follows symlinks and stays on one file system. A missing path is fine.
Status remove_tree(const std::string& path);

}  // namespace terminals::detail
