// DockerBackend against a real Docker engine and the terminals-agent:dev image (CMake target
// agent-image). Without an engine at /var/run/docker.sock or without the image these tests say
// so loudly and pass nothing off as tested; with CI set (CI always has both) they fail instead.
//
// Every test gets a fresh data directory, so its own instance label: the fixture removes every
// container of that instance, and the foreign containers and images a test registers, even
// when the test fails half-way.

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "curl/multi.hpp"
#include "docker/docker_client.hpp"
#include "docker/docker_names.hpp"
#include "http/url.hpp"
#include "json/json.hpp"
#include "support/loop_runner.hpp"
#include "terminals/docker_backend.hpp"
#include "terminals/http_client.hpp"
#include "terminals/log.hpp"
#include "util/crypto.hpp"

using namespace terminals;
using namespace std::chrono_literals;

namespace {

constexpr const char* kImage = "terminals-agent:dev";

bool in_ci() {
  const char* ci = std::getenv("CI");
  if (!ci || !*ci) return false;
  std::string v(ci);
  return v != "0" && v != "false";
}

// Skips loudly, or fails in CI, where the engine and the image are always present.
#define SKIP_UNLESS(condition, why)                                                  \
  if (!(condition)) {                                                                \
    if (in_ci()) FAIL("CI is set but " << (why));                                    \
    MESSAGE("SKIPPED: " << (why));                                                   \
    return;                                                                          \
  }
#define REQUIRE_DOCKER(f) SKIP_UNLESS((f).why_not.empty(), (f).why_not)

std::string random_suffix() { return detail::random_hex(5).value(); }

std::string user_hash(std::string_view user) { return detail::hash12(user); }

// The Engine API for the tests' own checks, through the library's DockerClient.
struct Engine {
  explicit Engine(Loop& l) : loop(l) {
    multi = detail::CurlMulti::create(l).value();
    client = std::make_unique<detail::DockerClient>(*multi, detail::parse_docker_host("unix:///var/run/docker.sock").value());
  }
  ~Engine() {
    client.reset();
    multi.reset();
  }

  // Never REQUIREs: also used from destructors.
  Result<detail::DockerReply> call(std::string method, std::string path, std::string body = {},
                                   std::chrono::milliseconds timeout = 60s) {
    std::optional<Result<detail::DockerReply>> got;
    client->call(std::move(method), std::move(path), std::move(body),
                 [&](Result<detail::DockerReply> r) { got.emplace(std::move(r)); }, timeout);
    if (!test::run_until(loop, [&] { return got.has_value(); }, timeout + 5s)) {
      return Error(Errc::Timeout, "the test's engine call did not complete");
    }
    return std::move(*got);
  }

  rapidjson::Document json(std::string method, std::string path, std::string body = {}) {
    auto r = call(method, path, std::move(body));
    REQUIRE_MESSAGE(r.has_value(), method << " " << path << ": " << (r ? "" : r.error().message));
    auto doc = detail::parse_json(r->body);
    REQUIRE_MESSAGE(doc.has_value(), method << " " << path << " answered " << r->body);
    return std::move(doc).value();
  }

  rapidjson::Document container(const std::string& name) { return json("GET", "/containers/" + name + "/json"); }
  bool container_exists(const std::string& name) {
    auto r = call("GET", "/containers/" + name + "/json");
    return r.has_value();
  }
  bool image_exists(const std::string& ref) {
    return call("GET", "/images/" + detail::percent_encode(ref, true) + "/json").has_value();
  }

  // Containers (running or not) carrying `label` ("key=value"), or named exactly `name`.
  std::vector<std::string> ids_with(const std::string& filter_key, const std::string& filter_value) {
    std::string filters = detail::JsonWriter()
                              .object()
                              .key(filter_key)
                              .array()
                              .value(filter_value)
                              .end_array()
                              .end_object()
                              .take();
    std::vector<std::string> ids;
    auto r = call("GET", "/containers/json?all=1&filters=" + detail::percent_encode(filters));
    if (!r) return ids;
    auto doc = detail::parse_json(r->body);
    if (!doc || !doc->IsArray()) return ids;
    for (const auto& c : doc->GetArray()) ids.emplace_back(c["Id"].GetString());
    return ids;
  }

  Loop& loop;
  std::unique_ptr<detail::CurlMulti> multi;
  std::unique_ptr<detail::DockerClient> client;
};

struct DockerFixture : test::LoopFixture {
  test::TempDir tmp;  // first member: removed last, after the containers that bind-mount it
  std::string data_dir = tmp.path() + "/data";
  std::string instance = detail::hash12("terminals-instance:" + data_dir);
  std::unique_ptr<Engine> engine = std::make_unique<Engine>(*loop);
  std::string why_not;  // empty when the engine answers and the image is there
  DockerBackendPtr backend;
  HttpClientPtr http = HttpClient::create(*loop);
  std::vector<std::string> foreign_containers;  // removed at the end too
  std::vector<std::string> images;              // image references removed at the end
  std::vector<std::string> volumes;             // named volumes removed at the end

  DockerFixture() {
    auto version = engine->call("GET", "/version", {}, 10s);
    if (!version) {
      why_not = version.error().message;  // names the socket and says to start dockerd
      return;
    }
    if (!engine->image_exists(kImage)) {
      why_not = std::string("the image ") + kImage +
                " is missing; build it with `cmake --build BUILD_DIR --target agent-image`";
      return;
    }
    backend = make_backend(options());
  }

  ~DockerFixture() {
    backend.reset();
    if (why_not.empty()) {
      for (const auto& id : engine->ids_with("label", std::string(detail::kLabelInstance) + "=" + instance)) {
        (void)engine->call("DELETE", "/containers/" + id + "?force=1&v=1");
      }
      for (const auto& name : foreign_containers) (void)engine->call("DELETE", "/containers/" + name + "?force=1&v=1");
      for (const auto& v : volumes) (void)engine->call("DELETE", "/volumes/" + v + "?force=1");
      for (const auto& ref : images) {
        (void)engine->call("DELETE", "/images/" + detail::percent_encode(ref, true) + "?force=1");
      }
    }
    http.reset();
    engine.reset();
    test::run_for(*loop, 20ms);
  }

  DockerBackendOptions options() const {
    DockerBackendOptions o;
    o.data_dir = data_dir;
    o.default_image = kImage;
    o.start_timeout = 20s;
    o.stop_grace = 1s;
    return o;
  }

