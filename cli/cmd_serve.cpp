// terminals-cli serve: the orchestrator and authenticating proxy (terminals::Service) until
// SIGINT or SIGTERM.

#include <cctype>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <string>

#include <terminals/log.hpp>
#include <terminals/loop.hpp>
#include <terminals/service.hpp>
#include <terminals/settings.hpp>

#include "commands.hpp"
#include "signals.hpp"

namespace terminals::cli {

namespace {

constexpr std::string_view kHelp = R"(Usage: terminals-cli serve [--host HOST] [--port PORT] [--data-dir DIR] [--backend NAME]
                           [--isolation LEVEL] [--env-file FILE] [--insecure-open]

Runs the orchestrator: every user of Open WebUI (or any client holding the service key) gets a
private terminal, started on first use, stopped when idle, and reached through this server,
which authenticates the caller and swaps in the terminal's own key. Speaks the same routes and
settings as the Open WebUI terminals orchestrator, so a deployment switches by changing the
image. Runs until SIGINT or SIGTERM, then finishes requests in flight (up to 10 seconds) and
exits; terminals keep running and are adopted by the next start.

Options (each overrides the environment variable named after it):
      --host HOST          Address to listen on (TERMINALS_HOST, default 0.0.0.0)
      --port PORT          Port to listen on (TERMINALS_PORT, default 3000)
      --data-dir DIR       Homes, runtime files and the service key (TERMINALS_DATA_DIR;
                           default /var/lib/terminals as root, else ~/.local/share/terminals)
      --backend NAME       Where terminals run (TERMINALS_BACKEND): local (default, no engine
                           needed) or docker (a container per terminal; see below)
      --isolation LEVEL    Local backend: none, user or sandbox (TERMINALS_ISOLATION; default
                           the strongest this host allows: sandbox as root with bubblewrap)
      --api-key KEY        The service key (TERMINALS_API_KEY; prefer the environment: a flag
                           is visible in the process list)
      --open-webui-url URL Accept Open WebUI users' own tokens (TERMINALS_OPEN_WEBUI_URL)
      --idle-timeout MIN   Stop terminals idle this many minutes (TERMINALS_IDLE_TIMEOUT_MINUTES;
                           0, the default, never)
      --log-level LEVEL    debug, info, warning or error (TERMINALS_LOG_LEVEL)
      --env-file FILE      Read settings from FILE instead of ./.env
      --insecure-open      Serve WITHOUT authentication (TERMINALS_INSECURE_OPEN): anyone who
                           reaches the port gets a terminal as any user. Development only
  -h, --help               Show this help

Authentication: clients send "Authorization: Bearer <service key>" and name the user in
X-User-Id. Without TERMINALS_API_KEY a key is generated on first start, stored 0600 in the data
directory and printed once. With TERMINALS_OPEN_WEBUI_URL, users' Open WebUI tokens are accepted
too (checked against Open WebUI, cached for TERMINALS_TOKEN_CACHE_TTL seconds).

Every other setting has a flag named after its variable too (TERMINALS_TOKEN_CACHE_TTL is
--token-cache-ttl): TERMINALS_IMAGE, TERMINALS_TOKEN_CACHE_TTL, TERMINALS_OPEN_WEBUI_JWT_SECRET,
TERMINALS_PROXY_CONNECT_TIMEOUT_SECONDS, TERMINALS_PROXY_READ_TIMEOUT_SECONDS,
TERMINALS_PROXY_BATCH (status polls to one terminal pipelined per write, default 16, 1: off),
TERMINALS_MAX_CONCURRENT_PROVISIONS, TERMINALS_MAX_QUEUED_PROVISIONS, TERMINALS_AGENT_PATH,
TERMINALS_MAX_CPU, TERMINALS_MAX_MEMORY, TERMINALS_MAX_STORAGE, TERMINALS_ALLOWED_IMAGES,
TERMINALS_LIFECYCLE_INTERVAL_SECONDS (how often scheduled resets are checked, default 60) and
OPEN_TERMINAL_SYSTEM_PROMPT (--system-prompt).

Docker backend (--backend docker): TERMINALS_IMAGE is the terminal image (terminals-agent:dev is
built by `cmake --build build --target agent-image`; the real Open Terminal image works too).
The engine is $DOCKER_HOST or /var/run/docker.sock (TERMINALS_DOCKER_ENGINE overrides). Also:
TERMINALS_DOCKER_HOST (address published ports bind to, default 127.0.0.1),
TERMINALS_DOCKER_NETWORK (a network, or a comma list to shard), TERMINALS_DOCKER_MOUNTS (JSON
array of extra bind mounts), TERMINALS_DOCKER_HOME (bind or volume), TERMINALS_DOCKER_READ_ONLY,
TERMINALS_DOCKER_CAP_ADD, TERMINALS_DOCKER_IMAGE_CAPABILITIES (what an image may ask for in its
io.libterminals.capabilities label; default: Docker's own default set), TERMINALS_DOCKER_USER,
TERMINALS_DOCKER_NAME_PREFIX and TERMINALS_DOCKER_PULL (pull missing images, default true).

Examples:
  terminals-cli serve
  TERMINALS_PORT=8080 TERMINALS_IDLE_TIMEOUT_MINUTES=30 terminals-cli serve
  terminals-cli serve --host 127.0.0.1 --isolation user --data-dir /srv/terminals
  terminals-cli serve --backend docker --image terminals-agent:dev
)";

constexpr std::string_view kName = "serve";

// Flag -> setting variable.
const std::map<std::string_view, std::string_view> kFlags = {
    {"--host", "TERMINALS_HOST"},
    {"--port", "TERMINALS_PORT"},
    {"--data-dir", "TERMINALS_DATA_DIR"},
    {"--backend", "TERMINALS_BACKEND"},
    {"--isolation", "TERMINALS_ISOLATION"},
    {"--api-key", "TERMINALS_API_KEY"},
    {"--open-webui-url", "TERMINALS_OPEN_WEBUI_URL"},
    {"--idle-timeout", "TERMINALS_IDLE_TIMEOUT_MINUTES"},
    {"--log-level", "TERMINALS_LOG_LEVEL"},
};

LogLevel level_of(const std::string& name) {
  if (name == "debug") return LogLevel::Debug;
  if (name == "warning") return LogLevel::Warning;
  if (name == "error") return LogLevel::Error;
  return LogLevel::Info;
}

int run(Args args, Io io) {
  SettingsInput input;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    std::string_view name = a;
    std::optional<std::string> inline_value;
    if (auto eq = a.find('='); a.starts_with("--") && eq != std::string_view::npos) {
      name = a.substr(0, eq);
      inline_value = std::string(a.substr(eq + 1));
    }
    auto value = [&]() -> std::optional<std::string> {
      if (inline_value) return inline_value;
      if (i + 1 >= args.size()) return std::nullopt;
      return std::string(args[++i]);
    };
    // Every setting also has a flag named after its variable: TERMINALS_TOKEN_CACHE_TTL is
    // --token-cache-ttl (a few have shorter aliases above).
    std::string derived;
    if (name.starts_with("--")) {
      derived = "TERMINALS_";
      for (char c : name.substr(2)) derived += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      if (derived == "TERMINALS_SYSTEM_PROMPT") derived = "OPEN_TERMINAL_SYSTEM_PROMPT";
      bool known = false;
      for (const auto& n : known_setting_names()) known = known || n == derived;
      if (!known || derived == "TERMINALS_INSECURE_OPEN") derived.clear();
    }
    if (auto flag = kFlags.find(name); flag != kFlags.end() || !derived.empty()) {
      auto v = value();
      if (!v) return usage_error(io, kName, std::string(name) + " needs a value");
      input.flags[flag != kFlags.end() ? std::string(flag->second) : derived] = *v;
    } else if (name == "--env-file") {
      auto v = value();
      if (!v) return usage_error(io, kName, "--env-file needs a file");
      input.dotenv_path = *v;
    } else if (a == "--insecure-open") {
      input.flags["TERMINALS_INSECURE_OPEN"] = "true";
    } else {
      return usage_error(io, kName, "unexpected argument '" + std::string(a) + "'");
    }
  }
  auto settings = load_settings(input);
  if (!settings) return usage_error(io, kName, settings.error().message);
  set_log_level(level_of(settings->log_level));

