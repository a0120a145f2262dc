#include "terminals/loop.hpp"

#include <signal.h>

#include <uv.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "uv/handle.hpp"
#include "uv/uv_error.hpp"

namespace terminals {

using detail::UvHandle;

struct Loop::Impl {
  uv_loop_t* uv = nullptr;
  std::unique_ptr<uv_loop_t> owned;  // set when we created the loop

  // post(): a mutex-guarded queue drained completely on each wake-up, because libuv
  // coalesces uv_async_send calls.
  UvHandle<uv_async_t> async;
  std::mutex post_mutex;
  std::vector<Task> posted;
  std::atomic<bool> stop_requested{false};
  bool stopped = false;  // run() saw the stop request

  // defer(): runs next iteration. An active idle handle makes the loop poll without blocking.
  UvHandle<uv_idle_t> idle;
  std::vector<Task> deferred;

  std::atomic<std::thread::id> thread{std::this_thread::get_id()};

  void drain_posted() {
    std::vector<Task> batch;
    {
      std::lock_guard<std::mutex> lock(post_mutex);
      batch.swap(posted);
    }
    for (auto& t : batch) t();
    if (stop_requested.exchange(false)) {
      stopped = true;
      uv_stop(uv);
    }
  }

  bool has_posted() {
    std::lock_guard<std::mutex> lock(post_mutex);
    return !posted.empty();
  }

