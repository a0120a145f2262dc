// DockerClient: the Engine API over libcurl (see docker_client.hpp).

#include "docker/docker_client.hpp"

#include <cstdlib>

#include "curl/curl_error.hpp"
#include "json/json.hpp"
#include "terminals/log.hpp"

namespace terminals::detail {

Result<DockerAddress> parse_docker_host(std::string_view host) {
  std::string h(host);
  if (h.empty()) {
    const char* env = std::getenv("DOCKER_HOST");
    h = env && *env ? env : "unix:///var/run/docker.sock";
  }
  DockerAddress a;
  if (h.starts_with("unix://")) {
    a.unix_path = h.substr(7);
  } else if (h.starts_with("unix:")) {
    a.unix_path = h.substr(5);
  } else if (h.starts_with("tcp://") || h.starts_with("http://")) {
    std::string rest = h.substr(h.find("://") + 3);
    while (!rest.empty() && rest.back() == '/') rest.pop_back();
    if (rest.empty() || rest.find('/') != std::string::npos) {
      return Error(Errc::InvalidArgument, "DOCKER_HOST '" + h + "': expected tcp://HOST:PORT");
    }
    a.base_url = "http://" + rest;
    a.display = "tcp://" + rest;
    return a;
  } else if (h.starts_with("https://") || h.starts_with("ssh://")) {
    return Error(Errc::InvalidArgument, "DOCKER_HOST '" + h +
                                            "': TLS and ssh engines are not supported yet; use the engine's unix "
                                            "socket (unix:///var/run/docker.sock) or a tcp:// address on loopback");
  } else {
    return Error(Errc::InvalidArgument,
                 "DOCKER_HOST '" + h + "': expected unix:///path/to/docker.sock or tcp://HOST:PORT");
  }
  if (a.unix_path.empty() || a.unix_path.front() != '/') {
    return Error(Errc::InvalidArgument, "DOCKER_HOST '" + h + "': the socket path must be absolute");
  }
  a.base_url = "http://docker";
  a.display = "unix:" + a.unix_path;
  return a;
}

int compare_api_versions(std::string_view a, std::string_view b) {
  while (!a.empty() || !b.empty()) {
    auto take = [](std::string_view& s) {
      long v = 0;
      std::size_t i = 0;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
      s.remove_prefix(i < s.size() ? i + 1 : i);
      return v;
    };
    long x = take(a), y = take(b);
    if (x != y) return x < y ? -1 : 1;
  }
  return 0;
}

std::string demux_docker_logs(std::string_view raw) {
  std::string out;
  std::string_view rest = raw;
  while (rest.size() >= 8) {
    auto stream = static_cast<unsigned char>(rest[0]);
    if (stream > 2 || rest[1] != 0 || rest[2] != 0 || rest[3] != 0) return std::string(raw);  // not framed
    std::size_t len = (static_cast<std::size_t>(static_cast<unsigned char>(rest[4])) << 24) |
                      (static_cast<std::size_t>(static_cast<unsigned char>(rest[5])) << 16) |
                      (static_cast<std::size_t>(static_cast<unsigned char>(rest[6])) << 8) |
                      static_cast<std::size_t>(static_cast<unsigned char>(rest[7]));
    rest.remove_prefix(8);
    len = std::min(len, rest.size());
    out.append(rest.substr(0, len));
    rest.remove_prefix(len);
  }
  if (!rest.empty() && out.empty()) return std::string(raw);
  return out;
}

DockerClient::DockerClient(CurlMulti& multi, DockerAddress address) : multi_(multi), address_(std::move(address)) {}

DockerClient::~DockerClient() {
  *alive_ = false;
  auto waiting = std::move(waiting_);
  if (!waiting.empty()) {
    multi_.loop().defer([w = std::move(waiting)]() mutable {
      for (auto& f : w) f(Error(Errc::Cancelled, "the Docker client was destroyed"));
    });
  }
}

std::string DockerClient::description() const {
  if (api_.empty()) return "Docker engine at " + address_.display;
  return "Docker " + engine_version_ + ", API " + api_ + " via " + address_.display;
}

CurlRequest DockerClient::request(std::string method, const std::string& path, std::string body,
                                  std::chrono::milliseconds timeout) const {
  CurlRequest r;
  r.method = std::move(method);
  r.url = address_.base_url + (api_.empty() ? "" : "/v" + api_) + path;
  r.unix_socket_path = address_.unix_path;
  r.timeout = timeout;
  r.connect_timeout = std::chrono::seconds(5);
  if (!body.empty() || r.method == "POST" || r.method == "PUT") {
    r.headers.add("Content-Type", "application/json");
    r.body = std::move(body);
  }
  return r;
}

Result<DockerReply> DockerClient::reply_of(Result<CurlResponse> response, const std::string& what) {
  if (!response) {
    Error e = std::move(response).error();
    if (e.code == Errc::BackendUnavailable) {
      api_.clear();  // the engine may come back as another version
      e.message = "the Docker engine at " + address_.display + " is not answering (" + e.message +
                  "); start it (dockerd) or point DOCKER_HOST at it";
    }
    return e;
  }
  DockerReply reply{response->status, std::move(response->body)};
  if (reply.status < 400) return reply;
  // The engine explains itself in {"message": "..."}.
  std::string message;
  if (auto doc = parse_json(reply.body); doc && doc->IsObject()) {
    message = std::string(json_string(*doc, "message").value_or(""));
  }
  Error e = message.empty() ? http_status_error(reply.status, what, reply.body)
                            : Error(errc_for_http_status(reply.status), "Docker engine: " + message);
  e.native = static_cast<int>(reply.status);
  return e;
}

void DockerClient::with_version(MoveOnlyFunction<void(Status)> then) {
  if (!api_.empty()) {
    return multi_.loop().defer([alive = std::weak_ptr<bool>(alive_), then = std::move(then)]() mutable {
      if (!alive.lock()) return then(Error(Errc::Cancelled, "the Docker client was destroyed"));
      then(Status{});
    });
  }
  waiting_.push_back(std::move(then));
  if (negotiating_) return;
  negotiating_ = true;
  // Unversioned: /version answers whatever the engine's version is.
  multi_.perform(request("GET", "/version", {}, std::chrono::seconds(10)),
                 [this, alive = std::weak_ptr<bool>(alive_)](Result<CurlResponse> r) {
                   if (!alive.lock()) return;
                   auto reply = reply_of(std::move(r), "GET /version");
                   if (!reply) return negotiated(std::move(reply).error());
                   auto doc = parse_json(reply->body);
                   if (!doc || !doc->IsObject()) {
                     return negotiated(Error(Errc::UpstreamProtocol, "Docker engine: /version is not JSON"));
                   }
                   std::string max(json_string(*doc, "ApiVersion").value_or(""));
                   if (max.empty() || compare_api_versions(max, kMinApi) < 0) {
                     return negotiated(Error(Errc::BackendUnavailable,
                                             "the Docker engine at " + address_.display + " speaks API " +
                                                 (max.empty() ? "?" : max) + "; libterminals needs " +
                                                 std::string(kMinApi) + " or newer (Docker 20.10+)"));
                   }
                   api_ = compare_api_versions(max, kMaxApi) > 0 ? std::string(kMaxApi) : max;
                   engine_version_ = std::string(json_string(*doc, "Version").value_or("?"));
                   log(LogLevel::Info, "docker", "using " + description());
                   negotiated(Status{});
                 })
      .detach();
}

void DockerClient::negotiated(Status status) {
  negotiating_ = false;
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto& f : waiting) f(status);
}

