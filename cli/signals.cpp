// SIGINT and SIGTERM write a byte to a pipe (the only thing a handler may safely do); a thread
// waits on the pipe and asks the loop, through the thread-safe post(), to shut down.

#include "signals.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>

namespace terminals::cli {

namespace {

int g_signal_pipe[2] = {-1, -1};

void on_signal(int) {
  int saved = errno;
  char byte = 1;
  [[maybe_unused]] auto n = ::write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

}  // namespace

Status run_until_signal(Loop& loop, std::function<void(std::function<void()> stop)> handler) {
  if (::pipe(g_signal_pipe) != 0) return Error(Errc::Io, "cannot create a pipe for signals");
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  std::atomic<bool> finished{false};
  std::thread waiter([&] {
    char byte = 0;
    while (::read(g_signal_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    if (finished.load()) return;
    loop.post([&] { handler([&] { loop.stop(); }); });
  });
  Status ran = loop.run();
  finished.store(true);
  on_signal(0);  // wakes the waiter if no signal came
  waiter.join();
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  ::close(g_signal_pipe[0]);
  ::close(g_signal_pipe[1]);
  return ran;
}

}  // namespace terminals::cli
