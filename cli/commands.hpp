#pragma once

// terminals-cli: what every command shares. The CLI is a thin layer over the public API of
// libterminals: it includes only <terminals/...> and links only terminals::terminals (plus
// the header-only RapidJSON, for the admin commands' JSON).
//
// A command is one file, cmd_<name>.cpp, that defines a `const Command <name>_command`, plus
// its row in the table in main.cpp (the `extern` declarations below are that table's index).

#include <iosfwd>
#include <span>
#include <string_view>

namespace terminals::cli {

/// Exit status of terminals-cli and of every command.
inline constexpr int kExitOk = 0;       ///< the command did what was asked
inline constexpr int kExitFailure = 1;  ///< the command ran and failed
inline constexpr int kExitUsage = 2;    ///< the command line was wrong; nothing was done

inline constexpr std::string_view kProgram = "terminals-cli";

/// The arguments after the command name. `--help` / `-h` never reach a command: the dispatcher
/// answers them with the command's help text.
using Args = std::span<const std::string_view>;

/// Where a command writes: `out` for results, `err` for diagnostics.
struct Io {
  std::ostream& out;
  std::ostream& err;
};

struct Command {
  std::string_view name;     ///< the word after `terminals-cli`
  std::string_view summary;  ///< one line, shown in the command list of `terminals-cli --help`
  std::string_view help;     ///< `<command> --help`: usage, what it does, options, environment, examples
  int (*run)(Args args, Io io);  ///< returns an exit status (kExit*)
};

/// The command table, in the order `terminals-cli --help` lists it (defined in main.cpp).
std::span<const Command* const> commands();
/// The command called `name`, or null.
const Command* find_command(std::string_view name);

/// The overview printed by `terminals-cli --help`: usage, the command list, global options.
void print_overview(std::ostream& out);
/// "terminals-cli <version> (libterminals <version>)".
void print_version_line(std::ostream& out);
/// Reports a command-line mistake on `io.err`, with a pointer to the relevant help, and
/// returns kExitUsage. `command` may be empty for mistakes before the command name.
int usage_error(Io io, std::string_view command, std::string_view message);

// The commands (one cmd_<name>.cpp each).
extern const Command agent_command;
extern const Command help_command;
extern const Command policy_command;
extern const Command serve_command;
extern const Command terminals_command;
extern const Command version_command;

}  // namespace terminals::cli
