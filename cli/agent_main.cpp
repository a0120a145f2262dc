// terminals-agent: `terminals-cli agent` as a binary of its own. One agent runs per terminal,
// so it is built lean (see cli/CMakeLists.txt): it links only what the agent uses, not the
// orchestrator's libcurl and its dependencies. `terminals-cli agent` hands over to it when it
// is installed next to terminals-cli, so both spellings start the same small process.

#include <iostream>
#include <string_view>
#include <vector>

#include "commands.hpp"

int main(int argc, char** argv) {
  using namespace terminals::cli;
  std::vector<std::string_view> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  for (std::string_view a : args) {
    if (a == "--") break;
    if (a == "-h" || a == "--help") {
      std::cout << agent_command.help;
      return kExitOk;
    }
  }
  int status = agent_command.run(args, {std::cout, std::cerr});
  std::cout.flush();
  return status;
}
