// Service: `terminals-cli serve` as a library object. One Server; each request is routed here
// to health, admin, tool schema, WebSocket or proxy handling (route table in service.hpp).

#include "terminals/service.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "auth/authenticator.hpp"
#include "auth/service_key.hpp"
#include "curl/multi.hpp"
#include "http/url.hpp"
#include "json/json.hpp"
#include "proxy/terminal_proxy.hpp"
#include "terminals/http_client.hpp"
#include "terminals/docker_backend.hpp"
#include "terminals/local_backend.hpp"
#include "terminals/quantity.hpp"
#include "terminals/policy.hpp"
#include "terminals/policy_store.hpp"
#include "service/policy_api.hpp"
#include "service/reset_scheduler.hpp"
#include "terminals/log.hpp"
#include "terminals/loop.hpp"
#include "terminals/orchestrator.hpp"
#include "terminals/server.hpp"
#include "util/crypto.hpp"

namespace terminals {

namespace detail {

namespace {

using namespace std::chrono_literals;

constexpr std::size_t kAdminBodyLimit = 64 * 1024;
constexpr auto kOpenApiTtl = 300s;

void send_json(ServerExchange& ex, int status, std::string_view body, Headers extra = {}) {
  Headers h{{"Content-Type", "application/json"}};
  for (const auto& header : extra) h.add(header.name, header.value);
  ex.respond(status, std::move(h), body);
}

void send_detail(ServerExchange& ex, int status, std::string_view message, Headers extra = {}) {
  send_json(ex, status, detail_json(message), std::move(extra));
}

// X-Terminal-Context-Id as the reference normalises it (§0.1): "" means default; otherwise
// "default", "chat:..." or "automation:...", at most 256 characters, no control characters.
Result<std::string> normalize_context(std::string_view raw) {
  while (!raw.empty() && (raw.front() == ' ' || raw.front() == '\t')) raw.remove_prefix(1);
  while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\t')) raw.remove_suffix(1);
  if (raw.empty() || raw == "default") return std::string();
  if (raw.size() > 256) return Error(Errc::InvalidArgument, "context_id is too long");
  for (unsigned char c : raw) {
    if (c < 32 || c == 127) return Error(Errc::InvalidArgument, "context_id contains control characters");
  }
  if (raw.rfind("chat:", 0) != 0 && raw.rfind("automation:", 0) != 0) {
    return Error(Errc::InvalidArgument, "only chat and automation contexts are supported");
  }
  return std::string(raw);
}

std::string iso8601(std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  struct tm tm {};
  ::gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
  return buf;
}

// Removes authentication from a tool schema: the orchestrator authenticates the caller, and
// the model's tools must not ask for the terminal's key.
std::string strip_security(const std::string& schema) {
  auto doc = parse_json(schema);
  if (!doc || !doc->IsObject()) return schema;
  doc->RemoveMember("security");
  if (doc->HasMember("components") && (*doc)["components"].IsObject()) {
    (*doc)["components"].RemoveMember("securitySchemes");
  }
  if (doc->HasMember("paths") && (*doc)["paths"].IsObject()) {
    for (auto& path : (*doc)["paths"].GetObject()) {
      if (!path.value.IsObject()) continue;
      for (auto& op : path.value.GetObject()) {
        if (op.value.IsObject()) op.value.RemoveMember("security");
      }
    }
  }
  return to_json(*doc);
}

// A request's route, decided from its decoded path.
struct Route {
  enum Kind { Health, Admin, OpenApi, WebSocket, Proxy } kind = Proxy;
  std::string policy = "default";
  std::string upstream_path;  // path on the agent, starting with '/'
  std::string prefix;         // "/p/<policy>" for policy routes
  std::string session;        // WebSocket session id
};

Route route_for(const RequestHead& head, const std::string& path) {
  Route r;
  if (path == "/health" && (head.method == "GET" || head.method == "HEAD")) {
    r.kind = Route::Health;
    return r;
  }
  if (path == "/api/v1/status" || path == "/api/v1/terminals" || path == "/api/v1/terminals/stop" ||
      path == "/api/v1/terminals/refresh" || PolicyApi::handles(path)) {
    r.kind = Route::Admin;
    return r;
  }
  std::string rest = path;
  // "/p/<policy>/..." (a trailing part is required, as in the reference: "/p/x" alone is a
  // path of the default terminal).
  if (path.rfind("/p/", 0) == 0) {
    auto slash = path.find('/', 3);
    if (slash != std::string::npos && slash > 3) {
      r.policy = path.substr(3, slash - 3);
      r.prefix = path.substr(0, slash);
      rest = path.substr(slash);
    }
  }
  r.upstream_path = rest;
  if (rest == "/openapi.json" && (head.method == "GET" || head.method == "HEAD")) {
    r.kind = Route::OpenApi;
    return r;
  }
  constexpr std::string_view kTerminals = "/api/terminals/";
  if (head.upgrade && head.method == "GET" && rest.rfind(kTerminals, 0) == 0 &&
      rest.size() > kTerminals.size() && rest.find('/', kTerminals.size()) == std::string::npos) {
    r.kind = Route::WebSocket;
    r.session = rest.substr(kTerminals.size());
    return r;
  }
  r.kind = Route::Proxy;
  return r;
}

// The reference's answer for a missing X-User-Id with valid credentials.
constexpr std::string_view kMissingUserId =
    R"({"detail":[{"type":"missing","loc":["header","X-User-Id"],"msg":"Field required","input":null}]})";

class ServiceImpl final : public Service {
 public:
  ServiceImpl(Loop& loop, Settings settings) : loop_(loop), settings_(std::move(settings)) {}

