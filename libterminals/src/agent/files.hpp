#pragma once

// The file-operations core of `terminals-cli agent`: the synchronous work behind Open Terminal's
// /files/* routes (reference: open-terminal-api.md §3.3-§3.5, §4.2). The route layer parses the
// request, calls one function here on libuv's thread pool and turns the struct or Error into
// JSON. Nothing here touches a loop, and nothing keeps shared mutable state except
// SessionCwdStore, which locks.
//
// Errors: every failure is a terminals::Error with `source == ErrorSource::Http`, `native` = the
// HTTP status the reference answers with and `message` = the reference's `detail` text, so the
// route answers `{"detail": message}` with status `file_error_status(error)`. Codes: 400
// InvalidArgument, 403 PolicyDenied, 404 NotFound, 409 AlreadyExists, 413 LimitExceeded, 415
// InvalidArgument, 422 InvalidArgument (what FastAPI's validation would have refused), 500 Io.
//
// The agent runs inside the user's own sandbox as that user, so there is no path policy: any
// path the process can reach is allowed, exactly like single-user Open Terminal. Where the
// reference has a bug or a surprising quirk, this module documents what it does instead at the
// function concerned.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "terminals/result.hpp"

namespace terminals::detail {

// ---- context, options, errors --------------------------------------------------------------

/// Limits and switches; the defaults are the reference's where it has one.
struct FileOptions {
  /// read_file returns raw bytes for MIME types starting with one of these
  /// (OPEN_TERMINAL_BINARY_MIME_PREFIXES).
  std::vector<std::string> binary_mime_prefixes{"image"};
  /// read_file and replace_file_content load the whole file; larger files get 413.
  std::uint64_t max_read_bytes = 16u << 20;
  /// grep_search skips larger files.
  std::uint64_t grep_max_file_bytes = 32u << 20;
  /// grep_search in regex mode skips longer lines (literal searches scan any line).
  std::size_t grep_max_line_bytes = 64u << 10;
  /// grep_search and glob_search stop after this long and return what they found with
  /// `truncated` and `timed_out` set (a walk of / or a costly pattern cannot pin a thread).
  /// Zero or less stops at once; milliseconds::max() means no limit.
  std::chrono::milliseconds search_time_budget{30000};
  /// archive_paths refuses to produce a larger ZIP (no ZIP64; the format caps at 4 GiB).
  std::uint64_t archive_max_bytes = 0xFFFFFFFFull;
  /// MultipartUpload refuses a larger file part; 0 means no limit.
  std::uint64_t upload_max_bytes = 0;
  /// Where archive_paths writes its ZIP; empty means $TMPDIR or /tmp.
  std::string temp_dir;
  /// OPEN_TERMINAL_FILE_BROWSER_ROOT: "home" (or empty), "filesystem", or a path in which
  /// "{{home}}" and a leading "~" are expanded. Only shapes GET /files/cwd's `root`.
  std::string file_browser_root = "home";
};

/// Where relative paths resolve. Build one per request, e.g. with make_file_context().
struct FileContext {
  std::string home;  ///< absolute, normalised: the agent's home (Open Terminal's start directory)
  std::string cwd;   ///< the X-Session-Id working directory, or empty for home
  FileOptions options;
};

/// Which base a relative path joins: the session cwd (list, read, display, write, replace, grep,
/// glob and /execute's cwd) or home (view, serve, mkdir, delete, move, upload, archive and
/// POST /files/cwd), as in the reference (§3.3).
enum class PathBase { Cwd, Home };

/// An Error carrying an HTTP status (see the file comment for the Errc chosen per status).
Error file_error(int status, std::string detail);
/// The HTTP status to answer with: `native` for errors made here, else a mapping of the Errc.
int file_error_status(const Error& error);

/// Lexical normalisation like Python's os.path.normpath for absolute paths: collapses "//",
/// "." and ".." (".." at the root stays at the root), drops a trailing "/". Symlinks are not
/// resolved. A relative input is returned normalised but still relative.
std::string normalize_path(std::string_view path);

/// Absolute paths are normalised; relative ones are joined to ctx.cwd (or home when ctx.cwd is
/// empty) for PathBase::Cwd, or to ctx.home for PathBase::Home, then normalised. An empty path
/// is the base itself. 400 if the path contains a NUL byte (Python raised a 500 there).
Result<std::string> resolve_path(const FileContext& ctx, std::string_view path, PathBase base);

/// The working directory for POST /execute: `cwd` resolved against the session cwd when given,
/// else the session cwd (or home). Whether it exists is for the process layer to find out.
Result<std::string> resolve_exec_cwd(const FileContext& ctx,
                                     std::optional<std::string_view> cwd);

/// The MIME type for a file name by its extension (case-insensitive), or
/// "application/octet-stream" when unknown.
std::string guess_mime_type(std::string_view path);

// ---- listing, reading, viewing --------------------------------------------------------------

struct DirEntry {
  std::string name;
  std::string type;  ///< "file" | "directory" (a symlink to a directory counts as a directory)
  std::uint64_t size = 0;
  double modified = 0;  ///< seconds since the epoch, with the sub-second part
};
struct DirListing {
  std::string dir;
  std::vector<DirEntry> entries;  ///< sorted by name (bytewise); what stat() refuses is left out
};
/// GET /files/list. 404 "Directory not found".
Result<DirListing> list_files(const FileContext& ctx, std::string_view directory);

struct ReadResult {
  enum class Kind { Text, Binary };
  Kind kind = Kind::Text;
  std::string path;
  std::uint64_t total_lines = 0;  ///< Text only
  std::string content;            ///< Text: the selected lines; Binary: the raw bytes
  std::string content_type;       ///< Binary only: the MIME type to send
};
/// GET /files/read. A file that is strict UTF-8 comes back as text: lines split like Python's
/// str.splitlines(keepends=True) (\n \r\n \r \v \f \x1c \x1d \x1e U+0085 U+2028 U+2029), the
/// 1-based inclusive range [start_line, end_line] joined back verbatim. Unlike the reference,
/// CRLF is not turned into LF (Python's text mode did that as a side effect). Other files: if
/// the extension's MIME type starts with a configured prefix, the raw bytes; else 415
/// "Unsupported binary file type: <mime> (<n> bytes)". The reference's conversion of PDF, docx,
/// xlsx, pptx, odt, epub, eml ... to text is NOT supported: those get the 415 too.
/// Errors: 404 "File not found" (also for directories and special files), 422 when a line
/// number is below 1, 413 above options.max_read_bytes, 403 when the OS refuses to open it.
Result<ReadResult> read_file(const FileContext& ctx, std::string_view path,
                             std::optional<std::int64_t> start_line = std::nullopt,
                             std::optional<std::int64_t> end_line = std::nullopt);

struct DisplayResult {
  std::string path;
  bool exists = false;  ///< a regular file (following symlinks) is there
};
/// GET /files/display: only a signal for the client; never 404.
Result<DisplayResult> display_file(const FileContext& ctx, std::string_view path);

struct ViewResult {
  std::string path;          ///< absolute path the route should stream
  std::uint64_t size = 0;    ///< size when checked (the route streams to EOF regardless)
  double modified = 0;
  std::string content_type;  ///< guess_mime_type(path)
};
/// GET /files/view: resolved against home. 404 "File not found" unless a regular file.
/// Nothing is read here, so the route can stream a file of any size.
Result<ViewResult> view_file(const FileContext& ctx, std::string_view path);
/// GET /files/serve/{path...}: the URL tail is taken as absolute ("/" + tail).
Result<ViewResult> serve_file(const FileContext& ctx, std::string_view url_tail);

// ---- writing --------------------------------------------------------------------------------

struct WriteResult {
  std::string path;
  std::uint64_t size = 0;  ///< bytes written
};
/// POST /files/write: creates parent directories and replaces the file. The bytes go to a
/// temporary file in the same directory that is renamed over the target, so readers never see
/// half a file; an existing file keeps its permission bits, a symlink is written through to its
/// target, but hard links to the old file keep the old content. 400 with the OS error text in
/// Python's format ("[Errno 13] Permission denied: '/x'").
Result<WriteResult> write_file(const FileContext& ctx, std::string_view path,
                               std::string_view content);

struct Replacement {
  Replacement() = default;
  Replacement(std::string target_text, std::string replacement_text)
      : target(std::move(target_text)), replacement(std::move(replacement_text)) {}