void DockerClient::call(std::string method, std::string path, std::string body, Callback<DockerReply> done,
                        std::chrono::milliseconds timeout) {
  with_version([this, alive = std::weak_ptr<bool>(alive_), method = std::move(method), path = std::move(path),
                body = std::move(body), done = std::move(done), timeout](Status ready) mutable {
    if (!ready) return done(std::move(ready).error());
    if (!alive.lock()) return done(Error(Errc::Cancelled, "the Docker client was destroyed"));
    std::string what = method + " " + path;
    multi_.perform(request(std::move(method), path, std::move(body), timeout),
                   [this, alive, what = std::move(what), done = std::move(done)](Result<CurlResponse> r) mutable {
                     if (!alive.lock()) return done(Error(Errc::Cancelled, "the Docker client was destroyed"));
                     done(reply_of(std::move(r), what));
                   })
        .detach();
  });
}

void DockerClient::stream(std::string method, std::string path, MoveOnlyFunction<void(std::string_view)> on_line,
                          Callback<DockerReply> done, std::chrono::milliseconds timeout) {
  with_version([this, alive = std::weak_ptr<bool>(alive_), method = std::move(method), path = std::move(path),
                on_line = std::move(on_line), done = std::move(done), timeout](Status ready) mutable {
    if (!ready) return done(std::move(ready).error());
    if (!alive.lock()) return done(Error(Errc::Cancelled, "the Docker client was destroyed"));
    std::string what = method + " " + path;
    auto state = std::make_shared<std::pair<std::string, long>>();  // partial line, status
    auto lines = std::make_shared<MoveOnlyFunction<void(std::string_view)>>(std::move(on_line));
    CurlStreamHandlers h;
    h.on_head = [state](const CurlResponse& head) { state->second = head.status; };
    h.on_data = [state, lines](std::string_view chunk) {
      std::string& buf = state->first;
      buf.append(chunk);
      std::size_t start = 0, nl;
      while ((nl = buf.find('\n', start)) != std::string::npos) {
        // Error replies are read whole below; only progress lines go to on_line.
        if (state->second < 400) (*lines)(std::string_view(buf).substr(start, nl - start));
        start = nl + 1;
      }
      if (state->second < 400) buf.erase(0, start);
      if (buf.size() > (1u << 20)) buf.erase(0, buf.size() - (1u << 20));
    };
    h.done = [this, alive, what = std::move(what), state, done = std::move(done)](Result<CurlResponse> r) mutable {
      if (!alive.lock()) return done(Error(Errc::Cancelled, "the Docker client was destroyed"));
      if (r) r->body = std::move(state->first);
      done(reply_of(std::move(r), what));
    };
    multi_.stream(request(std::move(method), path, {}, timeout), std::move(h)).detach();
  });
}

}  // namespace terminals::detail