  void drain_deferred() {
    // Tasks may defer more tasks; those run in the next iteration, not in this loop.
    std::vector<Task> batch;
    batch.swap(deferred);
    for (auto& t : batch) t();
    if (deferred.empty()) uv_idle_stop(idle.get());
  }
};

Loop::Loop(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

namespace {
// A write to a socket whose peer has gone raises SIGPIPE, whose default action ends the whole
// process: one client disconnecting mid-response would kill a server or an agent with every
// user's terminal in it. libuv reports EPIPE as an error instead once SIGPIPE is ignored, so we
// ignore it, unless the host installed a handler of its own.
void ignore_sigpipe_unless_handled() {
  struct sigaction current {};
  if (::sigaction(SIGPIPE, nullptr, &current) != 0) return;
  if (current.sa_handler != SIG_DFL || (current.sa_flags & SA_SIGINFO)) return;
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGPIPE, &ignore, nullptr);
}

Result<std::unique_ptr<Loop::Impl>> make_impl(uv_loop_t* uv, std::unique_ptr<uv_loop_t> owned) {
  ignore_sigpipe_unless_handled();
  auto impl = std::make_unique<Loop::Impl>();
  impl->uv = uv;
  impl->owned = std::move(owned);
  if (int rc = uv_async_init(uv, impl->async.get(), [](uv_async_t* a) {
        if (auto* self = static_cast<Loop::Impl*>(a->data)) self->drain_posted();
      }); rc != 0) {
    return detail::uv_error(rc, "create the loop's wake-up handle");
  }
  impl->async.set_initialized();
  impl->async->data = impl.get();
  // Our wake-up handle alone must not keep a loop alive (a host's borrowed loop in particular).
  uv_unref(impl->async.handle());
  uv_idle_init(uv, impl->idle.get());
  impl->idle.set_initialized();
  impl->idle->data = impl.get();
  return impl;
}
}  // namespace

Result<std::unique_ptr<Loop>> Loop::create() {
  auto uv = std::make_unique<uv_loop_t>();
  if (int rc = uv_loop_init(uv.get()); rc != 0) return detail::uv_error(rc, "create an event loop");
  uv_loop_t* raw = uv.get();
  auto impl = make_impl(raw, std::move(uv));
  if (!impl) {
    return std::move(impl).error();
  }
  return std::unique_ptr<Loop>(new Loop(std::move(impl).value()));
}

Result<std::unique_ptr<Loop>> Loop::wrap(uv_loop_s* native) {
  if (!native) return Error(Errc::InvalidArgument, "Loop::wrap needs a uv loop, got null");
  auto impl = make_impl(native, nullptr);
  if (!impl) return std::move(impl).error();
  return std::unique_ptr<Loop>(new Loop(std::move(impl).value()));
}

Loop::~Loop() {
  // Tasks still queued are dropped unrun: their captured state is released here.
  impl_->deferred.clear();
  {
    std::lock_guard<std::mutex> lock(impl_->post_mutex);
    impl_->posted.clear();
  }
  impl_->async.close();
  impl_->idle.close();
  if (impl_->owned) {
    uv_loop_t* uv = impl_->owned.get();
    // Let close callbacks run (ours and any the embedder's objects queued while being freed).
    while (uv_run(uv, UV_RUN_NOWAIT) != 0) {
    }
    if (uv_loop_close(uv) == UV_EBUSY) {
      // Handles leaked by someone: close them so the loop's memory can go, then report.
      uv_walk(uv, [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      }, nullptr);
      while (uv_run(uv, UV_RUN_NOWAIT) != 0) {
      }
      if (uv_loop_close(uv) != 0) fatal("Loop destroyed with handles that never closed");
    }
  }
}

Status Loop::run() {
  if (!impl_->owned) return Error(Errc::InvalidArgument, "run() on a borrowed loop: the host runs it");
  impl_->thread = std::this_thread::get_id();
  impl_->stopped = false;
  // The wake-up handle is unref'd, so uv_run alone would return with tasks still posted (from
  // before run(), or by another thread as the last handle closed): drain them and go on.
  for (;;) {
    impl_->drain_posted();
    if (impl_->stopped) break;
    if (uv_run(impl_->uv, UV_RUN_DEFAULT) == 0 && !impl_->stopped && !impl_->has_posted()) break;
    if (impl_->stopped) break;
  }
  return {};
}

bool Loop::run_nowait() {
  impl_->thread = std::this_thread::get_id();
  return uv_run(impl_->uv, UV_RUN_NOWAIT) != 0;
}

void Loop::stop() {
  impl_->stop_requested = true;
  uv_async_send(impl_->async.get());
}

void Loop::post(Task task) {
  {
    std::lock_guard<std::mutex> lock(impl_->post_mutex);
    impl_->posted.push_back(std::move(task));
  }
  uv_async_send(impl_->async.get());
}

void Loop::defer(Task task) {
  if (impl_->deferred.empty()) {
    uv_idle_start(impl_->idle.get(), [](uv_idle_t* h) {
      if (auto* self = static_cast<Loop::Impl*>(h->data)) self->drain_deferred();
    });
  }
  impl_->deferred.push_back(std::move(task));
}

bool Loop::is_loop_thread() const noexcept { return impl_->thread.load() == std::this_thread::get_id(); }
std::uint64_t Loop::now_ms() const noexcept { return uv_now(impl_->uv); }
uv_loop_s* Loop::native() const noexcept { return impl_->uv; }
bool Loop::owns_native() const noexcept { return impl_->owned != nullptr; }

namespace {
class UvTimer final : public Timer {
 public:
  UvTimer(uv_loop_t* uv, MoveOnlyFunction<void()> on_fire) : on_fire_(std::move(on_fire)) {
    uv_timer_init(uv, timer_.get());
    timer_.set_initialized();
    timer_->data = this;
  }
  void start(std::chrono::milliseconds timeout, std::chrono::milliseconds repeat) override {
    uv_timer_start(timer_.get(), [](uv_timer_t* t) {
      if (auto* self = detail::owner_of<UvTimer>(t)) self->on_fire_();
    }, static_cast<uint64_t>(timeout.count()), static_cast<uint64_t>(repeat.count()));
  }
  void stop() override { uv_timer_stop(timer_.get()); }
  bool active() const override { return uv_is_active(timer_.handle()) != 0; }

 private:
  UvHandle<uv_timer_t> timer_;
  MoveOnlyFunction<void()> on_fire_;
};
}  // namespace

std::unique_ptr<Timer> Loop::create_timer(MoveOnlyFunction<void()> on_fire) {
  return std::make_unique<UvTimer>(impl_->uv, std::move(on_fire));
}

}  // namespace terminals