  DockerBackendPtr make_backend(DockerBackendOptions o) {
    auto b = DockerBackend::create(*loop, std::move(o));
    REQUIRE_MESSAGE(b.has_value(), (b ? "" : b.error().message));
    return std::move(b).value();
  }

  static TerminalSpec spec_for(std::string user) {
    TerminalSpec s;
    s.user_id = std::move(user);
    return s;
  }
  static std::string new_user() { return "dtest user/" + random_suffix(); }

  // `tick` runs at every loop iteration while waiting (progress polling).
  Result<TerminalInfo> provision(const TerminalSpec& spec, Backend* on = nullptr,
                                 const std::function<void()>& tick = {}) {
    Backend& b = on ? *on : *backend;
    std::optional<Result<TerminalInfo>> got;
    b.provision(spec, [&](Result<TerminalInfo> r) { got.emplace(std::move(r)); });
    REQUIRE(test::run_until(*loop, [&] {
      if (tick) tick();
      return got.has_value();
    }, 90s));
    return std::move(*got);
  }

  TerminalInfo provision_ok(const TerminalSpec& spec, Backend* on = nullptr) {
    auto r = provision(spec, on);
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().to_string()));
    CHECK(r->state == TerminalState::Running);
    return std::move(r).value();
  }

  Result<TerminalInfo> inspect(const std::string& name) {
    std::optional<Result<TerminalInfo>> got;
    backend->inspect(name, [&](Result<TerminalInfo> r) { got.emplace(std::move(r)); });
    REQUIRE(test::run_until(*loop, [&] { return got.has_value(); }, 30s));
    return std::move(*got);
  }

  // Polls inspect() until the terminal is no longer running.
  std::optional<TerminalInfo> wait_not_running(const std::string& name) {
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto i = inspect(name);
      if (i && i->state != TerminalState::Running) return std::move(i).value();
      test::run_for(*loop, 50ms);
    }
    FAIL("terminal " << name << " still runs after 30 s");
    return std::nullopt;
  }

  Status stop(const std::string& name) {
    std::optional<Status> got;
    backend->stop(name, [&](Status st) { got.emplace(std::move(st)); });
    REQUIRE(test::run_until(*loop, [&] { return got.has_value(); }, 40s));
    return std::move(*got);
  }

  Status remove(const std::string& name, bool delete_data) {
    std::optional<Status> got;
    backend->remove(name, delete_data, [&](Status st) { got.emplace(std::move(st)); });
    REQUIRE(test::run_until(*loop, [&] { return got.has_value(); }, 40s));
    return std::move(*got);
  }

  std::vector<TerminalInfo> list(Backend* on = nullptr) {
    Backend& b = on ? *on : *backend;
    std::optional<Result<std::vector<TerminalInfo>>> got;
    b.list([&](Result<std::vector<TerminalInfo>> r) { got.emplace(std::move(r)); });
    REQUIRE(test::run_until(*loop, [&] { return got.has_value(); }, 30s));
    REQUIRE_MESSAGE(got->has_value(), (*got ? "" : got->error().message));
    return std::move(*got).value();
  }

  FetchResponse call(const TerminalInfo& t, std::string method, std::string target, std::string body = {},
                     bool auth = true) {
    RequestHead head;
    head.method = std::move(method);
    head.target = std::move(target);
    if (auth) head.headers.add("Authorization", "Bearer " + t.api_key);
    if (!body.empty()) head.headers.add("Content-Type", "application/json");
    std::string head_line = head.method + " " + head.target;
    std::optional<Result<FetchResponse>> got;
    http->fetch(t.endpoint, std::move(head), std::move(body), [&](Result<FetchResponse> r) { got.emplace(std::move(r)); });
    REQUIRE(test::run_until(*loop, [&] { return got.has_value(); }, 40s));
    REQUIRE_MESSAGE(got->has_value(), head_line << " on " << t.name << " at " << t.endpoint.to_string() << ": "
                                                 << (*got ? "" : got->error().to_string()));
    return std::move(*got).value();
  }

  // Runs a shell command in the terminal: its output and exit code.
  std::pair<std::string, int> run(const TerminalInfo& t, const std::string& command) {
    std::string body = detail::JsonWriter().object().field("command", command).end_object().take();
    auto r = call(t, "POST", "/execute?wait=30", body);
    REQUIRE_MESSAGE(r.head.status == 200, r.body);
    auto doc = detail::parse_json(r.body);
    REQUIRE(doc.has_value());
    std::string out;
    for (const auto& e : (*doc)["output"].GetArray()) out += e["data"].GetString();
    // Commands run on a pty: lines end in CR LF.
    std::erase(out, '\r');
    int code = (*doc)["exit_code"].IsInt() ? (*doc)["exit_code"].GetInt() : -1000;
    return {out, code};
  }

  // terminals-agent:dev with Dockerfile-style `changes`, as terminals-agent:<tag>; removed at the end.
  std::string variant(const std::string& changes) {
    std::string tag = "variant-" + random_suffix();
    auto scratch = engine->json("POST", "/containers/create", std::string("{\"Image\":\"") + kImage + "\"}");
    std::string scratch_id = scratch["Id"].GetString();
    foreign_containers.push_back(scratch_id);
    std::string ref = "terminals-agent:" + tag;
    images.push_back(ref);
    auto r = engine->call("POST", "/commit?container=" + scratch_id + "&repo=terminals-agent&tag=" + tag +
                                      "&changes=" + detail::percent_encode(changes));
    REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().message));
    return ref;
  }

  std::string home_of(const std::string& user) const { return data_dir + "/homes/" + user_hash(user); }
};

bool has_string(const rapidjson::Value& array, std::string_view s) {
  if (!array.IsArray()) return false;
  for (const auto& v : array.GetArray()) {
    if (v.IsString() && std::string_view(v.GetString()) == s) return true;
  }
  return false;
}

std::string label_of(const rapidjson::Value& container, const char* key) {
  const auto& labels = container["Config"]["Labels"];
  auto it = labels.FindMember(key);
  return it == labels.MemberEnd() ? std::string() : std::string(it->value.GetString());
}

