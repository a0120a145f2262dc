// The extension module terminals._terminals. The public API is the package terminals
// (terminals/__init__.py), which wraps these classes in Pythonic ones.
#include "common.hpp"

PYBIND11_MODULE(_terminals, m) {
  m.doc() = "libterminals bindings (internal; use the terminals package)";
  terminals::python::register_errors(m);
  terminals::python::register_server(m);
  terminals::python::register_policy(m);
  terminals::python::register_orchestrator(m);
}
