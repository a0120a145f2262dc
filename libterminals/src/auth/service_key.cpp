#include "auth/service_key.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "util/crypto.hpp"

namespace terminals::detail {

namespace {

constexpr std::size_t kMaxKeyBytes = 1024;

Error io_error(const std::string& what, int err) {
  return Error(Errc::Io, what + ": " + std::strerror(err), ErrorSource::System, err);
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// mkdir -p with 0700 for the directories it creates (existing ones are left as they are).
Status make_dirs(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return Error(Errc::InvalidArgument, dir + " is not a directory");
    return {};
  }
  auto slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    auto parent = make_dirs(dir.substr(0, slash));
    if (!parent) return parent;
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return io_error("cannot create " + dir, errno);
  return {};
}

Result<std::string> read_key_file(const std::string& path) {
  int raw = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (raw < 0) {
    if (errno == ELOOP) return Error(Errc::PolicyDenied, path + " is a symbolic link; refusing to use it as the service key");
    return io_error("cannot open " + path, errno);
  }
  Fd fd(raw);
  // Checked on the open descriptor, so the file cannot be swapped between check and read.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return io_error("cannot stat " + path, errno);
  if (!S_ISREG(st.st_mode)) return Error(Errc::PolicyDenied, path + " is not a regular file");
  if (st.st_uid != ::geteuid()) {
    return Error(Errc::PolicyDenied, path + " is owned by another user; refusing to use it as the service key");
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Error(Errc::PolicyDenied, path + " has mode " + mode +
                                         " (readable or writable by group or others); run chmod 600 on it");
  }
  if (st.st_size > static_cast<off_t>(kMaxKeyBytes + 64)) return Error(Errc::InvalidArgument, path + " is too large for a service key");
  std::string content(static_cast<std::size_t>(st.st_size) + 1, '\0');
  std::size_t got = 0;
  while (got < content.size()) {
    ssize_t n = ::read(fd.get(), content.data() + got, content.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("cannot read " + path, errno);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  content.resize(got);
  while (!content.empty() && (content.back() == '\n' || content.back() == '\r' || content.back() == ' ' ||
                              content.back() == '\t')) {
    content.pop_back();
  }
  return content;
}

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error(Errc::Io, std::strerror(errno), ErrorSource::System, errno);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

}  // namespace

Status validate_service_key(std::string_view key) {
  if (key.size() < kMinServiceKeyBytes) {
    return Error(Errc::InvalidArgument, "the service key is too short (at least " +
                                            std::to_string(kMinServiceKeyBytes) + " characters)");
  }
  if (key.size() > kMaxKeyBytes) return Error(Errc::InvalidArgument, "the service key is too long (at most 1024 characters)");
  for (char c : key) {
    if (c <= 0x20 || c >= 0x7F) {
      return Error(Errc::InvalidArgument, "the service key must be visible ASCII (no spaces or control characters)");
    }
  }
  return {};
}

Result<ServiceKey> load_or_create_service_key(const std::string& data_dir,
                                              std::optional<std::string> from_env) {
  if (from_env && !from_env->empty()) {
    auto ok = validate_service_key(*from_env);
    if (!ok) return Error(Errc::InvalidArgument, "TERMINALS_API_KEY: " + ok.error().message);
    return ServiceKey{std::move(*from_env), false, ""};
  }
  if (data_dir.empty()) return Error(Errc::InvalidArgument, "no data directory for the service key");
  std::string dir = data_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  std::string path = dir + "/service-key";

  auto load_existing = [&]() -> Result<ServiceKey> {
    auto content = read_key_file(path);
    if (!content) return std::move(content).error();
    auto ok = validate_service_key(*content);
    if (!ok) return Error(Errc::InvalidArgument, path + ": " + ok.error().message);
    return ServiceKey{std::move(*content), false, path};
  };

  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) return load_existing();
  if (errno != ENOENT) return io_error("cannot stat " + path, errno);

  auto made = make_dirs(dir);
  if (!made) return std::move(made).error();
  auto key = random_token(32);
  if (!key) return std::move(key).error();
  auto suffix = random_hex(8);
  if (!suffix) return std::move(suffix).error();
  std::string tmp = path + ".tmp-" + *suffix;
  int raw = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (raw < 0) return io_error("cannot create " + tmp, errno);
  {
    Fd fd(raw);
    // The umask cannot widen 0600, but an inherited ACL default could: pin the mode.
    Status ok = write_all(fd.get(), *key + "\n");
    if (ok && ::fchmod(fd.get(), 0600) != 0) ok = io_error("cannot chmod " + tmp, errno);
    if (ok && ::fsync(fd.get()) != 0) ok = io_error("cannot sync " + tmp, errno);
    if (!ok) {
      ::unlink(tmp.c_str());
      return Error(Errc::Io, "cannot write " + tmp + ": " + ok.error().message);
    }
  }
  // link() fails with EEXIST instead of replacing: if another process created the key
  // meanwhile, both end up with that one.
  int linked = ::link(tmp.c_str(), path.c_str());
  int link_errno = errno;
  ::unlink(tmp.c_str());
  if (linked != 0) {
    if (link_errno == EEXIST) return load_existing();
    return io_error("cannot create " + path, link_errno);
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // best effort: the key survives a crash right after start
    ::close(dfd);
  }
  return ServiceKey{std::move(*key), true, path};
}

}  // namespace terminals::detail
