// Shared helpers for the agent's file operations (see files_internal.hpp).

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <utility>

#include "agent/files_internal.hpp"
#include "util/text.hpp"

namespace terminals::detail {

Error file_error(int status, std::string detail) {
  Errc code = Errc::Io;
  switch (status) {
    case 400:
    case 415:
    case 422: code = Errc::InvalidArgument; break;
    case 403: code = Errc::PolicyDenied; break;
    case 404: code = Errc::NotFound; break;
    case 409: code = Errc::AlreadyExists; break;
    case 413: code = Errc::LimitExceeded; break;
    default: code = status >= 500 ? Errc::Io : Errc::InvalidArgument; break;
  }
  return Error(code, std::move(detail), ErrorSource::Http, status);
}

int file_error_status(const Error& error) {
  if (error.source == ErrorSource::Http && error.native >= 400 && error.native <= 599) {
    return error.native;
  }
  switch (error.code) {
    case Errc::InvalidArgument: return 400;
    case Errc::NotFound: return 404;
    case Errc::AlreadyExists: return 409;
    case Errc::PolicyDenied: return 403;
    case Errc::LimitExceeded: return 413;
    case Errc::Timeout: return 504;
    case Errc::BackendUnavailable: return 503;
    default: return 500;
  }
}

std::string normalize_path(std::string_view path) {
  const bool absolute = !path.empty() && path.front() == '/';
  std::vector<std::string_view> parts;
  std::size_t i = 0;
  while (i <= path.size()) {
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    if (part.empty() || part == ".") {
      // skip
    } else if (part == "..") {
      if (!parts.empty() && parts.back() != "..") {
        parts.pop_back();
      } else if (!absolute) {
        parts.push_back(part);
      }  // ".." above the root stays at the root
    } else {
      parts.push_back(part);
    }
    i = j + 1;
  }
  std::string out = absolute ? "/" : "";
  for (std::size_t k = 0; k < parts.size(); ++k) {
    if (k) out += '/';
    out += parts[k];
  }
  if (out.empty()) out = ".";
  return out;
}

Result<std::string> resolve_path(const FileContext& ctx, std::string_view path, PathBase base) {
  if (path.find('\0') != std::string_view::npos) {
    return file_error(400, "Path contains a NUL byte");
  }
  if (!path.empty() && path.front() == '/') return normalize_path(path);
  const std::string& root = (base == PathBase::Cwd && !ctx.cwd.empty()) ? ctx.cwd : ctx.home;
  std::string joined = root;
  joined += '/';
  joined += path;
  return normalize_path(joined);
}

Result<std::string> resolve_exec_cwd(const FileContext& ctx,
                                     std::optional<std::string_view> cwd) {
  if (cwd) return resolve_path(ctx, *cwd, PathBase::Cwd);
  return ctx.cwd.empty() ? ctx.home : ctx.cwd;
}

std::string guess_mime_type(std::string_view path) {
  // A fixed table, so answers do not depend on the host's /etc/mime.types (Python consults it).
  struct Mime {
    const char* ext;
    const char* type;
  };
  static constexpr Mime kTable[] = {
      {"png", "image/png"}, {"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"},
      {"jpe", "image/jpeg"}, {"gif", "image/gif"}, {"webp", "image/webp"},
      {"svg", "image/svg+xml"}, {"bmp", "image/bmp"}, {"ico", "image/vnd.microsoft.icon"},
      {"tif", "image/tiff"}, {"tiff", "image/tiff"}, {"avif", "image/avif"},
      {"heic", "image/heic"}, {"heif", "image/heif"},
      {"pdf", "application/pdf"}, {"zip", "application/zip"}, {"gz", "application/gzip"},
      {"tgz", "application/gzip"}, {"tar", "application/x-tar"}, {"bz2", "application/x-bzip2"},
      {"xz", "application/x-xz"}, {"zst", "application/zstd"},
      {"7z", "application/x-7z-compressed"},
      {"rar", "application/vnd.rar"}, {"jar", "application/java-archive"},
      {"json", "application/json"}, {"jsonl", "application/jsonl"}, {"xml", "text/xml"},
      {"yaml", "application/yaml"}, {"yml", "application/yaml"}, {"toml", "application/toml"},
      {"txt", "text/plain"}, {"log", "text/plain"}, {"ini", "text/plain"}, {"cfg", "text/plain"},
      {"conf", "text/plain"}, {"html", "text/html"}, {"htm", "text/html"}, {"css", "text/css"},
      {"js", "text/javascript"}, {"mjs", "text/javascript"}, {"ts", "text/plain"},
      {"csv", "text/csv"}, {"tsv", "text/tab-separated-values"}, {"md", "text/markdown"},
      {"markdown", "text/markdown"}, {"py", "text/x-python"}, {"sh", "application/x-sh"},
      {"c", "text/x-c"}, {"h", "text/x-c"}, {"cpp", "text/x-c++"}, {"hpp", "text/x-c++"},
      {"java", "text/x-java"}, {"rs", "text/x-rust"}, {"go", "text/x-go"},
      {"wasm", "application/wasm"}, {"mp3", "audio/mpeg"}, {"wav", "audio/wav"},
      {"ogg", "audio/ogg"}, {"oga", "audio/ogg"}, {"flac", "audio/flac"}, {"m4a", "audio/mp4"},
      {"aac", "audio/aac"}, {"opus", "audio/opus"}, {"mp4", "video/mp4"}, {"m4v", "video/mp4"},
      {"webm", "video/webm"}, {"ogv", "video/ogg"}, {"mov", "video/quicktime"},
      {"avi", "video/x-msvideo"}, {"mkv", "video/x-matroska"}, {"woff", "font/woff"},
      {"woff2", "font/woff2"}, {"ttf", "font/ttf"}, {"otf", "font/otf"},
      {"doc", "application/msword"}, {"xls", "application/vnd.ms-excel"},
      {"ppt", "application/vnd.ms-powerpoint"},
      {"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
      {"xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
      {"pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"},
      {"odt", "application/vnd.oasis.opendocument.text"},
      {"ods", "application/vnd.oasis.opendocument.spreadsheet"},
      {"odp", "application/vnd.oasis.opendocument.presentation"},
      {"epub", "application/epub+zip"}, {"rtf", "application/rtf"}, {"eml", "message/rfc822"},
      {"ipynb", "application/x-ipynb+json"},
  };
  std::string_view name = files::base_name(path);
  // Like os.path.splitext: leading dots do not start an extension (".bashrc" has none).
  std::size_t first = name.find_first_not_of('.');
  std::size_t dot = name.rfind('.');
  if (first == std::string_view::npos || dot == std::string_view::npos || dot < first) {
    return "application/octet-stream";
  }
  std::string ext(name.substr(dot + 1));
  for (char& c : ext) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  for (const Mime& m : kTable) {
    if (ext == m.ext) return m.type;
  }
  return "application/octet-stream";
}

}  // namespace terminals::detail

namespace terminals::detail::files {

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  auto cont = [&](std::size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return k < n && p[k] >= lo && p[k] <= hi;
  };
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    if (c < 0xC2) return false;  // stray continuation byte or overlong 2-byte form
    if (c < 0xE0) {
      if (!cont(i + 1)) return false;
      i += 2;
    } else if (c < 0xF0) {
      unsigned char lo = c == 0xE0 ? 0xA0 : 0x80;  // overlong
      unsigned char hi = c == 0xED ? 0x9F : 0xBF;  // surrogates
      if (!cont(i + 1, lo, hi) || !cont(i + 2)) return false;
      i += 3;
    } else if (c < 0xF5) {
      unsigned char lo = c == 0xF0 ? 0x90 : 0x80;  // overlong
      unsigned char hi = c == 0xF4 ? 0x8F : 0xBF;  // above U+10FFFF
      if (!cont(i + 1, lo, hi) || !cont(i + 2) || !cont(i + 3)) return false;
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

std::vector<std::string_view> split_lines_keepends(std::string_view text) {
  std::vector<std::string_view> lines;
  const std::size_t n = text.size();
  std::size_t start = 0;
  std::size_t i = 0;
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    std::size_t end = 0;  // one past the terminator, 0 if none here
    if (c == '\n' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D || c == 0x1E) {
      end = i + 1;
    } else if (c == '\r') {
      end = (i + 1 < n && text[i + 1] == '\n') ? i + 2 : i + 1;
    } else if (c == 0xC2 && i + 1 < n && static_cast<unsigned char>(text[i + 1]) == 0x85) {
      end = i + 2;  // U+0085 NEL
    } else if (c == 0xE2 && i + 2 < n && static_cast<unsigned char>(text[i + 1]) == 0x80 &&
               (static_cast<unsigned char>(text[i + 2]) == 0xA8 ||
                static_cast<unsigned char>(text[i + 2]) == 0xA9)) {
      end = i + 3;  // U+2028, U+2029
    }
    if (end) {
      lines.push_back(text.substr(start, end - start));
      start = i = end;
    } else {
      ++i;
    }
  }
  if (start < n) lines.push_back(text.substr(start));
  return lines;
}

char32_t next_code_point(std::string_view s, std::size_t& i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  int len = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
  if (len == 1 || i + static_cast<std::size_t>(len) > s.size()) {
    ++i;
    return c;
  }
  char32_t cp = c & (0x7F >> len);
  for (int k = 1; k < len; ++k) {
    cp = (cp << 6) | (static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]) & 0x3F);
  }
  i += static_cast<std::size_t>(len);
  return cp;
}

std::string_view utf8_prefix(std::string_view s, std::size_t n) {
  std::size_t count = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (count == n) return s.substr(0, i);
      ++count;
    }
  }
  return s;
}

