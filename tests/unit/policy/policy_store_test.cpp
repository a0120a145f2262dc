#include "terminals/policy_store.hpp"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "json/json.hpp"
#include "support/loop_runner.hpp"
#include "util/crypto.hpp"

using namespace terminals;
namespace fs = std::filesystem;

namespace {

PolicyStorePtr open_store(const std::string& dir) {
  auto store = open_file_policy_store(dir);
  REQUIRE_MESSAGE(store.has_value(), (store ? "" : store.error().to_string()));
  return std::move(store).value();
}

std::string policy_file(const std::string& dir, const std::string& id) {
  return dir + "/policies/" + detail::sha256_hex(id) + ".json";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> ids(const std::vector<StoredPolicy>& policies) {
  std::vector<std::string> out;
  for (const auto& p : policies) out.push_back(p.id);
  return out;
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("policy store: create, get, list in creation order, remove") {
  test::TempDir tmp;
  auto store = open_store(tmp.file("store"));
  CHECK(store->list().empty());

  auto before = std::chrono::system_clock::now();
  auto a = store->create("zeta", R"({"image": "a:1",  "env": {"X": "1"}})");
  REQUIRE(a);
  CHECK(a->id == "zeta");
  CHECK(a->data == R"({"image":"a:1","env":{"X":"1"}})");  // stored compact
  CHECK(a->revision == 1);
  CHECK(a->created_at == a->updated_at);
  CHECK(a->created_at >= std::chrono::floor<std::chrono::microseconds>(before));
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  REQUIRE(store->create("alpha", "{}"));
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  REQUIRE(store->create("mid", R"({"cpu_limit":"500m"})"));
  CHECK(ids(store->list()) == std::vector<std::string>{"zeta", "alpha", "mid"});

  auto got = store->get("zeta");
  REQUIRE(got);
  CHECK(got->data == a->data);
  CHECK(got->revision == 1);

  auto dup = store->create("zeta", "{}");
  REQUIRE_FALSE(dup);
  CHECK(dup.error().code == Errc::AlreadyExists);
  CHECK(dup.error().message == "Policy 'zeta' already exists");

  auto missing = store->get("nope");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Errc::NotFound);
  CHECK(missing.error().message == "Policy 'nope' not found");

  REQUIRE(store->remove("alpha"));
  CHECK(ids(store->list()) == std::vector<std::string>{"zeta", "mid"});
  CHECK_FALSE(fs::exists(policy_file(tmp.file("store"), "alpha")));
  auto again = store->remove("alpha");
  REQUIRE_FALSE(again);
  CHECK(again.error().code == Errc::NotFound);
  CHECK(again.error().message == "Policy 'alpha' not found");
  CHECK(store->get("alpha").error().code == Errc::NotFound);

  // Ties in created_at are ordered by id; a recreated policy starts over at revision 1.
  auto re = store->create("alpha", "{}");
  REQUIRE(re);
  CHECK(re->revision == 1);
  CHECK(ids(store->list()).back() == "alpha");
}

TEST_CASE("policy store: put replaces with a new revision / expected_revision guards lost updates") {
  test::TempDir tmp;
  auto store = open_store(tmp.path());

  auto p1 = store->put("p", R"({"v":1})");  // put creates
  REQUIRE(p1);
  CHECK(p1->revision == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  auto p2 = store->put("p", R"({"v":2})");
  REQUIRE(p2);
  CHECK(p2->revision == 2);
  CHECK(p2->created_at == p1->created_at);
  CHECK(p2->updated_at > p1->updated_at);
  CHECK(p2->data == R"({"v":2})");

  auto ok = store->put("p", R"({"v":3})", 2);
  REQUIRE(ok);
  CHECK(ok->revision == 3);

  auto stale = store->put("p", R"({"v":"stale"})", 2);
  REQUIRE_FALSE(stale);
  CHECK(stale.error().code == Errc::AlreadyExists);
  CHECK(stale.error().message.find("Policy 'p' is at revision 3, not revision 2") == 0);
  CHECK(store->get("p")->data == R"({"v":3})");  // unchanged

  auto exists = store->put("p", "{}", 0);
  REQUIRE_FALSE(exists);
  CHECK(exists.error().code == Errc::AlreadyExists);
  CHECK(exists.error().message == "Policy 'p' already exists");

  auto fresh = store->put("q", "{}", 0);
  REQUIRE(fresh);
  CHECK(fresh->revision == 1);

  auto gone = store->put("r", "{}", 4);
  REQUIRE_FALSE(gone);
  CHECK(gone.error().code == Errc::AlreadyExists);
  CHECK(gone.error().message.find("Policy 'r' does not exist, not revision 4") == 0);
  CHECK(store->get("r").error().code == Errc::NotFound);
}

TEST_CASE("policy store: ids and data are validated") {
  test::TempDir tmp;
  auto store = open_store(tmp.path());

  CHECK(store->create("", "{}").error().code == Errc::InvalidArgument);
  CHECK(store->put("", "{}").error().code == Errc::InvalidArgument);
  CHECK(store->create(std::string(256, 'x'), "{}"));
  auto long_id = store->create(std::string(257, 'x'), "{}");
  REQUIRE_FALSE(long_id);
  CHECK(long_id.error().code == Errc::InvalidArgument);

  for (const char* bad : {"[]", "1", "\"s\"", "null", "", "{", "{} {}", R"({"a":})"}) {
    CAPTURE(bad);
    auto r = store->put("p", bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::InvalidArgument);
    CHECK(store->put_lifecycle("p", bad).error().code == Errc::InvalidArgument);
  }
  CHECK(store->get("p").error().code == Errc::NotFound);
  CHECK(store->put_lifecycle("", R"({"a":1})").error().code == Errc::InvalidArgument);

  LifecycleState s;
  s.policy_id = "p";
  CHECK(store->put_state(s).error().code == Errc::InvalidArgument);  // empty user
  s.user_id = "u";
  s.context_id = std::string(257, 'c');
  CHECK(store->put_state(s).error().code == Errc::InvalidArgument);
  CHECK(store->states().empty());

  // Any byte is fine in an id: the file name is a hash.
  REQUIRE(store->create("../../etc/passwd\n\"x\"", "{}"));
  CHECK(store->get("../../etc/passwd\n\"x\"")->id == "../../etc/passwd\n\"x\"");
}

TEST_CASE("policy store: lifecycle configuration and states") {
  test::TempDir tmp;
  auto store = open_store(tmp.path());

  CHECK(store->lifecycle("default") == "{}");
  REQUIRE(store->put_lifecycle("default", R"({"reset": "@weekly", "timezone": "Europe/Berlin"})"));
  CHECK(store->lifecycle("default") == R"({"reset":"@weekly","timezone":"Europe/Berlin"})");
  REQUIRE(store->put_lifecycle("default", R"({"reset":"@monthly"})"));
  CHECK(store->lifecycle("default") == R"({"reset":"@monthly"})");
  REQUIRE(store->put_lifecycle("default", " { } "));
  CHECK(store->lifecycle("default") == "{}");
  CHECK(fs::is_empty(tmp.path() + "/lifecycle"));
  REQUIRE(store->put_lifecycle("never-set", "{}"));  // clearing nothing is fine

  // Removing a policy keeps its lifecycle configuration.
  REQUIRE(store->create("p", "{}"));
  REQUIRE(store->put_lifecycle("p", R"({"reset":"0 3 * * *"})"));
  REQUIRE(store->remove("p"));
  CHECK(store->lifecycle("p") == R"({"reset":"0 3 * * *"})");

  CHECK_FALSE(store->state("u", "p", ""));
  LifecycleState s;
  s.user_id = "u";
  s.policy_id = "p";
  s.context_id = "";
  s.first_seen = std::chrono::system_clock::now();
  s.schedule = "0 3 * * *";
  s.timezone = "Europe/Berlin";
  REQUIRE(store->put_state(s));
  auto got = store->state("u", "p", "");
  REQUIRE(got);
  CHECK(got->first_seen == std::chrono::floor<std::chrono::microseconds>(s.first_seen));
  CHECK_FALSE(got->last_applied);
  CHECK(got->schedule == "0 3 * * *");
  CHECK(got->timezone == "Europe/Berlin");
  CHECK_FALSE(store->state("u", "p", "other"));
  CHECK_FALSE(store->state("u", "", "p"));

  s.last_applied = s.first_seen + std::chrono::hours(24);
  REQUIRE(store->put_state(s));
  LifecycleState other = s;
  other.context_id = "ctx";
  other.last_applied.reset();
  REQUIRE(store->put_state(other));
  auto all = store->states();
  REQUIRE(all.size() == 2);
  got = store->state("u", "p", "");
  REQUIRE(got);
  REQUIRE(got->last_applied);
  CHECK(*got->last_applied == std::chrono::floor<std::chrono::microseconds>(*s.last_applied));
}

TEST_CASE("policy store: a reopened store sees everything, timestamps to the microsecond") {
  test::TempDir tmp;
  std::string dir = tmp.file("data/store");
  std::vector<StoredPolicy> before;
  LifecycleState s;
  s.user_id = "user \"1\"";
  s.policy_id = "p1";
  s.context_id = "ctx";
  s.first_seen = std::chrono::system_clock::time_point{} + std::chrono::microseconds(1'234'567'890'123'456);
  s.last_applied = std::chrono::system_clock::time_point{} - std::chrono::microseconds(1);  // 1969
  s.schedule = "@weekly";
  s.timezone = "UTC";
  {
    auto store = open_store(dir);
    for (int i = 0; i < 5; ++i) {
      REQUIRE(store->create("p" + std::to_string(i), R"({"i":)" + std::to_string(i) + R"(,"s":"\u00e9\n"})"));
    }
    REQUIRE(store->put("p1", R"({"replaced":true})"));
    REQUIRE(store->remove("p3"));
    REQUIRE(store->put_lifecycle("p1", R"({"reset":"@daily"})"));
    REQUIRE(store->put_state(s));
    before = store->list();

    // A second store on the same directory would answer from stale memory: refused.
    auto second = open_file_policy_store(dir);
    REQUIRE_FALSE(second);
    CHECK(second.error().message.find("in use") != std::string::npos);
  }
  struct stat st {};
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  REQUIRE(::stat(policy_file(dir, "p0").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  auto store = open_store(dir);
  auto after = store->list();
  REQUIRE(after.size() == before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    CAPTURE(before[i].id);
    CHECK(after[i].id == before[i].id);
    CHECK(after[i].data == before[i].data);
    CHECK(after[i].revision == before[i].revision);
    CHECK(after[i].created_at == before[i].created_at);
    CHECK(after[i].updated_at == before[i].updated_at);
  }
  CHECK(store->get("p1")->revision == 2);
  CHECK(store->get("p3").error().code == Errc::NotFound);
  CHECK(store->lifecycle("p1") == R"({"reset":"@daily"})");
  auto got = store->state(s.user_id, "p1", "ctx");
  REQUIRE(got);
  CHECK(got->first_seen == s.first_seen);
  CHECK(got->last_applied == s.last_applied);
  CHECK(got->schedule == "@weekly");

  // The file holds the id and ISO-8601 UTC times with microseconds.
  auto doc = detail::parse_json(read_lines(policy_file(dir, "p0")).at(0));
  REQUIRE(doc);
  CHECK(detail::json_string(*doc, "id") == "p0");
  auto created = std::string(*detail::json_string(*doc, "created_at"));
  CHECK(created.size() == 27);
  CHECK(created.back() == 'Z');
  CHECK(created[19] == '.');
}

TEST_CASE("policy store: a corrupt file fails the open with its path / stray temporary files go") {
  test::TempDir tmp;
  std::string dir = tmp.path();
  { REQUIRE(open_store(dir)->create("good", R"({"a":1})")); }

  // An interrupted write leaves name.json.tmp next to the intact file: removed, the old one kept.
  std::string good = policy_file(dir, "good");
  write_text(good + ".tmp", R"({"id":"good","revis)");
  write_text(dir + "/lifecycle-state/whatever.tmp", "");
  {
    auto store = open_store(dir);
    CHECK(store->get("good")->data == R"({"a":1})");
    CHECK_FALSE(fs::exists(good + ".tmp"));
    CHECK_FALSE(fs::exists(dir + "/lifecycle-state/whatever.tmp"));
  }

  struct Case {
    const char* name;
    std::string text;
    const char* why;
  };
  std::string ts = "2026-01-02T03:04:05.000006Z";
  std::vector<Case> cases = {
      {"truncated", R"({"id":"good","revision":1,"crea)", "invalid JSON"},
      {"empty", "", "invalid JSON"},
      {"not an object", "[1]", "not a JSON object"},
      {"no data", R"({"id":"good","revision":1,"created_at":")" + ts + R"(","updated_at":")" + ts + R"("})",
       "\"data\""},
      {"bad time", R"({"id":"good","revision":1,"created_at":"yesterday","updated_at":")" + ts + R"(","data":{}})",
       "\"created_at\""},
      {"revision 0", R"({"id":"good","revision":0,"created_at":")" + ts + R"(","updated_at":")" + ts +
                         R"(","data":{}})",
       "\"revision\""},
      {"id of another file", R"({"id":"other","revision":1,"created_at":")" + ts + R"(","updated_at":")" + ts +
                                 R"(","data":{}})",
       "does not match its file name"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    write_text(good, c.text);
    auto r = open_file_policy_store(dir);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::InvalidArgument);
    CHECK(r.error().message.find(good) != std::string::npos);
    CHECK(r.error().message.find(c.why) != std::string::npos);
  }

