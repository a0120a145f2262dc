// The orchestrator over a real LocalBackend (isolation none: real agents, started and stopped),
// and over a small FakeBackend only where a test must hold provisions open (queue, shutdown,
// destruction). The fake honours the Backend contract: callbacks run later, never inside the call.

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/loop_runner.hpp"
#include "terminals/http_client.hpp"
#include "terminals/local_backend.hpp"
#include "terminals/orchestrator.hpp"

using namespace terminals;
using namespace std::chrono_literals;

namespace {

template <class T, class Start>
Result<T> await(Loop& loop, Start start, std::chrono::milliseconds timeout = 30s) {
  std::optional<Result<T>> got;
  start([&](Result<T> r) { got.emplace(std::move(r)); });
  CHECK_FALSE(got.has_value());  // never answered inside the call
  REQUIRE(test::run_until(loop, [&] { return got.has_value(); }, timeout));
  return std::move(*got);
}

// Forwards to a real backend, counting provisions and how many are in flight at once.
struct CountingBackend : Backend {
  explicit CountingBackend(Backend& wrapped) : inner(wrapped) {}
  Backend& inner;
  int provisions = 0, in_flight = 0, max_in_flight = 0;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  std::string_view kind() const override { return inner.kind(); }
  std::string terminal_name(std::string_view u, std::string_view p, std::string_view c) const override {
    return inner.terminal_name(u, p, c);
  }
  void provision(const TerminalSpec& spec, Callback<TerminalInfo> done) override {
    ++provisions;
    max_in_flight = std::max(max_in_flight, ++in_flight);
    std::weak_ptr<bool> a = alive;
    inner.provision(spec, [this, a, done = std::move(done)](Result<TerminalInfo> r) mutable {
      if (a.lock()) --in_flight;
      done(std::move(r));
    });
  }
  void inspect(std::string_view name, Callback<TerminalInfo> done) override { inner.inspect(name, std::move(done)); }
  void stop(std::string_view name, Callback<void> done) override { inner.stop(name, std::move(done)); }
  void remove(std::string_view name, bool data, Callback<void> done) override {
    inner.remove(name, data, std::move(done));
  }
  void list(Callback<std::vector<TerminalInfo>> done) override { inner.list(std::move(done)); }
};

// Provisions wait for release() (when `hold`), so tests see the queue and in-flight states.
struct FakeBackend : Backend {
  explicit FakeBackend(Loop& l) : loop(l) {}
  ~FakeBackend() override {
    for (auto& p : pending) {
      loop.defer([d = std::move(p.done)]() mutable { d(Error(Errc::Cancelled, "fake backend destroyed")); });
    }
  }
  struct Pending {
    TerminalSpec spec;
    Callback<TerminalInfo> done;
  };
  Loop& loop;
  bool hold = true;
  int provisions = 0, max_in_flight = 0;
  std::optional<Error> fail_next;
  std::vector<Pending> pending;
  std::map<std::string, TerminalInfo> terminals;