// A free TCP port on loopback (bound, read, released).
std::uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A Docker registry (Debian's docker-registry) on loopback, stopped with the test.
struct Registry {
  pid_t pid = -1;
  std::uint16_t port = 0;
  std::string log;

  static constexpr const char* kBinary = "/usr/bin/docker-registry";

  void start(const std::string& dir) {
    port = free_port();
    std::string config = dir + "/registry.yml";
    std::ofstream(config) << "version: 0.1\n"
                             "log:\n  level: warn\n"
                             "storage:\n  filesystem:\n    rootdirectory: " << dir << "/store\n"
                             "http:\n  addr: 127.0.0.1:" << port << "\n";
    log = dir + "/registry.log";
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execl(kBinary, kBinary, "serve", config.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }

  ~Registry() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_SUITE("docker") {

TEST_CASE("docker backend: provision gives a running terminal on a unix socket with a working home") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string user = f.new_user();
  auto t = f.provision_ok(f.spec_for(user));
  CHECK(t.name == "terminals-" + user_hash(user));
  CHECK(t.user_id == user);
  CHECK(t.policy_id == "default");
  CHECK(t.context_id.empty());
  CHECK(t.endpoint.kind == Endpoint::Kind::Unix);
  CHECK(t.endpoint.path == f.data_dir + "/run/" + t.name + "/agent.sock");
  CHECK(t.api_key.size() >= 32);
  CHECK(f.backend->kind() == "docker");
  CHECK(f.backend->engine_description().find("API 1.") != std::string::npos);

  auto cwd = f.call(t, "GET", "/files/cwd");
  CHECK(cwd.head.status == 200);
  CHECK(cwd.body.find("/home/user") != std::string::npos);
  // The key is required.
  CHECK(f.call(t, "GET", "/files/cwd", {}, false).head.status == 401);

  auto [out, code] = f.run(t, "echo hi > f; id -u");
  CHECK(code == 0);
  CHECK(out == "1000\n");
  std::string file = f.home_of(user) + "/f";
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK(st.st_uid == 1000);
  CHECK(st.st_gid == 1000);
  CHECK(read_file(file) == "hi\n");
  struct stat home {};
  REQUIRE(::stat(f.home_of(user).c_str(), &home) == 0);
  CHECK(home.st_uid == 1000);
  CHECK((home.st_mode & 0777) == 0700);

  // inspect agrees; provision again is the same terminal.
  auto again = f.inspect(t.name);
  REQUIRE(again.has_value());
  CHECK(again->state == TerminalState::Running);
  CHECK(again->api_key == t.api_key);
  CHECK(again->endpoint == t.endpoint);
  CHECK(again->user_id == user);
}

TEST_CASE("docker backend: limits and hardening show in the container and the memory limit bites") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string user = f.new_user();
  auto spec = f.spec_for(user);
  spec.limits.memory_bytes = 64ull << 20;
  spec.limits.cpus = 0.5;
  spec.limits.pids = 40;
  spec.limits.open_files = 256;
  auto t = f.provision_ok(spec);

  auto c = f.engine->container(t.name);
  const auto& hc = c["HostConfig"];
  CHECK(hc["Memory"].GetInt64() == 67108864);
  CHECK(hc["MemorySwap"].GetInt64() == 67108864);
  CHECK(hc["NanoCpus"].GetInt64() == 500000000);
  CHECK(hc["PidsLimit"].GetInt64() == 40);
  CHECK(has_string(hc["CapDrop"], "ALL"));
  CHECK(hc["CapDrop"].Size() == 1);
  CHECK(has_string(hc["SecurityOpt"], "no-new-privileges"));
  CHECK(hc["Init"].IsBool());
  CHECK(hc["Init"].GetBool());
  CHECK(std::string(hc["NetworkMode"].GetString()) == "none");
  CHECK(std::string(hc["RestartPolicy"]["Name"].GetString()) == "no");
  REQUIRE(hc["Ulimits"].IsArray());
  REQUIRE(hc["Ulimits"].Size() == 1);
  CHECK(std::string(hc["Ulimits"][0]["Name"].GetString()) == "nofile");
  CHECK(hc["Ulimits"][0]["Soft"].GetInt64() == 256);
  CHECK(hc["Ulimits"][0]["Hard"].GetInt64() == 256);

  CHECK(label_of(c, "app.kubernetes.io/managed-by") == "terminals");
  CHECK(label_of(c, "openwebui.com/user-id") == user);
  CHECK(label_of(c, "io.libterminals.instance") == f.instance);
  CHECK(label_of(c, "io.libterminals.user-hash") == user_hash(user));
  CHECK(label_of(c, "io.libterminals.endpoint") == "unix");
  CHECK(has_string(c["Config"]["Env"], "OPEN_TERMINAL_API_KEY=" + t.api_key));
  CHECK(has_string(c["Config"]["Env"], "TERMINALS_AGENT_LISTEN=unix:/run/terminal/agent.sock"));

  // Seen from inside.
  auto [limits, code] = f.run(t, "ulimit -n; cat /proc/self/status | grep NoNewPrivs; "
                                 "grep CapEff /proc/self/status; ls /sys/class/net");
  CHECK(code == 0);
  CHECK_MESSAGE(limits.find("256\n") == 0, limits);
  CHECK(limits.find("NoNewPrivs:\t1") != std::string::npos);
  CHECK(limits.find("CapEff:\t0000000000000000") != std::string::npos);
  CHECK(limits.find("eth0") == std::string::npos);  // --network none: loopback only

  // 200 MB held in memory under a 64 MiB limit (no swap): the kernel kills it, the agent lives.
  auto [oom, oom_code] = f.run(t, "head -c 200000000 /dev/zero | tail > /dev/null; echo status=$?");
  CHECK(oom.find("status=137") != std::string::npos);
  CHECK(f.call(t, "GET", "/health", {}, false).head.status == 200);
  auto after = f.inspect(t.name);
  REQUIRE(after.has_value());
  CHECK(after->state == TerminalState::Running);
}

TEST_CASE("docker backend: an agent killed for memory is reported stopped with the reason and the limit") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  auto spec = f.spec_for(f.new_user());
  spec.limits.memory_bytes = 64ull << 20;
  auto t = f.provision_ok(spec);
  // The agent volunteers as the OOM killer's first choice (raising one's own score needs no
  // privilege), then the same 200 MB goes over the limit: the agent dies, the container exits.
  std::string body = detail::JsonWriter()
                         .object()
                         .field("command",
                                "echo 1000 > /proc/$(pidof terminals-agent)/oom_score_adj && "
                                "head -c 200000000 /dev/zero | tail > /dev/null")
                         .end_object()
                         .take();
  RequestHead head;
  head.method = "POST";
  head.target = "/execute?wait=30";
  head.headers.add("Authorization", "Bearer " + t.api_key);
  head.headers.add("Content-Type", "application/json");
  bool answered = false;  // with an error, most likely: the agent dies mid-request
  f.http->fetch(t.endpoint, std::move(head), std::move(body), [&](Result<FetchResponse>) { answered = true; });
  auto seen = f.wait_not_running(t.name);
  CHECK(seen->state == TerminalState::Stopped);
  CHECK_MESSAGE(seen->reason.find("out of memory") != std::string::npos, seen->reason);
  CHECK_MESSAGE(seen->reason.find("64 MiB") != std::string::npos, seen->reason);
  CHECK(f.engine->container(t.name)["State"]["OOMKilled"].GetBool());
  test::run_until(*f.loop, [&] { return answered; }, 10s);
}

TEST_CASE("docker backend: a new backend on the same data directory adopts the running container") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string user = f.new_user();
  auto t = f.provision_ok(f.spec_for(user));
  std::string id = f.engine->container(t.name)["Id"].GetString();

  f.backend.reset();  // leaves the terminal running
  test::run_for(*f.loop, 20ms);
  CHECK(f.engine->container(t.name)["State"]["Running"].GetBool());

  f.backend = f.make_backend(f.options());
  auto listed = f.list();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].name == t.name);
  CHECK(listed[0].state == TerminalState::Running);
  CHECK(listed[0].api_key == t.api_key);
  CHECK(listed[0].endpoint == t.endpoint);
  CHECK(listed[0].user_id == user);
  CHECK(listed[0].policy_id == "default");

  auto again = f.provision_ok(f.spec_for(user));
  CHECK(again.api_key == t.api_key);
  CHECK(again.endpoint == t.endpoint);
  CHECK(std::string(f.engine->container(t.name)["Id"].GetString()) == id);
  CHECK(f.engine->ids_with("label", std::string(detail::kLabelInstance) + "=" + f.instance).size() == 1);
  CHECK(f.engine->ids_with("name", "^/" + t.name + "$").size() == 1);
  CHECK(f.call(again, "GET", "/files/cwd").head.status == 200);
}

