// terminals-cli agent: serves the Open Terminal-compatible API (terminals::Agent) until
// SIGINT or SIGTERM.

#include <unistd.h>

#include <cerrno>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>

#include <terminals/agent.hpp>
#include <terminals/loop.hpp>

#include "commands.hpp"
#include "signals.hpp"

namespace terminals::cli {

namespace {

constexpr std::string_view kHelp = R"(Usage: terminals-cli agent [--listen ENDPOINT] [--api-key KEY | --no-auth] [--home DIR]
                           [--info TEXT]

Serves the Open Terminal-compatible HTTP API (files, background commands, terminals, listening
ports and a proxy to them, the system prompt and the OpenAPI document AI clients build their
tools from) from inside a sandbox, as the user it runs as. Every route except GET /health,
GET /api/config and GET /openapi.json requires "Authorization: Bearer KEY". Runs until SIGINT
or SIGTERM, then lets requests in flight finish (up to 5 seconds) and exits.

Options:
      --listen ENDPOINT   Where to listen: tcp://HOST:PORT, HOST:PORT or unix:/path
                          (default: TERMINALS_AGENT_LISTEN, else tcp://127.0.0.1:8000)
      --api-key KEY       The bearer key clients must send (visible in the process list:
                          prefer the environment variables below)
      --home DIR          The directory relative paths resolve against (default: the current
                          directory)
      --info TEXT         Operator notes for the AI (what this machine is for, what is
                          installed): served at GET /info, offered as the get_info tool and
                          appended to the system prompt
      --cors-allowed-origins LIST
                          Origins browser pages may call from: "*" (the default) or a comma
                          list; "" turns CORS off
      --expire-after SECONDS
                          How long a finished command's output stays available (default 300)
      --ready-fd N        Write "ready" and a newline to descriptor N once listening, then
                          close it (for launchers that wait for readiness)
      --no-auth           Serve without any key. Anyone who can reach the socket gets full
                          control of this user's files; use only on a private unix socket
  -h, --help              Show this help

Environment variables:
  TERMINALS_AGENT_LISTEN       Where to listen, when --listen is not given (container images
                               set it: the Docker backend points it at a bind-mounted socket)
  OPEN_TERMINAL_API_KEY        The bearer key, when --api-key is not given
  OPEN_TERMINAL_API_KEY_FILE   A file holding the bearer key (trailing whitespace is ignored);
                               setting it together with OPEN_TERMINAL_API_KEY is an error
  OPEN_TERMINAL_INFO           The operator notes, when --info is not given
  OPEN_TERMINAL_CORS_ALLOWED_ORIGINS
                               The allowed origins, when --cors-allowed-origins is not given

Without a key from one of these sources, and without --no-auth, the agent refuses to start.

Examples:
  OPEN_TERMINAL_API_KEY=s3cret terminals-cli agent --listen tcp://127.0.0.1:8000
  OPEN_TERMINAL_API_KEY_FILE=/run/secrets/key terminals-cli agent --listen unix:/run/agent.sock
  terminals-cli agent --listen unix:/tmp/agent.sock --no-auth --home /work
  terminals-cli agent --no-auth --listen unix:/tmp/agent.sock --info "Build box: gcc 12, cmake"
)";

constexpr std::string_view kName = "agent";

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return std::nullopt;
  return std::string(v);
}

std::string trim_right(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) {
    s.pop_back();
  }
  return s;
}