  std::string_view kind() const override { return "fake"; }
  std::string terminal_name(std::string_view u, std::string_view p, std::string_view c) const override {
    return "fake-" + std::string(u) + "-" + std::string(p) + "-" + std::string(c);
  }
  void provision(const TerminalSpec& spec, Callback<TerminalInfo> done) override {
    ++provisions;
    pending.push_back({spec, std::move(done)});
    max_in_flight = std::max<int>(max_in_flight, static_cast<int>(pending.size()));
    if (!hold) release();
  }
  void release() {
    auto batch = std::move(pending);
    pending.clear();
    for (auto& p : batch) {
      Result<TerminalInfo> r = Error(Errc::Internal, "unset");
      if (fail_next) {
        r = *fail_next;
        fail_next.reset();
      } else {
        TerminalInfo info;
        info.name = terminal_name(p.spec.user_id, p.spec.policy_id, p.spec.context_id);
        info.user_id = p.spec.user_id;
        info.policy_id = p.spec.policy_id;
        info.context_id = p.spec.context_id;
        info.state = TerminalState::Running;
        info.endpoint = Endpoint::unix_socket("/nonexistent/" + info.name);
        info.api_key = "key-" + info.name;
        info.created_at = std::chrono::system_clock::now();
        terminals[info.name] = info;
        r = info;
      }
      loop.defer([d = std::move(p.done), r = std::move(r)]() mutable { d(std::move(r)); });
    }
  }
  void inspect(std::string_view name, Callback<TerminalInfo> done) override {
    auto it = terminals.find(std::string(name));
    Result<TerminalInfo> r = it == terminals.end() ? Result<TerminalInfo>(Error(Errc::NotFound, "no terminal"))
                                                    : Result<TerminalInfo>(it->second);
    loop.defer([d = std::move(done), r = std::move(r)]() mutable { d(std::move(r)); });
  }
  void stop(std::string_view name, Callback<void> done) override {
    auto it = terminals.find(std::string(name));
    Status s;
    if (it == terminals.end()) {
      s = Error(Errc::NotFound, "no terminal");
    } else {
      it->second.state = TerminalState::Stopped;
    }
    loop.defer([d = std::move(done), s = std::move(s)]() mutable { d(std::move(s)); });
  }
  void remove(std::string_view name, bool, Callback<void> done) override {
    Status s;
    if (terminals.erase(std::string(name)) == 0) s = Error(Errc::NotFound, "no terminal");
    loop.defer([d = std::move(done), s = std::move(s)]() mutable { d(std::move(s)); });
  }
  void list(Callback<std::vector<TerminalInfo>> done) override {
    std::vector<TerminalInfo> all;
    for (auto& [n, i] : terminals) all.push_back(i);
    loop.defer([d = std::move(done), all = std::move(all)]() mutable { d(std::move(all)); });
  }
};

struct Fixture : test::LoopFixture {
  test::TempDir data;
  LocalBackendPtr local;
  std::unique_ptr<FakeBackend> fake;
  std::unique_ptr<CountingBackend> backend;
  OrchestratorPtr orch;
  OrchestratorOptions options;
  std::chrono::steady_clock::duration offset{};  // the injected clock runs this far ahead
  std::map<std::string, std::optional<std::chrono::minutes>> policies{{"default", std::nullopt}};
  int resolved = 0;

  Fixture() {
    ::chmod(data.path().c_str(), 0711);
    options.reaper_interval = 3600s;  // tests sweep by hand unless they test the timer
  }

  void use_local() {
    LocalBackendOptions o;
    o.data_dir = data.path() + "/data";
    o.agent_path = TERMINALS_AGENT_PATH;
    o.default_isolation = Isolation::None;
    o.start_timeout = 20s;
    o.stop_grace = 1s;
    auto b = LocalBackend::create(*loop, o);
    REQUIRE_MESSAGE(b.has_value(), (b ? "" : b.error().message));
    local = std::move(b).value();
    backend = std::make_unique<CountingBackend>(*local);
  }

  void use_fake() {
    fake = std::make_unique<FakeBackend>(*loop);
    backend = std::make_unique<CountingBackend>(*fake);
  }

  void make_orchestrator() {
    options.clock = [this] { return std::chrono::steady_clock::now() + offset; };
    auto o = Orchestrator::create(
        *loop, *backend,
        [this](const TerminalKey& key) -> Result<TerminalSpec> {
          ++resolved;
          auto it = policies.find(key.policy_id);
          if (it == policies.end()) return Error(Errc::NotFound, "no policy named " + key.policy_id);
          TerminalSpec spec;
          spec.isolation = Isolation::None;
          spec.idle_timeout = it->second;
          return spec;
        },
        options);
    REQUIRE(o.has_value());
    orch = std::move(o).value();
  }

