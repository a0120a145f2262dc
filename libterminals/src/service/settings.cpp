// Settings: defaults < .env < environment < flags, like the reference (pydantic-settings reads
// the environment over .env), with every value validated here so a typo is an error that names
// the variable instead of a surprise at the first request.

#include "terminals/settings.hpp"

#include <pwd.h>
#include <unistd.h>

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>

#include "docker/docker_names.hpp"
#include "terminals/docker_backend.hpp"

extern char** environ;

namespace terminals {

namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

Error bad(std::string_view name, std::string_view value, std::string_view expected) {
  return Error(Errc::InvalidArgument,
               std::string(name) + ": '" + std::string(value) + "' is not " + std::string(expected));
}

Result<std::uint64_t> parse_unsigned(std::string_view name, std::string_view v, std::uint64_t lo,
                                     std::uint64_t hi, std::string_view what) {
  std::uint64_t n = 0;
  auto t = trim(v);
  auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
  if (t.empty() || ec != std::errc() || end != t.data() + t.size() || n < lo || n > hi) {
    return bad(name, v, what);
  }
  return n;
}

Result<bool> parse_bool(std::string_view name, std::string_view v) {
  std::string s = upper(trim(v));
  if (s == "1" || s == "TRUE" || s == "YES" || s == "ON") return true;
  if (s == "0" || s == "FALSE" || s == "NO" || s == "OFF" || s.empty()) return false;
  return bad(name, v, "a boolean (true/false)");
}

std::string default_data_dir() {
  if (::geteuid() == 0) return "/var/lib/terminals";
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg == '/') return std::string(xdg) + "/terminals";
  const char* home = std::getenv("HOME");
  std::string h = home && *home ? home : "";
  if (h.empty()) {
    if (const struct passwd* pw = ::getpwuid(::geteuid())) h = pw->pw_dir;
  }
  return h + "/.local/share/terminals";
}

}  // namespace

Result<std::map<std::string, std::string>> parse_dotenv(std::string_view text) {
  std::map<std::string, std::string> out;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = trim(text.substr(pos, eol - pos));
    pos = eol + 1;
    ++line_no;
    if (line.empty() || line.front() == '#') {
      if (eol == text.size()) break;
      continue;
    }
    if (line.substr(0, 7) == "export ") line = trim(line.substr(7));
    auto eq = line.find('=');
    auto fail = [&](std::string why) {
      return Error(Errc::InvalidArgument, ".env line " + std::to_string(line_no) + ": " + why);
    };
    if (eq == std::string_view::npos) return fail("expected NAME=value");
    std::string_view name = trim(line.substr(0, eq));
    if (name.empty()) return fail("empty variable name");
    for (char c : name) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return fail("bad variable name '" + std::string(name) + "'");
    }
    std::string_view raw = trim(line.substr(eq + 1));
    std::string value;
    if (!raw.empty() && (raw.front() == '"' || raw.front() == '\'')) {
      char quote = raw.front();
      std::size_t i = 1;
      bool closed = false;
      for (; i < raw.size(); ++i) {
        char c = raw[i];
        if (c == quote) {
          closed = true;
          break;
        }
        if (quote == '"' && c == '\\' && i + 1 < raw.size()) {
          char n = raw[++i];
          value += n == 'n' ? '\n' : n;
          continue;
        }
        value += c;
      }
      if (!closed) return fail("unterminated quote");
      std::string_view rest = trim(raw.substr(i + 1));
      if (!rest.empty() && rest.front() != '#') return fail("text after the closing quote");
    } else {
      // An unquoted value ends at " #" (a trailing comment).
      auto hash = raw.find(" #");
      value = std::string(trim(hash == std::string_view::npos ? raw : raw.substr(0, hash)));
    }
    out[upper(name)] = value;
    if (eol == text.size()) break;
  }
  return out;
}

