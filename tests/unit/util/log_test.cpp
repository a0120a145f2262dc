#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "terminals/log.hpp"

using namespace terminals;

TEST_SUITE("unit") {

TEST_CASE("log: lines reach the sink at or above the level") {
  std::vector<std::string> lines;
  set_log_sink([&](LogLevel level, std::string_view component, std::string_view message) {
    lines.push_back(std::string(log_level_name(level)) + " " + std::string(component) + " " +
                    std::string(message));
  });
  set_log_level(LogLevel::Warning);
  log(LogLevel::Info, "test", "dropped");
  log(LogLevel::Warning, "test", "kept");
  log(LogLevel::Error, "local", "also kept");
  set_log_level(LogLevel::Info);
  set_log_sink({});
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == "warning test kept");
  CHECK(lines[1] == "error local also kept");
}

}  // TEST_SUITE
