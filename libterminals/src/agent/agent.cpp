// Agent: the Open Terminal-compatible HTTP server of `terminals-cli agent`. One Server, one
// Router; authentication, routing and body reading here, the routes in agent_routes_*.cpp.

#include "terminals/agent.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <memory>
#include <utility>

#include "agent/agent_internal.hpp"
#include "json/json.hpp"
#include "terminals/loop.hpp"
#include "util/crypto.hpp"

namespace terminals {

namespace detail {

void send_json(ServerExchange& ex, int status, std::string_view body) {
  ex.respond(status, Headers{{"Content-Type", "application/json"}}, body);
}

void send_detail(ServerExchange& ex, int status, std::string_view message) {
  send_json(ex, status, detail_json(message));
}

void send_error(ServerExchange& ex, const Error& error) {
  send_detail(ex, file_error_status(error), error.message);
}

HostFacts host_facts() {
  HostFacts f;
  struct utsname u {};
  if (::uname(&u) == 0) {
    f.os = u.sysname;
    f.kernel = u.release;
    f.arch = u.machine;
    f.host = u.nodename;
  }
  if (const struct passwd* pw = ::getpwuid(::geteuid())) f.user = pw->pw_name;
  const char* shell = std::getenv("SHELL");
  f.shell = shell && *shell ? shell : "/bin/sh";
  return f;
}

namespace {

struct Job {
  uv_work_t req{};
  std::shared_ptr<AgentState> state;
  std::shared_ptr<AgentRequest> request;
  MoveOnlyFunction<Responder()> work;
  Responder respond;
};

}  // namespace

void run_off_loop(const std::shared_ptr<AgentState>& state, AgentRequest& request,
                  MoveOnlyFunction<Responder()> work) {
  auto job = std::make_unique<Job>();
  job->state = state;
  job->request = request.shared_from_this();
  job->work = std::move(work);
  job->req.data = job.get();
  int rc = uv_queue_work(
      state->loop->native(), &job->req,
      [](uv_work_t* req) {
        auto* j = static_cast<Job*>(req->data);
        j->respond = j->work();
      },
      [](uv_work_t* req, int status) {
        std::unique_ptr<Job> j(static_cast<Job*>(req->data));
        auto alive = j->state->alive.lock();
        if (status != 0 || !alive || !*alive || !j->respond) return;
        j->respond(*j->request);
      });
  if (rc != 0) {
    // The pool refused the job: do the work here rather than fail the request.
    Responder respond = job->work();
    if (respond) respond(*job->request);
    return;
  }
  job.release();  // freed in the after-work callback
}

namespace {

// A short description of where commands run, for GET /system.
std::string system_prompt(const std::string& info) {
  HostFacts f = host_facts();
  std::string prompt = "You have a terminal on " + f.os;
  if (!f.kernel.empty()) prompt += " (kernel " + f.kernel + ", " + f.arch + ")";
  if (!f.host.empty()) prompt += " named " + f.host;
  prompt += ".";
  if (!f.user.empty()) prompt += " Commands run as the user " + f.user + ".";
  prompt += " The shell is " + f.shell;
  prompt += ". Use the file tools to read and change files and the command tool to run programs.";
  if (!info.empty()) prompt += "\n\n" + info;
  return prompt;
}

// Multipart boundaries, part headers and small form fields around an upload's file bytes.
constexpr std::uint64_t kUploadFramingBytes = 1u << 20;

// The server drops the rest of the body once this answer ended.
void send_json_too_large(ServerExchange& ex, std::uint64_t cap) {
  send_detail(ex, 413, "Request body larger than the limit of " + std::to_string(cap) + " bytes");
}

bool is_open_route(std::string_view method, std::string_view path) {
  return (method == "GET" || method == "HEAD") &&
         (path == "/health" || path == "/api/config" || path == "/openapi.json");
}

class AgentImpl final : public Agent {
 public:
  AgentImpl(Loop& loop, AgentOptions options, std::string home)
      : loop_(loop),
        options_(std::move(options)),
        state_(std::make_shared<AgentState>()),
        alive_(std::make_shared<bool>(true)) {
    state_->loop = &loop;
    state_->alive = alive_;
    state_->home = std::move(home);
    state_->api_key = options_.api_key;
    state_->no_auth = options_.no_auth;
    state_->info = options_.info;
    state_->file_options.upload_max_bytes = options_.max_upload_bytes;
  }
  ~AgentImpl() override {
    *alive_ = false;
    // Work still on the thread pool keeps the state; the children must not outlive us.
    state_->terminal_sockets.reset();  // before the sessions they drive
    state_->terminals.reset();
    state_->processes.reset();
    state_->proxy_client.reset();
  }