TEST_CASE("docker backend: a container killed from outside is reported stopped and replaced, the home kept") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string user = f.new_user();
  auto t = f.provision_ok(f.spec_for(user));
  std::string id = f.engine->container(t.name)["Id"].GetString();
  CHECK(f.run(t, "echo kept > notes.txt").second == 0);

  REQUIRE(f.engine->call("POST", "/containers/" + t.name + "/kill").has_value());
  auto seen = f.wait_not_running(t.name);
  CHECK(seen->state == TerminalState::Stopped);
  CHECK_MESSAGE(!seen->reason.empty(), "no reason given");
  CHECK_MESSAGE(seen->reason.find("137") != std::string::npos, seen->reason);

  auto again = f.provision_ok(f.spec_for(user));
  std::string new_id = f.engine->container(t.name)["Id"].GetString();
  CHECK(new_id != id);
  CHECK(again.api_key != t.api_key);  // a fresh container, a fresh key
  auto [out, code] = f.run(again, "cat notes.txt");
  CHECK(code == 0);
  CHECK(out == "kept\n");
  CHECK(f.engine->ids_with("label", std::string(detail::kLabelInstance) + "=" + f.instance).size() == 1);
}

TEST_CASE("docker backend: list() removes a half-created container and keeps the running ones") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string running_user = f.new_user();
  auto running = f.provision_ok(f.spec_for(running_user));

  std::string user = f.new_user();
  std::string name = f.backend->terminal_name(user, "default", "");
  detail::JsonWriter w;
  w.object().field("Image", kImage).key("Labels").object();
  for (const auto& [k, v] : detail::terminal_labels(f.instance, user, "default", "", "unix")) w.field(k, v);
  w.end_object().end_object();
  REQUIRE(f.engine->call("POST", "/containers/create?name=" + name, w.take()).has_value());
  REQUIRE(f.engine->container(name)["State"]["Status"].GetString() == std::string("created"));

  auto listed = f.list();
  std::set<std::string> names;
  for (const auto& t : listed) names.insert(t.name);
  CHECK(names.count(name) == 0);
  CHECK(names.count(running.name) == 1);
  // Gone by the time list() answers, so a provision right after it does not race the removal.
  CHECK_FALSE(f.engine->container_exists(name));
  auto t = f.provision_ok(f.spec_for(user));
  CHECK(t.name == name);
  CHECK(f.engine->container(running.name)["State"]["Running"].GetBool());
}

TEST_CASE("docker backend: a foreign container under the terminal's name is refused and left alone") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string user = f.new_user();
  std::string name = f.backend->terminal_name(user, "default", "");
  f.foreign_containers.push_back(name);
  auto created = f.engine->json("POST", "/containers/create?name=" + name,
                                std::string("{\"Image\":\"") + kImage + "\",\"Cmd\":[\"/bin/sleep\",\"600\"]}");
  std::string id = created["Id"].GetString();

  auto r = f.provision(f.spec_for(user));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::AlreadyExists);
  CHECK_MESSAGE(r.error().message.find(name) != std::string::npos, r.error().message);
  CHECK_MESSAGE(r.error().message.find("not created by terminals") != std::string::npos, r.error().message);

  auto c = f.engine->container(name);
  CHECK(std::string(c["Id"].GetString()) == id);
  CHECK(std::string(c["State"]["Status"].GetString()) == "created");
  // Not ours: list() neither reports nor removes it, inspect() does not know it.
  CHECK(f.list().empty());
  CHECK(f.engine->container_exists(name));
  auto i = f.inspect(name);
  REQUIRE_FALSE(i.has_value());
  CHECK(i.error().code == Errc::NotFound);
  // Nor stop() or remove(): a started foreign container keeps running.
  REQUIRE(f.engine->call("POST", "/containers/" + name + "/start").has_value());
  auto stopped = f.stop(name);
  REQUIRE_FALSE(stopped.has_value());
  CHECK(stopped.error().code == Errc::NotFound);
  auto removed = f.remove(name, true);
  REQUIRE_FALSE(removed.has_value());
  CHECK(removed.error().code == Errc::NotFound);
  CHECK(f.engine->container(name)["State"]["Running"].GetBool());
}

