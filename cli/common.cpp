// What terminals-cli and terminals-agent share: the version line and usage errors.

#include <ostream>
#include <string>
#include <string_view>

#include <terminals/version.hpp>

#include "commands.hpp"

namespace terminals::cli {

void print_version_line(std::ostream& out) {
  // The CLI's own version is the one of the headers it was compiled with; the library's is the
  // one it linked. They differ only if the build mixed versions.
  out << kProgram << ' ' << TERMINALS_VERSION_STRING << " (libterminals " << terminals::version_string()
      << ")\n";
}

int usage_error(Io io, std::string_view command, std::string_view message) {
  io.err << kProgram;
  if (!command.empty()) io.err << ' ' << command;
  io.err << ": " << message << "\nSee '" << kProgram;
  if (!command.empty()) io.err << ' ' << command;
  io.err << " --help'.\n";
  return kExitUsage;
}

}  // namespace terminals::cli