  Status start() {
    ProcessManagerOptions po;
    po.expire_after = options_.process_expire_after;
    po.max_output_bytes = options_.max_process_output_bytes;
    auto processes = ProcessManager::create(loop_, po);
    if (!processes) return std::move(processes).error();
    state_->processes = std::move(processes).value();
    PtySessionsOptions to;
    to.max_sessions = options_.max_terminals;
    auto terminals = PtySessions::create(loop_, to);
    if (!terminals) return std::move(terminals).error();
    state_->terminals = std::move(terminals).value();

    add_service_routes();
    add_file_routes(router_, state_);
    add_execute_routes(router_, state_);
    add_terminal_routes(router_, state_);
    add_port_routes(router_, state_);
    add_openapi_routes(router_, state_);

    ServerOptions so;
    so.listen = options_.listen;
    // Uploads stream past the JSON cap, so the server's limit is the larger of the two (plus
    // room for the multipart framing) and handle() holds JSON bodies to their own cap.
    so.max_body_bytes = options_.max_upload_bytes == 0
                            ? std::numeric_limits<std::uint64_t>::max()
                            : std::max(options_.max_json_body_bytes,
                                       options_.max_upload_bytes + kUploadFramingBytes);
    auto server = Server::create(loop_, std::move(so), [this](ServerExchangePtr ex) {
      handle(std::move(ex));
    });
    if (!server) return std::move(server).error();
    server_ = std::move(server).value();
    return {};
  }

  Endpoint local_endpoint() const override { return server_->local_endpoint(); }

  void shutdown(std::chrono::milliseconds grace, Callback<void> done) override {
    server_->shutdown(grace, std::move(done));
  }

 private:
  void add_service_routes() {
    router_.add("GET", "/health", {false, [](AgentRequest& r) {
                  send_json(*r.exchange, 200, R"({"status":"ok"})");
                }});
    router_.add("GET", "/api/config", {false, [](AgentRequest& r) {
                  send_json(*r.exchange, 200,
                            R"({"features":{"terminal":true,"notebooks":false,"system":true}})");
                }});
    router_.add("GET", "/system", {false, [s = state_](AgentRequest& r) {
                  send_json(*r.exchange, 200,
                            JsonWriter().object().field("prompt", system_prompt(s->info))
                                .end_object().take());
                }});
  }

  bool authorized(const RequestHead& head) const {
    if (options_.no_auth) return true;
    auto value = head.headers.get("Authorization");
    if (!value) return false;
    std::string_view v = *value;
    if (v.size() < 7 || !iequals(v.substr(0, 7), "Bearer ")) return false;
    v.remove_prefix(7);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    return constant_time_equals(v, options_.api_key);
  }

  // CORS for browser clients. Returns true when it answered a preflight.
  bool cors(ServerExchange& ex, const RequestHead& head) const {
    auto origin = head.headers.get("Origin");
    if (!origin || options_.cors_allowed_origins.empty()) return false;
    bool any = false, listed = false;
    for (const auto& o : options_.cors_allowed_origins) {
      if (o == "*") any = true;
      else if (o == *origin) listed = true;
    }
    if (!any && !listed) return false;
    ex.add_response_header("Access-Control-Allow-Origin", listed ? std::string(*origin) : "*");
    ex.add_response_header("Vary", "Origin");
    if (head.method != "OPTIONS" || !head.headers.has("Access-Control-Request-Method")) return false;
    // A preflight is answered here, before authentication (browsers send it without the key).
    // "*" in Allow-Headers does not cover Authorization, so the requested list is echoed.
    Headers h{{"Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"},
              {"Access-Control-Max-Age", "600"}};
    if (auto req = head.headers.get("Access-Control-Request-Headers")) {
      h.add("Access-Control-Allow-Headers", std::string(*req));
    }
    ex.respond(200, std::move(h), {});
    return true;
  }