  ~ServiceImpl() override { *alive_ = false; }

  Status init() {
    // Backend first: it lays out the data directory (0711, so terminal users reach their own
    // homes by path).
    if (settings_.backend == "docker") {
      if (auto s = create_docker_backend(); !s) return s;
    } else if (settings_.backend == "local") {
      LocalBackendOptions lo;
      lo.data_dir = settings_.data_dir;
      lo.agent_path = settings_.agent_path;
      if (!settings_.isolation.empty()) {
        auto iso = parse_isolation(settings_.isolation);
        if (!iso) return std::move(iso).error();
        lo.default_isolation = *iso;
      }
      auto backend = LocalBackend::create(loop_, lo);
      if (!backend) return std::move(backend).error();
      local_ = backend->get();
      backend_ = std::move(backend).value();
    } else {
      return Error(Errc::InvalidArgument,
                   "TERMINALS_BACKEND=" + settings_.backend +
                       " is not available in this build yet; use TERMINALS_BACKEND=local or docker");
    }

    auto caps = parse_caps(settings_.max_cpu, settings_.max_memory, settings_.max_storage, settings_.allowed_images);
    if (!caps) return std::move(caps).error();
    caps_ = std::move(caps).value();
    auto store = open_file_policy_store(settings_.data_dir + "/policies");
    if (!store) return std::move(store).error();
    store_ = std::shared_ptr<PolicyStore>(std::move(store).value());
    auto audit = AuditLog::open(settings_.data_dir + "/audit.log");
    if (!audit) return std::move(audit).error();
    audit_ = std::shared_ptr<AuditLog>(std::move(audit).value());
    policies_ = std::make_unique<PolicyApi>(loop_, store_, audit_, caps_);

    if (!settings_.insecure_open) {
      std::optional<std::string> from_env;
      if (!settings_.api_key.empty()) from_env = settings_.api_key;
      auto key = load_or_create_service_key(settings_.data_dir, from_env);
      if (!key) return std::move(key).error();
      key_ = std::move(key).value();
    }

    auto curl = CurlMulti::create(loop_);
    if (!curl) return std::move(curl).error();
    curl_ = std::move(curl).value();
    AuthOptions ao;
    ao.service_key = key_.key;
    ao.open_webui_url = settings_.open_webui_url;
    ao.token_cache_ttl = settings_.token_cache_ttl;
    ao.jwt_secret = settings_.open_webui_jwt_secret;
    ao.open_mode = settings_.insecure_open;
    auto auth = Authenticator::create(loop_, ao, curl_.get());
    if (!auth) return std::move(auth).error();
    auth_ = std::move(auth).value();

    OrchestratorOptions oo;
    oo.max_concurrent_provisions = settings_.max_concurrent_provisions;
    oo.max_queued_provisions = settings_.max_queued_provisions;
    oo.default_idle_timeout = settings_.idle_timeout;
    oo.on_event = [audit = audit_](std::string_view event, const TerminalKey& key, std::string_view detail) {
      (void)audit->record("terminal." + std::string(event), {{"user_id", key.user_id},
                                                             {"policy_id", key.policy_id},
                                                             {"context_id", key.context_id},
                                                             {"detail", std::string(detail)}});
    };
    auto orchestrator = Orchestrator::create(
        loop_, *backend_, [this](const TerminalKey& key) { return spec_for(key); }, oo);
    if (!orchestrator) return std::move(orchestrator).error();
    orchestrator_ = std::move(orchestrator).value();
    resets_ = std::make_unique<ResetScheduler>(loop_, *orchestrator_, *policies_, store_, audit_,
                                               settings_.lifecycle_interval);

    ProxyOptions po;
    po.connect_timeout = settings_.proxy_connect_timeout;
    po.idle_timeout = settings_.proxy_read_timeout;
    po.max_batch = settings_.proxy_batch;
    proxy_ = TerminalProxy::create(loop_, po);
    client_ = HttpClient::create(loop_);
    return {};
  }