namespace {

// What Python's str.isprintable() refuses, roughly: controls, format characters, separators
// other than the space, private use and a few noncharacters.
bool py_printable(char32_t cp) {
  if (cp < 0x20 || (cp >= 0x7F && cp < 0xA1) || cp == 0xAD) return false;
  if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200F)) return false;
  if (cp >= 0x2028 && cp <= 0x202F) return false;
  if ((cp >= 0x205F && cp <= 0x206F) || cp == 0x3000 || cp == 0xFEFF) return false;
  if (cp >= 0xD800 && cp <= 0xF8FF) return false;   // surrogates, private use
  if (cp >= 0xFFF9 && cp <= 0xFFFB) return false;   // interlinear annotation controls
  if ((cp & 0xFFFE) == 0xFFFE) return false;        // noncharacters U+xxFFFE, U+xxFFFF
  if ((cp >= 0xE0000 && cp <= 0xE007F) || cp >= 0xF0000) return false;  // tags, private planes
  return true;
}

}  // namespace

std::string py_repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  char buf[16];
  for (std::size_t i = 0; i < s.size();) {
    char32_t cp = next_code_point(s, i);
    if (cp == '\\') {
      out += "\\\\";
    } else if (cp == static_cast<char32_t>(quote)) {
      out += '\\';
      out += quote;
    } else if (cp == '\t') {
      out += "\\t";
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (py_printable(cp)) {
      // Re-encode the code point (cheaper than tracking the source span).
      append_utf8(out, cp);
    } else {
      if (cp < 0x100) {
        std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(cp));
      } else if (cp < 0x10000) {
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(cp));
      } else {
        std::snprintf(buf, sizeof buf, "\\U%08x", static_cast<unsigned>(cp));
      }
      out += buf;
    }
  }
  out += quote;
  return out;
}

