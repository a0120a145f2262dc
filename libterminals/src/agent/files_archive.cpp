// archive_paths: POST /files/archive as a ZIP written to a temporary file (see files.hpp).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "agent/files.hpp"
#include "agent/files_internal.hpp"
#include "agent/zip_writer.hpp"

namespace terminals::detail {

using namespace files;

namespace {

std::string temp_directory(const FileOptions& options) {
  if (!options.temp_dir.empty()) return options.temp_dir;
  const char* env = std::getenv("TMPDIR");
  return (env && *env) ? std::string(env) : std::string("/tmp");
}

// Adds one file; a file that vanished since it was listed is skipped, not an error.
Status add_file_entry(ZipWriter& zip, const std::string& name, const std::string& source) {
  auto st = zip.add_file(name, source);
  if (!st && st.error().code == Errc::NotFound) return {};
  return st;
}

// `root` as "<dirname>/" followed by everything under it, each directory's files (sorted)
// before its subdirectories. Symlinked directories are not entered; symlinked files are
// stored with their target's bytes; special files and dangling links are skipped.
Status add_tree(ZipWriter& zip, const std::string& root, const std::string& dirname) {
  struct Pending {
    std::string dir;
    std::string arc;  // the entry name prefix, "<dirname>/..."
  };
  std::vector<Pending> stack{{root, dirname}};
  while (!stack.empty()) {
    Pending current = std::move(stack.back());
    stack.pop_back();
    auto dir_st = stat_path(current.dir);
    if (!dir_st) continue;  // vanished
    if (auto s = zip.add_directory(current.arc + "/", *dir_st); !s) return s;
    auto entries = read_directory(current.dir);
    for (const WalkEntry& e : entries) {
      if (e.is_dir) continue;
      std::string full = join_path(current.dir, e.name);
      if (!is_regular_file(full)) continue;
      if (auto s = add_file_entry(zip, current.arc + "/" + e.name, full); !s) return s;
    }
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
      if (it->descend) {
        stack.push_back({join_path(current.dir, it->name), current.arc + "/" + it->name});
      }
    }
  }
  return {};
}

}  // namespace

Result<ArchiveResult> archive_paths(const FileContext& ctx, const std::vector<std::string>& paths) {
  if (paths.empty()) return file_error(400, "No paths provided");
  std::vector<std::string> resolved;
  for (const std::string& p : paths) {
    auto target = resolve_path(ctx, p, PathBase::Home);
    if (!target) return std::move(target).error();
    if (!stat_path(*target)) return file_error(404, "Path not found: " + p);
    resolved.push_back(std::move(*target));
  }

  ArchiveResult out;
  std::string name = "download";
  if (resolved.size() == 1) {
    name = std::string(base_name(resolved.front()));
    if (name.empty()) name = "archive";  // "/"
  }
  out.filename = name + ".zip";

  // 0600: the archive may hold files other users of this machine must not read.
  std::string temp_dir = temp_directory(ctx.options);
  int fd = -1;
  std::string temp;
  for (int attempt = 0; attempt < 8 && fd < 0; ++attempt) {
    temp = join_path(temp_dir, "terminals-archive-" + random_token() + ".zip");
    fd = ::open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) return os_error(500, errno, temp);
  }
  if (fd < 0) return os_error(500, EEXIST, temp);
  out.file = TempFile(temp);  // removes the file on every error path below

  ZipWriter zip(fd, temp, ctx.options.archive_max_bytes);
  Status status;
  for (const std::string& target : resolved) {
    auto st = stat_path(target);
    if (!st) continue;  // vanished since the check
    if (S_ISREG(st->st_mode)) {
      status = zip.add_file(std::string(base_name(target)), target);
    } else if (S_ISDIR(st->st_mode)) {
      std::string dirname(base_name(target));
      if (dirname.empty()) dirname = "dir";  // "/"
      status = add_tree(zip, target, dirname);
    }
    if (!status) break;
  }
  if (status) status = zip.finish();
  int close_err = ::close(fd) == 0 ? 0 : errno;
  if (!status) return std::move(status).error();
  if (close_err) return os_error(500, close_err, temp);
  out.size = zip.bytes();
  out.entries = zip.entries();
  return out;
}

}  // namespace terminals::detail
