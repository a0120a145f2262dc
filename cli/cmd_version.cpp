// terminals-cli version [--short | --json]

#include <ostream>
#include <string>

#include <terminals/version.hpp>

#include "commands.hpp"

namespace terminals::cli {

namespace {

constexpr std::string_view kHelp = R"(Usage: terminals-cli version [--short | --json]

Prints the version of terminals-cli (the libterminals headers it was compiled with) and of the
libterminals library it is linked with. Versions with the same major number are API compatible.

Options:
      --short   Print only the library's version number, e.g. "0.1.0"
      --json    Print {"terminals_cli": "...", "libterminals": "..."} for scripts
  -h, --help    Show this help

Environment variables:
  None are read.

Examples:
  terminals-cli version
  terminals-cli version --short
  terminals-cli --version
)";

int run(Args args, Io io) {
  enum class Format { Line, Short, Json } format = Format::Line;
  for (std::string_view a : args) {
    if (a == "--short" && format == Format::Line) {
      format = Format::Short;
    } else if (a == "--json" && format == Format::Line) {
      format = Format::Json;
    } else if (a == "--short" || a == "--json") {
      return usage_error(io, "version", "--short and --json are exclusive");
    } else {
      return usage_error(io, "version", "unexpected argument '" + std::string(a) + "'");
    }
  }
  switch (format) {
    case Format::Line:
      print_version_line(io.out);
      break;
    case Format::Short:
      io.out << terminals::version_string() << '\n';
      break;
    case Format::Json:
      // Version strings are digits and dots (from CMake's project(VERSION)): no escaping needed.
      io.out << R"({"terminals_cli": ")" << TERMINALS_VERSION_STRING << R"(", "libterminals": ")"
             << terminals::version_string() << "\"}\n";
      break;
  }
  return kExitOk;
}

}  // namespace

const Command version_command = {
    "version",
    "Print the versions of terminals-cli and libterminals",
    kHelp,
    run,
};

}  // namespace terminals::cli