std::string os_error_text(int err, std::string_view path, std::string_view path2) {
  std::string out = "[Errno " + std::to_string(err) + "] " +
                    std::error_code(err, std::generic_category()).message();
  if (!path.empty()) {
    out += ": " + py_repr(path);
    if (!path2.empty()) out += " -> " + py_repr(path2);
  }
  return out;
}

Error os_error(int status, int err, std::string_view path, std::string_view path2,
               int permission_status) {
  if (permission_status && (err == EACCES || err == EPERM)) status = permission_status;
  return file_error(status, os_error_text(err, path, path2));
}

std::optional<struct stat> stat_path(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

std::optional<struct stat> lstat_path(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

bool is_regular_file(const std::string& path) {
  auto st = stat_path(path);
  return st && S_ISREG(st->st_mode);
}

bool is_directory(const std::string& path) {
  auto st = stat_path(path);
  return st && S_ISDIR(st->st_mode);
}

double mtime_seconds(const struct stat& st) {
  return static_cast<double>(st.st_mtim.tv_sec) + static_cast<double>(st.st_mtim.tv_nsec) / 1e9;
}

std::string_view base_name(std::string_view path) {
  std::size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string parent_path(std::string_view path) {
  std::size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return "";
  std::string_view head = path.substr(0, slash + 1);
  // Python's dirname strips trailing slashes unless the head is all slashes.
  std::size_t last = head.find_last_not_of('/');
  if (last == std::string_view::npos) return std::string(head);
  return std::string(head.substr(0, last + 1));
}

std::string join_path(std::string_view a, std::string_view b) {
  std::string out(a);
  if (out.empty() || out.back() != '/') out += '/';
  out += b;
  return out;
}

std::vector<WalkEntry> read_directory(const std::string& dir) {
  std::vector<WalkEntry> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    WalkEntry entry;
    entry.name = std::string(name);
    std::string full = join_path(dir, name);
    unsigned char type = e->d_type;
    if (type == DT_UNKNOWN) {  // some filesystems do not fill d_type
      auto st = lstat_path(full);
      if (!st) continue;
      type = S_ISDIR(st->st_mode) ? DT_DIR : S_ISLNK(st->st_mode) ? DT_LNK : DT_REG;
    }
    if (type == DT_DIR) {
      entry.is_dir = entry.descend = true;
    } else if (type == DT_LNK) {
      entry.is_dir = is_directory(full);
    }
    out.push_back(std::move(entry));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const WalkEntry& a, const WalkEntry& b) { return a.name < b.name; });
  return out;
}

std::string random_token() {
  unsigned char bytes[8] = {};
  if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) {
    // No getrandom: a counter mixed with the clock is unique enough for O_EXCL retries.
    static std::atomic<std::uint64_t> counter{0};
    std::uint64_t v = counter.fetch_add(1) * 0x9E3779B97F4A7C15ull ^
                      static_cast<std::uint64_t>(
                          std::chrono::steady_clock::now().time_since_epoch().count()) ^
                      (static_cast<std::uint64_t>(::getpid()) << 32);
    std::memcpy(bytes, &v, sizeof bytes);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

namespace {

// Writes all of `data` to `fd`; returns 0 or errno.
int write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return 0;
}

}  // namespace

Result<std::string> read_regular_file(const std::string& path, std::uint64_t max_bytes,
                                      int permission_status) {
  // O_NONBLOCK so that opening a FIFO cannot hang; it is refused right after by fstat.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) return file_error(404, "File not found");
    return os_error(400, err, path, {}, permission_status);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return file_error(404, "File not found");
  }
  auto too_large = [&](std::uint64_t size) {
    return file_error(413, "File too large: " + std::to_string(size) + " bytes (limit " +
                               std::to_string(max_bytes) + " bytes)");
  };
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return too_large(static_cast<std::uint64_t>(st.st_size));
  }
  std::string data;
  data.reserve(static_cast<std::size_t>(st.st_size));
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return os_error(400, err, path, {}, permission_status);
    }
    if (n == 0) break;
    data.append(buf, static_cast<std::size_t>(n));
    if (data.size() > max_bytes) {  // the file grew while we read it
      ::close(fd);
      return too_large(data.size());
    }
  }
  ::close(fd);
  return data;
}

