#include "common.hpp"

namespace terminals::python {

const char* errc_code(Errc code) noexcept {
  switch (code) {
    case Errc::InvalidArgument: return "invalid_argument";
    case Errc::NotFound: return "not_found";
    case Errc::AlreadyExists: return "already_exists";
    case Errc::PolicyDenied: return "policy_denied";
    case Errc::LimitExceeded: return "limit_exceeded";
    case Errc::BackendUnavailable: return "backend_unavailable";
    case Errc::Timeout: return "timeout";
    case Errc::Cancelled: return "cancelled";
    case Errc::Eof: return "eof";
    case Errc::UpstreamProtocol: return "upstream_protocol";
    case Errc::Io: return "io";
    case Errc::Internal: return "internal";
  }
  return "internal";
}

void register_errors(py::module_& m) {
  // The exception classes are plain Python (terminals/errors.py): multiple inheritance from
  // builtins (LookupError, PermissionError, ...) is simpler to get right there.
  py::register_exception_translator([](std::exception_ptr p) {
    if (!p) return;
    try {
      std::rethrow_exception(p);
    } catch (const LibraryError& e) {
      py::object make = py::module_::import("terminals.errors").attr("_from_code");
      py::object exc = make(errc_code(e.error.code), e.error.message);
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    }
  });
  m.def("_raise_for_test", [](const std::string& code, const std::string& message) {
    for (int i = static_cast<int>(Errc::InvalidArgument); i <= static_cast<int>(Errc::Internal); ++i) {
      if (code == errc_code(static_cast<Errc>(i))) raise(Error(static_cast<Errc>(i), message));
    }
    throw py::value_error("unknown code " + code);
  }, "Raises the exception for an error code, as library calls do (for tests).");
}

}  // namespace terminals::python
