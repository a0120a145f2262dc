#include <doctest/doctest.h>
#include <uv.h>

#include <atomic>
#include <thread>
#include <vector>

#include "support/loop_runner.hpp"
#include "terminals/loop.hpp"

using namespace terminals;
using namespace std::chrono_literals;

TEST_SUITE("unit") {

TEST_CASE("loop: defer runs in the next iteration / never synchronously") {
  test::LoopFixture f;
  int ran = 0;
  f.loop->defer([&] { ++ran; });
  CHECK(ran == 0);
  CHECK(test::run_until(*f.loop, [&] { return ran == 1; }));
  // A task deferred from a deferred task runs later, not in the same drain.
  int order = 0, inner = 0;
  f.loop->defer([&] {
    order = 1;
    f.loop->defer([&] { inner = order + 1; });
    CHECK(inner == 0);
  });
  CHECK(test::run_until(*f.loop, [&] { return inner == 2; }));
  f.check_no_leaks();
}

TEST_CASE("loop: post from many threads runs every task on the loop thread / in order per thread") {
  test::LoopFixture f;
  constexpr int kThreads = 4, kPerThread = 2000;
  std::vector<std::vector<int>> seen(kThreads);
  std::atomic<int> total{0};
  bool wrong_thread = false;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        f.loop->post([&, t, i] {
          if (!f.loop->is_loop_thread()) wrong_thread = true;
          seen[t].push_back(i);
          ++total;
        });
      }
    });
  }
  CHECK(test::run_until(*f.loop, [&] { return total == kThreads * kPerThread; }));
  for (auto& th : threads) th.join();
  CHECK_FALSE(wrong_thread);
  for (auto& s : seen) {
    REQUIRE(s.size() == kPerThread);
    for (int i = 0; i < kPerThread; ++i) CHECK(s[i] == i);
  }
  f.check_no_leaks();
}

TEST_CASE("loop: stop() from another thread makes run() return") {
  auto loop = Loop::create().value();
  auto keep_alive = loop->create_timer([] {});
  keep_alive->start(1h);
  std::thread stopper([&] {
    std::this_thread::sleep_for(50ms);
    loop->stop();
  });
  auto t0 = std::chrono::steady_clock::now();
  CHECK(loop->run());
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  stopper.join();
}

TEST_CASE("loop: run() returns when nothing is left / and tasks dropped at destruction free their state") {
  auto loop = Loop::create().value();
  auto token = std::make_shared<int>(1);
  std::weak_ptr<int> watch = token;
  loop->post([t = std::move(token)] {});  // owned by the task
  CHECK(loop->run());                     // the posted task ran, nothing else keeps the loop
  CHECK(watch.expired());
  auto token2 = std::make_shared<int>(2);
  watch = token2;
  loop->defer([t = std::move(token2)] {});
  loop.reset();  // destroyed with a deferred task pending: the state is released, not leaked
  CHECK(watch.expired());
}

TEST_CASE("loop: timers fire once or repeatedly and stop when destroyed") {
  test::LoopFixture f;
  int once = 0, repeat = 0;
  auto t1 = f.loop->create_timer([&] { ++once; });
  auto t2 = f.loop->create_timer([&] { ++repeat; });
  t1->start(5ms);
  t2->start(1ms, 1ms);
  CHECK(t1->active());
  CHECK(test::run_until(*f.loop, [&] { return once == 1 && repeat >= 3; }));
  CHECK_FALSE(t1->active());
  t2.reset();
  int before = repeat;
  test::run_for(*f.loop, 20ms);
  CHECK(repeat == before);
  t1.reset();
  f.check_no_leaks();
}

TEST_CASE("loop: defer_delete frees an object after its own callback returned") {
  test::LoopFixture f;
  struct Self {
    std::unique_ptr<Timer> timer;
    bool* freed;
    ~Self() { *freed = true; }
  };
  bool freed = false;
  auto obj = std::make_unique<Self>();
  obj->freed = &freed;
  Self* raw = obj.get();
  std::unique_ptr<Self> holder = std::move(obj);
  raw->timer = f.loop->create_timer([&] {
    f.loop->defer_delete(std::move(holder));
    CHECK_FALSE(freed);  // still inside the callback: alive
  });
  raw->timer->start(1ms);
  CHECK(test::run_until(*f.loop, [&] { return freed; }));
  f.check_no_leaks();
}

TEST_CASE("loop: wrap borrows a host loop without keeping it alive or closing it") {
  uv_loop_t host;
  REQUIRE(uv_loop_init(&host) == 0);
  {
    auto loop = Loop::wrap(&host).value();
    CHECK_FALSE(loop->owns_native());
    CHECK(loop->native() == &host);
    CHECK_FALSE(loop->run());  // the host runs its own loop
    int ran = 0;
    loop->post([&] { ++ran; });
    // The host's own work keeps its loop running; the library's handles are unref'd, so the
    // host loop still ends when that work is done.
    uv_timer_t host_work;
    uv_timer_init(&host, &host_work);
    uv_timer_start(&host_work, [](uv_timer_t*) {}, 20, 0);
    uv_run(&host, UV_RUN_DEFAULT);
    uv_close(reinterpret_cast<uv_handle_t*>(&host_work), nullptr);
    CHECK(ran == 1);
    CHECK(uv_run(&host, UV_RUN_NOWAIT) == 0);
  }
  uv_run(&host, UV_RUN_NOWAIT);  // let our close callbacks run
  CHECK(uv_loop_close(&host) == 0);
  CHECK(Loop::wrap(nullptr).error().code == Errc::InvalidArgument);
}

}  // TEST_SUITE