  Result<TerminalInfo> acquire(const TerminalKey& key) {
    return await<TerminalInfo>(*loop, [&](Callback<TerminalInfo> cb) { orch->acquire(key, std::move(cb)); });
  }
  TerminalInfo acquire_ok(const TerminalKey& key) {
    auto r = acquire(key);
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message));
    CHECK(r->state == TerminalState::Running);
    return std::move(r).value();
  }
  std::size_t stop(const TerminalKey& filter) {
    auto r = await<std::size_t>(*loop, [&](Callback<std::size_t> cb) { orch->stop(filter, std::move(cb)); });
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message));
    return *r;
  }
  std::size_t refresh(const TerminalKey& filter, bool only_idle, bool reset) {
    auto r = await<std::size_t>(*loop, [&](Callback<std::size_t> cb) {
      orch->refresh(filter, only_idle, reset, std::move(cb));
    });
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message));
    return *r;
  }
  std::size_t reap() {
    auto r = await<std::size_t>(*loop, [&](Callback<std::size_t> cb) { orch->reap_idle(std::move(cb)); });
    REQUIRE(r.has_value());
    return *r;
  }
  std::optional<TerminalRow> row(const TerminalKey& key) {
    for (auto& r : orch->list()) {
      if (r.key.user_id == key.user_id && r.key.policy_id == key.policy_id && r.key.context_id == key.context_id) return r;
    }
    return std::nullopt;
  }
  TerminalState state_of(const TerminalKey& key) {
    auto r = row(key);
    REQUIRE(r.has_value());
    return r->state;
  }
  // What the local backend itself says (NotFound as an error).
  Result<TerminalInfo> backend_inspect(const std::string& name) {
    return await<TerminalInfo>(*loop, [&](Callback<TerminalInfo> cb) { local->inspect(name, std::move(cb)); });
  }

  // Removes every terminal the local backend knows, with its data, and checks for leaks.
  void finish() {
    orch.reset();
    if (local) {
      auto all = await<std::vector<TerminalInfo>>(*loop, [&](Callback<std::vector<TerminalInfo>> cb) {
        local->list(std::move(cb));
      });
      REQUIRE(all.has_value());
      for (auto& t : *all) {
        auto s = await<void>(*loop, [&](Callback<void> cb) { local->remove(t.name, true, std::move(cb)); });
        CHECK(s.has_value());
      }
    }
    backend.reset();
    local.reset();
    fake.reset();
    test::run_for(*loop, 50ms);
    check_no_leaks();
  }
};

// The agent's pid, from the local backend's state file.
pid_t agent_pid(const std::string& data_dir, const std::string& name) {
  std::ifstream in(data_dir + "/data/terminals/" + name + ".json");
  std::stringstream text;
  text << in.rdbuf();
  std::smatch m;
  std::string s = text.str();
  if (!std::regex_search(s, m, std::regex("\"pid\"\\s*:\\s*([0-9]+)"))) return 0;
  return static_cast<pid_t>(std::stol(m[1]));
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("orchestrator: 200 parallel acquires of one key provision once and all get the same terminal") {
  Fixture f;
  f.use_local();
  f.make_orchestrator();
  std::vector<std::optional<Result<TerminalInfo>>> got(200);
  for (auto& g : got) f.orch->acquire({"alice"}, [&g](Result<TerminalInfo> r) { g.emplace(std::move(r)); });
  for (auto& g : got) CHECK_FALSE(g.has_value());
  REQUIRE(test::run_until(*f.loop, [&] {
    for (auto& g : got) if (!g) return false;
    return true;
  }, 30s));
  CHECK(f.backend->provisions == 1);
  std::set<std::string> endpoints, keys;
  for (auto& g : got) {
    REQUIRE_MESSAGE(g->has_value(), (*g ? "" : g->error().message));
    CHECK((*g)->state == TerminalState::Running);
    endpoints.insert((*g)->endpoint.to_string());
    keys.insert((*g)->api_key);
  }
  CHECK(endpoints.size() == 1);
  CHECK(keys.size() == 1);
  auto rows = f.orch->list();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].key.user_id == "alice");
  CHECK(rows[0].key.policy_id == "default");
  CHECK(rows[0].key.context_id == "");
  CHECK(rows[0].state == TerminalState::Running);
  CHECK(rows[0].name == f.local->terminal_name("alice", "default", ""));
  // The same key again, and with the context spelled "default": no new provision.
  auto again = f.acquire_ok({"alice", "default", "default"});
  CHECK(again.api_key == *keys.begin());
  CHECK(f.backend->provisions == 1);
  f.finish();
}

