// AuditLog (see terminals/policy_store.hpp): JSON lines appended with one write() each.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "json/json.hpp"
#include "policy/store_time.hpp"
#include "terminals/policy_store.hpp"

namespace terminals {
namespace {

class FileAuditLog final : public AuditLog {
 public:
  FileAuditLog(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~FileAuditLog() override { ::close(fd_); }

  // No fsync: a record follows the action it describes, and a sync per line would double the
  // cost of every admin write; a machine crash may lose the last lines, never corrupt earlier ones.
  Status record(std::string_view action, const std::vector<std::pair<std::string, std::string>>& fields) override {
    detail::JsonWriter w;
    w.object()
        .field("time", detail::format_store_time(std::chrono::system_clock::now()))
        .field("action", action);
    for (const auto& [name, value] : fields) {
      if (name == "time" || name == "action") {
        return Error(Errc::InvalidArgument, "audit field name '" + name + "' is reserved");
      }
      w.field(name, value);
    }
    std::string line = w.end_object().take();
    line += '\n';
    // O_APPEND makes the seek-to-end and the write one step, so lines of concurrent writers
    // (threads or processes) never interleave; a short write (disk full) is reported, not retried,
    // since a retry would put the rest of the line after someone else's.
    ssize_t n;
    do {
      n = ::write(fd_, line.data(), line.size());
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(line.size())) {
      int err = n < 0 ? errno : ENOSPC;
      return Error(Errc::Io, "cannot append to the audit log " + path_ + ": " + std::strerror(err),
                   ErrorSource::System, err);
    }
    return {};
  }

  const std::string& path() const override { return path_; }

 private:
  const std::string path_;
  const int fd_;
};

}  // namespace

Result<std::unique_ptr<AuditLog>> AuditLog::open(std::string path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return Error(Errc::Io, "cannot open the audit log " + path + ": " + std::strerror(errno), ErrorSource::System,
                 errno);
  }
  return std::unique_ptr<AuditLog>(std::make_unique<FileAuditLog>(std::move(path), fd));
}

}  // namespace terminals
