#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "auth/service_key.hpp"
#include "support/loop_runner.hpp"

using namespace terminals;
using namespace terminals::detail;

namespace {

unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

void write_file(const std::string& path, const std::string& content, mode_t mode) {
  { std::ofstream(path) << content; }
  REQUIRE(::chmod(path.c_str(), mode) == 0);
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("auth: service key is generated 0600 once then reused") {
  test::TempDir dir;
  std::string data = dir.file("data/nested");  // created on demand
  auto first = load_or_create_service_key(data, std::nullopt);
  REQUIRE(first.has_value());
  CHECK(first->generated);
  CHECK(first->path == data + "/service-key");
  CHECK(first->key.size() == 43);
  CHECK(validate_service_key(first->key).has_value());
  CHECK(mode_of(first->path) == 0600);
  CHECK(mode_of(data) == 0700);
  std::ifstream in(first->path);
  std::string stored;
  std::getline(in, stored);
  CHECK(stored == first->key);

  auto second = load_or_create_service_key(data + "/", std::nullopt);
  REQUIRE(second.has_value());
  CHECK_FALSE(second->generated);
  CHECK(second->key == first->key);
  // An empty TERMINALS_API_KEY counts as unset.
  auto empty_env = load_or_create_service_key(data, std::string());
  REQUIRE(empty_env.has_value());
  CHECK(empty_env->key == first->key);
  // No temporary files left behind.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(data)) {
    (void)e;
    ++entries;
  }
  CHECK(entries == 1);
}

TEST_CASE("auth: service key file readable by group or others is refused") {
  test::TempDir dir;
  std::string path = dir.file("service-key");
  write_file(path, "0123456789abcdefXYZ\n", 0644);
  auto r = load_or_create_service_key(dir.path(), std::nullopt);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::PolicyDenied);
  CHECK(r.error().message.find("0644") != std::string::npos);
  CHECK(r.error().message.find("0123456789abcdef") == std::string::npos);  // never the key
  REQUIRE(::chmod(path.c_str(), 0640) == 0);
  CHECK_FALSE(load_or_create_service_key(dir.path(), std::nullopt).has_value());
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  auto ok = load_or_create_service_key(dir.path(), std::nullopt);
  REQUIRE(ok.has_value());
  CHECK(ok->key == "0123456789abcdefXYZ");
  CHECK_FALSE(ok->generated);
}

TEST_CASE("auth: service key file that is a symlink / too short / a directory is refused") {
  test::TempDir dir;
  std::string target = dir.file("elsewhere");
  write_file(target, "0123456789abcdefXYZ", 0600);
  REQUIRE(::mkdir(dir.file("data").c_str(), 0700) == 0);
  REQUIRE(::symlink(target.c_str(), dir.file("data/service-key").c_str()) == 0);
  auto link = load_or_create_service_key(dir.file("data"), std::nullopt);
  REQUIRE_FALSE(link.has_value());
  CHECK(link.error().code == Errc::PolicyDenied);

  write_file(dir.file("service-key"), "short\n", 0600);
  auto shorty = load_or_create_service_key(dir.path(), std::nullopt);
  REQUIRE_FALSE(shorty.has_value());
  CHECK(shorty.error().code == Errc::InvalidArgument);

  test::TempDir dir2;
  REQUIRE(::mkdir(dir2.file("service-key").c_str(), 0700) == 0);
  CHECK_FALSE(load_or_create_service_key(dir2.path(), std::nullopt).has_value());
  CHECK_FALSE(load_or_create_service_key("", std::nullopt).has_value());
}

TEST_CASE("auth: TERMINALS_API_KEY overrides the key file") {
  test::TempDir dir;
  auto env = load_or_create_service_key(dir.path(), std::string("from-the-environment-123"));
  REQUIRE(env.has_value());
  CHECK(env->key == "from-the-environment-123");
  CHECK_FALSE(env->generated);
  CHECK(env->path.empty());
  CHECK(::access(dir.file("service-key").c_str(), F_OK) != 0);  // nothing written
  // Also over an existing file.
  auto file = load_or_create_service_key(dir.path(), std::nullopt);
  REQUIRE(file.has_value());
  CHECK(load_or_create_service_key(dir.path(), std::string("from-the-environment-123"))->key ==
        "from-the-environment-123");
  // Weak or header-unsafe keys are refused, without echoing them.
  auto weak = load_or_create_service_key(dir.path(), std::string("secret"));
  REQUIRE_FALSE(weak.has_value());
  CHECK(weak.error().message.find("TERMINALS_API_KEY") != std::string::npos);
  CHECK(weak.error().message.find("secret") == std::string::npos);
  CHECK_FALSE(load_or_create_service_key(dir.path(), std::string("has a space in the key")).has_value());
  CHECK_FALSE(load_or_create_service_key(dir.path(), std::string("0123456789abcdef\n")).has_value());
}

}  // TEST_SUITE
