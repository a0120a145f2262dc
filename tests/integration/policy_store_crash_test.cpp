// kill -9 of a process in the middle of policy store writes: what a put() reported as done is on
// disk afterwards, and no file is ever half-written.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "json/json.hpp"
#include "support/loop_runner.hpp"
#include "terminals/policy_store.hpp"

using namespace terminals;
namespace fs = std::filesystem;

namespace {

constexpr int kPolicies = 20;

// What the child reports after each put() returned: one 8-byte record per write (a pipe write of
// at most PIPE_BUF bytes is atomic, so a kill never leaves half a record).
struct Committed {
  std::uint32_t policy;
  std::uint32_t revision;
};

// The child: writes p0..p19 round-robin with growing revisions until it is killed. Never returns.
[[noreturn]] void write_until_killed(const std::string& dir, int report_fd) {
  auto store = open_file_policy_store(dir);
  if (!store) _exit(10);
  const std::string padding(4096, 'x');
  for (;;) {
    for (std::uint32_t i = 0; i < kPolicies; ++i) {
      std::string id = "p" + std::to_string(i);
      auto current = (*store)->get(id);
      std::uint64_t rev = current ? current->revision : 0;
      std::string data = detail::JsonWriter()
                             .object()
                             .field("rev", rev + 1)
                             .field("padding", padding)
                             .end_object()
                             .take();
      auto put = (*store)->put(id, data, rev);
      if (!put || put->revision != rev + 1) _exit(11);
      Committed c{i, static_cast<std::uint32_t>(put->revision)};
      if (::write(report_fd, &c, sizeof c) != static_cast<ssize_t>(sizeof c)) _exit(12);
    }
  }
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("policy store: kill -9 during writes loses nothing committed and never leaves a half-written file") {
  test::TempDir tmp;
  const std::string dir = tmp.file("store");
  const unsigned seed = std::random_device{}();
  MESSAGE("seed " << seed);
  std::mt19937 rng(seed);

  std::map<std::uint32_t, std::uint32_t> committed;  // policy -> highest revision reported
  int rounds_with_tmp = 0, rounds_before_first_write = 0;
  std::size_t total_writes = 0;
  const auto start = std::chrono::steady_clock::now();

  for (int round = 0; round < 20; ++round) {
    CAPTURE(round);
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(fds[0]);
      write_until_killed(dir, fds[1]);
    }
    ::close(fds[1]);

    // Every fourth round dies at a random point from the start (often during open and its
    // clean-up); the others after the first committed write plus 0-60 ms of writing.
    if (round % 4 == 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 15000)(rng)));
    } else {
      pollfd p{fds[0], POLLIN, 0};
      REQUIRE(::poll(&p, 1, 5000) == 1);
      std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 60000)(rng)));
    }
    REQUIRE(::kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    // Killed, not an early exit: an exit code would mean a write failed inside the child.
    REQUIRE_MESSAGE(WIFSIGNALED(status), "child exited with " << WEXITSTATUS(status));
    CHECK(WTERMSIG(status) == SIGKILL);

    std::size_t reported = 0;
    Committed c{};
    ssize_t n;
    while ((n = ::read(fds[0], &c, sizeof c)) == static_cast<ssize_t>(sizeof c)) {
      REQUIRE(c.policy < kPolicies);
      auto& best = committed[c.policy];
      CHECK(c.revision > best);  // revisions only grow, across rounds too
      best = std::max(best, c.revision);
      ++reported;
    }
    CHECK(n == 0);  // EOF on a record boundary
    ::close(fds[0]);
    total_writes += reported;
    if (reported == 0) ++rounds_before_first_write;

    // Every file present, stray temporaries included, is complete: the .json ones parse, and a
    // .tmp one is at most a part of a write that never returned.
    // (A kill during the first open may come before the directory exists.)
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir + "/policies", ec)) {
      if (e.path().extension() == ".tmp") {
        ++rounds_with_tmp;
        continue;
      }
      CAPTURE(e.path().string());
      auto doc = detail::parse_json(slurp(e.path()));
      REQUIRE(doc);
      // data and metadata come from the same write.
      REQUIRE(doc->IsObject());
      auto data = doc->FindMember("data");
      REQUIRE(data != doc->MemberEnd());
      auto rev = detail::json_int(data->value, "rev");
      REQUIRE(rev);
      CHECK(rev == detail::json_int(*doc, "revision"));
    }

    auto store = open_file_policy_store(dir);
    REQUIRE_MESSAGE(store, (store ? "" : store.error().to_string()));
    for (const auto& [policy, revision] : committed) {
      auto p = (*store)->get("p" + std::to_string(policy));
      REQUIRE_MESSAGE(p, "p" << policy << " lost");
      CHECK(p->revision >= revision);
      auto data = detail::parse_json(p->data);
      REQUIRE(data);
      CHECK(detail::json_int(*data, "rev") == static_cast<std::int64_t>(p->revision));
    }
    for (const auto& e : fs::directory_iterator(dir + "/policies")) CHECK(e.path().extension() == ".json");
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("20 kills, " << total_writes << " committed writes, " << rounds_with_tmp
                       << " kills left a .tmp behind, " << rounds_before_first_write
                       << " before the first write, " << secs << " s");
  CHECK(total_writes > 0);
}

}  // TEST_SUITE