  std::string target;
  std::string replacement;
  std::optional<std::int64_t> start_line;  ///< 1-based; limits the search to lines >= this
  std::optional<std::int64_t> end_line;    ///< 1-based, inclusive
  bool allow_multiple = false;
};
/// POST /files/replace: the replacements run in order on the text, which is written once at
/// the end (atomically, as write_file) and not at all if any replacement fails. Errors: 404
/// "File not found"; 400 "Target string not found: '<first 100 characters, Python repr>'";
/// 400 "Found N occurrences of target string but allow_multiple is false"; 422 for a line
/// number below 1; 400 "Target string must not be empty" (Python counted "" between every
/// character); 400 "File is not valid UTF-8 text" (a 500 in the reference); 413 above
/// options.max_read_bytes.
Result<WriteResult> replace_file_content(const FileContext& ctx, std::string_view path,
                                         const std::vector<Replacement>& replacements);

struct PathResult {
  std::string path;
};
/// POST /files/mkdir: mkdir -p, resolved against home. 400 with the OS error text.
Result<PathResult> mkdir_p(const FileContext& ctx, std::string_view path);

struct DeleteResult {
  std::string path;
  std::string type;  ///< "directory" | "file" (a symlink is removed itself and reported "file")
};
/// DELETE /files/delete: recursive, resolved against home. Symlinks are never followed (the
/// reference 404'd on a dangling link and failed with 400 on a link to a directory; here the
/// link itself is removed). 404 "Path not found"; 400 with the OS error text; 400 for "/".
Result<DeleteResult> delete_path(const FileContext& ctx, std::string_view path);

struct MoveResult {
  std::string source;
  std::string destination;
};
/// POST /files/move, both resolved against home. 404 "Source path not found"; 400
/// "Destination parent directory not found"; 409 "Destination already exists" (also when it
/// appears between the check and the rename: RENAME_NOREPLACE where the filesystem has it);
/// across filesystems the tree is copied, then the source removed (like shutil.move); 400 with
/// the OS error text otherwise.
Result<MoveResult> move_path(const FileContext& ctx, std::string_view source,
                             std::string_view destination);

// ---- searching ------------------------------------------------------------------------------

struct GrepRequest {
  std::string query;
  std::string path = ".";
  bool regex = true;
  bool case_insensitive = false;
  std::vector<std::string> include;  ///< fnmatch globs on the file's basename; any must match
  bool match_per_line = true;
  int max_results = 50;  ///< 1..500, else 422
};
struct GrepMatch {
  std::string file;        ///< absolute path
  std::uint64_t line = 0;  ///< 1-based; 0 when match_per_line is false
  std::string content;     ///< the line without its terminator; empty when match_per_line is false
};
struct GrepResult {
  std::string query;
  std::string path;  ///< the resolved search root
  bool match_per_line = true;  ///< false: emit each match as {"file"} only
  std::vector<GrepMatch> matches;
  bool truncated = false;  ///< more matches existed than max_results (or the time budget ran out)
  bool timed_out = false;  ///< options.search_time_budget ran out; `matches` is what was found
};
/// GET /files/grep. Walks the path recursively (or searches the one file it names; `include`
/// does not apply then), file names sorted within each directory, then each subdirectory in
/// name order. Symlinked directories are not followed (so links cannot loop); symlinked files
/// are. Files that are not entirely strict UTF-8, special files, files over
/// options.grep_max_file_bytes and unreadable entries are skipped. Lines end at \n, \r\n or \r
/// (Python's universal newlines). `truncated` is only true when at least one more match
/// existed (the reference also set it when exactly max_results matched).
///
/// Regex dialect: PCRE2 (libpcre2-8, Debian libpcre2-dev), compiled with PCRE2_UTF | PCRE2_UCP
/// (| PCRE2_CASELESS for case_insensitive) and JIT-compiled where available. Its syntax is close
/// to Python `re`: (?P<n>...), (?P=n), look-ahead/behind, back-references, inline flags, Unicode
/// \w \d \s \b and Unicode case folding all work. Differences from Python remain at the edges
/// (e.g. PCRE2's \Z also matches before a final newline, which a line never has; Python-only
/// escapes like \N{...} and {,n} differ). A case-insensitive literal search uses PCRE2_LITERAL;
/// a case-sensitive one is a plain substring search. Each line's match is bounded by
/// pcre2_set_match_limit and pcre2_set_depth_limit (and the JIT's stack): a line on which PCRE2
/// gives up (PCRE2_ERROR_MATCHLIMIT, _DEPTHLIMIT, _JIT_STACKLIMIT) counts as not matching, so a
/// catastrophic pattern like "(a*)*[bc]" costs a few milliseconds per line instead of hanging.
/// options.grep_max_line_bytes bounds the per-line work and the time budget is checked between
/// lines. std::regex was measured and rejected (stack overflow on a 64 KiB line with ".*foo";
/// quadratic per line). Errors: 404 "Search path not found"; 400 "Invalid regex: <PCRE2
/// message> at position <n>" (n in characters); 422 for max_results out of range.
Result<GrepResult> grep_search(const FileContext& ctx, const GrepRequest& request);

struct GlobRequest {
  std::string pattern;
  std::string path = ".";
  std::vector<std::string> exclude;
  std::string type = "any";  ///< "any" | "file" | "directory", else 422
  int max_results = 50;      ///< 1..500, else 422
};
struct GlobMatch {
  std::string path;  ///< relative to the search root
  std::string type;  ///< "file" | "directory"
  std::uint64_t size = 0;
  double modified = 0;
};
struct GlobResult {
  std::string pattern;
  std::string path;
  std::vector<GlobMatch> matches;
  bool truncated = false;
  bool timed_out = false;
};
/// GET /files/glob. Python fnmatch semantics (case-sensitive; * and ? also match "/"; [seq],
/// [!seq]) against the entry's name or its path relative to the root; excludes the same way.
/// Each directory's entries are visited in name order before its subdirectories. Symlinks to
/// directories are listed as directories but not entered; entries stat() refuses are skipped.
/// 404 "Search directory not found"; 422 for a bad type or max_results.
Result<GlobResult> glob_search(const FileContext& ctx, const GlobRequest& request);

/// Python's fnmatch.fnmatchcase on UTF-8 strings (exposed for tests).
bool fnmatch_match(std::string_view pattern, std::string_view name);

// ---- upload ---------------------------------------------------------------------------------

struct UploadResult {
  std::string path;
  std::uint64_t size = 0;
};

/// POST /files/upload as a streaming multipart/form-data parser: the route feeds body chunks as
/// they arrive and memory stays bounded (one chunk plus the boundary). The form field `file` is
/// written to `<directory>/<basename of its filename>` through a temporary file in that
/// directory, renamed into place by finish() (an existing file is replaced and keeps its mode).
/// The file name is reduced to what follows its last "/", so "../../etc/passwd" lands as
/// "passwd" in the directory; an empty, "." or ".." name is refused (400 "Invalid file name";
/// the reference wrote ".." to the parent directory). Other fields are skipped; a second `file`
/// part is ignored. The directory is created (mkdir -p) when the file part starts.
/// Errors: 400 for a Content-Type that is not multipart/form-data with a boundary, a malformed
/// body or a missing closing boundary; 422 "Missing form field 'file'"; 413 above
/// options.upload_max_bytes; 403 when the OS refuses (EACCES/EPERM), else 400 with its text.
/// After an error every later call returns the same error; an unfinished upload removes its
/// temporary file when destroyed.
class MultipartUpload {
 public:
  /// `directory` is resolved against home; `content_type` is the request's header value.
  static Result<MultipartUpload> start(const FileContext& ctx, std::string_view directory,
                                       std::string_view content_type);
  MultipartUpload(MultipartUpload&&) noexcept;
  MultipartUpload& operator=(MultipartUpload&&) noexcept;
  ~MultipartUpload();

