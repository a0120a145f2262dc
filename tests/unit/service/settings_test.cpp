#include <doctest/doctest.h>

#include <fstream>
#include <string>

#include "support/loop_runner.hpp"
#include "terminals/settings.hpp"

using namespace terminals;
using namespace std::chrono_literals;

namespace {

SettingsInput env_only(std::vector<std::string> env) {
  SettingsInput in;
  in.environment = std::move(env);
  in.read_dotenv = false;
  return in;
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("settings: defaults match the reference where they share a name") {
  auto s = load_settings(env_only({"PATH=/usr/bin", "HOME=/root"}));
  REQUIRE(s.has_value());
  CHECK(s->host == "0.0.0.0");
  CHECK(s->port == 3000);
  CHECK(s->backend == "local");
  CHECK(s->token_cache_ttl == 60s);
  CHECK(s->idle_timeout == 0min);
  CHECK(s->image == "ghcr.io/open-webui/open-terminal:latest");
  CHECK(s->proxy_connect_timeout == 10s);
  CHECK(s->proxy_batch == 16);
  CHECK(s->sources.at("TERMINALS_PORT") == "default");
  CHECK(!s->insecure_open);
}

TEST_CASE("settings: environment names are case-insensitive and flags win") {
  SettingsInput in = env_only({"terminals_port=8080", "TERMINALS_HOST=127.0.0.1",
                               "TERMINALS_IDLE_TIMEOUT_MINUTES=15", "TERMINALS_DOCKER_DATA_DIR=/srv/t",
                               "OPEN_TERMINAL_SYSTEM_PROMPT=be brief", "UNRELATED=1"});
  in.flags["TERMINALS_PORT"] = "9090";
  auto s = load_settings(in);
  REQUIRE(s.has_value());
  CHECK(s->port == 9090);
  CHECK(s->sources.at("TERMINALS_PORT") == "flag");
  CHECK(s->host == "127.0.0.1");
  CHECK(s->idle_timeout == 15min);
  CHECK(s->data_dir == "/srv/t");  // the reference's alias
  CHECK(s->system_prompt == "be brief");
}

TEST_CASE("settings: bad values name the variable and what was expected") {
  auto port = load_settings(env_only({"TERMINALS_PORT=abc"}));
  REQUIRE(!port.has_value());
  CHECK(port.error().message == "TERMINALS_PORT: 'abc' is not a port number (1-65535)");
  CHECK(!load_settings(env_only({"TERMINALS_PORT=70000"})).has_value());
  CHECK(!load_settings(env_only({"TERMINALS_PORT=0"})).has_value());
  auto batch = load_settings(env_only({"TERMINALS_PROXY_BATCH=0"}));
  REQUIRE(!batch.has_value());
  CHECK(batch.error().message == "TERMINALS_PROXY_BATCH: '0' is not a number from 1 (off) to 64");
  CHECK(load_settings(env_only({"TERMINALS_PROXY_BATCH=1"}))->proxy_batch == 1);
  auto backend = load_settings(env_only({"TERMINALS_BACKEND=podman"}));
  REQUIRE(!backend.has_value());
  CHECK(backend.error().message.find("TERMINALS_BACKEND") == 0);
  CHECK(!load_settings(env_only({"TERMINALS_DATA_DIR=relative"})).has_value());
  CHECK(!load_settings(env_only({"TERMINALS_OPEN_WEBUI_URL=ftp://x"})).has_value());
  CHECK(!load_settings(env_only({"TERMINALS_ISOLATION=chroot"})).has_value());
  CHECK(!load_settings(env_only({"TERMINALS_INSECURE_OPEN=maybe"})).has_value());
  auto both = load_settings(env_only({"TERMINALS_INSECURE_OPEN=true", "TERMINALS_API_KEY=k"}));
  REQUIRE(!both.has_value());
  CHECK(both.error().message.find("cannot be combined") != std::string::npos);
  CHECK(!load_settings(env_only({"TERMINALS_OPEN_WEBUI_JWT_SECRET=s"})).has_value());
}

TEST_CASE("settings: the .env file sits under the environment") {
  test::TempDir dir;
  std::string path = dir.path() + "/.env";
  std::ofstream(path) << "# comment\n"
                         "export TERMINALS_PORT=7000\n"
                         "TERMINALS_HOST = \"10.0.0.1\"  # trailing comment\n"
                         "TERMINALS_IMAGE='my/image:1 # not a comment'\n"
                         "TERMINALS_API_KEY=from-dotenv\n";
  SettingsInput in;
  in.environment = std::vector<std::string>{"TERMINALS_API_KEY=from-env"};
  in.dotenv_path = path;
  auto s = load_settings(in);
  REQUIRE(s.has_value());
  CHECK(s->port == 7000);
  CHECK(s->host == "10.0.0.1");
  CHECK(s->image == "my/image:1 # not a comment");
  CHECK(s->api_key == "from-env");
  CHECK(s->sources.at("TERMINALS_PORT") == ".env");
  in.dotenv_path = dir.path() + "/missing.env";
  CHECK(load_settings(in).error().code == Errc::NotFound);
}

TEST_CASE("settings: Docker settings, the reference's names and ours") {
  auto d = load_settings(env_only({}));
  REQUIRE(d.has_value());
  CHECK(d->docker_publish_host == "127.0.0.1");
  CHECK(d->docker_networks.empty());
  CHECK(d->docker_home == "bind");
  CHECK(d->docker_pull);
  CHECK(d->docker_name_prefix == "terminals");
  CHECK_FALSE(d->docker_image_capabilities.has_value());  // the backend's default

  auto s = load_settings(env_only({"TERMINALS_BACKEND=Docker", "TERMINALS_DOCKER_HOST=10.0.0.5",
                                   "TERMINALS_NETWORK= net-a , ,net-b", "TERMINALS_DOCKER_HOME=volume",
                                   "TERMINALS_DOCKER_READ_ONLY=yes", "TERMINALS_DOCKER_CAP_ADD=cap_net_bind_service,CHOWN",
                                   "TERMINALS_DOCKER_IMAGE_CAPABILITIES=sys_ptrace, CAP_KILL",
                                   "TERMINALS_DOCKER_USER=1000:1000", "TERMINALS_DOCKER_PULL=false",
                                   "TERMINALS_DOCKER_ENGINE=unix:///tmp/d.sock",
                                   R"(TERMINALS_DOCKER_MOUNTS=[{"source":"/srv/data","target":"/mnt/data"}])"}));
  REQUIRE(s.has_value());
  CHECK(s->backend == "docker");
  CHECK(s->docker_publish_host == "10.0.0.5");
  CHECK(s->docker_networks == std::vector<std::string>{"net-a", "net-b"});  // the alias, trimmed
  CHECK(s->docker_home == "volume");
  CHECK(s->docker_read_only);
  CHECK(s->docker_cap_add == std::vector<std::string>{"NET_BIND_SERVICE", "CHOWN"});
  CHECK(s->docker_image_capabilities == std::vector<std::string>{"SYS_PTRACE", "KILL"});
  // Set but empty: images may ask for nothing.
  auto none = load_settings(env_only({"TERMINALS_DOCKER_IMAGE_CAPABILITIES="}));
  REQUIRE(none.has_value());
  CHECK(none->docker_image_capabilities == std::vector<std::string>{});
  CHECK(s->docker_user == "1000:1000");
  CHECK(!s->docker_pull);
  CHECK(s->docker_engine == "unix:///tmp/d.sock");
  CHECK(s->docker_mounts.find("/mnt/data") != std::string::npos);

  // The canonical name wins over the alias.
  auto both = load_settings(env_only({"TERMINALS_NETWORK=old", "TERMINALS_DOCKER_NETWORK=new"}));
  REQUIRE(both.has_value());
  CHECK(both->docker_networks == std::vector<std::string>{"new"});

  struct Bad {
    const char* env;
    const char* names;
  };
  for (const Bad& b : {Bad{R"(TERMINALS_DOCKER_MOUNTS=[{"source":"/x","target":"/etc/x"}])", "TERMINALS_DOCKER_MOUNTS"},
                       Bad{"TERMINALS_DOCKER_MOUNTS=not json", "TERMINALS_DOCKER_MOUNTS"},
                       Bad{"TERMINALS_DOCKER_HOME=tmpfs", "TERMINALS_DOCKER_HOME"},
                       Bad{"TERMINALS_DOCKER_CAP_ADD=ALL", "TERMINALS_DOCKER_CAP_ADD"},
                       Bad{"TERMINALS_DOCKER_CAP_ADD=sys_admin", "TERMINALS_DOCKER_CAP_ADD"},
                       Bad{"TERMINALS_DOCKER_CAP_ADD=NET-ADMIN", "TERMINALS_DOCKER_CAP_ADD"},
                       Bad{"TERMINALS_DOCKER_IMAGE_CAPABILITIES=all", "TERMINALS_DOCKER_IMAGE_CAPABILITIES"},
                       Bad{"TERMINALS_DOCKER_IMAGE_CAPABILITIES=KILL,cap_sys_admin", "TERMINALS_DOCKER_IMAGE_CAPABILITIES"},
                       Bad{"TERMINALS_DOCKER_IMAGE_CAPABILITIES=SYS PTRACE", "TERMINALS_DOCKER_IMAGE_CAPABILITIES"},
                       Bad{"TERMINALS_DOCKER_USER=user", "TERMINALS_DOCKER_USER"},
                       Bad{"TERMINALS_DOCKER_USER=1000:", "TERMINALS_DOCKER_USER"},
                       Bad{"TERMINALS_DOCKER_NAME_PREFIX=Bad_Prefix", "TERMINALS_DOCKER_NAME_PREFIX"},
                       Bad{"TERMINALS_DOCKER_READ_ONLY=maybe", "TERMINALS_DOCKER_READ_ONLY"},
                       Bad{"TERMINALS_DOCKER_HOST=", "TERMINALS_DOCKER_HOST"}}) {
    CAPTURE(b.env);
    auto r = load_settings(env_only({b.env}));
    REQUIRE(!r.has_value());
    CHECK(r.error().code == Errc::InvalidArgument);
    CHECK(r.error().message.find(b.names) != std::string::npos);
  }
}

TEST_CASE("settings: dotenv parse errors carry the line number") {
  CHECK(parse_dotenv("A=1\nno equals here\n").error().message == ".env line 2: expected NAME=value");
  CHECK(parse_dotenv("A=\"open\n").error().message.find("unterminated") != std::string::npos);
  CHECK(parse_dotenv("BAD-NAME=1").error().message.find("bad variable name") != std::string::npos);
  auto ok = parse_dotenv("A=\"x\\ny\"\nb=2");
  REQUIRE(ok.has_value());
  CHECK(ok->at("A") == "x\ny");
  CHECK(ok->at("B") == "2");
}

}  // TEST_SUITE
