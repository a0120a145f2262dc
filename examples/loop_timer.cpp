// loop_timer: the smallest libterminals program. It creates a Loop, starts a repeating Timer,
// posts a task to the loop from another thread, and stops once both have happened.
//
// The rules it follows are the library's (terminals/loop.hpp): everything made on a Loop is
// used on the loop's thread; only post() and stop() may be called from other threads.

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include <terminals/loop.hpp>
#include <terminals/version.hpp>

int main() {
  using namespace std::chrono_literals;

  std::printf("libterminals %s (headers %s)\n", terminals::version_string(),
              TERMINALS_VERSION_STRING);

  auto created = terminals::Loop::create();
  if (!created) {
    std::fprintf(stderr, "loop_timer: %s\n", created.error().to_string().c_str());
    return 1;
  }
  terminals::Loop& loop = **created;

  int ticks = 0;
  bool got_post = false;
  std::unique_ptr<terminals::Timer> timer;
  auto maybe_finish = [&] {
    // Stopping the timer leaves the loop with nothing to do, so run() returns.
    if (ticks >= 3 && got_post) timer->stop();
  };
  timer = loop.create_timer([&] {
    ++ticks;
    std::printf("tick %d (loop clock %llu ms)\n", ticks,
                static_cast<unsigned long long>(loop.now_ms()));
    maybe_finish();
  });
  timer->start(10ms, 10ms);

  // Another thread hands work to the loop thread; post() is thread-safe.
  std::thread worker([&loop, &got_post, &maybe_finish] {
    loop.post([&loop, &got_post, &maybe_finish] {
      std::printf("posted task runs on the loop thread: %s\n",
                  loop.is_loop_thread() ? "yes" : "no");
      got_post = true;
      maybe_finish();
    });
  });

  auto status = loop.run();
  worker.join();
  if (!status) {
    std::fprintf(stderr, "loop_timer: %s\n", status.error().to_string().c_str());
    return 1;
  }
  std::printf("done after %d ticks\n", ticks);
  return ticks >= 3 && got_post ? 0 : 1;
}