TEST_CASE("docker backend: an image without the agent-listen label is reached on a loopback port") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  // terminals-agent:dev with an empty agent-listen label: the agent serves tcp 0.0.0.0:8000 as
  // the real Open Terminal image does.
  std::string ref = f.variant("LABEL io.libterminals.agent-listen=");
  auto image = f.engine->json("GET", "/images/" + detail::percent_encode(ref, true) + "/json");
  REQUIRE(image["Config"]["Labels"].HasMember("io.libterminals.agent-listen"));
  CHECK(std::string(image["Config"]["Labels"]["io.libterminals.agent-listen"].GetString()).empty());

  std::string user = f.new_user();
  auto spec = f.spec_for(user);
  spec.image = ref;
  // The policy's network "none" (the default) cannot hold on a bridge: the log says so.
  std::vector<std::string> warnings;
  set_log_sink([&](LogLevel level, std::string_view, std::string_view m) {
    if (level == LogLevel::Warning) warnings.emplace_back(m);
  });
  auto t = f.provision_ok(spec);
  set_log_sink({});
  CHECK(std::any_of(warnings.begin(), warnings.end(), [&](const std::string& w) {
    return w.find(t.name) != std::string::npos && w.find("network none") != std::string::npos &&
           w.find("outbound") != std::string::npos;
  }));
  CHECK(t.endpoint.kind == Endpoint::Kind::Tcp);
  CHECK(t.endpoint.host == "127.0.0.1");
  CHECK(t.endpoint.port != 0);
  CHECK(f.call(t, "GET", "/health", {}, false).head.status == 200);
  auto cwd = f.call(t, "GET", "/files/cwd");
  CHECK(cwd.head.status == 200);
  CHECK(cwd.body.find("/home/user") != std::string::npos);

  auto c = f.engine->container(t.name);
  CHECK(label_of(c, "io.libterminals.endpoint") == "port");
  CHECK_FALSE(has_string(c["Config"]["Env"], "TERMINALS_AGENT_LISTEN=unix:/run/terminal/agent.sock"));
  // Published on 127.0.0.1 only: no 0.0.0.0 or :: binding carries traffic.
  const auto& bindings = c["HostConfig"]["PortBindings"]["8000/tcp"];
  REQUIRE(bindings.IsArray());
  REQUIRE(bindings.Size() >= 1);
  for (const auto& b : bindings.GetArray()) CHECK(std::string(b["HostIp"].GetString()) == "127.0.0.1");
  const auto& ports = c["NetworkSettings"]["Ports"]["8000/tcp"];
  REQUIRE(ports.IsArray());
  for (const auto& p : ports.GetArray()) {
    CHECK(std::string(p["HostIp"].GetString()) == "127.0.0.1");
    CHECK(std::string(p["HostPort"].GetString()) == std::to_string(t.endpoint.port));
  }
  // Adoption works for port terminals too (the endpoint comes from the engine).
  auto listed = f.list();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].endpoint == t.endpoint);
}

TEST_CASE("docker backend: an unreachable engine fails fast with BackendUnavailable and how to fix it") {
  // Needs no engine.
  test::LoopFixture l;
  test::TempDir tmp;
  std::string socket = "/tmp/dtests-nonexistent-" + random_suffix() + ".sock";
  DockerBackendOptions o;
  o.data_dir = tmp.path() + "/data";
  o.default_image = kImage;
  o.docker_host = "unix://" + socket;
  auto b = DockerBackend::create(*l.loop, o);
  REQUIRE_MESSAGE(b.has_value(), (b ? "" : b.error().message));
  CHECK((*b)->engine_description().find(socket) != std::string::npos);

  auto started = std::chrono::steady_clock::now();
  std::optional<Result<TerminalInfo>> got;
  TerminalSpec spec;
  spec.user_id = "someone";
  (*b)->provision(spec, [&](Result<TerminalInfo> r) { got.emplace(std::move(r)); });
  REQUIRE(test::run_until(*l.loop, [&] { return got.has_value(); }, 10s));
  CHECK(std::chrono::steady_clock::now() - started < 3s);
  REQUIRE_FALSE(got->has_value());
  const Error& e = got->error();
  CHECK(e.code == Errc::BackendUnavailable);
  CHECK_MESSAGE(e.message.find(socket) != std::string::npos, e.message);
  CHECK_MESSAGE(e.message.find("DOCKER_HOST") != std::string::npos, e.message);
  CHECK_MESSAGE(e.message.find("dockerd") != std::string::npos, e.message);

  // list() and inspect() say the same.
  std::optional<Result<std::vector<TerminalInfo>>> listed;
  (*b)->list([&](Result<std::vector<TerminalInfo>> r) { listed.emplace(std::move(r)); });
  REQUIRE(test::run_until(*l.loop, [&] { return listed.has_value(); }, 10s));
  REQUIRE_FALSE(listed->has_value());
  CHECK(listed->error().code == Errc::BackendUnavailable);
  b->reset();
  test::run_for(*l.loop, 20ms);
}

TEST_CASE("docker backend: allowed_images refuses an image before anything is created") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  auto o = f.options();
  o.allowed_images = {"ghcr.io/*"};
  f.backend = f.make_backend(o);
  std::string user = f.new_user();
  auto r = f.provision(f.spec_for(user));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::PolicyDenied);
  CHECK_MESSAGE(r.error().message.find(kImage) != std::string::npos, r.error().message);
  CHECK_FALSE(f.engine->container_exists(f.backend->terminal_name(user, "default", "")));
  CHECK_FALSE(std::filesystem::exists(f.home_of(user)));
  // An allowed one still works, spelled explicitly in the spec.
  auto allowed = f.options();
  allowed.allowed_images = {"ghcr.io/*", "terminals-agent:*"};
  f.backend = f.make_backend(allowed);
  f.provision_ok(f.spec_for(user));
}

