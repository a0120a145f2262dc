// The agent's file operations: listing, reading, writing, replacing, mkdir, delete, move and
// the per-session working directories. Searching is in files_search.cpp, upload in
// multipart.cpp, archives in files_archive.cpp.

#include "agent/files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <filesystem>
#include <list>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "agent/files_internal.hpp"

namespace terminals::detail {

using namespace files;

namespace {

// What FastAPI's `ge=1` validation answers, as one message.
Status check_line_number(const char* field, const std::optional<std::int64_t>& value) {
  if (value && *value < 1) {
    return file_error(422, std::string(field) + ": Input should be greater than or equal to 1");
  }
  return {};
}

// Python's list slice [start:end] bounds for 1-based inclusive line numbers.
std::pair<std::size_t, std::size_t> line_slice(std::size_t total,
                                               const std::optional<std::int64_t>& start_line,
                                               const std::optional<std::int64_t>& end_line) {
  std::size_t start = start_line ? static_cast<std::size_t>(*start_line - 1) : 0;
  std::size_t end = end_line ? static_cast<std::size_t>(*end_line) : total;
  start = std::min(start, total);
  end = std::clamp(end, start, total);
  return {start, end};
}

std::size_t count_occurrences(std::string_view hay, std::string_view needle) {
  std::size_t n = 0;
  for (std::size_t pos = hay.find(needle); pos != std::string_view::npos;
       pos = hay.find(needle, pos + needle.size())) {
    ++n;
  }
  return n;
}

std::string replace_all(std::string_view hay, std::string_view needle, std::string_view with) {
  std::string out;
  out.reserve(hay.size());
  std::size_t from = 0;
  for (std::size_t pos = hay.find(needle); pos != std::string_view::npos;
       pos = hay.find(needle, from)) {
    out.append(hay.substr(from, pos - from));
    out.append(with);
    from = pos + needle.size();
  }
  out.append(hay.substr(from));
  return out;
}

Status write_atomically(const std::string& target, std::string_view content) {
  std::string failed_at;
  std::string parent = parent_path(target);
  if (!parent.empty()) {
    if (int err = make_directories(parent, &failed_at)) return os_error(400, err, failed_at);
  }
  auto writer = AtomicWriter::open(target, 400);
  if (!writer) return std::move(writer).error();
  if (auto st = writer->write(content); !st) return st;
  return writer->commit();
}

// rm -rf without following symlinks; returns 0 or errno, naming the failing path.
int remove_tree(const std::string& path, std::string* failed_at) {
  auto st = lstat_path(path);
  if (!st) {
    if (errno == ENOENT) return 0;
    *failed_at = path;
    return errno;
  }
  if (!S_ISDIR(st->st_mode)) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      *failed_at = path;
      return errno;
    }
    return 0;
  }
  std::vector<std::string> names;
  if (DIR* dir = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(dir)) {
      std::string_view name = e->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    ::closedir(dir);
  } else {
    *failed_at = path;
    return errno;
  }
  for (const std::string& name : names) {
    if (int err = remove_tree(join_path(path, name), failed_at)) return err;
  }
  if (::rmdir(path.c_str()) != 0 && errno != ENOENT) {
    *failed_at = path;
    return errno;
  }
  return 0;
}

}  // namespace

// ---- list, read, display, view ----