TEST_CASE("orchestrator: 100 users at once are all served with at most 8 provisions in flight") {
  Fixture f;
  f.use_local();
  f.options.max_concurrent_provisions = 8;
  f.make_orchestrator();
  std::vector<std::optional<Result<TerminalInfo>>> got(100);
  for (std::size_t i = 0; i < got.size(); ++i) {
    f.orch->acquire({"user-" + std::to_string(i)}, [&got, i](Result<TerminalInfo> r) { got[i].emplace(std::move(r)); });
  }
  REQUIRE(test::run_until(*f.loop, [&] {
    for (auto& g : got) if (!g) return false;
    return true;
  }, 120s));
  std::set<std::string> keys;
  for (auto& g : got) {
    REQUIRE_MESSAGE(g->has_value(), (*g ? "" : g->error().message));
    keys.insert((*g)->api_key);
  }
  CHECK(keys.size() == 100);
  CHECK(f.backend->provisions == 100);
  CHECK(f.backend->max_in_flight == 8);
  CHECK(f.orch->list().size() == 100);
  CHECK(f.stop({"", "", ""}) == 100);
  f.finish();
}

TEST_CASE("orchestrator: a full provision queue answers LimitExceeded with a retry-after") {
  Fixture f;
  f.use_fake();
  f.options.max_concurrent_provisions = 2;
  f.options.max_queued_provisions = 3;
  f.make_orchestrator();
  std::map<std::string, std::optional<Result<TerminalInfo>>> got;
  auto start = [&](const std::string& user, const std::string& tag) {
    f.orch->acquire({user}, [&got, tag](Result<TerminalInfo> r) { got[tag].emplace(std::move(r)); });
    got[tag];  // present, unanswered
  };
  for (int i = 0; i < 5; ++i) start("u" + std::to_string(i), "u" + std::to_string(i));
  test::run_for(*f.loop, 50ms);
  CHECK(f.fake->pending.size() == 2);
  for (int i = 2; i < 5; ++i) CHECK(f.state_of({"u" + std::to_string(i)}) == TerminalState::Provisioning);
  start("u5", "u5");
  start("u0", "u0-again");  // joins the provision in flight: not a new queue slot
  start("u4", "u4-again");  // joins the queued one
  REQUIRE(test::run_until(*f.loop, [&] { return got["u5"].has_value(); }));
  REQUIRE_FALSE(got["u5"]->has_value());
  const Error& error = got["u5"]->error();
  CHECK(error.code == Errc::LimitExceeded);
  CHECK(error.message.find("retry after") != std::string::npos);
  auto retry = retry_after_seconds(error);
  REQUIRE(retry.has_value());
  CHECK(*retry >= 1);
  CHECK(*retry <= 300);
  CHECK_FALSE(f.row({"u5"}).has_value());  // a refused request leaves nothing behind
  // Releasing lets the queue drain two at a time; everyone else is served.
  REQUIRE(test::run_until(*f.loop, [&] {
    f.fake->release();
    for (auto& [tag, g] : got) if (!g) return false;
    return true;
  }));
  for (auto& [tag, g] : got) {
    if (tag == "u5") continue;
    CHECK_MESSAGE(g->has_value(), tag);
  }
  CHECK((*got["u0"])->api_key == (*got["u0-again"])->api_key);
  CHECK(f.fake->provisions == 5);
  CHECK(f.fake->max_in_flight == 2);
  // With room again, u5 is served.
  f.fake->hold = false;
  CHECK(f.acquire({"u5"}).has_value());
  f.finish();
}