  auto loop = Loop::create();
  if (!loop) {
    io.err << kProgram << " serve: " << loop.error().to_string() << '\n';
    return kExitFailure;
  }
  auto service = Service::create(**loop, *settings);
  if (!service) {
    io.err << kProgram << " serve: cannot start: " << service.error().message << '\n';
    return kExitFailure;
  }
  Service& svc = **service;
  bool started = false;
  std::optional<Error> start_error;
  svc.start([&](Status s) {
    if (!s) {
      start_error = s.error();
      (*loop)->stop();
      return;
    }
    started = true;
    Endpoint at = svc.local_endpoint();
    io.out << "terminals-cli serve listening on http://" << at.host << ':' << at.port
           << " (backend " << svc.backend_description() << ", data in " << settings->data_dir << ")\n";
    if (settings->insecure_open) {
      io.err << "WARNING: --insecure-open: NO AUTHENTICATION. Anyone who can reach this port gets a\n"
                "WARNING: terminal as any user they name in X-User-Id. Development only.\n";
    } else {
      io.out << "Authenticate with: Authorization: Bearer <service key>, plus X-User-Id: <user id>\n";
      if (svc.service_key_generated()) {
        io.out << "Service key (generated now, shown once; stored in " << svc.service_key_path()
               << "):\n  " << svc.service_key() << '\n';
      } else if (!settings->api_key.empty()) {
        io.out << "Service key: the value of TERMINALS_API_KEY\n";
      } else {
        io.out << "Service key: stored in " << svc.service_key_path() << '\n';
      }
      if (!settings->open_webui_url.empty()) {
        io.out << "Open WebUI users' tokens are accepted too (checked against "
               << settings->open_webui_url << ")\n";
      }
    }
    std::string key_expr = settings->insecure_open            ? std::string("anything")
                           : svc.service_key_generated()     ? svc.service_key()
                           : !settings->api_key.empty()      ? std::string("$TERMINALS_API_KEY")
                                                             : "$(cat " + svc.service_key_path() + ")";
    io.out << "Try: curl -H \"Authorization: Bearer " << key_expr << "\" -H \"X-User-Id: alice\" http://"
           << (at.host == "0.0.0.0" ? std::string("127.0.0.1") : at.host) << ':' << at.port
           << "/files/list\n"
           << std::flush;
  });
  Status ran = run_until_signal(**loop, [&](std::function<void()> stop) {
    svc.shutdown(std::chrono::seconds(10), [stop](Status) { stop(); });
  });
  service->reset();
  (void)(*loop)->run_nowait();
  if (start_error) {
    io.err << kProgram << " serve: cannot start: " << start_error->message << '\n';
    return kExitFailure;
  }
  if (started) io.out << "terminals-cli serve stopped; terminals keep running\n";
  if (!ran) {
    io.err << kProgram << " serve: " << ran.error().to_string() << '\n';
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace

const Command serve_command = {
    "serve",
    "Run the orchestrator and authenticating proxy for every user's terminal",
    kHelp,
    run,
};

}  // namespace terminals::cli
