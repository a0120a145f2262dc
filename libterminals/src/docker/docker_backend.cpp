// DockerBackend: one container per terminal through the Engine API (see docker_backend.hpp for
// names, labels, homes and endpoints). Everything runs on the loop: Engine API calls through
// DockerClient (libcurl), readiness through HttpClient, directory work on the thread pool.

#include "terminals/docker_backend.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "curl/multi.hpp"
#include "docker/docker_client.hpp"
#include "docker/docker_names.hpp"
#include "http/url.hpp"
#include "json/json.hpp"
#include "terminals/http_client.hpp"
#include "terminals/log.hpp"
#include "terminals/loop.hpp"
#include "terminals/quantity.hpp"
#include "util/crypto.hpp"
#include "util/files.hpp"
#include "uv/work.hpp"

namespace terminals {

namespace detail {

namespace {

constexpr std::string_view kHome = "/home/user";
constexpr std::string_view kRunInContainer = "/run/terminal";
constexpr std::string_view kKeyVar = "OPEN_TERMINAL_API_KEY";
constexpr std::string_view kListenVar = "TERMINALS_AGENT_LISTEN";
constexpr std::string_view kImageLabelCapabilities = "io.libterminals.capabilities";

using Json = rapidjson::Value;

const Json* member(const Json& v, const char* name) {
  if (!v.IsObject()) return nullptr;
  auto it = v.FindMember(name);
  return it == v.MemberEnd() || it->value.IsNull() ? nullptr : &it->value;
}

std::string str_at(const Json& v, std::initializer_list<const char*> path) {
  const Json* cur = &v;
  for (const char* p : path) {
    cur = member(*cur, p);
    if (!cur) return {};
  }
  return cur->IsString() ? std::string(cur->GetString(), cur->GetStringLength()) : std::string();
}

std::map<std::string, std::string> labels_of(const Json& container_or_image) {
  std::map<std::string, std::string> out;
  const Json* config = member(container_or_image, "Config");
  const Json* labels = config ? member(*config, "Labels") : member(container_or_image, "Labels");
  if (!labels || !labels->IsObject()) return out;
  for (auto it = labels->MemberBegin(); it != labels->MemberEnd(); ++it) {
    if (it->value.IsString()) out[it->name.GetString()] = it->value.GetString();
  }
  return out;
}

std::string label(const std::map<std::string, std::string>& labels, std::string_view key) {
  auto it = labels.find(std::string(key));
  return it == labels.end() ? std::string() : it->second;
}

// "2026-11-23T15:04:05.123456789Z" (Docker's Created) to a time point; epoch when unreadable.
std::chrono::system_clock::time_point parse_rfc3339(const std::string& text) {
  std::tm tm{};
  if (text.size() < 19 || !::strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return {};
  return std::chrono::system_clock::from_time_t(::timegm(&tm));
}

std::string mib(std::uint64_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

// Splits "repo:tag" / "repo@sha256:..." into /images/create's fromImage and tag.
std::pair<std::string, std::string> split_image(const std::string& image) {
  if (image.find('@') != std::string::npos) return {image, {}};
  auto slash = image.rfind('/');
  auto colon = image.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    return {image.substr(0, colon), image.substr(colon + 1)};
  }
  return {image, "latest"};
}

std::string megabytes(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

// What an image tells us before we create a container of it.
struct ImageFacts {
  std::string agent_listen;                // our agent's socket path in the container, or ""
  std::string user;                        // Config.User
  std::vector<std::string> capabilities;   // io.libterminals.capabilities
};

}  // namespace

class DockerBackendImpl final : public DockerBackend {
 public:
  DockerBackendImpl(Loop& loop, DockerBackendOptions options, std::unique_ptr<CurlMulti> multi,
                    DockerAddress address, std::string instance)
      : loop_(loop),
        options_(std::move(options)),
        multi_(std::move(multi)),
        client_(std::make_unique<DockerClient>(*multi_, std::move(address))),
        instance_(std::move(instance)) {
    ClientOptions co;
    co.connect_timeout = std::chrono::seconds(2);
    co.read_timeout = std::chrono::seconds(5);
    co.max_idle_per_upstream = 0;  // one probe per connection: nothing to pool
    http_ = HttpClient::create(loop, co);
  }

  ~DockerBackendImpl() override {
    *alive_ = false;
    std::vector<Callback<TerminalInfo>> waiters;
    for (auto& [name, t] : terminals_) {
      for (auto& w : t->waiters) waiters.push_back(std::move(w));
    }
    if (!waiters.empty()) {
      loop_.defer([w = std::move(waiters)]() mutable {
        for (auto& cb : w) cb(Error(Errc::Cancelled, "the Docker backend was destroyed"));
      });
    }
    // Client before multi: the client's pending calls are cancelled through the multi.
    client_.reset();
    http_.reset();
    multi_.reset();
  }

  std::string_view kind() const override { return "docker"; }
  std::string engine_description() const override { return client_->description(); }

  std::string terminal_name(std::string_view user_id, std::string_view policy_id,
                            std::string_view context_id) const override {
    return container_name(options_.name_prefix, user_id, policy_id, context_id);
  }

  std::string progress(std::string_view name) const override {
    auto it = terminals_.find(std::string(name));
    return it == terminals_.end() ? std::string() : it->second->progress;
  }

  void provision(const TerminalSpec& spec, Callback<TerminalInfo> done) override;
  void inspect(std::string_view name, Callback<TerminalInfo> done) override;
  void stop(std::string_view name, Callback<void> done) override;
  void remove(std::string_view name, bool delete_data, Callback<void> done) override;
  void list(Callback<std::vector<TerminalInfo>> done) override;

  // --- shared with Provision ------------------------------------------------------------------
  struct Terminal {
    bool provisioning = false;
    std::vector<Callback<TerminalInfo>> waiters;
    std::string progress;
    std::shared_ptr<void> job;  // the Provision in flight, kept alive between its callbacks
  };

  template <class T>
  void later(Callback<T> done, std::type_identity_t<Result<T>> result) {
    loop_.defer([done = std::move(done), r = std::move(result)]() mutable { done(std::move(r)); });
  }

  std::string home_of(std::string_view user_id, std::string_view context_id) const {
    std::string home = options_.data_dir + "/homes/" + hash12(user_id);
    if (!context_id.empty() && context_id != "default") home += "/contexts/" + hash12(context_id);
    return home;
  }
  std::string run_dir_of(std::string_view name) const { return options_.data_dir + "/run/" + std::string(name); }

  /// A TerminalInfo from GET /containers/{name}/json, or why the container is not ours.
  Result<TerminalInfo> info_from_container(const Json& c) const;
  /// GET /containers/{name}/json, parsed; NotFound "no terminal <name> (why)" when it is not
  /// ours (another installation's, or not created by terminals).
  void owned_container(const std::string& name, MoveOnlyFunction<void(Result<rapidjson::Document>)> then);
  /// Its labels say it is ours (this instance) and for these ids.
  Status check_owner(const Json& c, std::string_view name, const TerminalSpec* spec) const;

  void finish(const std::string& name, Result<TerminalInfo> result) {
    auto it = terminals_.find(name);
    if (it == terminals_.end()) return;
    auto waiters = std::move(it->second->waiters);
    // The job is freed from a later iteration (finish() runs inside its own callbacks); the
    // entry goes now, so the map holds only terminals being provisioned.
    loop_.defer([job = std::move(it->second->job)] {});
    terminals_.erase(it);
    for (auto& w : waiters) later(std::move(w), result);
  }

  void set_progress(const std::string& name, std::string text) {
    if (auto it = terminals_.find(name); it != terminals_.end()) it->second->progress = std::move(text);
  }

  Loop& loop_;
  DockerBackendOptions options_;
  std::unique_ptr<CurlMulti> multi_;
  std::unique_ptr<DockerClient> client_;
  HttpClientPtr http_;
  std::string instance_;
  std::map<std::string, std::unique_ptr<Terminal>> terminals_;
  bool storage_opt_supported_ = true;  // until the engine says otherwise
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

Status DockerBackendImpl::check_owner(const Json& c, std::string_view name, const TerminalSpec* spec) const {
  auto labels = labels_of(c);
  if (label(labels, kLabelManagedBy) != kManagedByValue) {
    return Error(Errc::AlreadyExists, "a container named " + std::string(name) +
                                          " exists and was not created by terminals; remove it or choose "
                                          "another name prefix");
  }
  if (label(labels, kLabelInstance) != instance_) {
    return Error(Errc::AlreadyExists, "container " + std::string(name) +
                                          " belongs to another terminals installation (another data "
                                          "directory) on this engine; give each installation its own "
                                          "name prefix");
  }
  if (spec) {
    std::string ctx = label(labels, kLabelContextId);
    if (ctx == "default") ctx.clear();
    std::string want_ctx = spec->context_id == "default" ? std::string() : spec->context_id;
    std::string want_policy = spec->policy_id.empty() ? "default" : spec->policy_id;
    if (label(labels, kLabelUserId) != spec->user_id || label(labels, kLabelPolicy) != want_policy ||
        ctx != want_ctx) {
      return Error(Errc::AlreadyExists, "container " + std::string(name) +
                                            " carries other user, policy or context labels; refusing to adopt it");
    }
  }
  return {};
}

Result<TerminalInfo> DockerBackendImpl::info_from_container(const Json& c) const {
  TerminalInfo info;
  info.name = str_at(c, {"Name"});
  if (!info.name.empty() && info.name.front() == '/') info.name.erase(0, 1);
  auto labels = labels_of(c);
  info.user_id = label(labels, kLabelUserId);
  info.policy_id = label(labels, kLabelPolicy);
  if (info.policy_id.empty()) info.policy_id = "default";
  info.context_id = label(labels, kLabelContextId);
  if (info.context_id == "default") info.context_id.clear();
  info.created_at = parse_rfc3339(str_at(c, {"Created"}));

  const Json* state = member(c, "State");
  bool running = state && json_bool(*state, "Running").value_or(false);
  std::string status = state ? str_at(*state, {"Status"}) : std::string();
  if (running && !(state && json_bool(*state, "Restarting").value_or(false))) {
    info.state = TerminalState::Running;
  } else if (status == "dead") {
    info.state = TerminalState::Error;
  } else {
    info.state = TerminalState::Stopped;
  }
  if (!running && state) {
    std::int64_t code = json_int(*state, "ExitCode").value_or(0);
    std::uint64_t memory = 0;
    if (const Json* hc = member(c, "HostConfig")) memory = static_cast<std::uint64_t>(json_int(*hc, "Memory").value_or(0));
    if (json_bool(*state, "OOMKilled").value_or(false)) {
      info.reason = "killed: out of memory" + (memory ? " (limit " + mib(memory) + ")" : std::string());
    } else if (status == "created") {
      info.reason = "created but never started";
    } else if (code != 0) {
      info.reason = "exited with code " + std::to_string(code);
      if (code == 137) info.reason += " (killed)";
    } else {
      info.reason = "stopped";
    }
    if (auto err = str_at(*state, {"Error"}); !err.empty()) info.reason += ": " + err;
  }

  const Json* config = member(c, "Config");
  if (const Json* env = config ? member(*config, "Env") : nullptr; env && env->IsArray()) {
    std::string prefix = std::string(kKeyVar) + "=";
    for (const auto& e : env->GetArray()) {
      if (e.IsString() && std::string_view(e.GetString()).starts_with(prefix)) {
        info.api_key = std::string(e.GetString() + prefix.size());
      }
    }
  }

  std::string kind = label(labels, kLabelEndpoint);
  const Json* settings = member(c, "NetworkSettings");
  if (kind == "unix") {
    info.endpoint = Endpoint::unix_socket(run_dir_of(info.name) + "/agent.sock");
  } else if (kind.starts_with("network:")) {
    std::string ip;
    if (settings) {
      if (const Json* nets = member(*settings, "Networks")) {
        if (const Json* net = member(*nets, kind.c_str() + 8)) ip = str_at(*net, {"IPAddress"});
      }
    }
    if (!ip.empty()) info.endpoint = Endpoint::tcp(ip, options_.container_port);
  } else {
    std::string port;
    if (settings) {
      if (const Json* ports = member(*settings, "Ports")) {
        std::string key = std::to_string(options_.container_port) + "/tcp";
        if (const Json* list = member(*ports, key.c_str()); list && list->IsArray() && !list->Empty()) {
          port = str_at((*list)[0], {"HostPort"});
        }
      }
    }
    if (!port.empty()) {
      info.endpoint = Endpoint::tcp(options_.publish_host, static_cast<std::uint16_t>(std::atoi(port.c_str())));
    }
  }
  if (info.state == TerminalState::Running && (info.api_key.empty() || info.endpoint.to_string().empty())) {
    return Error(Errc::UpstreamProtocol, "container " + info.name + " runs but has no " + std::string(kKeyVar) +
                                             " or no reachable endpoint");
  }
  return info;
}

// --- provision ----------------------------------------------------------------------------------

// One provision, step by step: look for the container, pull the image if needed, prepare the
// home, create, start, wait for the agent. Owned by the callbacks in flight; every step checks
// that the backend still exists.
class Provision : public std::enable_shared_from_this<Provision> {
 public:
  Provision(DockerBackendImpl& b, TerminalSpec spec, std::string name, std::string image)
      : b_(b), alive_(b.alive_), spec_(std::move(spec)), name_(std::move(name)), image_(std::move(image)),
        started_(std::chrono::steady_clock::now()) {}

  void run() { look(); }

 private:
  using Self = std::shared_ptr<Provision>;
  bool gone() const { return alive_.expired(); }
  void fail(Error e) { b_.finish(name_, std::move(e)); }
  std::string container_path() const { return "/containers/" + name_; }

  // 1. Is there a container of that name already?
  void look() {
    b_.client_->call("GET", container_path() + "/json", {}, [self = shared_from_this()](Result<DockerReply> r) {
      if (self->gone()) return;
      self->on_look(std::move(r));
    });
  }

  void on_look(Result<DockerReply> r) {
    if (!r) {
      if (r.error().code == Errc::NotFound) return find_image();
      return fail(std::move(r).error());
    }
    auto doc = parse_json(r->body);
    if (!doc) return fail(Error(Errc::UpstreamProtocol, "Docker engine: unreadable container JSON"));
    if (auto owned = b_.check_owner(*doc, name_, &spec_); !owned) return fail(std::move(owned).error());
    auto info = b_.info_from_container(*doc);
    if (info && info->state == TerminalState::Running && !adopting_) {
      // Ours and running (a restart, or another replica created it): adopt it, key and all.
      adopting_ = true;
      log(LogLevel::Info, "docker", "adopting running container " + name_);
      return wait_ready(std::move(*info));
    }
    // Stopped, half-created, or running but not answering: replace it; the home persists.
    log(LogLevel::Info, "docker",
        "replacing container " + name_ + " (" + (info ? terminal_state_name(info->state) : "unreadable") + ")");
    remove_then([](const Self& self) { self->find_image(); });
  }

  void remove_then(MoveOnlyFunction<void(const Self&)> next, int attempt = 0) {
    b_.client_->call("DELETE", container_path() + "?force=1&v=1", {},
                     [self = shared_from_this(), next = std::move(next), attempt](Result<DockerReply> r) mutable {
                       if (self->gone()) return;
                       if (!r && r.error().code == Errc::AlreadyExists && attempt < 50 &&
                           r.error().message.find("in progress") != std::string::npos) {
                         // Someone else is removing it (a list() sweep, another replica): wait
                         // until it is gone instead of failing the user's request.
                         return self->retry_after(std::chrono::milliseconds(200),
                                                  [next = std::move(next), attempt](const Self& s) mutable {
                                                    s->remove_then(std::move(next), attempt + 1);
                                                  });
                       }
                       if (!r && r.error().code != Errc::NotFound) return self->fail(std::move(r).error());
                       next(self);
                     });
  }

  void retry_after(std::chrono::milliseconds delay, MoveOnlyFunction<void(const Self&)> fn) {
    retry_fn_ = std::move(fn);
    if (!retry_timer_) {
      retry_timer_ = b_.loop_.create_timer([this] {
        auto self = shared_from_this();  // the backend's Terminal::job holds us while we wait
        if (gone()) return;
        auto f = std::move(retry_fn_);
        f(self);
      });
    }
    retry_timer_->start(delay);
  }

  // 2. The image: inspect, pull when missing.
  void find_image() {
    b_.client_->call("GET", "/images/" + percent_encode(image_, true) + "/json", {},
                     [self = shared_from_this()](Result<DockerReply> r) {
                       if (self->gone()) return;
                       self->on_image(std::move(r));
                     });
  }

  void on_image(Result<DockerReply> r) {
    if (!r) {
      if (r.error().code != Errc::NotFound) return fail(std::move(r).error());
      if (pulled_) return fail(Error(Errc::NotFound, "image " + image_ + " is still missing after pulling it"));
      if (!b_.options_.pull_missing) {
        return fail(Error(Errc::NotFound, "image " + image_ + " is not on the Docker engine and pulling is off; "
                                          "pull or build it first"));
      }
      return pull();
    }
    auto doc = parse_json(r->body);
    if (!doc) return fail(Error(Errc::UpstreamProtocol, "Docker engine: unreadable image JSON"));
    auto labels = labels_of(*doc);
    facts_.agent_listen = label(labels, kImageLabelAgentListen);
    facts_.user = str_at(*doc, {"Config", "User"});
    std::string caps = label(labels, kImageLabelCapabilities);
    for (std::size_t i = 0; i < caps.size();) {
      std::size_t j = caps.find(',', i);
      if (j == std::string::npos) j = caps.size();
      std::string cap = caps.substr(i, j - i);
      cap.erase(0, cap.find_first_not_of(' '));
      cap.erase(cap.find_last_not_of(' ') + 1);
      i = j + 1;
      if (cap.empty()) continue;
      // Compared in the engine's spelling: "cap_sys_admin" is SYS_ADMIN.
      std::string name = normalize_capability(cap);
      const auto& allowed = b_.options_.image_capabilities;
      if (name.empty() || std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ",") + a;
        return fail(Error(Errc::PolicyDenied,
                          "image " + image_ + " asks for the capability '" + cap + "' in its " +
                              std::string(kImageLabelCapabilities) + " label, which is not permitted (" +
                              (list.empty() ? std::string("none is") : "permitted: " + list) +
                              "); add it to TERMINALS_DOCKER_IMAGE_CAPABILITIES if the image needs it, "
                              "or use another image"));
      }
      facts_.capabilities.push_back(std::move(name));
    }
    prepare();
  }

  void pull() {
    pulled_ = true;
    auto [from, tag] = split_image(image_);
    std::string path = "/images/create?fromImage=" + percent_encode(from);
    if (!tag.empty()) path += "&tag=" + percent_encode(tag);
    log(LogLevel::Info, "docker", "pulling image " + image_ + " for " + name_);
    b_.set_progress(name_, "pulling image " + image_);
    auto weak = weak_from_this();
    b_.client_->stream(
        "POST", path,
        [weak](std::string_view line) {
          auto self = weak.lock();
          if (self && !self->gone()) self->on_pull_line(line);
        },
        [self = shared_from_this()](Result<DockerReply> r) {
          if (self->gone()) return;
          if (!r) return self->fail(Error(r.error().code, "pulling image " + self->image_ + " failed: " + r.error().message));
          if (!self->pull_error_.empty()) {
            return self->fail(Error(Errc::NotFound, "pulling image " + self->image_ + " failed: " + self->pull_error_));
          }
          log(LogLevel::Info, "docker", "pulled image " + self->image_);
          self->find_image();
        },
        b_.options_.pull_timeout);
  }

  void on_pull_line(std::string_view line) {
    auto doc = parse_json(line);
    if (!doc || !doc->IsObject()) return;
    if (auto err = json_string(*doc, "error")) {
      pull_error_ = std::string(*err);
      return;
    }
    std::string id(json_string(*doc, "id").value_or(""));
    std::string status(json_string(*doc, "status").value_or(""));
    if (const Json* detail = member(*doc, "progressDetail"); detail && !id.empty() && status == "Downloading") {
      auto current = json_int(*detail, "current"), total = json_int(*detail, "total");
      if (current && total) layers_[id] = {static_cast<std::uint64_t>(*current), static_cast<std::uint64_t>(*total)};
    } else if (!id.empty() && (status == "Download complete" || status == "Pull complete")) {
      auto& l = layers_[id];
      l.first = l.second;
    }
    std::uint64_t done = 0, total = 0;
    for (const auto& [k, v] : layers_) done += v.first, total += v.second;
    std::string text = "pulling image " + image_ + (total ? ": " + megabytes(done) + " of " + megabytes(total) : ": " + status);
    b_.set_progress(name_, text);
    auto now = std::chrono::steady_clock::now();
    if (now - last_progress_log_ > std::chrono::seconds(2)) {
      last_progress_log_ = now;
      log(LogLevel::Info, "docker", text);
    }
  }

  // 3. Home and runtime directory, owned by the container's user (blocking: thread pool).
  void prepare() {
    unix_ = !facts_.agent_listen.empty();
    std::string user = b_.options_.user.empty() ? facts_.user : b_.options_.user;
    // A numeric "uid[:gid]" is used as is; no user means root; a user name cannot be resolved
    // from here, and images conventionally give their user 1000.
    uid_ = 1000;
    gid_ = 1000;
    if (user.empty()) {
      uid_ = gid_ = 0;
    } else if (user.find_first_not_of("0123456789:") == std::string::npos && user.front() != ':') {
      uid_ = static_cast<uid_t>(std::strtoul(user.c_str(), nullptr, 10));
      auto colon = user.find(':');
      gid_ = colon == std::string::npos ? uid_ : static_cast<gid_t>(std::strtoul(user.c_str() + colon + 1, nullptr, 10));
    }
    auto key = random_token(32);
    if (!key) return fail(std::move(key).error());
    key_ = *key;
    bool bind_home = b_.options_.home == DockerHome::Bind;
    std::string home = b_.home_of(spec_.user_id, spec_.context_id);
    std::string user_root = b_.options_.data_dir + "/homes/" + hash12(spec_.user_id);
    std::string run_dir = b_.run_dir_of(name_);
    bool unix = unix_;
    uid_t uid = uid_;
    gid_t gid = gid_;
    run_blocking<bool>(
        b_.loop_,
        [=]() -> Result<bool> {
          if (bind_home) {
            if (auto s = make_private_dir(user_root, 0700, uid, gid); !s) return std::move(s).error();
            if (home != user_root) {
              if (auto s = make_private_dir(home, 0700, uid, gid); !s) return std::move(s).error();
            }
          }
          // A fresh runtime directory each start: no stale socket of a previous container.
          if (auto s = remove_tree(run_dir); !s) return std::move(s).error();
          if (unix) {
            if (auto s = make_private_dir(run_dir, 0700, uid, gid); !s) return std::move(s).error();
          }
          return true;
        },
        [self = shared_from_this()](Result<bool> r) {
          if (self->gone()) return;
          if (!r) return self->fail(std::move(r).error());
          self->create();
        });
  }

  // 4. Create.
  std::string create_body() const {
    const auto& o = b_.options_;
    JsonWriter w;
    w.object().field("Image", image_);
    if (!o.user.empty()) w.field("User", o.user);
    w.key("Env").array();
    for (const auto& [k, v] : spec_.env) {
      if (k == kKeyVar || k == kListenVar) continue;  // ours; a policy cannot override them
      w.value(k + "=" + v);
    }
    w.value(std::string(kKeyVar) + "=" + key_);
    if (unix_) w.value(std::string(kListenVar) + "=unix:" + std::string(kRunInContainer) + "/agent.sock");
    w.end_array();
    w.key("Labels").object();
    for (const auto& [k, v] : terminal_labels(b_.instance_, spec_.user_id, spec_.policy_id, spec_.context_id, endpoint_kind_)) {
      w.field(k, v);
    }
    w.end_object();
    std::string port_key = std::to_string(o.container_port) + "/tcp";
    if (!unix_) w.key("ExposedPorts").object().key(port_key).object().end_object().end_object();

    w.key("HostConfig").object();
    w.key("Binds").array();
    if (o.home == DockerHome::Bind) w.value(b_.home_of(spec_.user_id, spec_.context_id) + ":" + std::string(kHome));
    if (unix_) w.value(b_.run_dir_of(name_) + ":" + std::string(kRunInContainer));
    w.end_array();
    w.key("Mounts").array();
    if (o.home == DockerHome::Volume) {
      w.object().field("Type", "volume").field("Source", name_ + "-home").field("Target", kHome).end_object();
    }
    for (const auto& m : o.mounts) {
      w.object().field("Type", "bind").field("Source", m.source).field("Target", m.target)
          .field("ReadOnly", m.read_only).end_object();
    }
    w.end_array();
    if (endpoint_kind_ == "port") {
      w.key("PortBindings").object().key(port_key).array()
          .object().field("HostIp", o.publish_host).field("HostPort", "").end_object()
          .end_array().end_object();
    }
    w.field("NetworkMode", network_mode_);
    const auto& l = spec_.limits;
    if (l.memory_bytes) {
      w.field("Memory", static_cast<std::int64_t>(*l.memory_bytes));
      w.field("MemorySwap", static_cast<std::int64_t>(*l.memory_bytes));  // no swap on top
    }
    if (l.cpus) w.field("NanoCpus", static_cast<std::int64_t>(*l.cpus * 1e9));
    if (l.pids) w.field("PidsLimit", static_cast<std::int64_t>(*l.pids));
    if (l.open_files) {
      w.key("Ulimits").array().object().field("Name", "nofile")
          .field("Soft", static_cast<std::int64_t>(*l.open_files))
          .field("Hard", static_cast<std::int64_t>(*l.open_files)).end_object().end_array();
    }
    if (l.storage_bytes && with_storage_opt_) {
      w.key("StorageOpt").object().field("size", std::to_string(*l.storage_bytes)).end_object();
    }
    w.key("CapDrop").array().value("ALL").end_array();
    std::set<std::string> caps(o.cap_add.begin(), o.cap_add.end());
    caps.insert(facts_.capabilities.begin(), facts_.capabilities.end());
    if (spec_.env.count("OPEN_TERMINAL_ALLOWED_DOMAINS")) caps.insert("NET_ADMIN");  // the image's egress filter
    w.key("CapAdd").array();
    for (const auto& c : caps) w.value(c);
    w.end_array();
    w.key("SecurityOpt").array().value("no-new-privileges").end_array();
    w.field("Init", o.init);
    if (o.read_only_root) {
      w.field("ReadonlyRootfs", true);
      w.key("Tmpfs").object().field("/tmp", "rw,nosuid,nodev,size=" + std::to_string(o.tmp_bytes)).end_object();
    }
    // Bounded container logs: a chatty agent must not fill the engine's disk.
    w.key("LogConfig").object().field("Type", "json-file").key("Config").object()
        .field("max-size", "1m").field("max-file", "2").end_object().end_object();
    w.key("RestartPolicy").object().field("Name", "no").end_object();
    w.end_object();  // HostConfig
    return w.end_object().take();
  }

  void choose_network() {
    const auto& nets = b_.options_.networks;
    std::string shard;
    if (!nets.empty()) {
      // Stable: the same terminal always lands on the same network.
      std::string h = sha256_hex(spec_.policy_id + ":" + spec_.user_id + ":" + spec_.context_id);
      shard = nets[std::strtoull(h.substr(0, 15).c_str(), nullptr, 16) % nets.size()];
    }
    if (unix_) {
      endpoint_kind_ = "unix";
      network_mode_ = spec_.network == NetworkMode::None ? "none" : (shard.empty() ? "bridge" : shard);
    } else if (!shard.empty()) {
      endpoint_kind_ = "network:" + shard;
      network_mode_ = shard;
    } else {
      endpoint_kind_ = "port";
      network_mode_ = "bridge";
    }
    if (!unix_ && spec_.network == NetworkMode::None) {
      // Reached over TCP, the container needs a network, and Docker's give outbound access:
      // the policy's "none" cannot hold. Said, not silently dropped.
      log(LogLevel::Warning, "docker",
          "terminal " + name_ + ": the policy asks for network none, but image " + image_ +
              " is reached over TCP (no " + std::string(kImageLabelAgentListen) + " label), so it runs on " +
              network_mode_ + " with outbound network access; use an image whose agent listens on a "
              "unix socket (terminals-agent) to enforce it");
    }
  }

  void create() {
    choose_network();
    if (spec_.limits.storage_bytes && !b_.storage_opt_supported_) with_storage_opt_ = false;
    b_.set_progress(name_, "creating container");
    b_.client_->call("POST", "/containers/create?name=" + name_, create_body(),
                     [self = shared_from_this()](Result<DockerReply> r) {
                       if (self->gone()) return;
                       self->on_create(std::move(r));
                     });
  }

  void on_create(Result<DockerReply> r) {
    if (!r) {
      const Error& e = r.error();
      if (e.code == Errc::AlreadyExists && ++conflicts_ <= 3) {
        // Another replica (or a create we gave up on) got there first: look again, adopt or replace.
        log(LogLevel::Info, "docker", "name conflict on " + name_ + "; looking at the existing container");
        adopting_ = false;
        return look();
      }
      if (with_storage_opt_ && (e.message.find("storage-opt") != std::string::npos ||
                                e.message.find("storage opt") != std::string::npos ||
                                e.message.find("StorageOpt") != std::string::npos)) {
        // Only this error turns the quota off (the reference dropped it on any error).
        log(LogLevel::Warning, "docker",
            "the Docker storage driver cannot limit container disk (" + e.message +
                "); terminals run without a storage limit. Use overlay2 on xfs with pquota to enforce it.");
        b_.storage_opt_supported_ = false;
        with_storage_opt_ = false;
        return create();
      }
      return fail(Error(e.code, "creating container " + name_ + " from " + image_ + ": " + e.message));
    }
    auto doc = parse_json(r->body);
    id_ = doc ? std::string(json_string(*doc, "Id").value_or("")) : std::string();
    if (id_.empty()) return fail(Error(Errc::UpstreamProtocol, "Docker engine: create returned no Id"));
    b_.set_progress(name_, "starting container");
    b_.client_->call("POST", "/containers/" + id_ + "/start", {}, [self = shared_from_this()](Result<DockerReply> sr) {
      if (self->gone()) return;
      if (!sr) {
        Error e(sr.error().code, "starting container " + self->name_ + ": " + sr.error().message);
        return self->discard(std::move(e));
      }
      self->started();
    });
  }

  void started() {
    if (unix_) {
      TerminalInfo info;
      info.name = name_;
      info.user_id = spec_.user_id;
      info.policy_id = spec_.policy_id;
      info.context_id = spec_.context_id;
      info.state = TerminalState::Running;
      info.endpoint = Endpoint::unix_socket(b_.run_dir_of(name_) + "/agent.sock");
      info.api_key = key_;
      info.created_at = std::chrono::system_clock::now();
      return wait_ready(std::move(info));
    }
    // The published port (or the network address) is known only now.
    b_.client_->call("GET", "/containers/" + id_ + "/json", {}, [self = shared_from_this()](Result<DockerReply> r) {
      if (self->gone()) return;
      if (!r) return self->discard(std::move(r).error());
      auto doc = parse_json(r->body);
      if (!doc) return self->discard(Error(Errc::UpstreamProtocol, "Docker engine: unreadable container JSON"));
      auto info = self->b_.info_from_container(*doc);
      if (!info) return self->discard(std::move(info).error());
      self->wait_ready(std::move(*info));
    });
  }

  // 5. Ready when GET /health answers 200. Meanwhile make sure the container still runs, so a
  // crash is reported at once with its log instead of after the whole timeout.
  void wait_ready(TerminalInfo info) {
    info_ = std::move(info);
    b_.set_progress(name_, "waiting for the terminal to answer");
    ready_deadline_ = std::chrono::steady_clock::now() +
                      (adopting_ ? std::chrono::milliseconds(5'000) : b_.options_.start_timeout);
    last_state_check_ = std::chrono::steady_clock::now();
    probe();
  }

  void probe() {
    RequestHead head;
    head.method = "GET";
    head.target = "/health";
    b_.http_->fetch(info_.endpoint, std::move(head), {},
                    [self = shared_from_this()](Result<FetchResponse> r) {
                      if (self->gone()) return;
                      if (r && r->head.status == 200) return self->ready();
                      self->not_yet();
                    },
                    64 * 1024);
  }

  void not_yet() {
    auto now = std::chrono::steady_clock::now();
    if (now >= ready_deadline_) {
      if (adopting_) {
        log(LogLevel::Warning, "docker", "adopted container " + name_ + " does not answer; replacing it");
        return remove_then([](const Self& self) { self->find_image(); });
      }
      return with_logs(Error(Errc::Timeout, "terminal " + name_ + " did not answer within " +
                                                std::to_string(b_.options_.start_timeout.count()) + " ms"));
    }
    if (now - last_state_check_ > std::chrono::milliseconds(500)) {
      last_state_check_ = now;
      return b_.client_->call("GET", container_path() + "/json", {}, [self = shared_from_this()](Result<DockerReply> r) {
        if (self->gone()) return;
        if (r) {
          auto doc = parse_json(r->body);
          if (doc) {
            auto info = self->b_.info_from_container(*doc);
            if (info && info->state != TerminalState::Running) {
              return self->with_logs(Error(Errc::BackendUnavailable, "terminal " + self->name_ + " " + info->reason));
            }
          }
        }
        self->schedule_probe();
      });
    }
    schedule_probe();
  }

  void schedule_probe() {
    // Fast at first (a fresh agent answers within tens of milliseconds), then gentler.
    auto elapsed = std::chrono::steady_clock::now() - started_;
    auto delay = elapsed < std::chrono::seconds(2) ? std::chrono::milliseconds(5) : std::chrono::milliseconds(100);
    if (!timer_) {
      timer_ = b_.loop_.create_timer([this] {
        auto self = shared_from_this();  // the backend's Terminal::job holds us while we wait
        if (gone()) return;
        probe();
      });
    }
    timer_->start(delay);
  }

  void ready() {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_);
    log(LogLevel::Info, "docker", (adopting_ ? "adopted " : "started ") + name_ + " in " + std::to_string(ms.count()) + " ms");
    b_.finish(name_, std::move(info_));
  }

  // Fails with the container's last log lines appended, then removes it (a half-started
  // terminal is never left behind).
  void with_logs(Error e) {
    b_.client_->call("GET", container_path() + "/logs?stdout=1&stderr=1&tail=20", {},
                     [self = shared_from_this(), e = std::move(e)](Result<DockerReply> r) mutable {
                       if (self->gone()) return;
                       if (r) {
                         std::string text = demux_docker_logs(r->body);
                         while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
                         if (text.size() > 600) text = "..." + text.substr(text.size() - 600);
                         if (!text.empty()) e.message += "; its log ends: " + text;
                       }
                       self->discard(std::move(e));
                     });
  }

  void discard(Error e) {
    remove_then([e = std::move(e)](const Self& self) mutable { self->fail(std::move(e)); });
  }

  DockerBackendImpl& b_;
  std::weak_ptr<bool> alive_;
  TerminalSpec spec_;
  std::string name_, image_;
  std::chrono::steady_clock::time_point started_, ready_deadline_, last_state_check_, last_progress_log_{};
  ImageFacts facts_;
  bool unix_ = false;
  bool adopting_ = false;
  bool pulled_ = false;
  bool with_storage_opt_ = true;
  int conflicts_ = 0;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  std::string key_, id_, endpoint_kind_, network_mode_, pull_error_;
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> layers_;
  TerminalInfo info_;
  std::unique_ptr<Timer> timer_;
  std::unique_ptr<Timer> retry_timer_;
  MoveOnlyFunction<void(const Self&)> retry_fn_;
};

void DockerBackendImpl::provision(const TerminalSpec& spec, Callback<TerminalInfo> done) {
  std::string name = terminal_name(spec.user_id, spec.policy_id, spec.context_id);
  std::string image = spec.image.empty() ? options_.default_image : spec.image;
  if (image.empty()) {
    return later(std::move(done), Error(Errc::InvalidArgument,
                                        "no image: the policy names none and TERMINALS_IMAGE is empty"));
  }
  if (!spec.egress_allow.empty() && !spec.env.count("OPEN_TERMINAL_ALLOWED_DOMAINS")) {
    return later(std::move(done), Error(Errc::PolicyDenied,
                                        "network: the Docker backend cannot enforce an egress allow-list; use "
                                        "network none or host (the Open Terminal image filters egress itself "
                                        "with OPEN_TERMINAL_ALLOWED_DOMAINS)"));
  }
  Caps caps;
  caps.allowed_images = options_.allowed_images;
  if (auto allowed = check_image(image, caps); !allowed) return later(std::move(done), std::move(allowed).error());
  auto& slot = terminals_[name];
  if (!slot) slot = std::make_unique<Terminal>();
  slot->waiters.push_back(std::move(done));
  if (slot->provisioning) return;  // single flight: one start, every caller answered
  slot->provisioning = true;
  TerminalSpec s = spec;
  if (s.policy_id.empty()) s.policy_id = "default";
  if (s.context_id == "default") s.context_id.clear();
  auto job = std::make_shared<Provision>(*this, std::move(s), name, std::move(image));
  slot->job = job;
  job->run();
}

// --- inspect, stop, remove, list ---------------------------------------------------------------

void DockerBackendImpl::owned_container(const std::string& n, MoveOnlyFunction<void(Result<rapidjson::Document>)> then) {
  client_->call("GET", "/containers/" + n + "/json", {},
                [this, alive = std::weak_ptr<bool>(alive_), n, then = std::move(then)](Result<DockerReply> r) mutable {
                  if (!alive.lock()) return then(Error(Errc::Cancelled, "the Docker backend was destroyed"));
                  if (!r) return then(std::move(r).error());
                  auto doc = parse_json(r->body);
                  if (!doc) return then(Error(Errc::UpstreamProtocol, "Docker engine: unreadable container JSON"));
                  if (auto owned = check_owner(*doc, n, nullptr); !owned) {
                    return then(Error(Errc::NotFound, "no terminal " + n + " (" + owned.error().message + ")"));
                  }
                  then(std::move(doc));
                });
}

void DockerBackendImpl::inspect(std::string_view name, Callback<TerminalInfo> done) {
  std::string n(name);
  owned_container(n, [this, n, done = std::move(done)](Result<rapidjson::Document> doc) mutable {
    if (!doc) return done(std::move(doc).error());
    auto info = info_from_container(*doc);
    if (info) {
      if (auto it = terminals_.find(n); it != terminals_.end() && it->second->provisioning) {
        info->state = TerminalState::Provisioning;
      }
    }
    done(std::move(info));
  });
}

void DockerBackendImpl::stop(std::string_view name, Callback<void> done) {
  std::string n(name);
  auto grace = options_.stop_grace;
  // Inspect first, as remove() does: a container that is not ours is not stopped.
  owned_container(n, [this, alive = std::weak_ptr<bool>(alive_), n, grace,
                      done = std::move(done)](Result<rapidjson::Document> doc) mutable {
    if (!doc) return done(std::move(doc).error());
    client_->call("POST", "/containers/" + n + "/stop?t=" + std::to_string(grace.count()), {},
                  [alive, done = std::move(done)](Result<DockerReply> sr) mutable {
                    if (!alive.lock()) return done(Error(Errc::Cancelled, "the Docker backend was destroyed"));
                    if (!sr) return done(std::move(sr).error());
                    done(Status{});  // 204, or 304 when it was already stopped
                  },
                  grace + std::chrono::seconds(30));
  });
}

void DockerBackendImpl::remove(std::string_view name, bool delete_data, Callback<void> done) {
  std::string n(name);
  // Inspect first: the labels say whose home it is.
  owned_container(n, [this, alive = std::weak_ptr<bool>(alive_), n, delete_data,
                      done = std::move(done)](Result<rapidjson::Document> doc) mutable {
    if (!doc) return done(std::move(doc).error());
    auto labels = labels_of(*doc);
    std::string home = home_of(label(labels, kLabelUserId), label(labels, kLabelContextId));
    client_->call("DELETE", "/containers/" + n + "?force=1&v=1", {},
                  [this, alive, n, home, delete_data, done = std::move(done)](Result<DockerReply> dr) mutable {
                    if (!alive.lock()) return done(Error(Errc::Cancelled, "the Docker backend was destroyed"));
                    if (!dr && dr.error().code != Errc::NotFound) return done(std::move(dr).error());
                    std::string run_dir = run_dir_of(n);
                    bool bind = options_.home == DockerHome::Bind;
                    run_blocking<bool>(
                        loop_,
                        [run_dir, home, delete_data, bind]() -> Result<bool> {
                          if (auto s = remove_tree(run_dir); !s) return std::move(s).error();
                          if (delete_data && bind) {
                            if (auto s = remove_tree(home); !s) return std::move(s).error();
                          }
                          return true;
                        },
                        [this, alive, n, delete_data, bind, done = std::move(done)](Result<bool> fr) mutable {
                          if (!alive.lock()) return done(Error(Errc::Cancelled, "the Docker backend was destroyed"));
                          if (!fr) return done(std::move(fr).error());
                          if (!delete_data || bind) return done(Status{});
                          client_->call("DELETE", "/volumes/" + n + "-home", {},
                                        [done = std::move(done)](Result<DockerReply> vr) mutable {
                                          if (!vr && vr.error().code != Errc::NotFound) return done(std::move(vr).error());
                                          done(Status{});
                                        });
                        });
                  });
  });
}

// GCC 12 at -O2 reports a Result<TerminalInfo>'s Error as maybe-uninitialized inside the
// inspect callback below (a false positive in std::variant; GCC 13 does not).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
void DockerBackendImpl::list(Callback<std::vector<TerminalInfo>> done) {
  JsonWriter f;
  f.object().key("label").array()
      .value(std::string(kLabelManagedBy) + "=" + std::string(kManagedByValue))
      .value(std::string(kLabelInstance) + "=" + instance_)
      .end_array().end_object();
  std::string path = "/containers/json?all=1&filters=" + percent_encode(f.take());
  client_->call("GET", path, {}, [this, alive = std::weak_ptr<bool>(alive_), done = std::move(done)](Result<DockerReply> r) mutable {
    if (!alive.lock()) return done(Error(Errc::Cancelled, "the Docker backend was destroyed"));
    if (!r) return done(std::move(r).error());
    auto doc = parse_json(r->body);
    if (!doc || !doc->IsArray()) return done(Error(Errc::UpstreamProtocol, "Docker engine: unreadable container list"));
    std::vector<std::string> names, half_created;
    for (const auto& c : doc->GetArray()) {
      const Json* ns = member(c, "Names");
      if (!ns || !ns->IsArray() || ns->Empty() || !(*ns)[0].IsString()) continue;
      std::string name = (*ns)[0].GetString();
      if (!name.empty() && name.front() == '/') name.erase(0, 1);
      auto t = terminals_.find(name);
      bool ours_in_flight = t != terminals_.end() && t->second->provisioning;
      if (str_at(c, {"State"}) == "created" && !ours_in_flight) {
        // Created and never started: a create whose orchestrator died before the start.
        half_created.push_back(std::move(name));
        continue;
      }
      names.push_back(std::move(name));
    }
    // Each one inspected, for its key and endpoint.
    struct Gather {
      std::vector<TerminalInfo> infos;
      std::size_t pending = 0;
      Callback<std::vector<TerminalInfo>> done;
    };
    auto g = std::make_shared<Gather>();
    g->pending = names.size() + half_created.size();
    g->done = std::move(done);
    if (g->pending == 0) return g->done(std::move(g->infos));
    // Removals are waited for: a provision right after list() (adoption at start-up) would
    // otherwise find the container still there and fail on "removal already in progress".
    for (const auto& n : half_created) {
      log(LogLevel::Info, "docker", "removing half-created container " + n);
      client_->call("DELETE", "/containers/" + n + "?force=1&v=1", {}, [g, n](Result<DockerReply> dr) {
        if (!dr && dr.error().code != Errc::NotFound) {
          log(LogLevel::Warning, "docker", "removing half-created container " + n + ": " + dr.error().message);
        }
        if (--g->pending == 0) g->done(std::move(g->infos));
      });
    }
    for (const auto& n : names) {
      inspect(n, [g](Result<TerminalInfo> info) {
        if (!info.has_value()) {
          Error e = std::move(info).error();
          if (e.code != Errc::NotFound) log(LogLevel::Warning, "docker", "listing terminals: " + e.message);
        } else {
          g->infos.push_back(std::move(info).value());
        }
        if (--g->pending == 0) g->done(std::move(g->infos));
      });
    }
  });
}
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic pop
#endif

}  // namespace detail

Result<std::unique_ptr<DockerBackend>> DockerBackend::create(Loop& loop, DockerBackendOptions options) {
  if (options.data_dir.empty()) {
    return Error(Errc::InvalidArgument, "the Docker backend needs a data directory (TERMINALS_DATA_DIR)");
  }
  if (options.data_dir.front() != '/') {
    return Error(Errc::InvalidArgument, "the data directory must be an absolute path (the Docker engine "
                                        "resolves bind mounts on its host): '" + options.data_dir + "'");
  }
  while (options.data_dir.size() > 1 && options.data_dir.back() == '/') options.data_dir.pop_back();
  if (options.name_prefix.empty() || options.name_prefix.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") !=
                                          std::string::npos) {
    return Error(Errc::InvalidArgument, "the container name prefix must be lower-case letters, digits and '-': '" +
                                            options.name_prefix + "'");
  }
  if (auto caps = parse_caps("", "", "", [&] {
        std::string joined;
        for (const auto& g : options.allowed_images) joined += (joined.empty() ? "" : ",") + g;
        return joined;
      }());
      !caps) {
    return std::move(caps).error();
  }
  auto address = detail::parse_docker_host(options.docker_host);
  if (!address) return std::move(address).error();
  for (const char* sub : {"", "/homes", "/run"}) {
    std::string dir = options.data_dir + sub;
    if (auto s = detail::make_private_dir(dir, 0711, std::nullopt, 0); !s) return std::move(s).error();
  }
  auto multi = detail::CurlMulti::create(loop);
  if (!multi) return std::move(multi).error();
  std::string instance = detail::hash12("terminals-instance:" + options.data_dir);
  return std::unique_ptr<DockerBackend>(new detail::DockerBackendImpl(
      loop, std::move(options), std::move(multi).value(), std::move(address).value(), std::move(instance)));
}

}  // namespace terminals