  // A well-formed file written by hand loads.
  write_text(good, R"({"id":"good","revision":7,"created_at":")" + ts + R"(","updated_at":")" + ts +
                       R"(","data":{"b":2}})");
  auto store = open_store(dir);
  CHECK(store->get("good")->revision == 7);
  CHECK(store->put("good", "{}")->revision == 8);
  CHECK(store->get("good")->created_at.time_since_epoch() % std::chrono::seconds(1) ==
        std::chrono::microseconds(6));
}

TEST_CASE("policy store: corrupt lifecycle and state files are errors too") {
  test::TempDir tmp;
  std::string dir = tmp.path();
  {
    auto store = open_store(dir);
    REQUIRE(store->put_lifecycle("p", R"({"reset":"@daily"})"));
  }
  std::string lc = dir + "/lifecycle/" + detail::sha256_hex("p") + ".json";
  REQUIRE(fs::exists(lc));
  write_text(lc, R"({"policy_id":"p","data":"@daily"})");
  auto r = open_file_policy_store(dir);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find(lc) != std::string::npos);
  fs::remove(lc);

  std::string st = dir + "/lifecycle-state/" + std::string(64, 'a') + ".json";
  write_text(st, R"({"user_id":"u"})");
  r = open_file_policy_store(dir);
  REQUIRE_FALSE(r);
  CHECK(r.error().message.find(st) != std::string::npos);
}

