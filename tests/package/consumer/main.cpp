// Links against an installed libterminals and uses it: a Loop, a Timer, post() from another
// thread, Endpoint parsing and the version. Built both by CMake (find_package) and by hand with
// pkg-config flags.

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include <terminals/endpoint.hpp>
#include <terminals/loop.hpp>
#include <terminals/result.hpp>
#include <terminals/version.hpp>

int main() {
  using namespace std::chrono_literals;
  if (std::strcmp(terminals::version_string(), TERMINALS_VERSION_STRING) != 0) {
    std::fprintf(stderr, "version mismatch: library %s, headers %s\n", terminals::version_string(),
                 TERMINALS_VERSION_STRING);
    return 1;
  }

  auto endpoint = terminals::Endpoint::parse("unix:/run/terminals.sock");
  if (!endpoint || endpoint->kind != terminals::Endpoint::Kind::Unix) {
    std::fprintf(stderr, "Endpoint::parse failed\n");
    return 1;
  }

  auto loop = terminals::Loop::create();
  if (!loop) {
    std::fprintf(stderr, "Loop::create: %s\n", loop.error().to_string().c_str());
    return 1;
  }
  bool fired = false, posted = false;
  auto timer = (*loop)->create_timer([&] { fired = true; });
  timer->start(1ms);
  std::thread([&] { (*loop)->post([&] { posted = true; }); }).join();
  if (!(*loop)->run() || !fired || !posted) {
    std::fprintf(stderr, "loop did not run the timer and the posted task\n");
    return 1;
  }
  std::printf("package consumer OK: libterminals %s\n", terminals::version_string());
  return 0;
}
