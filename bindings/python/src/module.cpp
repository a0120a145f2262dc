// The extension module terminals._terminals. The public API is the package terminals
// (terminals/__init__.py), which wraps these classes in Pythonic ones.
#include "common.hpp"
#include "terminals/log.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_terminals, m) {
  m.doc() = "libterminals bindings (internal; use the terminals package)";
  terminals::python::register_errors(m);
  terminals::python::register_server(m);
  terminals::python::register_policy(m);
  terminals::python::register_orchestrator(m);
  m.def(
      "set_log_level",
      [](const std::string& level) {
        using terminals::LogLevel;
        if (level == "debug") return terminals::set_log_level(LogLevel::Debug);
        if (level == "info") return terminals::set_log_level(LogLevel::Info);
        if (level == "warning") return terminals::set_log_level(LogLevel::Warning);
        if (level == "error") return terminals::set_log_level(LogLevel::Error);
        terminals::python::raise(terminals::Error(terminals::Errc::InvalidArgument,
                                                  "log level '" + level + "': expected debug, info, warning or error"));
      },
      py::arg("level"), "Process-wide level of the library's log lines on stderr: debug | info | warning | error.");
}