TEST_CASE("policy store: audit log lines are JSON with time first and escaped values") {
  test::TempDir tmp;
  std::string path = tmp.file("audit.log");
  {
    auto log = AuditLog::open(path);
    REQUIRE(log);
    CHECK((*log)->path() == path);
    REQUIRE((*log)->record("policy.put", {{"id", "p1"}, {"by", "admin"}}));
    REQUIRE((*log)->record("terminal.reset", {{"user_id", "a \"quoted\"\nline\\ and \x01 ctl"}}));
    auto reserved = (*log)->record("x", {{"time", "forged"}});
    REQUIRE_FALSE(reserved);
    CHECK(reserved.error().code == Errc::InvalidArgument);
  }
  {
    auto log = AuditLog::open(path);  // appends, never truncates
    REQUIRE(log);
    REQUIRE((*log)->record("policy.rm", {}));
  }
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  auto lines = read_lines(path);
  REQUIRE(lines.size() == 3);
  for (const auto& line : lines) {
    CAPTURE(line);
    CHECK(line.rfind("{\"time\":\"", 0) == 0);
    auto doc = detail::parse_json(line);
    REQUIRE(doc);
    REQUIRE(doc->IsObject());
    auto time = detail::json_string(*doc, "time");
    REQUIRE(time);
    CHECK(time->size() == 27);
    CHECK(time->back() == 'Z');
    CHECK(detail::json_string(*doc, "action"));
  }
  auto first = detail::parse_json(lines[0]);
  CHECK(detail::json_string(*first, "action") == "policy.put");
  CHECK(detail::json_string(*first, "id") == "p1");
  CHECK(detail::json_string(*first, "by") == "admin");
  auto second = detail::parse_json(lines[1]);
  CHECK(detail::json_string(*second, "user_id") == "a \"quoted\"\nline\\ and \x01 ctl");
  CHECK(detail::json_string(*detail::parse_json(lines[2]), "action") == "policy.rm");

  auto bad = AuditLog::open(tmp.file("no/such/dir/audit.log"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Errc::Io);
}

TEST_CASE("policy store: concurrent writers and readers") {
  test::TempDir tmp;
  auto store = open_store(tmp.path());
  REQUIRE(store->create("shared", R"({"n":0})"));
  std::vector<std::thread> threads;
  std::atomic<int> conflicts{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        CHECK(store->put("t" + std::to_string(t), R"({"i":)" + std::to_string(i) + "}"));
        // Read-modify-write with the revision guard: exactly one of racing writers wins.
        for (;;) {
          auto cur = store->get("shared").value();
          auto r = store->put("shared", R"({"n":)" + std::to_string(cur.revision) + "}", cur.revision);
          if (r) break;
          CHECK(r.error().code == Errc::AlreadyExists);
          ++conflicts;
        }
        (void)store->list();
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(store->get("shared")->revision == 41);
  for (int t = 0; t < 4; ++t) CHECK(store->get("t" + std::to_string(t))->revision == 10);
  MESSAGE("revision conflicts resolved by retry: " << conflicts.load());
}

}  // TEST_SUITE
