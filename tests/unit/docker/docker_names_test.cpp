// The Docker backend's pure functions: container names (the reference's, without its
// collisions), labels, TERMINALS_DOCKER_MOUNTS validation, DOCKER_HOST forms, API version
// comparison and the engine's multiplexed log stream. No engine needed.

#include <doctest/doctest.h>
#include <stdlib.h>

#include <optional>
#include <string>
#include <vector>

#include "docker/docker_client.hpp"
#include "docker/docker_names.hpp"
#include "terminals/docker_backend.hpp"
#include "util/crypto.hpp"

using namespace terminals;
using namespace terminals::detail;

namespace {

// sha256 of the test ids, from `printf '%s' ID | sha256sum`: the names must match the
// reference's byte for byte, so a deployment that switches keeps finding its containers.
constexpr const char* kAlice12 = "2bd806c97f0e";  // "alice"
constexpr const char* kTeamA8 = "e18d322f";       // "Team A"
constexpr const char* kChat12 = "74e97b2be403";   // "chat:1"
constexpr const char* kDefault12 = "37a8eec1ce19";  // "default"

// Sets or unsets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string mounts_error(std::string_view json) {
  auto r = parse_docker_mounts(json);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::InvalidArgument);
  CHECK(r.error().message.find("TERMINALS_DOCKER_MOUNTS") != std::string::npos);
  return r.error().message;
}

