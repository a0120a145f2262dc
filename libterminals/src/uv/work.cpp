#include "uv/work.hpp"

#include <uv.h>

namespace terminals::detail {

namespace {

struct BlockingJob {
  uv_work_t req{};
  MoveOnlyFunction<void()> work;
  MoveOnlyFunction<void()> after;
};

}  // namespace

void queue_blocking(Loop& loop, MoveOnlyFunction<void()> work, MoveOnlyFunction<void()> after) {
  auto job = std::make_unique<BlockingJob>();
  job->work = std::move(work);
  job->after = std::move(after);
  job->req.data = job.get();
  int rc = uv_queue_work(
      loop.native(), &job->req, [](uv_work_t* req) { static_cast<BlockingJob*>(req->data)->work(); },
      [](uv_work_t* req, int) {
        std::unique_ptr<BlockingJob> j(static_cast<BlockingJob*>(req->data));
        j->after();
      });
  if (rc == 0) {
    job.release();  // freed in the after-work callback
    return;
  }
  job->work();
  loop.defer([j = std::shared_ptr<BlockingJob>(std::move(job))]() { j->after(); });
}

}  // namespace terminals::detail
