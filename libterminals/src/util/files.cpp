// File-system helpers shared by the backends (see files.hpp).

#include "util/files.hpp"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace terminals::detail {

std::string read_text(const std::string& path, std::size_t max) {
  std::ifstream in(path, std::ios::binary);
  std::string out(max, '\0');
  in.read(out.data(), static_cast<std::streamsize>(max));
  out.resize(static_cast<std::size_t>(in.gcount()));
  return out;
}

std::string tail_of(const std::string& path, std::size_t bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return {};
  auto size = static_cast<std::size_t>(in.tellg());
  std::size_t from = size > bytes ? size - bytes : 0;
  in.seekg(static_cast<std::streamoff>(from));
  std::string out(size - from, '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// No fsync: these files (keys, logs, records of running agents) describe processes that
// a machine crash ends anyway, and an fsync costs milliseconds on every start.
Status write_private_file(const std::string& path, std::string_view content, std::optional<uid_t> uid,
                          gid_t gid) {
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Error(Errc::Io, "cannot create " + tmp + ": " + std::strerror(errno));
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
  if (ok && uid) ok = ::fchown(fd, *uid, gid) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return Error(Errc::Io, "cannot write " + path + ": " + std::strerror(errno));
  }
  return {};
}

// The policy store's variant: policies are configuration an admin wrote once, so a write that
// reported success must survive a power loss. rename() alone only orders the directory entry;
// without the fsyncs the entry can point at a file whose data never reached the disk (an empty
// or truncated file after the crash), and the rename itself can be lost.
Status write_durable_file(const std::string& path, std::string_view content) {
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Error(Errc::Io, "cannot create " + tmp + ": " + std::strerror(errno), ErrorSource::System, errno);
  const char* p = content.data();
  std::size_t left = content.size();
  int err = 0;
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : EIO;
      break;
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    return Error(Errc::Io, "cannot write " + path + ": " + std::strerror(err), ErrorSource::System, err);
  }
  auto slash = path.rfind('/');
  return sync_directory(slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash));
}

Status remove_durable_file(const std::string& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Error(Errc::Io, "cannot delete " + path + ": " + std::strerror(errno), ErrorSource::System, errno);
  }
  auto slash = path.rfind('/');
  return sync_directory(slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash));
}

Status sync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    if (::fsync(fd) != 0) err = errno;
    ::close(fd);
  }
  if (err != 0) return Error(Errc::Io, "cannot sync directory " + dir + ": " + std::strerror(err), ErrorSource::System, err);
  return {};
}

Status make_private_dir(const std::string& path, mode_t mode, std::optional<uid_t> uid, gid_t gid) {
  std::size_t pos = 1;
  while (pos <= path.size()) {
    std::size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    std::string part = path.substr(0, slash);
    bool last = slash == path.size();
    if (::mkdir(part.c_str(), last ? mode : 0755) != 0 && errno != EEXIST) {
      return Error(Errc::Io, "cannot create " + part + ": " + std::strerror(errno));
    }
    struct stat st {};
    if (::lstat(part.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return Error(Errc::PolicyDenied, part + " is not a directory (a symlink?); refusing to use it");
    }
    pos = slash + 1;
  }
  if (::chmod(path.c_str(), mode) != 0) return Error(Errc::Io, "chmod " + path + ": " + std::strerror(errno));
  if (uid && ::lchown(path.c_str(), *uid, gid) != 0) {
    return Error(Errc::Io, "chown " + path + ": " + std::strerror(errno));
  }
  return {};
}

Status remove_tree(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return {};
  int rc = ::nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int type, struct FTW*) {
        int r = type == FTW_DP ? ::rmdir(p) : ::unlink(p);
        return r == 0 || errno == ENOENT ? 0 : -1;
      },
      32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  if (rc != 0) return Error(Errc::Io, "cannot delete " + path + ": " + std::strerror(errno));
  return {};
}

}  // namespace terminals::detail
