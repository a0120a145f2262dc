#pragma once

// Helpers shared by the files_*.cpp sources: UTF-8 checks, Python-compatible line splitting
// and error texts, stat wrappers and the temp-file-then-rename writer.

#include <sys/stat.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/files.hpp"
#include "terminals/result.hpp"

namespace terminals::detail::files {

/// Strict UTF-8 as Python's codec sees it: no overlong forms, no surrogates, nothing above
/// U+10FFFF, no truncated sequences.
bool is_valid_utf8(std::string_view s);

/// Python's str.splitlines(keepends=True) on valid UTF-8: each view keeps its terminator.
std::vector<std::string_view> split_lines_keepends(std::string_view text);

/// Decodes the code point at `i` and advances `i` past it. Meant for valid UTF-8; a stray or
/// truncated byte comes back as itself, one byte long.
char32_t next_code_point(std::string_view s, std::size_t& i);

/// The first `n` code points of valid UTF-8.
std::string_view utf8_prefix(std::string_view s, std::size_t n);

/// Python's repr() of a str (quotes chosen the same way, control and non-printable characters
/// escaped), close enough for error messages.
std::string py_repr(std::string_view s);

/// Python's str(OSError): "[Errno 2] No such file or directory: '/x'" (and " -> '/y'").
std::string os_error_text(int err, std::string_view path, std::string_view path2 = {});
/// A file_error with that text; `status` is used unless err is EACCES/EPERM and
/// `permission_status` is set.
Error os_error(int status, int err, std::string_view path, std::string_view path2 = {},
               int permission_status = 0);

/// stat()/lstat() without exceptions; nullopt when the call fails (errno is left set).
std::optional<struct stat> stat_path(const std::string& path);
std::optional<struct stat> lstat_path(const std::string& path);
bool is_regular_file(const std::string& path);
bool is_directory(const std::string& path);
double mtime_seconds(const struct stat& st);

/// Everything after the last '/' (Python's os.path.basename).
std::string_view base_name(std::string_view path);
/// Everything before the last '/' ("/" for "/x", "" for "x").
std::string parent_path(std::string_view path);
/// a + "/" + b without doubling the slash.
std::string join_path(std::string_view a, std::string_view b);

/// One directory entry, classified the way os.walk does it.
struct WalkEntry {
  std::string name;
  bool is_dir = false;   ///< a directory, or a symlink to one
  bool descend = false;  ///< a real directory (walks never follow symlinks, so they cannot loop)
};
/// The entries of `dir` sorted by name; empty when it cannot be read (os.walk skips those too).
std::vector<WalkEntry> read_directory(const std::string& dir);

/// 16 random hex characters for temporary names.
std::string random_token();

/// Reads a whole regular file (following symlinks; FIFOs and devices are refused with 404 so a
/// read can never block). `max_bytes` exceeded: 413. Open failures: 404 for ENOENT/ENOTDIR,
/// `permission_status` for EACCES/EPERM, else 400.
Result<std::string> read_regular_file(const std::string& path, std::uint64_t max_bytes,
                                      int permission_status = 403);

/// mkdir -p. Returns 0 or the errno of the first failure; `failed_at` names the path it failed
/// on, for the error text.
int make_directories(const std::string& path, std::string* failed_at);

/// Writes a file by temp-file-then-rename: open() creates the temporary next to the real
/// target (following a symlink at `path`), write() appends, commit() gives it the old file's
/// mode (or the umask default) and renames it over the target. Destroying an uncommitted
/// writer removes the temporary. Errors use Python's OSError text against `path` with
/// `status` (and `permission_status` for EACCES/EPERM if set).
class AtomicWriter {
 public:
  static Result<AtomicWriter> open(const std::string& path, int status,
                                   int permission_status = 0);
  AtomicWriter(AtomicWriter&& other) noexcept;
  AtomicWriter& operator=(AtomicWriter&& other) noexcept;
  AtomicWriter(const AtomicWriter&) = delete;
  AtomicWriter& operator=(const AtomicWriter&) = delete;
  ~AtomicWriter();

  Status write(std::string_view data);
  Status commit();
  std::uint64_t bytes_written() const { return written_; }

 private:
  AtomicWriter() = default;
  void discard();
  Error fail(int err) const;

  std::string path_;    // what the caller named (for error texts)
  std::string target_;  // the file actually replaced (the symlink's target, if any)
  std::string temp_;
  int fd_ = -1;
  int status_ = 400;
  int permission_status_ = 0;
  std::uint64_t written_ = 0;
  bool keep_mode_ = false;
  mode_t mode_ = 0;
};

}  // namespace terminals::detail::files