TEST_CASE("orchestrator: the idle reaper spares open connections and recent activity") {
  Fixture f;
  f.use_local();
  f.policies["short"] = std::chrono::minutes(5);
  f.policies["never"] = std::chrono::minutes(0);
  f.make_orchestrator();
  TerminalKey a{"a"}, b{"b"}, c{"c"}, d{"d", "short"}, e{"e", "never"};
  for (auto& k : {a, b, c, d, e}) f.acquire_ok(k);
  f.orch->connection_opened(b);
  f.offset += 10min;
  CHECK(f.reap() == 1);  // d: its policy's 5 minutes
  CHECK(f.state_of(d) == TerminalState::Stopped);
  CHECK(f.row(d)->reason.find("without activity") != std::string::npos);
  f.orch->touch(c);
  f.offset += 25min;  // a: 35 min idle; b: connected; c: 25 min; e: never
  CHECK(f.reap() == 1);
  CHECK(f.state_of(a) == TerminalState::Stopped);
  for (auto& k : {b, c, e}) CHECK(f.state_of(k) == TerminalState::Running);
  CHECK(f.row(b)->open_connections == 1);
  // The agents are really stopped (or not).
  CHECK(f.backend_inspect(f.row(a)->name)->state == TerminalState::Stopped);
  CHECK(f.backend_inspect(f.row(b)->name)->state == TerminalState::Running);
  // A WebSocket used for hours keeps its terminal; once closed, the idle time counts from then.
  f.offset += 120min;
  CHECK(f.reap() == 1);  // c
  CHECK(f.state_of(b) == TerminalState::Running);
  f.orch->connection_closed(b);
  f.offset += 29min;
  CHECK(f.reap() == 0);
  f.offset += 2min;
  CHECK(f.reap() == 1);
  CHECK(f.state_of(b) == TerminalState::Stopped);
  CHECK(f.state_of(e) == TerminalState::Running);
  // A reaped terminal comes back on the next acquire.
  f.acquire_ok(a);
  CHECK(f.backend->provisions == 6);
  f.finish();
}

TEST_CASE("orchestrator: the reaper runs on its own every reaper_interval") {
  Fixture f;
  f.use_fake();
  f.fake->hold = false;
  f.options.reaper_interval = 1s;
  f.make_orchestrator();
  f.acquire_ok({"alice"});
  f.acquire_ok({"bob"});
  f.orch->connection_opened({"bob"});
  f.offset += 31min;
  REQUIRE(test::run_until(*f.loop, [&] { return f.state_of({"alice"}) == TerminalState::Stopped; }, 5s));
  CHECK(f.fake->terminals.begin()->second.state == TerminalState::Stopped);  // fake-alice-...
  CHECK(f.state_of({"bob"}) == TerminalState::Running);
  f.orch->connection_closed({"bob"});
  f.finish();
}

TEST_CASE("orchestrator: terminals left running are adopted with their keys by the next orchestrator") {
  Fixture f;
  f.use_local();
  f.make_orchestrator();
  auto first = f.acquire_ok({"alice", "default", "chat:42"});
  // Orchestrator and backend go away (a restart); the agent keeps running.
  f.orch.reset();
  f.backend.reset();
  f.local.reset();
  test::run_for(*f.loop, 20ms);
  f.use_local();
  f.make_orchestrator();
  std::optional<Status> started;
  f.orch->start([&](Status s) { started.emplace(std::move(s)); });
  // An acquire made while adopting waits for it rather than provisioning a second agent.
  auto again = f.acquire_ok({"alice", "default", "chat:42"});
  REQUIRE(started.has_value());
  CHECK(started->has_value());
  CHECK(f.backend->provisions == 0);
  CHECK(again.api_key == first.api_key);
  CHECK(again.endpoint.to_string() == first.endpoint.to_string());
  auto rows = f.orch->list();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].key.user_id == "alice");
  CHECK(rows[0].key.policy_id == "default");
  CHECK(rows[0].key.context_id == "chat:42");
  CHECK(rows[0].state == TerminalState::Running);
  // Adopted terminals are reaped like any other.
  f.offset += 31min;
  CHECK(f.reap() == 1);
  CHECK(f.backend_inspect(first.name)->state == TerminalState::Stopped);
  // start() once only.
  auto twice = await<void>(*f.loop, [&](Callback<void> cb) { f.orch->start(std::move(cb)); });
  CHECK(twice.error().code == Errc::InvalidArgument);
  f.finish();
}

