// The agent's /ports and /proxy/{port}/{path...} (open-terminal-api.md §4.4).
//
// /ports lists the TCP ports in LISTEN state whose socket belongs to a descendant of the agent
// process (the commands and terminals it started), read from /proc on the thread pool.
//
// /proxy forwards a request to 127.0.0.1:{port} and its answer back, streamed both ways with
// backpressure: unlike the reference, which buffers whole bodies, a large upload or download
// costs a few socket buffers, not its size. Only loopback is ever a target (the host is fixed,
// the client only chooses the port number), redirects are passed back, not followed, and the
// caller's Authorization header (our own key) never reaches the upstream.

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/agent_internal.hpp"
#include "json/json.hpp"

namespace terminals::detail {

namespace {

// ---------------------------------------------------------------------------------------------
// /ports

struct ListeningPort {
  int port = 0;
  int pid = 0;
  std::string process;
};

std::vector<std::string_view> split_ws(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\n')) ++i;
    std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\n') ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

// (port, socket inode) of every LISTEN socket in /proc/net/tcp or tcp6.
void read_listen_sockets(const char* file, std::vector<std::pair<int, std::uint64_t>>& out) {
  FILE* f = std::fopen(file, "re");
  if (!f) return;
  char* line = nullptr;
  std::size_t cap = 0;
  bool header = true;
  while (::getline(&line, &cap, f) > 0) {
    if (header) {  // the column titles
      header = false;
      continue;
    }
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    auto t = split_ws(line);
    if (t.size() < 10 || t[3] != "0A") continue;  // 0A: TCP_LISTEN
    auto colon = t[1].rfind(':');
    if (colon == std::string_view::npos) continue;
    std::string_view port_hex = t[1].substr(colon + 1);
    unsigned port = 0;
    std::uint64_t inode = 0;
    auto [p1, e1] = std::from_chars(port_hex.data(), port_hex.data() + port_hex.size(), port, 16);
    auto [p2, e2] = std::from_chars(t[9].data(), t[9].data() + t[9].size(), inode);
    (void)p1;
    (void)p2;
    if (e1 != std::errc() || e2 != std::errc() || inode == 0) continue;
    out.emplace_back(static_cast<int>(port), inode);
  }
  std::free(line);
  std::fclose(f);
}

// The loopback address a listener on `port` answers on: 127.0.0.1, unless only IPv6 sockets
// listen on it (a dev server bound to "localhost" may take ::1 alone), then ::1. The reference
// connects to "localhost" and so tries both; this picks the one that can work without a
// failed first attempt, which could not be retried once a streamed body went out.
std::string loopback_host_for(int port) {
  std::vector<std::pair<int, std::uint64_t>> v4;
  std::vector<std::pair<int, std::uint64_t>> v6;
  read_listen_sockets("/proc/net/tcp", v4);
  read_listen_sockets("/proc/net/tcp6", v6);
  auto has = [port](const std::vector<std::pair<int, std::uint64_t>>& list) {
    return std::any_of(list.begin(), list.end(), [port](const auto& e) { return e.first == port; });
  };
  return !has(v4) && has(v6) ? "::1" : "127.0.0.1";
}

bool all_digits(const char* s) {
  if (!*s) return false;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9') return false;
  }
  return true;
}

struct ProcEntry {
  int ppid = 0;
  std::string comm;
};

// Every process's parent and command name, from /proc/<pid>/stat.
std::map<int, ProcEntry> read_process_table() {
  std::map<int, ProcEntry> table;
  DIR* d = ::opendir("/proc");
  if (!d) return table;
  while (const dirent* e = ::readdir(d)) {
    if (!all_digits(e->d_name)) continue;
    std::string path = std::string("/proc/") + e->d_name + "/stat";
    FILE* f = std::fopen(path.c_str(), "re");
    if (!f) continue;  // gone meanwhile
    char buf[512];
    std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    std::string_view stat(buf, n);
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so the last ')' ends it.
    auto open = stat.find('(');
    auto close = stat.rfind(')');
    if (open == std::string_view::npos || close == std::string_view::npos || close < open) continue;
    auto rest = split_ws(stat.substr(close + 1));
    if (rest.size() < 2) continue;
    int ppid = 0;
    std::from_chars(rest[1].data(), rest[1].data() + rest[1].size(), ppid);
    ProcEntry entry;
    entry.ppid = ppid;
    entry.comm = std::string(stat.substr(open + 1, close - open - 1));
    table.emplace(std::atoi(e->d_name), std::move(entry));
  }
  ::closedir(d);
  return table;
}

// The descendants of `root` (not `root` itself), parents before their children.
std::vector<int> descendants(const std::map<int, ProcEntry>& table, int root) {
  std::multimap<int, int> children;
  for (const auto& [pid, entry] : table) children.emplace(entry.ppid, pid);
  std::vector<int> out;
  std::vector<int> queue{root};
  std::set<int> seen{root};
  for (std::size_t i = 0; i < queue.size(); ++i) {
    auto [begin, end] = children.equal_range(queue[i]);
    for (auto it = begin; it != end; ++it) {
      if (!seen.insert(it->second).second) continue;
      queue.push_back(it->second);
      out.push_back(it->second);
    }
  }
  return out;
}

// Socket inode -> the first of `pids` (in order) holding it open.
std::map<std::uint64_t, int> socket_owners(const std::vector<int>& pids) {
  std::map<std::uint64_t, int> owners;
  constexpr std::string_view kPrefix = "socket:[";
  for (int pid : pids) {
    std::string dir = "/proc/" + std::to_string(pid) + "/fd";
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) continue;  // gone, or not ours to read
    DIR* d = ::fdopendir(dfd);
    if (!d) {
      ::close(dfd);
      continue;
    }
    while (const dirent* e = ::readdir(d)) {
      if (!all_digits(e->d_name)) continue;
      char target[64];
      ssize_t n = ::readlinkat(dfd, e->d_name, target, sizeof target);
      if (n <= 0 || static_cast<std::size_t>(n) >= sizeof target) continue;
      std::string_view link(target, static_cast<std::size_t>(n));
      if (!link.starts_with(kPrefix) || link.back() != ']') continue;
      link = link.substr(kPrefix.size(), link.size() - kPrefix.size() - 1);
      std::uint64_t inode = 0;
      auto [p, ec] = std::from_chars(link.data(), link.data() + link.size(), inode);
      (void)p;
      if (ec == std::errc()) owners.emplace(inode, pid);
    }
    ::closedir(d);  // closes dfd too
  }
  return owners;
}

// Blocking: reads /proc. Ports listened on by descendants of this process, by port number,
// once each (a server often listens on both IPv4 and IPv6).
std::vector<ListeningPort> scan_listening_ports() {
  std::vector<std::pair<int, std::uint64_t>> sockets;
  read_listen_sockets("/proc/net/tcp", sockets);
  read_listen_sockets("/proc/net/tcp6", sockets);
  std::vector<ListeningPort> ports;
  if (sockets.empty()) return ports;
  auto table = read_process_table();
  auto owners = socket_owners(descendants(table, static_cast<int>(::getpid())));
  std::set<int> seen;
  for (const auto& [port, inode] : sockets) {
    auto it = owners.find(inode);
    if (it == owners.end() || !seen.insert(port).second) continue;
    ListeningPort p;
    p.port = port;
    p.pid = it->second;
    if (auto t = table.find(it->second); t != table.end()) p.process = t->second.comm;
    ports.push_back(std::move(p));
  }
  std::sort(ports.begin(), ports.end(),
            [](const ListeningPort& a, const ListeningPort& b) { return a.port < b.port; });
  return ports;
}

std::string ports_json(const std::vector<ListeningPort>& ports) {
  JsonWriter w;
  w.object().key("ports").array();
  for (const auto& p : ports) {
    w.object().field("port", p.port).field("pid", p.pid).key("process");
    if (p.process.empty()) {
      w.null();
    } else {
      w.value(p.process);
    }
    w.end_object();
  }
  w.end_array().end_object();
  return w.take();
}

// ---------------------------------------------------------------------------------------------
// /proxy

constexpr std::chrono::milliseconds kConnectTimeout{5'000};
// The reference allows 300 s for the whole exchange; a streamed download may rightly take
// longer, so here it is 300 s without a byte from the upstream.
constexpr std::chrono::milliseconds kReadTimeout{300'000};

// Headers about one connection, not the message (RFC 9110 §7.6.1), plus the old Proxy-*.
bool is_hop_by_hop(std::string_view name) {
  static constexpr std::array<std::string_view, 9> kNames = {
      "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
      "te",         "trailer",    "transfer-encoding", "upgrade"};
  for (auto n : kNames) {
    if (iequals(name, n)) return true;
  }
  return false;
}

// Copies the end-to-end headers: no hop-by-hop ones, none that `Connection` names, and none of
// `drop` (framing is set by whoever sends the message on).
Headers end_to_end(const Headers& in, std::initializer_list<std::string_view> drop) {
  Headers out;
  for (const auto& h : in) {
    if (is_hop_by_hop(h.name) || in.has_token("connection", h.name)) continue;
    bool dropped = false;
    for (auto d : drop) dropped = dropped || iequals(h.name, d);
    if (!dropped) out.add(h.name, h.value);
  }
  return out;
}

// One proxied request. Strong references: the upstream's head callback and the two bodies'
// handlers, each released once it has run; the handlers that may outlive the exchange (abort,
// drains) hold weak ones, so nothing keeps it alive after both sides are done.
struct ProxyExchange {
  ServerExchangePtr ex;
  ClientExchangePtr up;
  int port = 0;

  std::string where() const { return "localhost:" + std::to_string(port); }

  void on_response(Result<ResponseHead> result, const std::shared_ptr<ProxyExchange>& self) {
    if (ex->ended() || ex->aborted()) {
      up->cancel();
      return;
    }
    if (!result) {
      // The request body, if still coming, is read and dropped (writes to a failed exchange
      // are no-ops), so the client's connection stays usable.
      ex->resume_body();
      switch (result.error().code) {
        case Errc::Cancelled: return;
        case Errc::Timeout: return send_detail(*ex, 504, "Timeout connecting to " + where());
        case Errc::UpstreamProtocol:
          return send_detail(*ex, 502, "Invalid response from " + where());
        default: return send_detail(*ex, 502, "Connection refused: " + where());
      }
    }
    ResponseHead& in = *result;
    if (in.status == 101) {  // we never ask for an upgrade; a 101 cannot be passed on
      up->cancel();
      return send_detail(*ex, 502, "Unexpected protocol switch from " + where());
    }
    ResponseHead out;
    out.status = in.status;
    out.reason = in.reason;
    // Content-Length stays: the body is passed on byte for byte (Content-Encoding included),
    // and our server frames with it.
    out.headers = end_to_end(in.headers, {});
    if (in.content_length && !out.headers.has("content-length")) {
      out.content_length = in.content_length;
    }
    ex->write_head(out);
    up->read_body(BodyHandlers{
        [self](std::string_view data) {
          if (!self->ex->write(data)) self->up->pause_body();  // resumed by the drain handler
        },
        [self](Status status) {
          if (!status && status.error().code == Errc::Cancelled && self->ex->aborted()) return;
          // On an upstream failure mid-body this ends short: with a Content-Length the server
          // then closes the connection, so the client sees the truncation.
          self->ex->end();
        }});
  }
};

// The port and the rest of the path, from the raw (undecoded) target so that the upstream gets
// the path exactly as it was sent: /proxy/{port}/{rest}.
struct ProxyTarget {
  std::string port_text;
  std::string_view rest;
};

std::optional<ProxyTarget> split_proxy_target(std::string_view path) {
  auto skip_slashes = [&](std::size_t i) {
    while (i < path.size() && path[i] == '/') ++i;
    return i;
  };
  std::size_t i = skip_slashes(0);
  std::size_t end = path.find('/', i);  // past "proxy"
  if (end == std::string_view::npos) return std::nullopt;
  i = skip_slashes(end);
  end = path.find('/', i);
  ProxyTarget t;
  auto port = percent_decode(path.substr(i, end == std::string_view::npos ? path.size() - i : end - i));
  if (!port) return std::nullopt;
  t.port_text = std::move(port).value();
  if (end != std::string_view::npos) t.rest = path.substr(end + 1);
  return t;
}

// FastAPI's `port: int`: 422 in Pydantic's shape when not an integer, then the reference's
// own range message.
bool parse_port(AgentRequest& r, const std::string& text, int& port) {
  std::string_view s = text;
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  bool digits = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits) {
    JsonWriter input;
    input.value(text);
    send_validation_error(*r.exchange,
                          {"int_parsing", {"path", "port"},
                           "Input should be a valid integer, unable to parse string as an integer",
                           input.take()});
    return false;
  }
  while (s.size() > 1 && s.front() == '0') s.remove_prefix(1);
  long value = 0;
  if (s.size() <= 6) std::from_chars(s.data(), s.data() + s.size(), value);
  if (negative || s.size() > 6 || value < 1 || value > 65535) {
    send_detail(*r.exchange, 422, "Port must be between 1 and 65535");
    return false;
  }
  port = static_cast<int>(value);
  return true;
}

void start_proxy(const std::shared_ptr<AgentState>& s, AgentRequest& r, int port,
                 std::string_view rest, const std::string& host) {
  const RequestHead& in = r.exchange->request();
  if (!s->proxy_client) {
    ClientOptions options;
    options.connect_timeout = kConnectTimeout;
    options.read_timeout = kReadTimeout;
    s->proxy_client = HttpClient::create(*s->loop, options);
  }

  RequestHead head;
  head.method = in.method;
  head.target = "/" + std::string(rest);
  // The query goes on as sent (the reference re-encodes it after dropping "null" values; a
  // proxied application should see its own query untouched).
  if (!in.query().empty()) {
    head.target += '?';
    head.target += in.query();
  }
  // Host becomes the upstream's; Expect is answered here (100-continue happens when we read).
  head.headers = end_to_end(in.headers, {"host", "authorization", "content-length", "expect"});
  // As the reference sends it; dev servers that check Host accept "localhost".
  head.headers.add("Host", "localhost:" + std::to_string(port));
  const bool has_body = in.chunked || in.content_length.value_or(0) > 0;
  if (in.chunked) {
    head.headers.add("Transfer-Encoding", "chunked");
  } else if (in.content_length) {
    head.headers.add("Content-Length", std::to_string(*in.content_length));
  } else if (in.method == "POST" || in.method == "PUT" || in.method == "PATCH") {
    head.headers.add("Content-Length", "0");
  }

  auto p = std::make_shared<ProxyExchange>();
  p->ex = r.exchange;
  p->port = port;
  std::weak_ptr<bool> alive = s->alive;
  p->up = s->proxy_client->request(
      Endpoint::tcp(host, static_cast<std::uint16_t>(port)), std::move(head),
      [p, alive](Result<ResponseHead> result) {
        auto token = alive.lock();
        if (!token || !*token) return;
        p->on_response(std::move(result), p);
      });

  std::weak_ptr<ProxyExchange> weak = p;
  // A client that leaves mid-way cancels the upstream exchange (and closes its connection).
  p->ex->on_abort([weak] {
    if (auto q = weak.lock()) q->up->cancel();
  });
  p->ex->set_drain_handler([weak] {
    if (auto q = weak.lock()) q->up->resume_body();
  });
  p->up->set_drain_handler([weak] {
    if (auto q = weak.lock()) q->ex->resume_body();
  });
  if (!has_body) {
    p->up->end();
    return;
  }
  p->ex->read_body(BodyHandlers{
      [p](std::string_view chunk) {
        if (!p->up->write(chunk)) p->ex->pause_body();  // resumed by the upstream's drain
      },
      [p](Status status) {
        if (status) return p->up->end();
        // The client's body broke off (gone, too large, malformed): the upstream must not
        // take a partial body for a whole one. After a complete answer this is a no-op.
        if (!p->ex->ended()) p->up->cancel();
      }});
}

void proxy(const std::shared_ptr<AgentState>& s, AgentRequest& r) {
  const RequestHead& in = r.exchange->request();
  auto target = split_proxy_target(in.path());
  if (!target) return send_detail(*r.exchange, 400, "Malformed path");
  int port = 0;
  if (!parse_port(r, target->port_text, port)) return;
  if (in.upgrade) {
    // Neither does the reference proxy WebSockets; saying so beats a confusing plain answer.
    return send_detail(*r.exchange, 501, "Upgrades (WebSocket) are not proxied");
  }
  // Which loopback address to use takes a /proc read: off the loop. The request body waits
  // meanwhile (the server reads no further until read_body).
  std::string rest(target->rest);
  run_off_loop(s, r, [s, port, rest = std::move(rest)]() mutable {
    std::string host = loopback_host_for(port);
    return Responder([s, port, rest = std::move(rest), host = std::move(host)](AgentRequest& req) {
      if (req.exchange->aborted() || req.exchange->ended()) return;
      start_proxy(s, req, port, rest, host);
    });
  });
}

}  // namespace

void add_port_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state) {
  std::shared_ptr<AgentState> s = state;
  router.add("GET", "/ports", {false, [s](AgentRequest& r) {
               run_off_loop(s, r, [] {
                 std::string body = ports_json(scan_listening_ports());
                 return Responder([body = std::move(body)](AgentRequest& req) {
                   send_json(*req.exchange, 200, body);
                 });
               });
             }});
  for (const char* method : {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}) {
    router.add(method, "/proxy/{port}/{path...}", {false, [s](AgentRequest& r) { proxy(s, r); }});
  }
}

}  // namespace terminals::detail
