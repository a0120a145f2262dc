#include "terminals/result.hpp"

#include <cstdio>

#include "terminals/version.hpp"

namespace terminals {

const char* version_string() noexcept { return TERMINALS_VERSION_STRING; }

const char* errc_name(Errc code) noexcept {
  switch (code) {
    case Errc::InvalidArgument: return "InvalidArgument";
    case Errc::NotFound: return "NotFound";
    case Errc::AlreadyExists: return "AlreadyExists";
    case Errc::PolicyDenied: return "PolicyDenied";
    case Errc::LimitExceeded: return "LimitExceeded";
    case Errc::BackendUnavailable: return "BackendUnavailable";
    case Errc::Timeout: return "Timeout";
    case Errc::Cancelled: return "Cancelled";
    case Errc::Eof: return "Eof";
    case Errc::UpstreamProtocol: return "UpstreamProtocol";
    case Errc::Io: return "Io";
    case Errc::Internal: return "Internal";
  }
  return "Unknown";
}

std::string Error::to_string() const {
  std::string out = errc_name(code);
  if (!message.empty()) {
    out += ": ";
    out += message;
  }
  return out;
}

namespace {
class ErrcCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "terminals"; }
  std::string message(int ev) const override { return errc_name(static_cast<Errc>(ev)); }
};
}  // namespace

const std::error_category& errc_category() noexcept {
  static const ErrcCategory category;
  return category;
}

void fatal(const char* what) noexcept {
  std::fprintf(stderr, "libterminals: fatal: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

}  // namespace terminals
