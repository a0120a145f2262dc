#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

namespace {

// How many test cases the run's filters selected (-1: not a run, e.g. --list-test-cases).
int g_selected = -1;

// CTest runs each test case by name; a name CTest mangles (a ';' splits it into two list
// entries) would select nothing and pass without running. Such a run must fail instead.
struct SelectionListener : doctest::IReporter {
  explicit SelectionListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& stats) override {
    g_selected = static_cast<int>(stats.numTestCasesPassingFilters);
  }
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};
REGISTER_LISTENER("selection", 1, SelectionListener);

}  // namespace

int main(int argc, char** argv) {
  // A peer that goes away must surface as EPIPE on write, never kill the test process.
  std::signal(SIGPIPE, SIG_IGN);
  // Interactive terminals the tests start use /bin/sh, not the developer's login shell: an
  // interactive bash runs ~/.bashrc, whose tools (pyenv's rehash lock, for one) can stall a
  // shell for a minute when another test's shell was killed mid-start. The agent resolves its
  // shell from $SHELL; production terminals run in their own homes.
  setenv("SHELL", "/bin/sh", 1);
  unsetenv("ENV");  // what an interactive dash would source
  doctest::Context context(argc, argv);
  int result = context.run();
  if (result == 0 && g_selected == 0) {
    std::fputs("no test case matches the filters (a ';' in a TEST_CASE name breaks CTest's copy of it)\n", stderr);
    return 1;
  }
  return result;
}