int make_directories(const std::string& path, std::string* failed_at) {
  if (is_directory(path)) return 0;
  std::string norm = normalize_path(path);
  std::size_t pos = norm.front() == '/' ? 1 : 0;
  for (;;) {
    std::size_t slash = norm.find('/', pos);
    bool last = slash == std::string::npos;
    std::string prefix = last ? norm : norm.substr(0, slash);
    if (::mkdir(prefix.c_str(), 0777) != 0) {
      int err = errno;
      if (err != EEXIST) {
        if (failed_at) *failed_at = prefix;
        return err;
      }
      // An existing non-directory in the middle shows up as ENOTDIR on the next mkdir, which
      // names the deeper path like Python does; at the end it is "File exists".
      if (last && !is_directory(prefix)) {
        if (failed_at) *failed_at = prefix;
        return EEXIST;
      }
    }
    if (last) return 0;
    pos = slash + 1;
  }
}

// ---- AtomicWriter ----

namespace {

// Follows a chain of symlinks at `path` lexically (the final target may not exist yet).
std::string follow_symlinks(const std::string& path) {
  std::string current = path;
  for (int hops = 0; hops < 40; ++hops) {
    auto st = lstat_path(current);
    if (!st || !S_ISLNK(st->st_mode)) return current;
    std::string link(static_cast<std::size_t>(st->st_size) + 1, '\0');
    ssize_t n = ::readlink(current.c_str(), link.data(), link.size());
    if (n < 0) return current;
    if (static_cast<std::size_t>(n) >= link.size()) {  // grew meanwhile; try a bigger buffer
      link.resize(4096);
      n = ::readlink(current.c_str(), link.data(), link.size());
      if (n < 0 || static_cast<std::size_t>(n) >= link.size()) return current;
    }
    link.resize(static_cast<std::size_t>(n));
    current = (!link.empty() && link.front() == '/')
                  ? normalize_path(link)
                  : normalize_path(join_path(parent_path(current), link));
  }
  return current;  // a loop: open() reports ELOOP on the temp's rename target
}

}  // namespace