Result<DirListing> list_files(const FileContext& ctx, std::string_view directory) {
  auto target = resolve_path(ctx, directory, PathBase::Cwd);
  if (!target) return std::move(target).error();
  if (!is_directory(*target)) return file_error(404, "Directory not found");
  DIR* dir = ::opendir(target->c_str());
  if (!dir) return os_error(400, errno, *target, {}, 403);
  DirListing out;
  out.dir = *target;
  while (dirent* e = ::readdir(dir)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    auto st = stat_path(join_path(*target, name));
    if (!st) continue;  // dangling link, raced away, no permission: left out like the reference
    out.entries.push_back(DirEntry{std::string(name), S_ISDIR(st->st_mode) ? "directory" : "file",
                                   static_cast<std::uint64_t>(st->st_size), mtime_seconds(*st)});
  }
  ::closedir(dir);
  std::sort(out.entries.begin(), out.entries.end(),
            [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return out;
}

Result<ReadResult> read_file(const FileContext& ctx, std::string_view path,
                             std::optional<std::int64_t> start_line,
                             std::optional<std::int64_t> end_line) {
  if (auto st = check_line_number("start_line", start_line); !st) return std::move(st).error();
  if (auto st = check_line_number("end_line", end_line); !st) return std::move(st).error();
  auto target = resolve_path(ctx, path, PathBase::Cwd);
  if (!target) return std::move(target).error();
  if (!is_regular_file(*target)) return file_error(404, "File not found");
  auto data = read_regular_file(*target, ctx.options.max_read_bytes, 403);
  if (!data) return std::move(data).error();

  ReadResult out;
  out.path = *target;
  if (is_valid_utf8(*data)) {
    auto lines = split_lines_keepends(*data);
    auto [start, end] = line_slice(lines.size(), start_line, end_line);
    out.kind = ReadResult::Kind::Text;
    out.total_lines = lines.size();
    if (start < end) {
      // The lines are contiguous views into `data`: one substring is their join.
      const char* begin = lines[start].data();
      const char* stop = lines[end - 1].data() + lines[end - 1].size();
      out.content.assign(begin, stop);
    }
    return out;
  }
  std::string mime = guess_mime_type(*target);
  for (const std::string& prefix : ctx.options.binary_mime_prefixes) {
    if (!prefix.empty() && mime.compare(0, prefix.size(), prefix) == 0) {
      out.kind = ReadResult::Kind::Binary;
      out.content_type = std::move(mime);
      out.content = std::move(*data);
      return out;
    }
  }
  return file_error(415, "Unsupported binary file type: " + mime + " (" +
                             std::to_string(data->size()) + " bytes)");
}

Result<DisplayResult> display_file(const FileContext& ctx, std::string_view path) {
  auto target = resolve_path(ctx, path, PathBase::Cwd);
  if (!target) return std::move(target).error();
  bool exists = is_regular_file(*target);
  return DisplayResult{std::move(*target), exists};
}

Result<ViewResult> view_file(const FileContext& ctx, std::string_view path) {
  auto target = resolve_path(ctx, path, PathBase::Home);
  if (!target) return std::move(target).error();
  auto st = stat_path(*target);
  if (!st || !S_ISREG(st->st_mode)) return file_error(404, "File not found");
  ViewResult out;
  out.content_type = guess_mime_type(*target);
  out.path = std::move(*target);
  out.size = static_cast<std::uint64_t>(st->st_size);
  out.modified = mtime_seconds(*st);
  return out;
}

Result<ViewResult> serve_file(const FileContext& ctx, std::string_view url_tail) {
  std::string absolute = "/";
  absolute += url_tail;
  return view_file(ctx, absolute);
}

// ---- write, replace ----

Result<WriteResult> write_file(const FileContext& ctx, std::string_view path,
                               std::string_view content) {
  auto target = resolve_path(ctx, path, PathBase::Cwd);
  if (!target) return std::move(target).error();
  if (auto st = write_atomically(*target, content); !st) return std::move(st).error();
  return WriteResult{std::move(*target), content.size()};
}

Result<WriteResult> replace_file_content(const FileContext& ctx, std::string_view path,
                                         const std::vector<Replacement>& replacements) {
  for (std::size_t i = 0; i < replacements.size(); ++i) {
    std::string prefix = "replacements." + std::to_string(i) + ".";
    if (auto st = check_line_number((prefix + "start_line").c_str(), replacements[i].start_line);
        !st) {
      return std::move(st).error();
    }
    if (auto st = check_line_number((prefix + "end_line").c_str(), replacements[i].end_line);
        !st) {
      return std::move(st).error();
    }
  }
  auto target = resolve_path(ctx, path, PathBase::Cwd);
  if (!target) return std::move(target).error();
  if (!is_regular_file(*target)) return file_error(404, "File not found");
  // The reference catches OSError here and answers 400, permission errors included.
  auto data = read_regular_file(*target, ctx.options.max_read_bytes, 400);
  if (!data) return std::move(data).error();
  if (!is_valid_utf8(*data)) return file_error(400, "File is not valid UTF-8 text");

  std::string content = std::move(*data);
  for (const Replacement& r : replacements) {
    if (r.target.empty()) return file_error(400, "Target string must not be empty");
    const bool ranged = r.start_line || r.end_line;
    std::size_t region_begin = 0;
    std::size_t region_end = content.size();
    if (ranged) {
      auto lines = split_lines_keepends(content);
      auto [start, end] = line_slice(lines.size(), r.start_line, r.end_line);
      // Byte offsets of the line slice; an empty slice sits at the start line's offset.
      region_begin = start < lines.size()
                         ? static_cast<std::size_t>(lines[start].data() - content.data())
                         : content.size();
      region_end = start < end ? static_cast<std::size_t>(lines[end - 1].data() -
                                                          content.data()) +
                                     lines[end - 1].size()
                               : region_begin;
    }
    std::string_view region(content.data() + region_begin, region_end - region_begin);
    std::size_t count = count_occurrences(region, r.target);
    if (count == 0) {
      return file_error(400, "Target string not found: " + py_repr(utf8_prefix(r.target, 100)));
    }
    if (count > 1 && !r.allow_multiple) {
      return file_error(400, "Found " + std::to_string(count) +
                                 " occurrences of target string but allow_multiple is false");
    }
    std::string replaced = replace_all(region, r.target, r.replacement);
    content = content.substr(0, region_begin) + replaced + content.substr(region_end);
  }
  if (auto st = write_atomically(*target, content); !st) return std::move(st).error();
  return WriteResult{std::move(*target), content.size()};
}

// ---- mkdir, delete, move ----

Result<PathResult> mkdir_p(const FileContext& ctx, std::string_view path) {
  auto target = resolve_path(ctx, path, PathBase::Home);
  if (!target) return std::move(target).error();
  std::string failed_at;
  if (int err = make_directories(*target, &failed_at)) return os_error(400, err, failed_at);
  return PathResult{std::move(*target)};
}

Result<DeleteResult> delete_path(const FileContext& ctx, std::string_view path) {
  auto target = resolve_path(ctx, path, PathBase::Home);
  if (!target) return std::move(target).error();
  auto st = lstat_path(*target);
  if (!st) return file_error(404, "Path not found");
  // The agent runs as the user, so rm -rf / would take everything the user can write.
  if (*target == "/") return file_error(400, "Refusing to delete /");
  const bool is_dir = S_ISDIR(st->st_mode);
  std::string failed_at;
  if (int err = remove_tree(*target, &failed_at)) return os_error(400, err, failed_at);
  return DeleteResult{std::move(*target), is_dir ? "directory" : "file"};
}

Result<MoveResult> move_path(const FileContext& ctx, std::string_view source,
                             std::string_view destination) {
  auto src = resolve_path(ctx, source, PathBase::Home);
  if (!src) return std::move(src).error();
  auto dst = resolve_path(ctx, destination, PathBase::Home);
  if (!dst) return std::move(dst).error();
  if (!lstat_path(*src)) return file_error(404, "Source path not found");
  if (!is_directory(parent_path(*dst))) {
    return file_error(400, "Destination parent directory not found");
  }
  if (lstat_path(*dst)) return file_error(409, "Destination already exists");

  int rc = ::renameat2(AT_FDCWD, src->c_str(), AT_FDCWD, dst->c_str(), RENAME_NOREPLACE);
  int err = rc == 0 ? 0 : errno;
  if (err == EINVAL || err == ENOSYS || err == ENOTSUP) {
    // The filesystem lacks RENAME_NOREPLACE (or this is a move into itself, which the plain
    // rename refuses again with EINVAL).
    if (lstat_path(*dst)) return file_error(409, "Destination already exists");
    rc = ::rename(src->c_str(), dst->c_str());
    err = rc == 0 ? 0 : errno;
  }
  if (err == EEXIST) return file_error(409, "Destination already exists");
  if (err == EXDEV) {
    // Another filesystem: copy, then remove the source (shutil.move does the same).
    std::error_code ec;
    std::filesystem::copy(*src, *dst,
                          std::filesystem::copy_options::recursive |
                              std::filesystem::copy_options::copy_symlinks,
                          ec);
    if (ec) {
      std::string ignored;
      remove_tree(*dst, &ignored);
      return os_error(400, ec.value(), *src, *dst);
    }
    std::string failed_at;
    if (int rm = remove_tree(*src, &failed_at)) return os_error(400, rm, failed_at);
    err = 0;
  }
  if (err) return os_error(400, err, *src, *dst);
  return MoveResult{std::move(*src), std::move(*dst)};
}

// ---- session working directories ----

struct SessionCwdStore::Impl {
  struct Entry {
    std::string id;
    std::string cwd;
    Clock::time_point last_used;
  };

  Limits limits;
  std::function<Clock::time_point()> now;
  mutable std::mutex mutex;
  std::list<Entry> lru;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index;

  // Drops entries idle for longer than the TTL; they sit at the back of the LRU list.
  void expire(Clock::time_point t) {
    while (!lru.empty() && t - lru.back().last_used > limits.ttl) {
      index.erase(lru.back().id);
      lru.pop_back();
    }
  }
};

SessionCwdStore::SessionCwdStore(Limits limits, std::function<Clock::time_point()> now)
    : impl_(std::make_unique<Impl>()) {
  impl_->limits = limits;
  impl_->now = now ? std::move(now) : [] { return Clock::now(); };
}

SessionCwdStore::SessionCwdStore() : SessionCwdStore(Limits{}) {}
SessionCwdStore::~SessionCwdStore() = default;

std::optional<std::string> SessionCwdStore::get(std::string_view session_id) {
  if (session_id.empty()) return std::nullopt;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto t = impl_->now();
  impl_->expire(t);
  auto it = impl_->index.find(std::string(session_id));
  if (it == impl_->index.end()) return std::nullopt;
  it->second->last_used = t;  // sliding TTL
  impl_->lru.splice(impl_->lru.begin(), impl_->lru, it->second);
  return it->second->cwd;
}

void SessionCwdStore::set(std::string_view session_id, std::string cwd) {
  if (session_id.empty()) return;
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto t = impl_->now();
  impl_->expire(t);
  std::string id(session_id);
  if (auto it = impl_->index.find(id); it != impl_->index.end()) {
    it->second->cwd = std::move(cwd);
    it->second->last_used = t;
    impl_->lru.splice(impl_->lru.begin(), impl_->lru, it->second);
    return;
  }
  impl_->lru.push_front(Impl::Entry{id, std::move(cwd), t});
  impl_->index.emplace(std::move(id), impl_->lru.begin());
  while (impl_->limits.max_entries > 0 && impl_->lru.size() > impl_->limits.max_entries) {
    impl_->index.erase(impl_->lru.back().id);
    impl_->lru.pop_back();
  }
}

std::size_t SessionCwdStore::size() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->lru.size();
}

FileContext make_file_context(SessionCwdStore& store, std::string home,
                              std::string_view session_id, FileOptions options) {
  FileContext ctx;
  ctx.home = normalize_path(home);
  if (auto cwd = store.get(session_id)) ctx.cwd = std::move(*cwd);
  ctx.options = std::move(options);
  return ctx;
}

CwdInfo get_cwd(const FileContext& ctx) {
  CwdInfo out;
  out.home = ctx.home;
  out.cwd = ctx.cwd.empty() ? ctx.home : ctx.cwd;
  std::string configured = ctx.options.file_browser_root;
  auto not_space = [](unsigned char c) { return !std::isspace(c); };
  configured.erase(configured.begin(),
                   std::find_if(configured.begin(), configured.end(), not_space));
  configured.erase(std::find_if(configured.rbegin(), configured.rend(), not_space).base(),
                   configured.end());
  std::string mode = configured;
  for (char& c : mode) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (mode.empty() || mode == "home") {
    out.root = BrowserRoot{ctx.home, "Home"};
    return out;
  }
  if (mode == "filesystem") return out;
  std::string path = configured;
  for (std::size_t pos = path.find("{{home}}"); pos != std::string::npos;
       pos = path.find("{{home}}", pos + ctx.home.size())) {
    path.replace(pos, 8, ctx.home);
  }
  if (path == "~") {
    path = ctx.home;
  } else if (path.rfind("~/", 0) == 0) {
    path = join_path(ctx.home, path.substr(2));
  }
  auto root = resolve_path(ctx, path, PathBase::Home);
  if (!root) return out;
  std::string label = *root == ctx.home ? "Home" : std::string(base_name(*root));
  if (label.empty()) label = *root;
  out.root = BrowserRoot{std::move(*root), std::move(label)};
  return out;
}

Result<PathResult> set_cwd(SessionCwdStore& store, const FileContext& ctx,
                           std::string_view session_id, std::string_view path) {
  auto target = resolve_path(ctx, path, PathBase::Home);
  if (!target) return std::move(target).error();
  if (!is_directory(*target)) return file_error(404, "Directory not found");
  store.set(session_id, *target);
  return PathResult{std::move(*target)};
}

// ---- TempFile ----

TempFile& TempFile::operator=(TempFile&& other) noexcept {
  if (this != &other) {
    reset();
    path_ = std::exchange(other.path_, std::string());
  }
  return *this;
}

void TempFile::reset() {
  if (!path_.empty()) {
    ::unlink(path_.c_str());
    path_.clear();
  }
}

std::string TempFile::release() { return std::exchange(path_, std::string()); }

}  // namespace terminals::detail