TEST_CASE("orchestrator: stop and refresh affect only what their filters match") {
  Fixture f;
  f.use_local();
  f.policies["other"] = std::nullopt;
  f.make_orchestrator();
  TerminalKey alice{"alice"}, alice_chat{"alice", "default", "chat:1"}, bob{"bob"}, bob_other{"bob", "other"};
  for (auto& k : {alice, alice_chat, bob, bob_other}) f.acquire_ok(k);
  CHECK(f.stop({"alice", "", ""}) == 2);
  CHECK(f.state_of(alice) == TerminalState::Stopped);
  CHECK(f.state_of(alice_chat) == TerminalState::Stopped);
  CHECK(f.state_of(bob) == TerminalState::Running);
  CHECK(f.row(alice)->reason == "stopped by an administrator");
  CHECK(f.stop({"", "other", ""}) == 1);
  CHECK(f.state_of(bob_other) == TerminalState::Stopped);
  CHECK(f.state_of(bob) == TerminalState::Running);
  CHECK(f.stop({"", "", "chat:1"}) == 0);  // already stopped
  // only_idle: bob was active just now.
  CHECK(f.refresh({"", "", ""}, true, false) == 0);
  CHECK(f.state_of(bob) == TerminalState::Running);
  // Reset: gone with its data; the next acquire provisions it fresh.
  std::string bob_name = f.row(bob)->name;
  CHECK(f.refresh({"bob", "default", "default"}, false, true) == 1);
  CHECK_FALSE(f.row(bob).has_value());
  auto gone = f.backend_inspect(bob_name);
  REQUIRE_FALSE(gone.has_value());
  CHECK(gone.error().code == Errc::NotFound);
  int before = f.backend->provisions;
  f.acquire_ok(bob);
  CHECK(f.backend->provisions == before + 1);
  // Idle per the policy's timeout (default 30 min here).
  f.offset += 20min;
  CHECK(f.refresh({"", "", ""}, true, false) == 0);
  f.offset += 11min;
  CHECK(f.refresh({"", "", ""}, true, false) == 1);
  CHECK(f.state_of(bob) == TerminalState::Stopped);
  f.finish();
}

TEST_CASE("orchestrator: shutdown waits for a provision in flight and refuses new acquires") {
  Fixture f;
  f.use_fake();
  f.options.max_concurrent_provisions = 1;
  f.make_orchestrator();
  std::optional<Result<TerminalInfo>> first, queued, late;
  f.orch->acquire({"u0"}, [&](Result<TerminalInfo> r) { first.emplace(std::move(r)); });
  f.orch->acquire({"u1"}, [&](Result<TerminalInfo> r) { queued.emplace(std::move(r)); });
  test::run_for(*f.loop, 20ms);
  REQUIRE(f.fake->pending.size() == 1);
  std::optional<Status> down;
  f.orch->shutdown([&](Status s) { down.emplace(std::move(s)); });
  f.orch->acquire({"u2"}, [&](Result<TerminalInfo> r) { late.emplace(std::move(r)); });
  test::run_for(*f.loop, 100ms);
  CHECK_FALSE(down.has_value());
  CHECK_FALSE(first.has_value());
  REQUIRE(queued.has_value());
  CHECK(queued->error().code == Errc::Cancelled);
  REQUIRE(late.has_value());
  CHECK(late->error().code == Errc::Cancelled);
  f.fake->release();
  REQUIRE(test::run_until(*f.loop, [&] { return down.has_value(); }));
  CHECK(down->has_value());
  REQUIRE(first.has_value());
  CHECK(first->has_value());  // finished, not half-created
  CHECK(f.fake->provisions == 1);
  CHECK(f.fake->terminals.size() == 1);
  CHECK(f.fake->terminals.begin()->second.state == TerminalState::Running);  // left running
  f.finish();
}

