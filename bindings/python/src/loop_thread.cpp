#include "common.hpp"

namespace terminals::python {

LoopThread::LoopThread() {
  std::promise<Status> ready;
  auto started = ready.get_future();
  thread_ = std::thread([this, p = std::move(ready)]() mutable { main(std::move(p)); });
  Status s = started.get();
  if (!s) {
    thread_.join();
    raise(std::move(s).error());
  }
}

void LoopThread::main(std::promise<Status> ready) {
  auto created = Loop::create();
  if (!created) {
    ready.set_value(std::move(created).error());
    return;
  }
  loop_ = std::move(created).value();
  // A timer that never fires keeps run() from returning while the loop has nothing else to do.
  auto keep_alive = loop_->create_timer([] {});
  keep_alive->start(std::chrono::hours(24), std::chrono::hours(24));
  ready.set_value(Status{});
  (void)loop_->run();
  keep_alive.reset();
  while (loop_->run_nowait()) {
  }
  // The loop itself is destroyed by stop() after the join (tasks still queued are dropped there,
  // which breaks their promises: their callers see Cancelled).
}

void LoopThread::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
  }
  loop_->stop();
  if (thread_.joinable()) {
    ReleaseGil nogil;
    thread_.join();
  }
  loop_.reset();
}

LoopThread::~LoopThread() { stop(); }

}  // namespace terminals::python