const std::vector<std::string>& known_setting_names() {
  static const std::vector<std::string> names = {
      "TERMINALS_HOST", "TERMINALS_PORT", "TERMINALS_BACKEND", "TERMINALS_DATA_DIR",
      "TERMINALS_DOCKER_DATA_DIR", "TERMINALS_IMAGE", "TERMINALS_API_KEY", "TERMINALS_OPEN_WEBUI_URL",
      "TERMINALS_TOKEN_CACHE_TTL", "TERMINALS_OPEN_WEBUI_JWT_SECRET", "TERMINALS_INSECURE_OPEN",
      "TERMINALS_IDLE_TIMEOUT_MINUTES", "TERMINALS_LOG_LEVEL", "TERMINALS_PROXY_CONNECT_TIMEOUT_SECONDS",
      "TERMINALS_PROXY_READ_TIMEOUT_SECONDS", "TERMINALS_PROXY_BATCH", "TERMINALS_MAX_CPU", "TERMINALS_MAX_MEMORY",
      "TERMINALS_MAX_STORAGE", "TERMINALS_ALLOWED_IMAGES", "TERMINALS_ISOLATION", "TERMINALS_AGENT_PATH",
      "TERMINALS_MAX_CONCURRENT_PROVISIONS", "TERMINALS_MAX_QUEUED_PROVISIONS",
      "TERMINALS_DOCKER_HOST", "TERMINALS_DOCKER_NETWORK", "TERMINALS_NETWORK", "TERMINALS_DOCKER_MOUNTS",
      "TERMINALS_DOCKER_ENGINE", "TERMINALS_DOCKER_HOME", "TERMINALS_DOCKER_READ_ONLY",
      "TERMINALS_DOCKER_CAP_ADD", "TERMINALS_DOCKER_IMAGE_CAPABILITIES", "TERMINALS_DOCKER_USER",
      "TERMINALS_DOCKER_NAME_PREFIX", "TERMINALS_DOCKER_PULL", "TERMINALS_LIFECYCLE_INTERVAL_SECONDS",
      "OPEN_TERMINAL_SYSTEM_PROMPT"};
  return names;
}

