#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>

int main(int argc, char** argv) {
  // A peer that goes away must surface as EPIPE on write, never kill the test process.
  std::signal(SIGPIPE, SIG_IGN);
  // Interactive terminals the tests start use /bin/sh, not the developer's login shell: an
  // interactive bash runs ~/.bashrc, whose tools (pyenv's rehash lock, for one) can stall a
  // shell for a minute when another test's shell was killed mid-start. The agent resolves its
  // shell from $SHELL; production terminals run in their own homes.
  setenv("SHELL", "/bin/sh", 1);
  unsetenv("ENV");  // what an interactive dash would source
  doctest::Context context(argc, argv);
  return context.run();
}
