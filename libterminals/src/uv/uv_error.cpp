#include "uv/uv_error.hpp"

#include <uv.h>

namespace terminals::detail {

Error uv_error(int status, std::string_view what) {
  Errc code = Errc::Io;
  switch (status) {
    case UV_EOF: code = Errc::Eof; break;
    case UV_ECANCELED: code = Errc::Cancelled; break;
    case UV_ETIMEDOUT: code = Errc::Timeout; break;
    case UV_ENOENT: code = Errc::NotFound; break;
    case UV_EEXIST:
    case UV_EADDRINUSE: code = Errc::AlreadyExists; break;
    case UV_EACCES:
    case UV_EPERM: code = Errc::PolicyDenied; break;
    case UV_EINVAL:
    case UV_ENAMETOOLONG:
    case UV_EAI_NONAME: code = Errc::InvalidArgument; break;
    case UV_EMFILE:
    case UV_ENFILE:
    case UV_ENOBUFS:
    case UV_ENOMEM: code = Errc::LimitExceeded; break;
    default: break;
  }
  std::string msg(what);
  msg += ": ";
  msg += uv_strerror(status);
  msg += " (";
  msg += uv_err_name(status);
  msg += ")";
  return Error(code, std::move(msg), ErrorSource::Uv, status);
}

}  // namespace terminals::detail