Result<AtomicWriter> AtomicWriter::open(const std::string& path, int status,
                                        int permission_status) {
  AtomicWriter w;
  w.path_ = path;
  w.status_ = status;
  w.permission_status_ = permission_status;
  w.target_ = follow_symlinks(path);
  if (auto st = stat_path(w.target_)) {
    if (S_ISDIR(st->st_mode)) return w.fail(EISDIR);
    // Renaming over a file we may not write would bypass its permissions; refuse like open().
    if (::faccessat(AT_FDCWD, w.target_.c_str(), W_OK, AT_EACCESS) != 0) return w.fail(errno);
    w.keep_mode_ = true;
    w.mode_ = st->st_mode & 07777;
  }
  std::string dir = parent_path(w.target_);
  if (dir.empty()) dir = ".";
  for (int attempt = 0; attempt < 8; ++attempt) {
    // A short name: a long target name plus a suffix could exceed NAME_MAX.
    std::string temp = join_path(dir, ".terminals-" + random_token() + ".tmp");
    // 0666 so the umask applies exactly as for a plain open(); commit() restores an old mode.
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      w.fd_ = fd;
      w.temp_ = std::move(temp);
      return w;
    }
    if (errno != EEXIST) return w.fail(errno);
  }
  return w.fail(EEXIST);
}

AtomicWriter::AtomicWriter(AtomicWriter&& other) noexcept
    : path_(std::move(other.path_)),
      target_(std::move(other.target_)),
      temp_(std::move(other.temp_)),
      fd_(std::exchange(other.fd_, -1)),
      status_(other.status_),
      permission_status_(other.permission_status_),
      written_(other.written_),
      keep_mode_(other.keep_mode_),
      mode_(other.mode_) {
  other.temp_.clear();
}

AtomicWriter& AtomicWriter::operator=(AtomicWriter&& other) noexcept {
  if (this != &other) {
    discard();
    path_ = std::move(other.path_);
    target_ = std::move(other.target_);
    temp_ = std::exchange(other.temp_, std::string());
    fd_ = std::exchange(other.fd_, -1);
    status_ = other.status_;
    permission_status_ = other.permission_status_;
    written_ = other.written_;
    keep_mode_ = other.keep_mode_;
    mode_ = other.mode_;
  }
  return *this;
}

AtomicWriter::~AtomicWriter() { discard(); }

void AtomicWriter::discard() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_.empty()) {
    ::unlink(temp_.c_str());
    temp_.clear();
  }
}

Error AtomicWriter::fail(int err) const {
  return os_error(status_, err, path_, {}, permission_status_);
}

Status AtomicWriter::write(std::string_view data) {
  if (fd_ < 0) return file_error(500, "write after commit");
  if (int err = write_all(fd_, data)) return fail(err);
  written_ += data.size();
  return {};
}

Status AtomicWriter::commit() {
  if (fd_ < 0) return file_error(500, "commit twice");
  if (keep_mode_ && ::fchmod(fd_, mode_) != 0) {
    int err = errno;
    discard();
    return fail(err);
  }
  // close() can report a deferred write error (NFS, quota): it must be checked.
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) {
    int err = errno;
    discard();
    return fail(err);
  }
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    int err = errno;
    discard();
    return fail(err);
  }
  temp_.clear();
  return {};
}

}  // namespace terminals::detail::files
