// A peer that closes a socket mid-write must not end the process: creating a Loop ignores
// SIGPIPE when it has its default action, and leaves a host's own handler alone. Checked in a
// forked child, because the test runner itself ignores SIGPIPE.

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "terminals/loop.hpp"

namespace {

void host_handler(int) {}

// Runs `body` in a child; its exit status (0 = passed).
int in_child(int (*body)()) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("loop: creating a loop ignores SIGPIPE, so a write to a closed peer is an error, not death") {
  int rc = in_child([] {
    ::signal(SIGPIPE, SIG_DFL);
    auto loop = terminals::Loop::create();
    if (!loop) return 2;
    struct sigaction now {};
    ::sigaction(SIGPIPE, nullptr, &now);
    if (now.sa_handler != SIG_IGN) return 3;
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return 4;
    ::close(fds[1]);
    char byte = 'x';
    return ::write(fds[0], &byte, 1) < 0 && errno == EPIPE ? 0 : 5;  // alive, with EPIPE
  });
  CHECK(rc == 0);  // 113 would be death by SIGPIPE
}

TEST_CASE("loop: a host's own SIGPIPE handler is left alone") {
  int rc = in_child([] {
    ::signal(SIGPIPE, host_handler);
    auto loop = terminals::Loop::create();
    if (!loop) return 2;
    struct sigaction now {};
    ::sigaction(SIGPIPE, nullptr, &now);
    return now.sa_handler == host_handler ? 0 : 3;
  });
  CHECK(rc == 0);
}

}
