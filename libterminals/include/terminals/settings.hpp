#pragma once

/// @file settings.hpp
/// `Settings`: every knob of `terminals-cli serve`, read the way the reference orchestrator
/// reads its own: `TERMINALS_*` environment variables (names case-insensitive), a `.env` file
/// in the working directory, and command-line flags on top. Same names, same meanings; where a
/// default differs it is said below.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/export.hpp"
#include "terminals/result.hpp"

namespace terminals {

struct Settings {
  std::string host = "0.0.0.0";  ///< TERMINALS_HOST
  std::uint16_t port = 3000;     ///< TERMINALS_PORT
  std::string backend = "local"; ///< TERMINALS_BACKEND: local (ours, the default) | docker | kubernetes | kubernetes-operator
  /// TERMINALS_DATA_DIR (alias TERMINALS_DOCKER_DATA_DIR). Default: /var/lib/terminals as root,
  /// else $XDG_DATA_HOME/terminals (~/.local/share/terminals).
  std::string data_dir;
  std::string image = "ghcr.io/open-webui/open-terminal:latest";  ///< TERMINALS_IMAGE
  std::string api_key;          ///< TERMINALS_API_KEY; empty: generated once and stored in data_dir
  std::string open_webui_url;   ///< TERMINALS_OPEN_WEBUI_URL: validate users' Open WebUI tokens
  std::chrono::seconds token_cache_ttl{60};  ///< TERMINALS_TOKEN_CACHE_TTL
  /// TERMINALS_OPEN_WEBUI_JWT_SECRET (ours): verify Open WebUI tokens offline (HS256) with the
  /// secret Open WebUI signs them with, instead of asking Open WebUI for each new token.
  std::string open_webui_jwt_secret;
  /// TERMINALS_INSECURE_OPEN (ours): serve without any authentication. Only with this explicit
  /// flag; a missing key never means "open" (the reference's open mode is a footgun).
  bool insecure_open = false;
  std::chrono::minutes idle_timeout{0};  ///< TERMINALS_IDLE_TIMEOUT_MINUTES; 0 = never
  std::string log_level = "info";        ///< TERMINALS_LOG_LEVEL: debug | info | warning | error
  std::chrono::seconds proxy_connect_timeout{10};  ///< TERMINALS_PROXY_CONNECT_TIMEOUT_SECONDS
  std::chrono::seconds proxy_read_timeout{360};    ///< TERMINALS_PROXY_READ_TIMEOUT_SECONDS
  /// TERMINALS_PROXY_BATCH (ours): status polls to one terminal that arrive together (GET
  /// /health, /files/cwd, /execute/{id}/status without wait, ...) are pipelined to its agent,
  /// up to this many per connection and write. 1 turns it off.
  std::size_t proxy_batch = 16;
  std::string max_cpu;         ///< TERMINALS_MAX_CPU: cap on policies' CPU (any unit spelling)
  std::string max_memory;      ///< TERMINALS_MAX_MEMORY
  std::string max_storage;     ///< TERMINALS_MAX_STORAGE
  std::string allowed_images;  ///< TERMINALS_ALLOWED_IMAGES: comma list of globs
  /// TERMINALS_ISOLATION (ours, local backend): none | user | sandbox; empty: the strongest
  /// this host allows.
  std::string isolation;
  std::string agent_path;  ///< TERMINALS_AGENT_PATH (ours): the terminals-agent binary
  /// TERMINALS_MAX_CONCURRENT_PROVISIONS (ours): terminals started at once; more wait in a
  /// queue, and past TERMINALS_MAX_QUEUED_PROVISIONS get 429 with Retry-After.
  std::size_t max_concurrent_provisions = 8;
  std::size_t max_queued_provisions = 256;
  std::string system_prompt;  ///< OPEN_TERMINAL_SYSTEM_PROMPT (no prefix), forwarded to terminals
  /// TERMINALS_LIFECYCLE_INTERVAL_SECONDS (ours): how often scheduled resets are checked.
  std::chrono::seconds lifecycle_interval{60};

  // Docker backend (docker_backend.hpp says what each does).
  /// TERMINALS_DOCKER_HOST: where published terminal ports are bound and reached.
  std::string docker_publish_host = "127.0.0.1";
  /// TERMINALS_DOCKER_NETWORK (alias TERMINALS_NETWORK): a network, or a comma list to shard.
  std::vector<std::string> docker_networks;
  /// TERMINALS_DOCKER_MOUNTS: JSON array of extra bind mounts, checked when loaded.
  std::string docker_mounts;
  /// TERMINALS_DOCKER_ENGINE (ours): the engine's address; empty: $DOCKER_HOST, else
  /// unix:///var/run/docker.sock.
  std::string docker_engine;
  std::string docker_home = "bind";       ///< TERMINALS_DOCKER_HOME (ours): bind | volume
  bool docker_read_only = false;          ///< TERMINALS_DOCKER_READ_ONLY (ours): read-only root, tmpfs /tmp
  std::vector<std::string> docker_cap_add;  ///< TERMINALS_DOCKER_CAP_ADD (ours): capabilities kept
  /// TERMINALS_DOCKER_IMAGE_CAPABILITIES (ours): what images may ask for in their
  /// io.libterminals.capabilities label; unset: DockerBackendOptions' default (Docker's own set).
  std::optional<std::vector<std::string>> docker_image_capabilities;
  std::string docker_user;                ///< TERMINALS_DOCKER_USER (ours): "uid[:gid]" for containers
  std::string docker_name_prefix = "terminals";  ///< TERMINALS_DOCKER_NAME_PREFIX (ours)
  bool docker_pull = true;                ///< TERMINALS_DOCKER_PULL (ours): pull missing images

  /// Where each value came from ("default", "environment", ".env", "flag"), by variable name.
  std::map<std::string, std::string> sources;
};

struct SettingsInput {
  /// The process environment as NAME=value (empty: read `environ`).
  std::optional<std::vector<std::string>> environment;
  /// The .env file; empty: ".env" in the working directory if it exists. A named file that
  /// does not exist is an error.
  std::string dotenv_path;
  bool read_dotenv = true;
  /// Flag values by variable name (e.g. {"TERMINALS_PORT", "8080"}); they win over everything.
  std::map<std::string, std::string> flags;
};

/// Every variable `load_settings` reads (TERMINALS_* and OPEN_TERMINAL_SYSTEM_PROMPT), for
/// flag spellings (--idle-timeout-minutes for TERMINALS_IDLE_TIMEOUT_MINUTES) and typo checks.
TERMINALS_API const std::vector<std::string>& known_setting_names();

/// Reads and validates the settings. InvalidArgument names the variable, the bad value and
/// what is expected (e.g. "TERMINALS_PORT: 'abc' is not a port number (1-65535)").
TERMINALS_API Result<Settings> load_settings(const SettingsInput& input = {});

/// Parses .env text: NAME=value lines, `#` comments, optional `export `, single or double
/// quotes (double quotes understand \n, \" and \\). InvalidArgument with the line number.
TERMINALS_API Result<std::map<std::string, std::string>> parse_dotenv(std::string_view text);

}  // namespace terminals