TEST_CASE("docker backend: an image's capabilities label is honoured only within the permitted set") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  // Within Docker's default set, in any spelling: kept, and nothing else.
  auto modest = f.variant("LABEL io.libterminals.capabilities=\"cap_chown, KILL\"");
  std::string user = f.new_user();
  auto spec = f.spec_for(user);
  spec.image = modest;
  auto t = f.provision_ok(spec);
  auto container = f.engine->container(t.name);
  const auto& caps = container["HostConfig"]["CapAdd"];
  REQUIRE(caps.IsArray());
  CHECK(caps.Size() == 2);
  CHECK(has_string(caps, "CHOWN"));
  CHECK(has_string(caps, "KILL"));

  // SYS_ADMIN (or anything outside the set) is refused before anything is created, saying
  // which capability, which label and which setting.
  for (const char* asked : {"CHOWN,cap_sys_admin", "sys_ptrace", "NET-ADMIN"}) {
    CAPTURE(asked);
    auto greedy = f.variant(std::string("LABEL io.libterminals.capabilities=\"") + asked + "\"");
    std::string other = f.new_user();
    auto s = f.spec_for(other);
    s.image = greedy;
    auto r = f.provision(s);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Errc::PolicyDenied);
    CHECK_MESSAGE(r.error().message.find("io.libterminals.capabilities") != std::string::npos, r.error().message);
    CHECK_MESSAGE(r.error().message.find("TERMINALS_DOCKER_IMAGE_CAPABILITIES") != std::string::npos,
                  r.error().message);
    CHECK_FALSE(f.engine->container_exists(f.backend->terminal_name(other, "default", "")));
    CHECK_FALSE(std::filesystem::exists(f.home_of(other)));
  }

  // The operator may permit more; then the container gets it.
  auto o = f.options();
  o.image_capabilities = {"SYS_PTRACE"};
  f.backend = f.make_backend(o);
  auto tracer = f.variant("LABEL io.libterminals.capabilities=SYS_PTRACE");
  auto s = f.spec_for(f.new_user());
  s.image = tracer;
  auto traced = f.provision_ok(s);
  auto traced_container = f.engine->container(traced.name);
  const auto& granted = traced_container["HostConfig"]["CapAdd"];
  REQUIRE(granted.IsArray());
  CHECK(has_string(granted, "SYS_PTRACE"));
}

TEST_CASE("docker backend: a missing image is pulled from a registry with progress reported") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  SKIP_UNLESS(::access(Registry::kBinary, X_OK) == 0,
              "docker-registry is not installed (apt-get install docker-registry)");
  SKIP_UNLESS(std::system("docker version >/dev/null 2>&1") == 0, "the docker CLI is missing or cannot reach the engine");

  Registry registry;
  registry.start(f.tmp.path());
  // Ready when /v2/ answers.
  Endpoint reg = Endpoint::tcp("127.0.0.1", registry.port);
  bool up = test::run_until(*f.loop, [&] {
    RequestHead head;
    head.method = "GET";
    head.target = "/v2/";
    std::optional<Result<FetchResponse>> got;
    f.http->fetch(reg, head, {}, [&](Result<FetchResponse> r) { got.emplace(std::move(r)); });
    test::run_until(*f.loop, [&] { return got.has_value(); }, 2s);
    if (got && *got && (*got)->head.status == 200) return true;
    test::run_for(*f.loop, 50ms);
    return false;
  }, 20s);
  REQUIRE_MESSAGE(up, "docker-registry did not start: " << read_file(registry.log));

  std::string ref = "127.0.0.1:" + std::to_string(registry.port) + "/terminals-agent:pull-" + random_suffix();
  f.images.push_back(ref);
  REQUIRE(std::system(("docker tag " + std::string(kImage) + " " + ref).c_str()) == 0);
  REQUIRE_MESSAGE(std::system(("docker push " + ref + " >/dev/null").c_str()) == 0, "docker push " << ref);
  REQUIRE(f.engine->call("DELETE", "/images/" + detail::percent_encode(ref, true)).has_value());
  REQUIRE_FALSE(f.engine->image_exists(ref));

  std::string user = f.new_user();
  auto spec = f.spec_for(user);
  spec.image = ref;
  std::string name = f.backend->terminal_name(user, "default", "");
  std::set<std::string> progress;
  auto r = f.provision(spec, nullptr, [&] {
    if (auto p = f.backend->progress(name); !p.empty()) progress.insert(p);
  });
  REQUIRE_MESSAGE(r.has_value(), (r ? "" : r.error().to_string()));
  CHECK(r->state == TerminalState::Running);
  CHECK(f.engine->image_exists(ref));
  bool saw_pull = false;
  for (const auto& p : progress) saw_pull = saw_pull || p.find("pulling image " + ref) == 0;
  CHECK_MESSAGE(saw_pull, "progress seen: " << progress.size() << " distinct texts");
  CHECK(f.backend->progress(name).empty());  // nothing to say once it runs
  CHECK(f.call(*r, "GET", "/files/cwd").head.status == 200);
}

TEST_CASE("docker backend: two provisions at once share one start and one container") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string user = f.new_user();
  std::optional<Result<TerminalInfo>> a, b;
  f.backend->provision(f.spec_for(user), [&](Result<TerminalInfo> r) { a.emplace(std::move(r)); });
  f.backend->provision(f.spec_for(user), [&](Result<TerminalInfo> r) { b.emplace(std::move(r)); });
  REQUIRE(test::run_until(*f.loop, [&] { return a && b; }, 60s));
  REQUIRE_MESSAGE(a->has_value(), (*a ? "" : a->error().message));
  REQUIRE_MESSAGE(b->has_value(), (*b ? "" : b->error().message));
  CHECK((*a)->api_key == (*b)->api_key);
  CHECK((*a)->endpoint == (*b)->endpoint);
  CHECK(f.engine->ids_with("label", std::string(detail::kLabelInstance) + "=" + f.instance).size() == 1);
}

TEST_CASE("docker backend: stop keeps the home, remove with data removes container, home and socket dir") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string user = f.new_user();
  auto t = f.provision_ok(f.spec_for(user));
  CHECK(f.run(t, "echo 1 > one").second == 0);
  auto stopped = f.stop(t.name);
  REQUIRE_MESSAGE(stopped.has_value(), (stopped ? "" : stopped.error().message));
  auto i = f.inspect(t.name);
  REQUIRE(i.has_value());
  CHECK(i->state == TerminalState::Stopped);
  CHECK_FALSE(i->reason.empty());
  CHECK(std::filesystem::exists(f.home_of(user) + "/one"));
  // Stopping a stopped one is fine.
  CHECK(f.stop(t.name).has_value());

  auto again = f.provision_ok(f.spec_for(user));
  CHECK(f.run(again, "cat one").first == "1\n");

  auto removed = f.remove(t.name, true);
  REQUIRE_MESSAGE(removed.has_value(), (removed ? "" : removed.error().message));
  CHECK_FALSE(f.engine->container_exists(t.name));
  CHECK_FALSE(std::filesystem::exists(f.home_of(user)));
  CHECK_FALSE(std::filesystem::exists(f.data_dir + "/run/" + t.name));
  auto gone = f.inspect(t.name);
  REQUIRE_FALSE(gone.has_value());
  CHECK(gone.error().code == Errc::NotFound);
  auto twice = f.remove(t.name, true);
  REQUIRE_FALSE(twice.has_value());
  CHECK(twice.error().code == Errc::NotFound);
  auto stop_gone = f.stop(t.name);
  REQUIRE_FALSE(stop_gone.has_value());
  CHECK(stop_gone.error().code == Errc::NotFound);

  // Without delete_data the home stays.
  auto third = f.provision_ok(f.spec_for(user));
  CHECK(f.run(third, "echo 2 > two").second == 0);
  CHECK(f.remove(third.name, false).has_value());
  CHECK_FALSE(f.engine->container_exists(third.name));
  CHECK(std::filesystem::exists(f.home_of(user) + "/two"));
}