  void handle(ServerExchangePtr ex) {
    const RequestHead& head = ex->request();
    if (cors(*ex, head)) return;
    auto path = percent_decode(head.path());
    if (!path) {
      send_detail(*ex, 400, "Malformed path");
      return;
    }
    // The terminal WebSocket authenticates in its first message, not with a header.
    constexpr std::string_view kTerminals = "/api/terminals/";
    if (head.upgrade && head.method == "GET" && path->starts_with(kTerminals) &&
        path->size() > kTerminals.size() &&
        path->find('/', kTerminals.size()) == std::string::npos) {
      handle_terminal_upgrade(state_, std::move(ex), path->substr(kTerminals.size()));
      return;
    }
    if (!is_open_route(head.method, *path) && !authorized(head)) {
      send_detail(*ex, 401, "Invalid API key");
      return;
    }
    auto query = Query::parse(head.query());
    if (!query) {
      send_detail(*ex, 400, "Malformed query string");
      return;
    }
    query->drop_null_values();
    auto match = router_.match(head.method, *path);
    if (match.outcome == AgentRouter::Outcome::NotFound) {
      send_detail(*ex, 404, "Not Found");
      return;
    }
    if (match.outcome == AgentRouter::Outcome::MethodNotAllowed) {
      std::string allow;
      for (const auto& m : match.allowed) {
        if (!allow.empty()) allow += ", ";
        allow += m;
      }
      ex->respond(405, Headers{{"Content-Type", "application/json"}, {"Allow", allow}},
                  detail_json("Method Not Allowed"));
      return;
    }
    auto request = std::make_shared<AgentRequest>();
    request->exchange = ex;
    request->params = std::move(match.params);
    request->query = std::move(query).value();
    AgentRoute* route = match.handler;  // routes live as long as the agent
    if (!route->needs_body) {
      route->handler(*request);
      return;
    }
    const std::uint64_t cap = options_.max_json_body_bytes;
    if (head.content_length && *head.content_length > cap) {
      send_json_too_large(*ex, cap);
      return;
    }
    std::weak_ptr<bool> alive = alive_;
    ex->read_body(BodyHandlers{
        [request, cap](std::string_view chunk) {
          if (request->exchange->ended()) return;
          if (request->body.size() + chunk.size() > cap) {
            std::string().swap(request->body);
            send_json_too_large(*request->exchange, cap);
            return;
          }
          request->body.append(chunk);
        },
        [request, route, alive](Status status) {
          auto token = alive.lock();
          if (!token || !*token || request->exchange->ended()) return;
          if (!status) {
            // Past the cap the server already answered 413; other failures mean the client
            // is gone or sent garbage.
            if (status.error().code == Errc::InvalidArgument) {
              send_detail(*request->exchange, 400, "Malformed request body");
            }
            return;
          }
          route->handler(*request);
        }});
  }

  Loop& loop_;
  AgentOptions options_;
  std::shared_ptr<AgentState> state_;
  AgentRouter router_;
  ServerPtr server_;
  std::shared_ptr<bool> alive_;
};

}  // namespace

}  // namespace detail

Result<std::unique_ptr<Agent>> Agent::create(Loop& loop, AgentOptions options) {
  if (options.api_key.empty() && !options.no_auth) {
    return Error(Errc::InvalidArgument,
                 "the agent needs an API key (or no_auth to serve without authentication)");
  }
  std::string home = options.home;
  if (home.empty() || home.front() != '/') {
    char buf[4096];
    if (!::getcwd(buf, sizeof buf)) return Error(Errc::Io, "cannot determine the current directory");
    home = home.empty() ? std::string(buf) : std::string(buf) + "/" + home;
  }
  home = detail::normalize_path(home);
  struct stat st {};
  if (::stat(home.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Error(Errc::InvalidArgument, "agent home '" + home + "' is not a directory");
  }
  auto agent = std::make_unique<detail::AgentImpl>(loop, std::move(options), std::move(home));
  if (auto started = agent->start(); !started) return std::move(started).error();
  return std::unique_ptr<Agent>(std::move(agent));
}

}  // namespace terminals