Result<Settings> load_settings(const SettingsInput& input) {
  // Gather NAME -> (value, source), later sources overriding earlier ones.
  std::map<std::string, std::pair<std::string, std::string>> values;
  if (input.read_dotenv) {
    std::string path = input.dotenv_path.empty() ? ".env" : input.dotenv_path;
    std::ifstream in(path);
    if (!in && !input.dotenv_path.empty()) {
      return Error(Errc::NotFound, "the settings file '" + path + "' cannot be read");
    }
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      auto parsed = parse_dotenv(ss.str());
      if (!parsed) return Error(Errc::InvalidArgument, path + ": " + parsed.error().message);
      for (auto& [k, v] : *parsed) values[k] = {v, ".env"};
    }
  }
  std::vector<std::string> env;
  if (input.environment) {
    env = *input.environment;
  } else {
    for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  }
  for (const auto& entry : env) {
    auto eq = entry.find('=');
    if (eq == std::string::npos) continue;
    std::string name = upper(std::string_view(entry).substr(0, eq));
    if (name.rfind("TERMINALS_", 0) != 0 && name != "OPEN_TERMINAL_SYSTEM_PROMPT") continue;
    values[name] = {entry.substr(eq + 1), "environment"};
  }
  for (const auto& [k, v] : input.flags) values[upper(k)] = {v, "flag"};

  Settings s;
  s.data_dir = default_data_dir();
  // Aliases, as the reference accepts them.
  auto alias = [&](const char* canonical, const char* other) {
    if (!values.count(canonical) && values.count(other)) values[canonical] = values[other];
  };
  alias("TERMINALS_DATA_DIR", "TERMINALS_DOCKER_DATA_DIR");
  alias("TERMINALS_DOCKER_NETWORK", "TERMINALS_NETWORK");

  std::string error;
  auto take = [&](const char* name, const std::function<Status(const std::string&)>& apply) {
    auto it = values.find(name);
    if (it == values.end()) {
      s.sources[name] = "default";
      return;
    }
    s.sources[name] = it->second.second;
    if (!error.empty()) return;
    if (auto st = apply(it->second.first); !st) error = st.error().message;
  };
  auto str = [&](std::string& field) {
    return [&field](const std::string& v) -> Status {
      field = std::string(trim(v));
      return {};
    };
  };
  // A comma list: blanks around items and empty items dropped.
  auto list = [&](std::vector<std::string>& field) {
    return [&field](const std::string& v) -> Status {
      field.clear();
      std::string_view rest = v;
      while (!rest.empty()) {
        auto comma = rest.find(',');
        auto item = trim(rest.substr(0, comma));
        if (!item.empty()) field.emplace_back(item);
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
      return {};
    };
  };
  auto seconds = [&](const char* name, std::chrono::seconds& field, std::uint64_t hi) {
    return [&field, name, hi](const std::string& v) -> Status {
      auto n = parse_unsigned(name, v, 0, hi, "a number of seconds");
      if (!n) return std::move(n).error();
      field = std::chrono::seconds(*n);
      return {};
    };
  };

  take("TERMINALS_HOST", str(s.host));
  take("TERMINALS_PORT", [&](const std::string& v) -> Status {
    auto n = parse_unsigned("TERMINALS_PORT", v, 1, 65535, "a port number (1-65535)");
    if (!n) return std::move(n).error();
    s.port = static_cast<std::uint16_t>(*n);
    return {};
  });
  take("TERMINALS_BACKEND", [&](const std::string& v) -> Status {
    std::string b(trim(v));
    for (char& c : b) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (b != "local" && b != "docker" && b != "kubernetes" && b != "kubernetes-operator") {
      return bad("TERMINALS_BACKEND", v, "a backend (local, docker, kubernetes or kubernetes-operator)");
    }
    s.backend = b;
    return {};
  });
  take("TERMINALS_DATA_DIR", [&](const std::string& v) -> Status {
    std::string d(trim(v));
    if (d.empty() || d.front() != '/') return bad("TERMINALS_DATA_DIR", v, "an absolute directory path");
    s.data_dir = d;
    return {};
  });
  take("TERMINALS_IMAGE", str(s.image));
  take("TERMINALS_API_KEY", str(s.api_key));
  take("TERMINALS_OPEN_WEBUI_URL", [&](const std::string& v) -> Status {
    std::string u(trim(v));
    while (!u.empty() && u.back() == '/') u.pop_back();
    if (!u.empty() && u.rfind("http://", 0) != 0 && u.rfind("https://", 0) != 0) {
      return bad("TERMINALS_OPEN_WEBUI_URL", v, "an http:// or https:// URL");
    }
    s.open_webui_url = u;
    return {};
  });
  take("TERMINALS_TOKEN_CACHE_TTL", seconds("TERMINALS_TOKEN_CACHE_TTL", s.token_cache_ttl, 86400));
  take("TERMINALS_OPEN_WEBUI_JWT_SECRET", str(s.open_webui_jwt_secret));
  take("TERMINALS_INSECURE_OPEN", [&](const std::string& v) -> Status {
    auto b = parse_bool("TERMINALS_INSECURE_OPEN", v);
    if (!b) return std::move(b).error();
    s.insecure_open = *b;
    return {};
  });
  take("TERMINALS_IDLE_TIMEOUT_MINUTES", [&](const std::string& v) -> Status {
    auto n = parse_unsigned("TERMINALS_IDLE_TIMEOUT_MINUTES", v, 0, 525600, "a number of minutes");
    if (!n) return std::move(n).error();
    s.idle_timeout = std::chrono::minutes(*n);
    return {};
  });
  take("TERMINALS_LOG_LEVEL", [&](const std::string& v) -> Status {
    std::string l(trim(v));
    for (char& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (l == "warn") l = "warning";
    if (l == "critical") l = "error";
    if (l != "debug" && l != "info" && l != "warning" && l != "error") {
      return bad("TERMINALS_LOG_LEVEL", v, "a log level (debug, info, warning, error)");
    }
    s.log_level = l;
    return {};
  });
  take("TERMINALS_PROXY_CONNECT_TIMEOUT_SECONDS",
       seconds("TERMINALS_PROXY_CONNECT_TIMEOUT_SECONDS", s.proxy_connect_timeout, 3600));
  take("TERMINALS_PROXY_READ_TIMEOUT_SECONDS",
       seconds("TERMINALS_PROXY_READ_TIMEOUT_SECONDS", s.proxy_read_timeout, 86400));
  take("TERMINALS_PROXY_BATCH", [&](const std::string& v) -> Status {
    auto n = parse_unsigned("TERMINALS_PROXY_BATCH", v, 1, 64, "a number from 1 (off) to 64");
    if (!n) return std::move(n).error();
    s.proxy_batch = static_cast<std::size_t>(*n);
    return {};
  });
  take("TERMINALS_MAX_CPU", str(s.max_cpu));
  take("TERMINALS_MAX_MEMORY", str(s.max_memory));
  take("TERMINALS_MAX_STORAGE", str(s.max_storage));
  take("TERMINALS_ALLOWED_IMAGES", str(s.allowed_images));
  take("TERMINALS_ISOLATION", [&](const std::string& v) -> Status {
    std::string i(trim(v));
    if (!i.empty() && i != "none" && i != "user" && i != "sandbox") {
      return bad("TERMINALS_ISOLATION", v, "an isolation level (none, user or sandbox)");
    }
    s.isolation = i;
    return {};
  });
  take("TERMINALS_AGENT_PATH", str(s.agent_path));
  take("TERMINALS_MAX_CONCURRENT_PROVISIONS", [&](const std::string& v) -> Status {
    auto n = parse_unsigned("TERMINALS_MAX_CONCURRENT_PROVISIONS", v, 1, 4096, "a number from 1 to 4096");
    if (!n) return std::move(n).error();
    s.max_concurrent_provisions = static_cast<std::size_t>(*n);
    return {};
  });
  take("TERMINALS_MAX_QUEUED_PROVISIONS", [&](const std::string& v) -> Status {
    auto n = parse_unsigned("TERMINALS_MAX_QUEUED_PROVISIONS", v, 0, 1000000, "a number from 0 to 1000000");
    if (!n) return std::move(n).error();
    s.max_queued_provisions = static_cast<std::size_t>(*n);
    return {};
  });
  take("OPEN_TERMINAL_SYSTEM_PROMPT", str(s.system_prompt));
  auto boolean = [&](const char* name, bool& field) {
    return [&field, name](const std::string& v) -> Status {
      auto b = parse_bool(name, v);
      if (!b) return std::move(b).error();
      field = *b;
      return {};
    };
  };
  take("TERMINALS_DOCKER_HOST", [&](const std::string& v) -> Status {
    std::string h(trim(v));
    if (h.empty()) return bad("TERMINALS_DOCKER_HOST", v, "an address (e.g. 127.0.0.1)");
    s.docker_publish_host = h;
    return {};
  });
  take("TERMINALS_DOCKER_NETWORK", list(s.docker_networks));
  take("TERMINALS_DOCKER_MOUNTS", [&](const std::string& v) -> Status {
    if (auto m = parse_docker_mounts(v); !m) return std::move(m).error();
    s.docker_mounts = v;
    return {};
  });
  take("TERMINALS_DOCKER_ENGINE", str(s.docker_engine));
  take("TERMINALS_DOCKER_HOME", [&](const std::string& v) -> Status {
    std::string h(trim(v));
    if (h != "bind" && h != "volume") return bad("TERMINALS_DOCKER_HOME", v, "bind or volume");
    s.docker_home = h;
    return {};
  });
  take("TERMINALS_DOCKER_READ_ONLY", boolean("TERMINALS_DOCKER_READ_ONLY", s.docker_read_only));
  // Capability lists, in the engine's spelling. ALL and SYS_ADMIN are refused in both: either
  // undoes the container's confinement.
  auto capabilities = [&](const char* name, const std::string& v) -> Result<std::vector<std::string>> {
    std::vector<std::string> caps;
    if (auto st = list(caps)(v); !st) return std::move(st).error();
    for (auto& c : caps) {
      std::string n = detail::normalize_capability(c);
      if (n.empty()) return bad(name, v, "a comma list of capability names (e.g. NET_BIND_SERVICE)");
      if (n == "ALL" || n == "SYS_ADMIN") {
        return bad(name, v, "allowed: " + n + " would undo the container's confinement");
      }
      c = std::move(n);
    }
    return caps;
  };
  take("TERMINALS_DOCKER_CAP_ADD", [&](const std::string& v) -> Status {
    auto caps = capabilities("TERMINALS_DOCKER_CAP_ADD", v);
    if (!caps) return std::move(caps).error();
    s.docker_cap_add = std::move(caps).value();
    return {};
  });
  take("TERMINALS_DOCKER_IMAGE_CAPABILITIES", [&](const std::string& v) -> Status {
    auto caps = capabilities("TERMINALS_DOCKER_IMAGE_CAPABILITIES", v);
    if (!caps) return std::move(caps).error();
    s.docker_image_capabilities = std::move(caps).value();
    return {};
  });
  take("TERMINALS_DOCKER_USER", [&](const std::string& v) -> Status {
    std::string u(trim(v));
    auto colon = u.find(':');
    auto numeric = [](std::string_view x) { return !x.empty() && x.find_first_not_of("0123456789") == std::string_view::npos; };
    if (!u.empty() && !(numeric(std::string_view(u).substr(0, colon)) &&
                        (colon == std::string::npos || numeric(std::string_view(u).substr(colon + 1))))) {
      return bad("TERMINALS_DOCKER_USER", v, "a numeric uid or uid:gid (e.g. 1000:1000)");
    }
    s.docker_user = u;
    return {};
  });
  take("TERMINALS_DOCKER_NAME_PREFIX", [&](const std::string& v) -> Status {
    std::string p(trim(v));
    if (p.empty() || p.size() > 20 || p.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos) {
      return bad("TERMINALS_DOCKER_NAME_PREFIX", v, "1-20 lower-case letters, digits or '-'");
    }
    s.docker_name_prefix = p;
    return {};
  });
  take("TERMINALS_DOCKER_PULL", boolean("TERMINALS_DOCKER_PULL", s.docker_pull));
  take("TERMINALS_LIFECYCLE_INTERVAL_SECONDS", [&](const std::string& v) -> Status {
    auto n = parse_unsigned("TERMINALS_LIFECYCLE_INTERVAL_SECONDS", v, 1, 86400, "a number of seconds (1-86400)");
    if (!n) return std::move(n).error();
    s.lifecycle_interval = std::chrono::seconds(*n);
    return {};
  });
  if (!error.empty()) return Error(Errc::InvalidArgument, error);
  if (s.insecure_open && (!s.api_key.empty() || !s.open_webui_url.empty())) {
    return Error(Errc::InvalidArgument,
                 "TERMINALS_INSECURE_OPEN cannot be combined with TERMINALS_API_KEY or "
                 "TERMINALS_OPEN_WEBUI_URL: choose open mode or authentication");
  }
  if (!s.open_webui_jwt_secret.empty() && s.open_webui_url.empty()) {
    return Error(Errc::InvalidArgument,
                 "TERMINALS_OPEN_WEBUI_JWT_SECRET needs TERMINALS_OPEN_WEBUI_URL (Open WebUI mode)");
  }
  return s;
}

}  // namespace terminals