TEST_CASE("docker backend: policy and context get their own container, home and labels / the key cannot be overridden") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string user = f.new_user();
  auto spec = f.spec_for(user);
  spec.policy_id = "Team A";
  spec.context_id = "chat:1";
  spec.env["OPEN_TERMINAL_API_KEY"] = "chosen-by-the-policy";
  spec.env["TERMINALS_AGENT_LISTEN"] = "tcp://0.0.0.0:9";
  spec.env["GREETING"] = "hello there";
  auto t = f.provision_ok(spec);
  CHECK(t.name == detail::container_name("terminals", user, "Team A", "chat:1"));
  CHECK(t.policy_id == "Team A");
  CHECK(t.context_id == "chat:1");
  CHECK(t.api_key != "chosen-by-the-policy");
  auto c = f.engine->container(t.name);
  CHECK(label_of(c, "openwebui.com/policy") == "Team A");
  CHECK(label_of(c, "openwebui.com/context-id") == "chat:1");
  CHECK(label_of(c, "openwebui.com/context-type") == "chat");
  CHECK(has_string(c["Config"]["Env"], "GREETING=hello there"));
  CHECK_FALSE(has_string(c["Config"]["Env"], "OPEN_TERMINAL_API_KEY=chosen-by-the-policy"));

  auto [out, code] = f.run(t, "echo $GREETING; echo ctx > where");
  CHECK(code == 0);
  CHECK(out == "hello there\n");
  CHECK(std::filesystem::exists(f.home_of(user) + "/contexts/" + detail::hash12("chat:1") + "/where"));

  // The default terminal of the same user is another container with another key.
  auto d = f.provision_ok(f.spec_for(user));
  CHECK(d.name != t.name);
  CHECK(d.api_key != t.api_key);
  CHECK(f.run(d, "ls where 2>&1; true").first.find("No such file") != std::string::npos);
  // inspect and list report the ids back.
  auto listed = f.list();
  CHECK(listed.size() == 2);
  for (const auto& l : listed) {
    if (l.name != t.name) continue;
    CHECK(l.policy_id == "Team A");
    CHECK(l.context_id == "chat:1");
    CHECK(l.user_id == user);
  }
}

TEST_CASE("docker backend: a volume home persists across replacement and goes with remove(delete_data)") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  auto o = f.options();
  o.home = DockerHome::Volume;
  f.backend = f.make_backend(o);
  std::string user = f.new_user();
  std::string name = f.backend->terminal_name(user, "default", "");
  f.volumes.push_back(name + "-home");
  auto t = f.provision_ok(f.spec_for(user));
  auto [out, code] = f.run(t, "pwd; echo v > in-volume; id -u");
  CHECK(code == 0);
  CHECK(out == "/home/user\n1000\n");
  CHECK_FALSE(std::filesystem::exists(f.home_of(user)));  // nothing bound from the data dir
  auto vol = f.engine->json("GET", "/volumes/" + name + "-home");
  CHECK(std::string(vol["Name"].GetString()) == name + "-home");

  REQUIRE(f.engine->call("POST", "/containers/" + name + "/kill").has_value());
  (void)f.wait_not_running(name);
  auto again = f.provision_ok(f.spec_for(user));
  CHECK(f.run(again, "cat in-volume").first == "v\n");

  CHECK(f.remove(name, true).has_value());
  CHECK_FALSE(f.engine->call("GET", "/volumes/" + name + "-home").has_value());
}

TEST_CASE("docker backend: a read-only root leaves the home and a tmpfs /tmp writable") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  auto o = f.options();
  o.read_only_root = true;
  o.tmp_bytes = 8ull << 20;
  f.backend = f.make_backend(o);
  auto t = f.provision_ok(f.spec_for(f.new_user()));
  auto c = f.engine->container(t.name);
  CHECK(c["HostConfig"]["ReadonlyRootfs"].GetBool());
  auto [out, code] = f.run(t, "echo x > /etc/x 2>/dev/null && echo root-writable; echo y > /tmp/y && echo tmp-ok; "
                              "echo z > z && echo home-ok; df -k /tmp | tail -1");
  CHECK(out.find("root-writable") == std::string::npos);
  CHECK(out.find("tmp-ok") != std::string::npos);
  CHECK(out.find("home-ok") != std::string::npos);
  CHECK_MESSAGE(out.find(" 8192 ") != std::string::npos, out);
}

TEST_CASE("docker backend: an agent that never answers times out, one that crashes fails with its log / neither is left behind") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  auto o = f.options();
  o.start_timeout = 2s;
  f.backend = f.make_backend(o);
  auto instance_containers = [&] {
    return f.engine->ids_with("label", std::string(detail::kLabelInstance) + "=" + f.instance).size();
  };

  auto silent = f.spec_for(f.new_user());
  silent.image = f.variant(R"(CMD ["/bin/sleep", "600"])");
  auto started = std::chrono::steady_clock::now();
  auto r = f.provision(silent);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::Timeout);
  CHECK_MESSAGE(r.error().message.find("did not answer") != std::string::npos, r.error().message);
  CHECK(std::chrono::steady_clock::now() - started < 10s);
  CHECK(instance_containers() == 0);

  auto crashing = f.spec_for(f.new_user());
  crashing.image = f.variant(R"(CMD ["/bin/sh", "-c", "echo boom-from-the-agent >&2; exit 3"])");
  auto c = f.provision(crashing);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error().code == Errc::BackendUnavailable);
  CHECK_MESSAGE(c.error().message.find("exited with code 3") != std::string::npos, c.error().message);
  CHECK_MESSAGE(c.error().message.find("boom-from-the-agent") != std::string::npos, c.error().message);
  CHECK(instance_containers() == 0);
  CHECK(f.list().empty());
}