  void start(Callback<void> done) override {
    std::weak_ptr<bool> alive = alive_;
    orchestrator_->start([this, alive, done = std::move(done)](Status adopted) mutable {
      if (!alive.lock() || !*alive.lock()) return done(Error(Errc::Cancelled, "the service was destroyed"));
      if (!adopted) return done(std::move(adopted));
      resets_->start();
      ServerOptions so;
      so.listen = Endpoint::tcp(settings_.host, settings_.port);
      // Bodies stream to terminals, whose agents enforce their own caps (JSON, uploads).
      so.max_body_bytes = std::numeric_limits<std::uint64_t>::max();
      auto server = Server::create(loop_, std::move(so), [this](ServerExchangePtr ex) { handle(std::move(ex)); });
      if (!server) return done(std::move(server).error());
      server_ = std::move(server).value();
      done(Status{});
    });
  }

  Endpoint local_endpoint() const override { return server_ ? server_->local_endpoint() : Endpoint(); }
  const std::string& service_key() const override { return key_.key; }
  bool service_key_generated() const override { return key_.generated; }
  const std::string& service_key_path() const override { return key_.path; }
  std::string backend_description() const override {
    if (docker_) return "docker (" + docker_->engine_description() + ", image " + settings_.image + ")";
    return "local (isolation " + std::string(isolation_name(local_->default_isolation())) + ")";
  }

  Status create_docker_backend() {
    DockerBackendOptions o;
    o.docker_host = settings_.docker_engine;
    o.data_dir = settings_.data_dir;
    o.default_image = settings_.image;
    o.publish_host = settings_.docker_publish_host;
    o.networks = settings_.docker_networks;
    auto mounts = parse_docker_mounts(settings_.docker_mounts);
    if (!mounts) return std::move(mounts).error();
    o.mounts = std::move(mounts).value();
    auto caps = parse_caps("", "", "", settings_.allowed_images);
    if (!caps) return std::move(caps).error();
    o.allowed_images = caps->allowed_images;
    if (auto ok = check_image(settings_.image, *caps); !ok) {
      return Error(Errc::InvalidArgument, "TERMINALS_IMAGE: " + ok.error().message + " (TERMINALS_ALLOWED_IMAGES)");
    }
    o.home = settings_.docker_home == "volume" ? DockerHome::Volume : DockerHome::Bind;
    o.read_only_root = settings_.docker_read_only;
    o.cap_add = settings_.docker_cap_add;
    if (settings_.docker_image_capabilities) o.image_capabilities = *settings_.docker_image_capabilities;
    o.user = settings_.docker_user;
    o.name_prefix = settings_.docker_name_prefix;
    o.pull_missing = settings_.docker_pull;
    auto backend = DockerBackend::create(loop_, std::move(o));
    if (!backend) return std::move(backend).error();
    docker_ = backend->get();
    backend_ = std::move(backend).value();
    return {};
  }

  void shutdown(std::chrono::milliseconds grace, Callback<void> done) override {
    std::weak_ptr<bool> alive = alive_;
    auto after_server = [this, alive, done = std::move(done)](Status) mutable {
      if (!alive.lock() || !*alive.lock()) return done(Status{});
      orchestrator_->shutdown([done = std::move(done)](Status s) mutable { done(std::move(s)); });
    };
    if (server_) {
      server_->shutdown(grace, std::move(after_server));
    } else {
      loop_.defer([f = std::move(after_server)]() mutable { f(Status{}); });
    }
  }

 private:
  Result<TerminalSpec> spec_for(const TerminalKey& key) const {
    std::string policy = key.policy_id.empty() ? "default" : key.policy_id;
    TerminalSpec spec;
    if (policies_->has(policy)) {
      auto s = policies_->spec_for(policy, settings_.image);
      if (!s) return std::move(s).error();
      spec = std::move(s).value();
      // A policy may ask for more isolation than the service default, not for none: that would
      // run users' commands as this (often root) process.
      if (spec.isolation == Isolation::None && local_ && local_->default_isolation() != Isolation::None) {
        return Error(Errc::PolicyDenied, "isolation: policy '" + policy + "' asks for isolation none, which runs "
                                         "commands as the orchestrator's own user; only a service started with "
                                         "TERMINALS_ISOLATION=none allows it");
      }
    } else if (policy == "default") {
      // No stored "default": the global defaults, as the reference, with the caps as limits.
      auto s = policy_spec(Policy{}, caps_, settings_.image);
      if (!s) return std::move(s).error();
      spec = std::move(s).value();
    } else {
      return Error(Errc::NotFound, "Policy '" + policy + "' not found");
    }
    if (!settings_.system_prompt.empty() && !spec.env.count("OPEN_TERMINAL_SYSTEM_PROMPT")) {
      spec.env["OPEN_TERMINAL_SYSTEM_PROMPT"] = settings_.system_prompt;
    }
    return spec;
  }