std::string frame(unsigned char stream, std::string_view payload) {
  std::string f(8, '\0');
  f[0] = static_cast<char>(stream);
  auto n = payload.size();
  f[4] = static_cast<char>((n >> 24) & 0xff);
  f[5] = static_cast<char>((n >> 16) & 0xff);
  f[6] = static_cast<char>((n >> 8) & 0xff);
  f[7] = static_cast<char>(n & 0xff);
  return f + std::string(payload);
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("docker names: the default policy's name is the reference's terminals-<sha256(user)[:12]>") {
  CHECK(hash12("alice") == kAlice12);
  CHECK(hash12("alice") == sha256_hex("alice").substr(0, 12));
  CHECK(container_name("terminals", "alice", "default", "") == std::string("terminals-") + kAlice12);
  CHECK(container_name("terminals", "alice", "", "") == std::string("terminals-") + kAlice12);
  CHECK(container_name("terminals", "alice", "default", "default") == std::string("terminals-") + kAlice12);
  CHECK(container_name("acme", "alice", "default", "") == std::string("acme-") + kAlice12);
  // Hostile ids only ever reach the name through the hash.
  for (const std::string& id : std::vector<std::string>{"", "..", "a/b", "../../etc", std::string(300, 'x'), "\xe2\x98\x83"}) {
    std::string n = container_name("terminals", id, "default", "");
    CHECK(n.size() == 22);
    CHECK(n.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") == std::string::npos);
  }
}

TEST_CASE("docker names: policy slugs lower-case, replace, trim and cut to 20") {
  CHECK(policy_slug("team-a") == "team-a");
  CHECK(policy_slug("Team A") == "team-a");
  CHECK(policy_slug("--Ab_c--") == "ab-c");
  CHECK(policy_slug("GPU.large/2") == "gpu-large-2");
  CHECK(policy_slug("***") == "");
  CHECK(policy_slug("") == "");
  CHECK(policy_slug("\xc3\xa9t\xc3\xa9") == "t");  // each byte of a UTF-8 letter is one '-'
  CHECK(policy_slug(std::string(30, 'a')) == std::string(20, 'a'));
  // Cut to 20 ends in '-': trimmed again.
  CHECK(policy_slug("abcdefghijklmnopqrs-xyz") == "abcdefghijklmnopqrs");
}

TEST_CASE("docker names: a lossless slug keeps the reference's name, a lossy one adds a hash of the id") {
  std::string base = std::string("terminals-") + kAlice12;
  CHECK(container_name("terminals", "alice", "team-a", "") == base + "-team-a");
  CHECK(container_name("terminals", "alice", "Team A", "") == base + "-team-a-" + kTeamA8);
  CHECK(container_name("terminals", "alice", "Team A", "") != container_name("terminals", "alice", "team-a", ""));
  CHECK(container_name("terminals", "alice", "team_a", "") != container_name("terminals", "alice", "team-a", ""));
  CHECK(container_name("terminals", "alice", "team_a", "") != container_name("terminals", "alice", "Team A", ""));
  // Nothing of the id survives the slug: only the hash tells them apart.
  std::string stars = container_name("terminals", "alice", "***", "");
  CHECK(stars == base + "-" + sha256_hex("***").substr(0, 8));
  CHECK(stars != container_name("terminals", "alice", "+++", ""));
  // A long lossless-looking id is cut, so it is lossy too.
  std::string long_id(30, 'p');
  CHECK(container_name("terminals", "alice", long_id, "") ==
        base + "-" + std::string(20, 'p') + "-" + sha256_hex(long_id).substr(0, 8));
}

TEST_CASE("docker names: a non-default context adds -<sha256(context)[:12]>") {
  std::string base = std::string("terminals-") + kAlice12;
  CHECK(hash12("chat:1") == kChat12);
  CHECK(container_name("terminals", "alice", "default", "chat:1") == base + "-" + kChat12);
  CHECK(container_name("terminals", "alice", "team-a", "chat:1") == base + "-team-a-" + kChat12);
  CHECK(container_name("terminals", "alice", "default", "chat:2") != container_name("terminals", "alice", "default", "chat:1"));
  CHECK(container_name("terminals", "bob", "default", "chat:1") != container_name("terminals", "alice", "default", "chat:1"));
}

TEST_CASE("docker names: labels carry the raw ids, their hashes, the instance and the endpoint kind") {
  auto l = terminal_labels("inst123", "alice", "Team A", "chat:1", "unix");
  CHECK(l.at("app.kubernetes.io/managed-by") == "terminals");
  CHECK(l.at("openwebui.com/user-id") == "alice");
  CHECK(l.at("openwebui.com/policy") == "Team A");
  CHECK(l.at("openwebui.com/context-id") == "chat:1");
  CHECK(l.at("openwebui.com/context-type") == "chat");
  CHECK(l.at("openwebui.com/context-hash") == kChat12);
  CHECK(l.at("io.libterminals.user-hash") == kAlice12);
  CHECK(l.at("io.libterminals.instance") == "inst123");
  CHECK(l.at("io.libterminals.endpoint") == "unix");

  auto d = terminal_labels("i", "alice", "", "", "port");
  CHECK(d.at("openwebui.com/policy") == "default");
  CHECK(d.at("openwebui.com/context-id") == "default");
  CHECK(d.at("openwebui.com/context-type") == "default");
  CHECK(d.at("openwebui.com/context-hash") == kDefault12);
  CHECK(context_type("note") == "note");
  CHECK(context_type("default") == "default");
}

TEST_CASE("docker mounts: valid lists, readOnly defaulting to true, normalised paths, ~ expansion") {
  CHECK(parse_docker_mounts("").value().empty());
  CHECK(parse_docker_mounts("  \n").value().empty());
  CHECK(parse_docker_mounts("[]").value().empty());

  auto m = parse_docker_mounts(R"([{"source": "/srv/data/", "target": "/mnt/data"},
                                   {"source": "/srv//x/./y/../z", "target": "/opt/tools/", "readOnly": false}])");
  REQUIRE_MESSAGE(m.has_value(), (m ? "" : m.error().message));
  REQUIRE(m->size() == 2);
  CHECK((*m)[0].source == "/srv/data");
  CHECK((*m)[0].target == "/mnt/data");
  CHECK((*m)[0].read_only);
  CHECK((*m)[1].source == "/srv/x/z");
  CHECK((*m)[1].target == "/opt/tools");
  CHECK_FALSE((*m)[1].read_only);

  {
    ScopedEnv home("HOME", "/home/tester");
    auto t = parse_docker_mounts(R"([{"source": "~/shared", "target": "/mnt/s"}, {"source": "~", "target": "/mnt/h"}])");
    REQUIRE(t.has_value());
    CHECK((*t)[0].source == "/home/tester/shared");
    CHECK((*t)[1].source == "/home/tester");
  }
  {
    ScopedEnv home("HOME", nullptr);
    CHECK(mounts_error(R"([{"source": "~/x", "target": "/mnt/x"}])").find("HOME") != std::string::npos);
  }
  // "~user" is not expanded: it is a relative path.
  CHECK(mounts_error(R"([{"source": "~bob/x", "target": "/mnt/x"}])").find("absolute") != std::string::npos);
}

TEST_CASE("docker mounts: every rule refuses with the item and the reason") {
  CHECK(mounts_error("[{").find("JSON") != std::string::npos);
  CHECK(mounts_error(R"({"source": "/a", "target": "/mnt/a"})").find("array") != std::string::npos);
  CHECK(mounts_error(R"(["/a:/b"])").find("item 0 is not an object") != std::string::npos);
  CHECK(mounts_error(R"([{"target": "/mnt/a"}])").find("\"source\"") != std::string::npos);
  CHECK(mounts_error(R"([{"source": "/a"}])").find("\"target\"") != std::string::npos);
  CHECK(mounts_error(R"([{"source": "", "target": "/mnt/a"}])").find("\"source\"") != std::string::npos);
  CHECK(mounts_error(R"([{"source": 3, "target": "/mnt/a"}])").find("\"source\"") != std::string::npos);
  CHECK(mounts_error(R"([{"source": "/a", "target": "/mnt/a", "readOnly": "yes"}])").find("readOnly") !=
        std::string::npos);
  CHECK(mounts_error(R"([{"source": "a", "target": "/mnt/a"}])").find("source 'a' must be an absolute path") !=
        std::string::npos);
  CHECK(mounts_error(R"([{"source": "/a", "target": "mnt/a"}])").find("target 'mnt/a' must be an absolute path") !=
        std::string::npos);
  CHECK(mounts_error(R"([{"source": "/a", "target": "/"}])").find("'/'") != std::string::npos);
  CHECK(mounts_error(R"([{"source": "/a", "target": "/mnt/.."}])").find("'/'") != std::string::npos);

  for (const char* blocked : {"/app", "/bin", "/dev", "/etc", "/home", "/proc", "/root", "/run", "/sbin", "/sys",
                              "/usr", "/var"}) {
    CAPTURE(blocked);
    std::string exact = mounts_error(std::string(R"([{"source": "/a", "target": ")") + blocked + R"("}])");
    CHECK(exact.find(std::string("is ") + blocked) != std::string::npos);
    std::string under = mounts_error(std::string(R"([{"source": "/a", "target": ")") + blocked + R"(/x/"}])");
    CHECK(under.find(std::string("under ") + blocked) != std::string::npos);
    // Spelled around the check, still refused.
    (void)mounts_error(std::string(R"([{"source": "/a", "target": "/mnt/..)") + blocked + R"("}])");
  }
  // A prefix that is not a path component is fine.
  CHECK(parse_docker_mounts(R"([{"source": "/a", "target": "/homework"}, {"source": "/b", "target": "/variables"}])")
            .has_value());

  // Overlapping targets, either way round, and duplicates; the message names both items.
  std::string nested = mounts_error(R"([{"source": "/a", "target": "/mnt/a"}, {"source": "/b", "target": "/mnt/a/b"}])");
  CHECK(nested.find("item 1") != std::string::npos);
  CHECK(nested.find("item 0") != std::string::npos);
  (void)mounts_error(R"([{"source": "/a", "target": "/mnt/a/b"}, {"source": "/b", "target": "/mnt/a"}])");
  (void)mounts_error(R"([{"source": "/a", "target": "/mnt/a"}, {"source": "/b", "target": "/mnt/a/"}])");
  CHECK(parse_docker_mounts(R"([{"source": "/a", "target": "/mnt/a"}, {"source": "/b", "target": "/mnt/ab"}])")
            .has_value());
  // The failing item is the second one: counted from 0.
  CHECK(mounts_error(R"([{"source": "/a", "target": "/mnt/a"}, {"source": "/b", "target": "/etc"}])")
            .find("item 1") != std::string::npos);
}

TEST_CASE("docker host: unix and tcp forms, $DOCKER_HOST, and clear refusals") {
  auto u = parse_docker_host("unix:///var/run/docker.sock");
  REQUIRE(u.has_value());
  CHECK(u->unix_path == "/var/run/docker.sock");
  CHECK(u->base_url == "http://docker");
  CHECK(u->display == "unix:/var/run/docker.sock");

  auto u2 = parse_docker_host("unix:/tmp/d.sock");
  REQUIRE(u2.has_value());
  CHECK(u2->unix_path == "/tmp/d.sock");

  auto t = parse_docker_host("tcp://127.0.0.1:2375/");
  REQUIRE(t.has_value());
  CHECK(t->unix_path.empty());
  CHECK(t->base_url == "http://127.0.0.1:2375");
  CHECK(t->display == "tcp://127.0.0.1:2375");
  auto h = parse_docker_host("http://engine:2375");
  REQUIRE(h.has_value());
  CHECK(h->base_url == "http://engine:2375");
  CHECK(h->display == "tcp://engine:2375");

  {
    ScopedEnv env("DOCKER_HOST", nullptr);
    auto d = parse_docker_host("");
    REQUIRE(d.has_value());
    CHECK(d->unix_path == "/var/run/docker.sock");
  }
  {
    ScopedEnv env("DOCKER_HOST", "tcp://10.0.0.1:2375");
    auto d = parse_docker_host("");
    REQUIRE(d.has_value());
    CHECK(d->base_url == "http://10.0.0.1:2375");
    // An explicit address wins over the environment.
    CHECK(parse_docker_host("unix:///x.sock")->unix_path == "/x.sock");
  }

  for (const char* bad : {"unix://relative.sock", "unix:", "tcp://", "tcp://host:1/path", "docker.sock",
                          "/var/run/docker.sock", "https://h:2376", "ssh://me@h"}) {
    CAPTURE(bad);
    auto r = parse_docker_host(bad);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().code == Errc::InvalidArgument);
    CHECK(r.error().message.find(bad) != std::string::npos);
  }
  CHECK(parse_docker_host("https://h:2376").error().message.find("TLS") != std::string::npos);
}

TEST_CASE("docker api versions compare numerically") {
  CHECK(compare_api_versions("1.41", "1.41") == 0);
  CHECK(compare_api_versions("1.9", "1.41") < 0);
  CHECK(compare_api_versions("1.41", "1.9") > 0);
  CHECK(compare_api_versions("1.45", "1.41") > 0);
  CHECK(compare_api_versions("1.40", "1.41") < 0);
  CHECK(compare_api_versions("2.0", "1.99") > 0);
  CHECK(compare_api_versions("1.41", "1.41.0") == 0);
  CHECK(compare_api_versions("1.41.1", "1.41") > 0);
  CHECK(compare_api_versions("", "1.41") < 0);
}

TEST_CASE("docker logs: multiplexed frames become plain text, other text stays as is") {
  CHECK(demux_docker_logs(frame(1, "hello ") + frame(2, "world\n")) == "hello world\n");
  CHECK(demux_docker_logs(frame(1, "")) == "");
  CHECK(demux_docker_logs("") == "");
  // A TTY container's log is not framed.
  CHECK(demux_docker_logs("plain text from a tty\n") == "plain text from a tty\n");
  CHECK(demux_docker_logs("hi") == "hi");
  // A frame cut short (tail of a log) keeps what arrived.
  std::string cut = frame(1, "complete ") + frame(2, "truncated payload").substr(0, 8 + 5);
  CHECK(demux_docker_logs(cut) == "complete trunc");
  // Large frames: the length is big-endian over four bytes.
  std::string big(70000, 'x');
  CHECK(demux_docker_logs(frame(1, big) + frame(1, "!")) == big + "!");
}

}  // TEST_SUITE