TEST_CASE("docker backend: an image that cannot be pulled fails with the engine's reason, and pulling can be off") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string user = f.new_user();
  auto spec = f.spec_for(user);
  // A registry address nothing listens on.
  spec.image = "127.0.0.1:" + std::to_string(free_port()) + "/nothing-here:" + random_suffix();
  auto r = f.provision(spec);
  REQUIRE_FALSE(r.has_value());
  CHECK_MESSAGE(r.error().message.find(spec.image) != std::string::npos, r.error().message);
  CHECK_MESSAGE(r.error().message.find("pull") != std::string::npos, r.error().message);
  CHECK_FALSE(f.engine->container_exists(f.backend->terminal_name(user, "default", "")));
  CHECK(f.backend->progress(f.backend->terminal_name(user, "default", "")).empty());

  auto o = f.options();
  o.pull_missing = false;
  f.backend = f.make_backend(o);
  auto off = f.provision(spec);
  REQUIRE_FALSE(off.has_value());
  CHECK(off.error().code == Errc::NotFound);
  CHECK_MESSAGE(off.error().message.find("pulling is off") != std::string::npos, off.error().message);
}

TEST_CASE("docker backend: another installation's container under the same name is neither adopted nor listed") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  test::TempDir other_dir;
  auto o = f.options();
  o.data_dir = other_dir.path() + "/data";
  auto other = f.make_backend(o);
  std::string user = f.new_user();
  std::string name = f.backend->terminal_name(user, "default", "");
  f.foreign_containers.push_back(name);
  auto theirs = f.provision_ok(f.spec_for(user), other.get());
  CHECK(theirs.name == name);

  auto r = f.provision(f.spec_for(user));
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::AlreadyExists);
  CHECK_MESSAGE(r.error().message.find("another terminals installation") != std::string::npos, r.error().message);
  CHECK(f.list().empty());
  CHECK(f.list(other.get()).size() == 1);
  // Ours can neither stop nor remove theirs.
  auto stopped = f.stop(name);
  REQUIRE_FALSE(stopped.has_value());
  CHECK(stopped.error().code == Errc::NotFound);
  auto removed = f.remove(name, true);
  REQUIRE_FALSE(removed.has_value());
  CHECK(removed.error().code == Errc::NotFound);
  CHECK(f.engine->container(name)["State"]["Running"].GetBool());
  other.reset();
}

TEST_CASE("docker backend: a running container whose agent does not answer is replaced, not adopted") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  std::string user = f.new_user();
  auto t = f.provision_ok(f.spec_for(user));
  std::string id = f.engine->container(t.name)["Id"].GetString();
  CHECK(f.run(t, "echo still > here").second == 0);
  REQUIRE(f.engine->call("POST", "/containers/" + t.name + "/pause").has_value());

  f.backend = f.make_backend(f.options());  // a restart: nothing known but the engine's view
  auto started = std::chrono::steady_clock::now();
  auto again = f.provision_ok(f.spec_for(user));
  CHECK(std::chrono::steady_clock::now() - started < 15s);
  CHECK(std::string(f.engine->container(t.name)["Id"].GetString()) != id);
  CHECK(f.run(again, "cat here").first == "still\n");
  CHECK(f.engine->ids_with("label", std::string(detail::kLabelInstance) + "=" + f.instance).size() == 1);
}

TEST_CASE("docker backend: a storage limit the driver cannot enforce is dropped with a warning, the terminal runs") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  for (int n = 0; n < 2; ++n) {  // the second one no longer asks
    auto spec = f.spec_for(f.new_user());
    spec.limits.storage_bytes = 1ull << 30;
    auto t = f.provision_ok(spec);
    auto c = f.engine->container(t.name);
    const auto& hc = c["HostConfig"];
    auto opt = hc.FindMember("StorageOpt");
    if (opt != hc.MemberEnd() && opt->value.IsObject() && opt->value.HasMember("size")) {
      MESSAGE("the storage driver enforces container disk limits here");
      CHECK(std::string(opt->value["size"].GetString()) == std::to_string(1ull << 30));
    }
  }
}

TEST_CASE("docker backend: a spec asking for the network gets a bridge and still a unix-socket endpoint") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  auto spec = f.spec_for(f.new_user());
  spec.network = NetworkMode::Host;
  auto t = f.provision_ok(spec);
  CHECK(t.endpoint.kind == Endpoint::Kind::Unix);
  auto c = f.engine->container(t.name);
  CHECK(std::string(c["HostConfig"]["NetworkMode"].GetString()) == "bridge");
  const auto& bindings = c["HostConfig"]["PortBindings"];
  bool none_published = bindings.IsNull() || (bindings.IsObject() && bindings.ObjectEmpty());
  CHECK(none_published);
  CHECK(f.run(t, "ls /sys/class/net").first.find("eth0") != std::string::npos);
}

TEST_CASE("docker backend: destroying the backend mid-provision cancels once and a new backend cleans up or adopts") {
  DockerFixture f;
  REQUIRE_DOCKER(f);
  // Cut at each step the progress text names; "" cuts right after the call.
  for (std::string cut : {std::string(), std::string("creating container"), std::string("starting container"),
                          std::string("waiting for the terminal to answer")}) {
    CAPTURE(cut);
    f.backend = f.make_backend(f.options());
    std::string user = f.new_user();
    std::string name = f.backend->terminal_name(user, "default", "");
    int calls = 0;
    std::optional<Result<TerminalInfo>> got;
    f.backend->provision(f.spec_for(user), [&](Result<TerminalInfo> r) {
      ++calls;
      got.emplace(std::move(r));
    });
    if (!cut.empty()) {
      bool reached = test::run_until(*f.loop, [&] { return got.has_value() || f.backend->progress(name) == cut; }, 30s);
      REQUIRE(reached);
      if (got) {
        MESSAGE("provision finished before \"" << cut << "\" was seen");
        continue;
      }
    }
    f.backend.reset();
    test::run_for(*f.loop, 200ms);
    CHECK(calls == 1);
    REQUIRE(got.has_value());
    REQUIRE_FALSE(got->has_value());
    CHECK(got->error().code == Errc::Cancelled);

    // Whatever the engine was left with: a new backend lists it (or cleans it up) and provisions.
    f.backend = f.make_backend(f.options());
    (void)f.list();
    auto t = f.provision_ok(f.spec_for(user));
    CHECK(f.call(t, "GET", "/files/cwd").head.status == 200);
    CHECK(f.engine->ids_with("name", "^/" + name + "$").size() == 1);
  }
}

}  // TEST_SUITE
