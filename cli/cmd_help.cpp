// terminals-cli help [<command>]

#include <ostream>
#include <string>

#include "commands.hpp"

namespace terminals::cli {

namespace {

constexpr std::string_view kHelp = R"(Usage: terminals-cli help [<command>]

Shows help. Without an argument, lists the commands and the global options; with a command
name, shows that command's usage, options, environment variables and examples (the same as
'terminals-cli <command> --help').

Options:
  -h, --help    Show this help

Environment variables:
  None are read.

Examples:
  terminals-cli help
  terminals-cli help version
)";

int run(Args args, Io io) {
  if (args.empty()) {
    print_overview(io.out);
    return kExitOk;
  }
  if (args.size() > 1) return usage_error(io, "help", "expected at most one command name");
  const Command* command = find_command(args[0]);
  if (!command) {
    io.err << kProgram << " help: '" << args[0] << "' is not a " << kProgram
           << " command.\nSee '" << kProgram << " --help' for the list of commands.\n";
    return kExitUsage;
  }
  io.out << command->help;
  return kExitOk;
}

}  // namespace

const Command help_command = {
    "help",
    "Show help for terminals-cli or one of its commands",
    kHelp,
    run,
};

}  // namespace terminals::cli