TEST_CASE("orchestrator: acquire after a terminal died provisions it again") {
  Fixture f;
  f.use_local();
  f.options.status_ttl = 0ms;
  f.make_orchestrator();
  auto first = f.acquire_ok({"alice"});
  pid_t pid = agent_pid(f.data.path(), first.name);
  REQUIRE(pid > 0);
  REQUIRE(::kill(pid, SIGKILL) == 0);
  test::run_for(*f.loop, 200ms);
  auto second = f.acquire_ok({"alice"});
  CHECK(f.backend->provisions == 2);
  CHECK(agent_pid(f.data.path(), second.name) != pid);
  // The new agent answers.
  auto client = HttpClient::create(*f.loop);
  RequestHead head;
  head.target = "/health";
  head.headers.add("Authorization", "Bearer " + second.api_key);
  auto health = await<FetchResponse>(*f.loop, [&](Callback<FetchResponse> cb) {
    client->fetch(second.endpoint, std::move(head), {}, std::move(cb));
  });
  REQUIRE_MESSAGE(health.has_value(), (health ? "" : health.error().message));
  CHECK(health->head.status == 200);
  client.reset();
  f.finish();
}

TEST_CASE("orchestrator: unknown policies and backend errors propagate with their messages") {
  Fixture f;
  f.use_fake();
  f.fake->hold = false;
  f.make_orchestrator();
  auto unknown = f.acquire({"alice", "nope"});
  REQUIRE_FALSE(unknown.has_value());
  CHECK(unknown.error().code == Errc::NotFound);
  CHECK(unknown.error().message == "no policy named nope");
  CHECK(f.orch->list().empty());
  auto empty = f.acquire({""});
  CHECK(empty.error().code == Errc::InvalidArgument);
  f.fake->fail_next = Error(Errc::BackendUnavailable, "engine down: socket refused");
  auto failed = f.acquire({"alice"});
  REQUIRE_FALSE(failed.has_value());
  CHECK(failed.error().code == Errc::BackendUnavailable);
  CHECK(failed.error().message == "engine down: socket refused");
  CHECK(f.state_of({"alice"}) == TerminalState::Error);
  CHECK(f.row({"alice"})->reason == "engine down: socket refused");
  f.acquire_ok({"alice"});  // tried again
  CHECK(f.fake->provisions == 2);
  CHECK(f.state_of({"alice"}) == TerminalState::Running);
  f.finish();
}

TEST_CASE("orchestrator: destroying it cancels pending acquires later") {
  Fixture f;
  f.use_fake();
  f.make_orchestrator();
  std::optional<Result<TerminalInfo>> got;
  f.orch->acquire({"alice"}, [&](Result<TerminalInfo> r) { got.emplace(std::move(r)); });
  test::run_for(*f.loop, 20ms);
  f.orch.reset();
  CHECK_FALSE(got.has_value());  // not inside the destructor
  REQUIRE(test::run_until(*f.loop, [&] { return got.has_value(); }));
  CHECK(got->error().code == Errc::Cancelled);
  f.fake->release();  // the backend's late answer goes nowhere
  f.finish();
}

TEST_CASE("orchestrator: an acquire that arrives while its terminal stops waits and gets it back") {
  Fixture f;
  f.use_fake();
  f.fake->hold = false;
  f.make_orchestrator();
  auto first = f.acquire_ok({"alice"});
  std::optional<Result<std::size_t>> stopped;
  f.orch->stop({"alice", "", ""}, [&](Result<std::size_t> r) { stopped.emplace(std::move(r)); });
  CHECK(f.state_of({"alice"}) == TerminalState::Stopping);
  // Not handed the terminal being stopped: it waits for the stop, then provisions again.
  auto again = f.acquire_ok({"alice"});
  REQUIRE(stopped.has_value());
  CHECK(stopped->value() == 1);
  CHECK(again.name == first.name);
  CHECK(f.fake->provisions == 2);
  CHECK(f.fake->terminals.begin()->second.state == TerminalState::Running);
  CHECK(f.state_of({"alice"}) == TerminalState::Running);
  f.finish();
}

}  // TEST_SUITE