int run(Args args, Io io) {
  // A plain string and a flag, not std::optional<std::string>: GCC 12 at -O2 reports the
  // optional's string as maybe-uninitialized (a false positive that -Werror turns into a failure).
  std::string listen;
  bool listen_given = false;
  std::optional<std::string> key;
  std::string home;
  std::optional<std::string> info;
  std::optional<std::string> cors;
  int ready_fd = -1;
  std::optional<long> expire_after;
  bool no_auth = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= args.size()) return std::nullopt;
      return std::string(args[++i]);
    };
    if (a == "--listen" || a == "--api-key" || a == "--home" || a == "--info") {
      auto v = value();
      if (!v) return usage_error(io, kName, std::string(a) + " needs a value");
      if (a == "--listen") {
        listen = *v;
        listen_given = true;
      } else if (a == "--api-key") {
        key = *v;
      } else if (a == "--info") {
        info = *v;
      } else {
        home = *v;
      }
    } else if (a.starts_with("--listen=")) {
      listen = std::string(a.substr(9));
      listen_given = true;
    } else if (a.starts_with("--api-key=")) {
      key = std::string(a.substr(10));
    } else if (a.starts_with("--home=")) {
      home = std::string(a.substr(7));
    } else if (a.starts_with("--info=")) {
      info = std::string(a.substr(7));
    } else if (a == "--cors-allowed-origins") {
      auto v = value();
      if (!v) return usage_error(io, kName, "--cors-allowed-origins needs a value (\"*\" or a comma list)");
      cors = *v;
    } else if (a == "--expire-after") {
      auto v = value();
      char* end = nullptr;
      long seconds = v ? std::strtol(v->c_str(), &end, 10) : -1;
      if (!v || end == v->c_str() || *end != '\0' || seconds < 1 || seconds > 7 * 86400) {
        return usage_error(io, kName, "--expire-after needs a number of seconds from 1 to 604800");
      }
      expire_after = seconds;
    } else if (a == "--ready-fd") {
      auto v = value();
      char* end = nullptr;
      long fd = v ? std::strtol(v->c_str(), &end, 10) : -1;
      if (!v || end == v->c_str() || *end != '\0' || fd < 3 || fd > 1023) {
        return usage_error(io, kName, "--ready-fd needs a descriptor number of 3 or more");
      }
      ready_fd = static_cast<int>(fd);
    } else if (a == "--no-auth") {
      no_auth = true;
    } else {
      return usage_error(io, kName, "unexpected argument '" + std::string(a) + "'");
    }
  }

  // The flag wins over the environment, so a container's default can be overridden per run.
  std::string_view listen_source = "--listen";
  if (!listen_given) {
    listen = "tcp://127.0.0.1:8000";
    if (auto from_env = env("TERMINALS_AGENT_LISTEN"); from_env && !from_env->empty()) {
      listen = *from_env;
      listen_source = "TERMINALS_AGENT_LISTEN";
    }
  }
  auto endpoint = Endpoint::parse(listen);
  if (!endpoint) {
    return usage_error(io, kName,
                       "bad " + std::string(listen_source) + ": " + endpoint.error().message);
  }

  if (!key) {
    auto from_env = env("OPEN_TERMINAL_API_KEY");
    auto from_file = env("OPEN_TERMINAL_API_KEY_FILE");
    if (from_env && from_file) {
      return usage_error(io, kName,
                         "OPEN_TERMINAL_API_KEY and OPEN_TERMINAL_API_KEY_FILE are both set; "
                         "set only one");
    }
    if (from_env) {
      key = *from_env;
    } else if (from_file) {
      std::ifstream in(*from_file, std::ios::binary);
      if (!in) {
        io.err << kProgram << " agent: cannot read OPEN_TERMINAL_API_KEY_FILE '" << *from_file
               << "'\n";
        return kExitFailure;
      }
      key = trim_right(std::string(std::istreambuf_iterator<char>(in), {}));
    }
  }
  if (key && key->empty()) key.reset();
  if (no_auth && key) return usage_error(io, kName, "--no-auth and an API key are exclusive");
  if (!no_auth && !key) {
    return usage_error(io, kName,
                       "no API key: pass --api-key, set OPEN_TERMINAL_API_KEY or "
                       "OPEN_TERMINAL_API_KEY_FILE, or use --no-auth");
  }

  auto loop = Loop::create();
  if (!loop) {
    io.err << kProgram << " agent: " << loop.error().to_string() << '\n';
    return kExitFailure;
  }
  AgentOptions options;
  options.listen = *endpoint;
  options.api_key = key.value_or("");
  options.no_auth = no_auth;
  options.home = home;
  if (!info) info = env("OPEN_TERMINAL_INFO");
  options.info = info.value_or("");
  if (expire_after) options.process_expire_after = std::chrono::seconds(*expire_after);
  if (!cors) cors = env("OPEN_TERMINAL_CORS_ALLOWED_ORIGINS");
  if (cors) {
    options.cors_allowed_origins.clear();
    std::stringstream list(*cors);
    std::string origin;
    while (std::getline(list, origin, ',')) {
      while (!origin.empty() && origin.front() == ' ') origin.erase(0, 1);
      while (!origin.empty() && origin.back() == ' ') origin.pop_back();
      if (!origin.empty()) options.cors_allowed_origins.push_back(origin);
    }
  }
  auto agent = Agent::create(**loop, std::move(options));
  if (!agent) {
    io.err << kProgram << " agent: " << agent.error().to_string() << '\n';
    return kExitFailure;
  }
  if (no_auth) {
    io.err << "WARNING: --no-auth: every request is served WITHOUT authentication. Anyone who\n"
              "WARNING: can reach " << (*agent)->local_endpoint().to_string()
           << " controls this user's files.\n";
  }
  io.out << "terminals-cli agent listening on " << (*agent)->local_endpoint().to_string()
         << std::endl;
  if (ready_fd >= 0) {
    // The launcher (the local backend) waits on this descriptor instead of polling the socket.
    static constexpr char kReady[] = "ready\n";
    [[maybe_unused]] auto n = ::write(ready_fd, kReady, sizeof kReady - 1);
    ::close(ready_fd);
  }

  Loop& l = **loop;
  Agent& a = **agent;
  Status ran = run_until_signal(l, [&](std::function<void()> stop) {
    a.shutdown(std::chrono::seconds(5), [stop](Status) { stop(); });
  });
  agent->reset();
  (void)l.run_nowait();
  io.out << "terminals-cli agent stopped" << std::endl;
  if (!ran) {
    io.err << kProgram << " agent: " << ran.error().to_string() << '\n';
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace

const Command agent_command = {
    "agent",
    "Serve the Open Terminal-compatible API from inside a sandbox",
    kHelp,
    run,
};

}  // namespace terminals::cli