  void handle(ServerExchangePtr ex) {
    const RequestHead& head = ex->request();
    // Every response carries a request id (the caller's, or a new one) for log correlation.
    auto incoming = head.headers.get("X-Request-Id");
    std::string request_id = incoming && !incoming->empty() && incoming->size() <= 128
                                 ? std::string(*incoming)
                                 : next_request_id();
    ex->add_response_header("X-Request-Id", request_id);
    // CORS as the reference (any origin) but without credentials: callers authenticate with an
    // Authorization header, which a preflight allows; cookies are never involved.
    if (auto origin = head.headers.get("Origin")) {
      ex->add_response_header("Access-Control-Allow-Origin", "*");
      ex->add_response_header("Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
      if (head.method == "OPTIONS" && head.headers.has("Access-Control-Request-Method")) {
        Headers h{{"Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"},
                  {"Access-Control-Max-Age", "600"}};
        if (auto req = head.headers.get("Access-Control-Request-Headers")) {
          h.add("Access-Control-Allow-Headers", std::string(*req));
        }
        return ex->respond(200, std::move(h), {});
      }
    }
    auto path = percent_decode(head.path());
    if (!path) return send_detail(*ex, 400, "Malformed path");
    Route route = route_for(head, *path);
    // A policy id that no policy can have (see check_policy_id) is a malformed request, said as
    // such before anything is authenticated or looked up.
    if (!route.prefix.empty()) {
      if (auto ok = check_policy_id(route.policy); !ok) return send_detail(*ex, 400, "Invalid " + ok.error().message);
    }
    switch (route.kind) {
      case Route::Health:
        return send_json(*ex, 200, R"({"status":true})");
      case Route::Admin:
        return admin(std::move(ex), *path);
      case Route::OpenApi:
        return openapi(std::move(ex), std::move(route));
      case Route::WebSocket:
        return websocket(std::move(ex), std::move(route));
      case Route::Proxy:
        return proxy(std::move(ex), std::move(route));
    }
  }

  // Request ids only correlate log lines, so they need to be unique, not secret: a random
  // per-process prefix plus a counter (a getrandom per request cost ~5% of serve's syscalls).
  std::string next_request_id() {
    if (request_id_prefix_.empty()) request_id_prefix_ = random_hex(8).value_or(std::string(16, '0'));
    char counter[17];
    std::snprintf(counter, sizeof counter, "%016llx", static_cast<unsigned long long>(++request_counter_));
    return request_id_prefix_ + counter;
  }

  // ---- data plane ---------------------------------------------------------------------------

  // Authentication for the proxy routes; `need_user` false for the tool schema.
  void authenticate(const ServerExchangePtr& ex, bool need_user, MoveOnlyFunction<void(Identity)> next) {
    const RequestHead& head = ex->request();
    auto token = bearer_token(head);
    bool has_user = head.headers.get("X-User-Id").has_value();
    // The tool schema needs valid credentials but no user; the data plane needs both, and a
    // valid service key without X-User-Id gets the reference's 422 (401 still wins for a bad key).
    if (!need_user && settings_.insecure_open) return next(Identity{});
    if (token && !settings_.insecure_open && auth_->is_service_key(*token)) {
      if (!need_user) return next(Identity{"", true});
      if (!has_user) return send_json(*ex, 422, kMissingUserId);
      // The service key and one well-formed X-User-Id: the authenticator would only hash the
      // key again and answer from the next iteration.
      if (head.headers.count("X-User-Id") == 1) {
        std::string_view claimed = *head.headers.get("X-User-Id");
        if (validate_user_id(claimed)) return next(Identity{std::string(claimed), true});
      }
    }
    std::weak_ptr<bool> alive = alive_;
    auth_->authenticate(head, [ex, alive, next = std::move(next)](Result<Identity> who) mutable {
      if (!alive.lock() || !*alive.lock() || ex->ended()) return;
      if (!who) return send_detail(*ex, auth_http_status(who.error()), who.error().message);
      next(std::move(who).value());
    });
  }

  void acquire(const ServerExchangePtr& ex, const TerminalKey& key, MoveOnlyFunction<void(TerminalInfo)> next) {
    if (auto refused = over_policy_limit(key)) {
      return send_detail(*ex, 429, *refused, Headers{{"Retry-After", "30"}});
    }
    std::weak_ptr<bool> alive = alive_;
    orchestrator_->acquire(key, [ex, alive, next = std::move(next)](Result<TerminalInfo> info) mutable {
      if (!alive.lock() || !*alive.lock() || ex->ended()) return;
      if (!info) {
        const Error e = std::move(info).error();
        if (auto retry = retry_after_seconds(e)) {
          return send_detail(*ex, 429, e.message, Headers{{"Retry-After", std::to_string(*retry)}});
        }
        return send_detail(*ex, acquire_status(e), acquire_message(e));
      }
      next(std::move(info).value());
    });
  }

  static int acquire_status(const Error& e) {
    if (retry_after_seconds(e)) return 429;
    return e.code == Errc::NotFound ? 404 : e.code == Errc::InvalidArgument ? 400
           : e.code == Errc::PolicyDenied ? 403 : e.code == Errc::Timeout ? 504 : 503;
  }
  static std::string acquire_message(const Error& e) {
    return e.code == Errc::NotFound ? e.message : "Terminal unavailable: " + e.message;
  }

  // A policy's max_terminals: a user whose terminal is not running yet is refused while that
  // many terminals of the policy run. Only policies that set it pay for the count.
  std::optional<std::string> over_policy_limit(const TerminalKey& key) const {
    std::string policy = key.policy_id.empty() ? "default" : key.policy_id;
    auto limit = policies_->max_terminals(policy);
    if (!limit) return std::nullopt;
    std::size_t running = 0;
    for (const auto& row : orchestrator_->list()) {
      if ((row.key.policy_id.empty() ? "default" : row.key.policy_id) != policy) continue;
      if (row.state != TerminalState::Running && row.state != TerminalState::Provisioning) continue;
      if (row.key.user_id == key.user_id && row.key.context_id == key.context_id) return std::nullopt;  // it has one
      ++running;
    }
    if (running < *limit) return std::nullopt;
    return "Policy '" + policy + "' allows at most " + std::to_string(*limit) +
           " running terminals and all are in use; try again later";
  }

  void proxy(ServerExchangePtr ex, Route route) {
    authenticate(ex, true, [this, ex, route = std::move(route)](Identity who) mutable {
      auto context = normalize_context(ex->request().headers.get("X-Terminal-Context-Id").value_or(""));
      if (!context) return send_detail(*ex, 400, context.error().message);
      TerminalKey key{who.user_id, route.policy, *context};
      acquire(ex, key, [this, ex, key, route = std::move(route)](TerminalInfo info) mutable {
        ForwardOptions fo;
        // The raw (still percent-encoded) path goes upstream, not our decoded copy, less the
        // "/p/<policy>" prefix.
        std::string query(ex->request().query());
        std::string raw(ex->request().path());
        if (!route.prefix.empty()) raw = raw.substr(raw.find('/', 3));
        fo.upstream_target = raw + (query.empty() ? "" : "?" + query);
        fo.forwarded_prefix = route.prefix;
        // Retrying refused connects only makes sense while the terminal is starting (its agent
        // may not accept yet); later a refused connect is a real failure to report.
        bool starting = std::chrono::system_clock::now() - info.created_at < 30s;
        fo.retry_connect_for = starting ? 3s : 0ms;
        std::weak_ptr<bool> alive = alive_;
        fo.on_activity = [this, alive, key]() {
          if (alive.lock() && *alive.lock()) orchestrator_->touch(key);
        };
        // Nobody listens where the terminal was: it died with its sandbox or container, or its
        // engine went away. Ask the backend again rather than answer 502 until status_ttl
        // runs out: a dead terminal is started again, a down engine is named in the 503.
        fo.on_unreachable = [this, alive, key](MoveOnlyFunction<void(Result<ProxyTarget>)> done) mutable {
          if (!alive.lock() || !*alive.lock()) {
            return loop_.defer([done = std::move(done)]() mutable {
              done(Error(Errc::Cancelled, "The service is shutting down", ErrorSource::Http, 503));
            });
          }
          orchestrator_->invalidate(key);
          orchestrator_->acquire(key, [done = std::move(done)](Result<TerminalInfo> again) mutable {
            if (again) return done(ProxyTarget{again->endpoint, again->api_key});
            const Error& e = again.error();
            done(Error(e.code, acquire_message(e), ErrorSource::Http, acquire_status(e)));
          });
        };
        proxy_->forward(ex, ProxyTarget{info.endpoint, info.api_key}, std::move(fo));
      });
    });
  }

// GCC 12 at -O3 reports the Error inside a moved-from Result<TerminalInfo> variant as maybe
// uninitialized in the nested lambdas below (a known false positive of its variant analysis,
// cf. GCC bug 107138); -O2 is clean.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
  void websocket(ServerExchangePtr ex, Route route) {
    // §2.1: user from ?user_id=, context from the header or ?context_id=; the token comes in
    // the first message, so the terminal is resolved only after it (no provisioning for
    // unauthenticated clients).
    auto query = Query::parse(ex->request().query());
    std::optional<std::string> user_id;
    std::string context_raw(ex->request().headers.get("X-Terminal-Context-Id").value_or(""));
    if (query) {
      if (auto u = query->get("user_id")) user_id = std::string(*u);
      if (context_raw.empty()) {
        if (auto c = query->get("context_id")) context_raw = std::string(*c);
      }
    }
    TerminalProxy::WsOptions wo;
    std::string raw(ex->request().path());
    wo.upstream_target = route.prefix.empty() ? raw : raw.substr(raw.find('/', 3));
    wo.retry_connect_for = 3s;
    auto key = std::make_shared<TerminalKey>();
    std::weak_ptr<bool> alive = alive_;
    wo.resolve_target = [this, alive, user_id, context_raw, policy = route.policy, key](
                            std::string token, MoveOnlyFunction<void(Result<ProxyTarget>)> done) mutable {
      if (!alive.lock() || !*alive.lock()) return done(Error(Errc::Cancelled, "shutting down", ErrorSource::Http, 1001));
      auth_->authenticate_token(token, user_id, [this, alive, context_raw, policy, key, done = std::move(done)](
                                                    Result<Identity> who) mutable {
        if (!alive.lock() || !*alive.lock()) return done(Error(Errc::Cancelled, "shutting down", ErrorSource::Http, 1001));
        if (!who) return done(Error(who.error().code, who.error().message, ErrorSource::Http,
                                    auth_ws_close_code(who.error())));
        auto context = normalize_context(context_raw);
        if (!context) return done(Error(Errc::InvalidArgument, context.error().message, ErrorSource::Http, 4004));
        *key = TerminalKey{who->user_id, policy, *context};
        orchestrator_->acquire(*key, [done = std::move(done)](Result<TerminalInfo> info) mutable {
          if (info) return done(ProxyTarget{info->endpoint, info->api_key});
          Error e = std::move(info).error();
          bool unknown = e.code == Errc::NotFound;
          done(Error(e.code, unknown ? e.message : "Failed to resolve terminal instance", ErrorSource::Http,
                     unknown ? 4004 : 4003));
        });
      });
    };
    wo.on_activity = [this, alive, key]() {
      if (alive.lock() && *alive.lock() && !key->user_id.empty()) orchestrator_->touch(*key);
    };
    // A dead agent: the client's reconnect re-checks the terminal instead of trusting status_ttl.
    wo.on_unreachable = [this, alive, key]() {
      if (alive.lock() && *alive.lock() && !key->user_id.empty()) orchestrator_->invalidate(*key);
    };
    wo.on_open = [this, alive, key]() {
      if (alive.lock() && *alive.lock()) {
        orchestrator_->connection_opened(*key);
        ++open_websockets_;
      }
    };
    wo.on_close = [this, alive, key]() {
      if (alive.lock() && *alive.lock()) {
        orchestrator_->connection_closed(*key);
        if (open_websockets_ > 0) --open_websockets_;
      }
    };
    proxy_->forward_websocket(std::move(ex), ProxyTarget{}, std::move(wo));
  }
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic pop
#endif

  void openapi(ServerExchangePtr ex, Route route) {
    authenticate(ex, false, [this, ex, policy = route.policy](Identity) mutable {
      auto cached = openapi_cache_.find(policy);
      if (cached != openapi_cache_.end() && std::chrono::steady_clock::now() < cached->second.expires) {
        return send_json(*ex, 200, cached->second.body);
      }
      // The schema comes from a real terminal of the policy, held by a synthetic user that no
      // caller can name (user ids start with a letter or digit; the reference's "system" could
      // be claimed through X-User-Id), and is cached for a while.
      TerminalKey key{"@schema", policy, ""};
      acquire(ex, key, [this, ex, policy](TerminalInfo info) mutable {
        RequestHead head;
        head.method = "GET";
        head.target = "/openapi.json";
        head.headers.add("Authorization", "Bearer " + info.api_key);
        std::weak_ptr<bool> alive = alive_;
        client_->fetch(info.endpoint, std::move(head), {},
                       [this, alive, ex, policy](Result<FetchResponse> got) {
                         if (!alive.lock() || !*alive.lock() || ex->ended()) return;
                         if (!got || got->head.status != 200) {
                           return send_json(*ex, 502,
                                            policy == "default"
                                                ? R"({"error":"Failed to fetch OpenAPI spec from terminal instance"})"
                                                : R"({"error":"Failed to fetch OpenAPI spec"})");
                         }
                         std::string body = strip_security(got->body);
                         openapi_cache_[policy] = {body, std::chrono::steady_clock::now() + kOpenApiTtl};
                         send_json(*ex, 200, body);
                       });
      });
    });
  }

  // ---- admin --------------------------------------------------------------------------------

  void admin(ServerExchangePtr ex, const std::string& path) {
    const RequestHead& head = ex->request();
    if (auto ok = auth_->authenticate_admin(head); !ok) {
      return send_detail(*ex, auth_http_status(ok.error()), ok.error().message);
    }
    bool get = head.method == "GET" || head.method == "HEAD";
    if (PolicyApi::handles(path)) return policy_admin(std::move(ex), path);
    if (path == "/api/v1/status" || path == "/api/v1/terminals") {
      if (!get) return send_detail(*ex, 405, "Method Not Allowed", Headers{{"Allow", "GET"}});
      return send_json(*ex, 200, path == "/api/v1/status" ? status_json() : terminals_json());
    }
    if (head.method != "POST") return send_detail(*ex, 405, "Method Not Allowed", Headers{{"Allow", "POST"}});
    read_admin_body(ex, [this, ex, path](std::string body) {
      (void)audit_->record(path == "/api/v1/terminals/stop" ? "terminals.stop" : "terminals.refresh",
                           {{"actor", "admin"}, {"request", body}});
      if (path == "/api/v1/terminals/stop") return admin_stop(ex, body);
      admin_refresh(ex, body);
    });
  }

  void policy_admin(ServerExchangePtr ex, const std::string& path) {
    read_admin_body(ex, [this, ex, path](std::string body) {
      std::weak_ptr<bool> alive = alive_;
      std::string if_match(ex->request().headers.get("If-Match").value_or(""));
      policies_->handle(
          ex->request().method, path, std::move(body), "admin",
          [alive, ex](ApiResponse r) {
            if (!alive.lock() || !*alive.lock() || ex->ended()) return;
            send_json(*ex, r.status, r.body);
          },
          if_match);
    });
  }

  // An admin request's body, whole (at most kAdminBodyLimit: 413 beyond), then `then` unless the
  // service went away or the exchange ended meanwhile.
  void read_admin_body(const ServerExchangePtr& ex, MoveOnlyFunction<void(std::string)> then) {
    auto body = std::make_shared<std::string>();
    std::weak_ptr<bool> alive = alive_;
    ex->read_body(BodyHandlers{
        [ex, body](std::string_view chunk) {
          if (ex->ended()) return;
          if (body->size() + chunk.size() > kAdminBodyLimit) {
            send_detail(*ex, 413, "Request body too large");
            return;
          }
          body->append(chunk);
        },
        [alive, ex, body, then = std::move(then)](Status status) mutable {
          if (!alive.lock() || !*alive.lock() || ex->ended()) return;
          if (!status) return send_detail(*ex, 400, "Malformed request body");
          then(std::move(*body));
        }});
  }

  std::string status_json() const {
    JsonWriter w;
    w.object().field("status", true).field("backend", settings_.backend).field("image", settings_.image)
        .field("idle_timeout_minutes", static_cast<std::int64_t>(settings_.idle_timeout.count()))
        .field("max_cpu", settings_.max_cpu).field("max_memory", settings_.max_memory)
        .field("max_storage", settings_.max_storage).field("allowed_images", settings_.allowed_images)
        .field("active_terminals", static_cast<std::uint64_t>(running_terminals()))
        .field("policy_count", static_cast<std::uint64_t>(policies_->count()))
        .field("active_websocket_connections", static_cast<std::uint64_t>(open_websockets_))
        .field("isolation", local_ ? std::string(isolation_name(local_->default_isolation())) : std::string("container"));
    return w.end_object().take();
  }

  std::size_t running_terminals() const {
    std::size_t n = 0;
    for (const TerminalRow& row : orchestrator_->list()) n += row.state == TerminalState::Running ? 1 : 0;
    return n;
  }

  std::string terminals_json() const {
    JsonWriter w;
    w.array();
    auto now = std::chrono::system_clock::now();
    for (const TerminalRow& row : orchestrator_->list()) {
      const char* status = row.state == TerminalState::Running ? "running" : terminal_state_name(row.state);
      w.object().field("user_id", row.key.user_id).field("policy_id", row.key.policy_id)
          .field("context_id", row.key.context_id.empty() ? std::string("default") : row.key.context_id)
          .field("status", status).field("instance_id", row.name).field("instance_name", row.name);
      w.key("host").null().key("port").null();
      if (row.last_activity.time_since_epoch().count() > 0) {
        w.field("last_active_at", iso8601(row.last_activity));
        w.field("idle_seconds", static_cast<std::int64_t>(
                                    std::chrono::duration_cast<std::chrono::seconds>(now - row.last_activity).count()));
      } else {
        w.key("last_active_at").null().key("idle_seconds").null();
      }
      w.field("idle_timeout_minutes", static_cast<std::int64_t>(settings_.idle_timeout.count()))
          .field("open_connections", static_cast<std::uint64_t>(row.open_connections))
          .field("reason", row.reason).end_object();
    }
    return w.end_array().take();
  }

  // Body fields: a string, null/absent (nullopt), or a 422.
  static bool optional_field(ServerExchange& ex, const rapidjson::Value& doc, const char* name,
                             std::optional<std::string>& out) {
    auto it = doc.FindMember(name);
    if (it == doc.MemberEnd() || it->value.IsNull()) return true;
    if (!it->value.IsString()) {
      send_detail(ex, 422, std::string("Field '") + name + "' must be a string");
      return false;
    }
    out = std::string(it->value.GetString(), it->value.GetStringLength());
    return true;
  }

  std::size_t count_matching(const TerminalKey& filter, bool running_only) const {
    std::size_t n = 0;
    for (const TerminalRow& row : orchestrator_->list()) {
      if (!filter.user_id.empty() && row.key.user_id != filter.user_id) continue;
      if (!filter.policy_id.empty() && row.key.policy_id != filter.policy_id) continue;
      if (!filter.context_id.empty()) {
        const std::string& want = filter.context_id == "default" ? std::string() : filter.context_id;
        if (row.key.context_id != want) continue;
      }
      if (running_only && row.state != TerminalState::Running) continue;
      ++n;
    }
    return n;
  }

  void admin_stop(const ServerExchangePtr& ex, const std::string& body) {
    auto doc = parse_json(body);
    if (!doc || !doc->IsObject()) return send_detail(*ex, 422, "The body must be a JSON object");
    std::optional<std::string> user, policy, context;
    if (!optional_field(*ex, *doc, "user_id", user) || !optional_field(*ex, *doc, "policy_id", policy) ||
        !optional_field(*ex, *doc, "context_id", context)) {
      return;
    }
    if (!user || user->empty()) return send_detail(*ex, 422, "Field 'user_id' is required");
    auto ctx = normalize_context(context.value_or(""));
    if (!ctx) return send_detail(*ex, 400, ctx.error().message);
    // The orchestrator reads context "default" as the default terminal only ("" would match
    // every context of the user).
    TerminalKey filter{*user, policy.value_or("default").empty() ? "default" : policy.value_or("default"),
                       ctx->empty() ? std::string("default") : *ctx};
    std::size_t matched = count_matching(filter, false);
    if (matched == 0) return send_detail(*ex, 404, "Terminal not found");
    std::weak_ptr<bool> alive = alive_;
    orchestrator_->stop(filter, [alive, ex, matched](Result<std::size_t> stopped) {
      if (!alive.lock() || !*alive.lock() || ex->ended()) return;
      if (!stopped) return send_detail(*ex, 502, "Stopping failed: " + stopped.error().message);
      JsonWriter w;
      w.object().field("matched", static_cast<std::uint64_t>(matched))
          .field("stopped", static_cast<std::uint64_t>(*stopped))
          .field("skipped_active", static_cast<std::uint64_t>(0));
      send_json(*ex, 200, w.end_object().take());
    });
  }

  void admin_refresh(const ServerExchangePtr& ex, const std::string& body) {
    auto doc = parse_json(body.empty() ? std::string("{}") : body);
    if (!doc || !doc->IsObject()) return send_detail(*ex, 422, "The body must be a JSON object");
    std::optional<std::string> user, policy, context;
    if (!optional_field(*ex, *doc, "user_id", user) || !optional_field(*ex, *doc, "policy_id", policy) ||
        !optional_field(*ex, *doc, "context_id", context)) {
      return;
    }
    bool only_idle = json_bool(*doc, "only_idle").value_or(true);
    bool reset = json_bool(*doc, "reset").value_or(false);
    TerminalKey filter{user.value_or(""), policy.value_or(""), ""};
    if (context) {
      auto ctx = normalize_context(*context);
      if (!ctx) return send_detail(*ex, 400, ctx.error().message);
      filter.context_id = ctx->empty() ? std::string("default") : *ctx;
    }
    std::size_t matched = count_matching(filter, false);
    std::weak_ptr<bool> alive = alive_;
    orchestrator_->refresh(filter, only_idle, reset, [alive, ex, matched, reset](Result<std::size_t> done) {
      if (!alive.lock() || !*alive.lock() || ex->ended()) return;
      if (!done) return send_detail(*ex, 502, "Refresh failed: " + done.error().message);
      JsonWriter w;
      w.object().field("matched", static_cast<std::uint64_t>(matched))
          .field("refreshed", static_cast<std::uint64_t>(*done))
          .field("reset", static_cast<std::uint64_t>(reset ? *done : 0))
          .field("skipped_active", static_cast<std::uint64_t>(matched > *done ? matched - *done : 0));
      send_json(*ex, 200, w.end_object().take());
    });
  }

  struct CachedSchema {
    std::string body;
    std::chrono::steady_clock::time_point expires;
  };

  Loop& loop_;
  Settings settings_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  ServiceKey key_;
  std::unique_ptr<Backend> backend_;
  LocalBackend* local_ = nullptr;    // set with the local backend
  DockerBackend* docker_ = nullptr;  // set with the Docker backend
  std::unique_ptr<CurlMulti> curl_;
  std::unique_ptr<Authenticator> auth_;
  Caps caps_;
  std::shared_ptr<PolicyStore> store_;
  std::shared_ptr<AuditLog> audit_;
  std::unique_ptr<PolicyApi> policies_;
  std::unique_ptr<Orchestrator> orchestrator_;
  std::unique_ptr<ResetScheduler> resets_;
  std::unique_ptr<TerminalProxy> proxy_;
  std::string request_id_prefix_;
  std::uint64_t request_counter_ = 0;
  std::unique_ptr<HttpClient> client_;
  ServerPtr server_;
  std::map<std::string, CachedSchema> openapi_cache_;
  std::size_t open_websockets_ = 0;
};

}  // namespace

}  // namespace detail

Result<std::unique_ptr<Service>> Service::create(Loop& loop, Settings settings) {
  auto service = std::make_unique<detail::ServiceImpl>(loop, std::move(settings));
  if (auto ok = service->init(); !ok) return std::move(ok).error();
  return std::unique_ptr<Service>(std::move(service));
}

}  // namespace terminals
