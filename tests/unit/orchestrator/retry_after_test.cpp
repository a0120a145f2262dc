// retry_after_seconds: the throttle's hint, read back for the HTTP layer's Retry-After.

#include <doctest/doctest.h>

#include "terminals/orchestrator.hpp"

using namespace terminals;

TEST_SUITE("unit") {

TEST_CASE("orchestrator: retry_after_seconds reads the throttle's hint only") {
  CHECK(retry_after_seconds(Error(Errc::LimitExceeded, "too many terminals are starting (3 waiting); retry after 7 seconds")) == 7u);
  CHECK(retry_after_seconds(Error(Errc::LimitExceeded, "retry after 0 seconds")) == 1u);
  CHECK_FALSE(retry_after_seconds(Error(Errc::LimitExceeded, "file too large")).has_value());
  CHECK_FALSE(retry_after_seconds(Error(Errc::Timeout, "retry after 7 seconds")).has_value());
  CHECK_FALSE(retry_after_seconds(Error(Errc::LimitExceeded, "retry after soon")).has_value());
}

}  // TEST_SUITE
