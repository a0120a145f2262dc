// terminals-cli: dispatches `terminals-cli <command> [<args>]` through the command table.

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstddef>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "commands.hpp"

namespace terminals::cli {

namespace {

// The command table, in the order `--help` lists it. One row per cmd_<name>.cpp.
const Command* const kCommands[] = {
    &help_command,
    &version_command,
    &serve_command,
    &agent_command,
    &policy_command,
    &terminals_command,
};

bool is_help_flag(std::string_view a) { return a == "-h" || a == "--help"; }
bool is_version_flag(std::string_view a) { return a == "-V" || a == "--version"; }

// Levenshtein distance, for "did you mean" on a mistyped command.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

const Command* closest_command(std::string_view name) {
  const Command* best = nullptr;
  std::size_t best_distance = 3;  // suggest only near misses
  for (const Command* c : commands()) {
    std::size_t d = edit_distance(name, c->name);
    if (d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

int dispatch(Args argv, Io io) {
  // Global options come before the command name.
  std::size_t i = 0;
  for (; i < argv.size() && argv[i].starts_with('-'); ++i) {
    if (is_help_flag(argv[i])) {
      print_overview(io.out);
      return kExitOk;
    }
    if (is_version_flag(argv[i])) {
      print_version_line(io.out);
      return kExitOk;
    }
    return usage_error(io, {}, "unknown option '" + std::string(argv[i]) + "'");
  }
  if (i == argv.size()) {
    io.err << kProgram << ": no command given\n\n";
    print_overview(io.err);
    return kExitUsage;
  }

  std::string_view name = argv[i];
  const Command* command = find_command(name);
  if (!command) {
    io.err << kProgram << ": '" << name << "' is not a " << kProgram << " command.";
    if (const Command* guess = closest_command(name)) {
      io.err << " Did you mean '" << guess->name << "'?";
    }
    io.err << "\nSee '" << kProgram << " --help' for the list of commands.\n";
    return kExitUsage;
  }

  Args args = argv.subspan(i + 1);
  for (std::string_view a : args) {
    if (a == "--") break;  // what follows belongs to the command, even "--help"
    if (is_help_flag(a)) {
      io.out << command->help;
      return kExitOk;
    }
  }
  return command->run(args, io);
}

}  // namespace

std::span<const Command* const> commands() { return kCommands; }

const Command* find_command(std::string_view name) {
  for (const Command* c : commands()) {
    if (c->name == name) return c;
  }
  return nullptr;
}

void print_overview(std::ostream& out) {
  out << "Usage: " << kProgram << " [--help] [--version] <command> [<args>]\n"
      << "\n"
      << kProgram << " is the command-line tool of libterminals.\n"
      << "\n"
      << "Commands:\n";
  std::size_t width = 0;
  for (const Command* c : commands()) width = std::max(width, c->name.size());
  for (const Command* c : commands()) {
    out << "  " << c->name << std::string(width - c->name.size() + 3, ' ') << c->summary << '\n';
  }
  out << "\n"
      << "Options:\n"
      << "  -h, --help       Show this help and exit\n"
      << "  -V, --version    Print the versions of " << kProgram << " and libterminals and exit\n"
      << "\n"
      << "Run '" << kProgram << " help <command>' or '" << kProgram
      << " <command> --help' for a command's\n"
      << "options, environment variables and examples.\n"
      << "\n"
      << "Exit status: 0 on success, 1 when a command fails, 2 when the command line is wrong.\n";
}

}  // namespace terminals::cli

namespace {

// `terminals-cli agent ...` becomes `terminals-agent ...` when that binary sits next to us: the
// agent runs once per terminal, and the lean binary does not load the libraries the rest of
// the CLI needs (see cli/agent_main.cpp). Without it, the agent runs in this process.
void hand_over_to_lean_agent(int argc, char** argv) {
  if (argc < 2 || std::string_view(argv[1]) != "agent") return;
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return;
  std::string path(self, static_cast<std::size_t>(n));
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return;
  path.resize(slash + 1);
  path += "terminals-agent";
  if (::access(path.c_str(), X_OK) != 0) return;
  std::vector<char*> args;
  args.push_back(path.data());
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execv(path.c_str(), args.data());
  // execv failed (e.g. a partial install): fall through and serve in-process.
}

// `serve` frees a batch's worth of same-sized objects at once (one per proxied request), and
// glibc's per-thread cache keeps only 7 free chunks per size: the rest take malloc's slower
// paths (bench/run proxy: ~8% of serve's CPU per request). A larger cache is only settable
// from the environment before the process starts, so serve restarts itself once with it, unless
// GLIBC_TUNABLES is set already (set it, even empty, to choose otherwise). The agents it
// starts do not inherit it: they get an environment of their own.
void tune_allocator_for_serve(int argc, char** argv) {
#ifdef __GLIBC__
  if (argc < 2 || std::string_view(argv[1]) != "serve" || ::getenv("GLIBC_TUNABLES")) return;
  if (::setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=128", 1) != 0) return;
  ::execv("/proc/self/exe", argv);
  ::unsetenv("GLIBC_TUNABLES");  // execv failed (no /proc?): serve as we are
#else
  (void)argc;
  (void)argv;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  hand_over_to_lean_agent(argc, argv);
  tune_allocator_for_serve(argc, argv);
  std::vector<std::string_view> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  int status = terminals::cli::dispatch(args, {std::cout, std::cerr});
  std::cout.flush();
  if (!std::cout) {
    std::cerr << terminals::cli::kProgram << ": could not write to standard output\n";
    return terminals::cli::kExitFailure;
  }
  return status;
}