  Status feed(std::string_view chunk);
  /// Call once after the last chunk.
  Result<UploadResult> finish();

  struct Impl;

 private:
  explicit MultipartUpload(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- archive --------------------------------------------------------------------------------

/// A file that is unlinked when this is destroyed (move-only).
class TempFile {
 public:
  TempFile() = default;
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  TempFile(TempFile&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempFile& operator=(TempFile&& other) noexcept;
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() { reset(); }

  const std::string& path() const { return path_; }
  /// Unlinks the file now.
  void reset();
  /// Keeps the file: the caller owns it from now on.
  std::string release();

 private:
  std::string path_;
};

struct ArchiveResult {
  TempFile file;            ///< the finished ZIP; stream it, then let this go
  std::uint64_t size = 0;   ///< bytes in the ZIP
  std::size_t entries = 0;  ///< files and directories stored
  std::string filename;     ///< "<basename>.zip" for one path, else "download.zip"
  std::string content_type = "application/zip";
};
/// POST /files/archive: a ZIP of the paths (resolved against home). A file is stored under its
/// basename; a directory as "dirname/" followed by everything under it as
/// "dirname/relative/path" (directory entries included, so empty directories survive; the
/// reference stored files only). Symlinked files are stored with their target's bytes;
/// symlinked directories below a given path are not entered, dangling links and special files
/// are skipped. Method STORE (no deflate: no zlib dependency; CRC-32 is computed), no ZIP64:
/// 413 "Archive too large: ..." past options.archive_max_bytes (at most 4 GiB) or 65535
/// entries. Errors: 400 "No paths provided"; 404 "Path not found: <p>" (p as given);
/// 403 when a file cannot be read, 400/500 for other OS errors.
Result<ArchiveResult> archive_paths(const FileContext& ctx, const std::vector<std::string>& paths);

// ---- session working directories ------------------------------------------------------------

/// X-Session-Id -> working directory, with a sliding TTL (every get refreshes it) and a cap on
/// the number of sessions (the least recently used one is dropped). Thread-safe.
class SessionCwdStore {
 public:
  using Clock = std::chrono::steady_clock;
  struct Limits {
    std::chrono::seconds ttl{7 * 24 * 3600};  // OPEN_TERMINAL_SESSION_CWD_TTL
    std::size_t max_entries = 10000;
  };

  /// `now` is for tests; empty means Clock::now.
  explicit SessionCwdStore(Limits limits, std::function<Clock::time_point()> now = {});
  SessionCwdStore();
  ~SessionCwdStore();
  SessionCwdStore(const SessionCwdStore&) = delete;
  SessionCwdStore& operator=(const SessionCwdStore&) = delete;

  /// The session's cwd, refreshing its TTL. Empty ids and unknown or expired sessions: nullopt.
  std::optional<std::string> get(std::string_view session_id);
  /// Stores (or replaces) the session's cwd. An empty id is ignored.
  void set(std::string_view session_id, std::string cwd);
  std::size_t size() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// A FileContext for a request: cwd is the session's (when `session_id` is known) else home.
FileContext make_file_context(SessionCwdStore& store, std::string home,
                              std::string_view session_id, FileOptions options = {});

struct BrowserRoot {
  std::string path;
  std::string label;
};
struct CwdInfo {
  std::string cwd;
  std::string home;
  std::optional<BrowserRoot> root;  ///< absent for file_browser_root == "filesystem"
};
/// GET /files/cwd for a context made by make_file_context().
CwdInfo get_cwd(const FileContext& ctx);

/// POST /files/cwd: `path` is resolved against home (not the session cwd, like the reference),
/// must be a directory (404 "Directory not found") and is stored when `session_id` is not
/// empty. Returns the resolved directory ({"cwd": ...}).
Result<PathResult> set_cwd(SessionCwdStore& store, const FileContext& ctx,
                           std::string_view session_id, std::string_view path);

}  // namespace terminals::detail
