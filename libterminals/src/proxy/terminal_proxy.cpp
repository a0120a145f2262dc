// The HTTP half of the terminal proxy (see terminal_proxy.hpp for the contract).
//
// Unlike the reference (§3.1), which buffers bodies and replays requests up to five times —
// POST /execute included, after the agent may already have run it — a request here is sent
// once, streamed, and only a connect that was refused (nothing delivered) is attempted again
// (with the body, when it is small enough to have been kept: 64 KiB).

#include <uv.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "json/json.hpp"
#include "proxy/proxy_internal.hpp"
#include "terminals/log.hpp"

namespace terminals::detail {

std::string endpoint_kind(const Endpoint& endpoint) {
  return endpoint.kind == Endpoint::Kind::Unix ? "unix socket" : "tcp";
}

void IdleWatch::watch(ProxyShared& shared) {
  if (shared_) return;
  shared_ = &shared;
  last_active_ms_ = shared.loop.now_ms();
  shared.add_watch(this);
}

void IdleWatch::unwatch() {
  if (!shared_) return;
  shared_->remove_watch(this);
  shared_ = nullptr;
}

namespace {
std::chrono::milliseconds sweep_interval(std::chrono::milliseconds idle) {
  return std::clamp(idle / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
}
}  // namespace

void ProxyShared::add_watch(IdleWatch* w) {
  w->prev_ = nullptr;
  w->next_ = watched;
  if (watched) watched->prev_ = w;
  watched = w;
  if (!sweep_timer) sweep_timer = loop.create_timer([this] { sweep(); });
  if (!sweep_timer->active()) sweep_timer->start(sweep_interval(options.idle_timeout));
}

void ProxyShared::remove_watch(IdleWatch* w) {
  if (w->prev_) w->prev_->next_ = w->next_;
  else watched = w->next_;
  if (w->next_) w->next_->prev_ = w->prev_;
  w->prev_ = w->next_ = nullptr;
  if (!watched && sweep_timer) sweep_timer->stop();  // nothing to watch: let the loop idle
}

void ProxyShared::sweep() {
  const auto limit = static_cast<std::uint64_t>(options.idle_timeout.count());
  // One at a time, from the head each time: a callback may end (and so unlink or free) other
  // exchanges, and the list only ever holds live ones (they unwatch when destroyed). Expiries
  // are rare, so the rescans cost nothing in practice.
  for (;;) {
    const std::uint64_t now = loop.now_ms();
    IdleWatch* w = watched;
    while (w && now - w->last_active_ms_ < limit) w = w->next_;
    if (!w) break;
    remove_watch(w);
    w->shared_ = nullptr;
    w->on_idle_timeout();
  }
  if (watched && sweep_timer && !sweep_timer->active()) sweep_timer->start(sweep_interval(options.idle_timeout));
}

bool is_refused_connect(const Error& error) {
  if (error.source != ErrorSource::Uv) return false;
  // EAGAIN: a unix listener whose backlog is full, as a busy agent that is still starting has.
  return error.native == UV_ECONNREFUSED || error.native == UV_ENOENT ||
         error.native == UV_EAGAIN;
}

namespace {

// How often a refused connect is tried again while the terminal starts.
constexpr std::chrono::milliseconds kRetryInterval{100};
// How long a terminal found again after its agent was unreachable may take to accept.
constexpr std::chrono::milliseconds kRetryAfterRecheck{3000};
// Bodies up to this size are kept so that a refused connect can be retried with them.
constexpr std::uint64_t kReplayableBody = 64 * 1024;

bool is_hop_by_hop(std::string_view name) {
  static constexpr std::array<std::string_view, 9> kNames = {
      "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
      "te",         "trailer",    "transfer-encoding", "upgrade"};
  return std::any_of(kNames.begin(), kNames.end(), [&](std::string_view n) { return iequals(name, n); });
}

// The end-to-end headers of `in`, minus `drop`.
Headers end_to_end(const Headers& in, std::initializer_list<std::string_view> drop) {
  Headers out;
  for (const auto& h : in) {
    if (is_hop_by_hop(h.name) || in.has_token("connection", h.name)) continue;
    if (std::any_of(drop.begin(), drop.end(), [&](std::string_view d) { return iequals(h.name, d); })) {
      continue;
    }
    out.add(h.name, h.value);
  }
  return out;
}

// "127.0.0.1:5000" -> "127.0.0.1", "[::1]:5000" -> "::1", "unix" -> "".
std::string peer_address(const std::string& peer) {
  if (peer.empty() || peer == "unix") return {};
  if (peer.front() == '[') {
    auto close = peer.find(']');
    return close == std::string::npos ? std::string() : peer.substr(1, close - 1);
  }
  auto colon = peer.rfind(':');
  return colon == std::string::npos ? peer : peer.substr(0, colon);
}

// Proxy-generated failures are {"error": ...}, as the reference orchestrator answers them
// (its auth and admin errors use {"detail": ...}).
void send_error(ServerExchange& ex, int status, std::string_view message) {
  if (ex.ended() || ex.aborted()) return;
  ex.respond(status, Headers{{"Content-Type", "application/json"}},
             JsonWriter().object().field("error", message).end_object().take());
}

// Whether the agent answers `head` at once, from memory: such requests may be batched (one
// connection, one write; see ClientOptions::max_batch). Anything that may take long (a file
// transfer, a search, a long poll with `wait`, a port proxy, /ports' scan off the loop) is not,
// as its answer would hold up the ones pipelined behind it.
bool answers_at_once(const RequestHead& head) {
  if (head.method != "GET" && head.method != "HEAD") return false;
  std::string_view path = head.path();
  static constexpr std::array<std::string_view, 8> kExact = {
      "/health", "/api/config", "/system", "/info", "/openapi.json", "/files/cwd",
      "/api/terminals", "/execute"};
  if (std::find(kExact.begin(), kExact.end(), path) != kExact.end()) return true;
  auto one_segment_after = [&](std::string_view prefix, std::string_view suffix) {
    if (!path.starts_with(prefix) || !path.ends_with(suffix) ||
        path.size() <= prefix.size() + suffix.size()) {
      return false;
    }
    std::string_view id = path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
    return id.find('/') == std::string_view::npos;
  };
  if (one_segment_after("/api/terminals/", "")) return true;
  if (one_segment_after("/execute/", "/status")) {
    // `wait` makes it a long poll.
    for (std::string_view q = head.query(); !q.empty();) {
      std::size_t amp = q.find('&');
      std::string_view pair = q.substr(0, amp);
      if (pair == "wait" || pair.starts_with("wait=")) return false;
      if (amp == std::string_view::npos) break;
      q.remove_prefix(amp + 1);
    }
    return true;
  }
  return false;
}

// The request head for the agent.
RequestHead upstream_head(const ServerExchange& ex, const ProxyTarget& target,
                          const ForwardOptions& options) {
  const RequestHead& in = ex.request();
  RequestHead head;
  head.method = in.method;
  head.target = options.upstream_target.empty() ? in.target : options.upstream_target;
  // Dropped: our framing and Host (set again below and by the client), the caller's credential
  // (replaced), the orchestrator's routing headers, the browser's cookies (they may carry the
  // user's Open WebUI session, which sandboxed code must not see), and forwarding headers the
  // client may have forged (ours replace them).
  head.headers = end_to_end(in.headers, {"host", "authorization", "content-length", "expect",
                                         "cookie", "x-user-id", "x-terminal-context-id",
                                         "forwarded", "x-forwarded-host", "x-forwarded-proto",
                                         "x-forwarded-prefix", "x-forwarded-for"});
  head.headers.add("Authorization", "Bearer " + target.api_key);
  // A chain through earlier proxies is kept, with the address we saw appended.
  std::string forwarded_for(in.headers.get("x-forwarded-for").value_or(""));
  if (std::string addr = peer_address(ex.peer()); !addr.empty()) {
    forwarded_for += forwarded_for.empty() ? addr : ", " + addr;
  }
  if (!forwarded_for.empty()) head.headers.add("X-Forwarded-For", forwarded_for);
  // TLS ends in front of us, if anywhere: believe only the two meaningful values.
  auto proto = in.headers.get("x-forwarded-proto");
  head.headers.add("X-Forwarded-Proto", proto && (*proto == "https" || *proto == "http")
                                            ? std::string(*proto) : "http");
  if (auto host = in.headers.get("host")) head.headers.add("X-Forwarded-Host", std::string(*host));
  if (!options.forwarded_prefix.empty()) {
    head.headers.add("X-Forwarded-Prefix", options.forwarded_prefix);
  }
  if (in.chunked) {
    head.headers.add("Transfer-Encoding", "chunked");
  } else if (in.content_length) {
    head.headers.add("Content-Length", std::to_string(*in.content_length));
  } else if (in.method == "POST" || in.method == "PUT" || in.method == "PATCH") {
    head.headers.add("Content-Length", "0");
  }
  return head;
}

// One forwarded request. Strong references: the upstream's head callback and the two bodies'
// handlers; the handlers that may outlive the exchange (abort, drains, timers) hold weak ones.
class HttpForward : public std::enable_shared_from_this<HttpForward>, private IdleWatch {
 public:
  HttpForward(std::shared_ptr<ProxyShared> shared, ServerExchangePtr ex, const ProxyTarget& target,
              ForwardOptions options)
      : shared_(std::move(shared)),
        ex_(std::move(ex)),
        endpoint_(target.endpoint),
        head_(upstream_head(*ex_, target, options)),
        retry_for_(options.retry_connect_for),
        activity_(std::move(options.on_activity)),
        on_unreachable_(std::move(options.on_unreachable)) {
    const RequestHead& in = ex_->request();
    has_body_ = in.chunked || in.content_length.value_or(0) > 0;
    // A small body is kept until the response starts, so that a refused connect (nothing
    // delivered) can be retried with it, like a request without one.
    keep_copy_ = has_body_ && !in.chunked && *in.content_length <= kReplayableBody;
    batchable_ = !has_body_ && !in.upgrade && answers_at_once(head_);
  }

  ~HttpForward() override { unwatch(); }

  void start() {
    std::weak_ptr<HttpForward> weak = weak_from_this();
    watch(*shared_);
    retry_deadline_ = shared_->loop.now_ms() + static_cast<std::uint64_t>(retry_for_.count());
    // A client that leaves mid-way cancels the upstream exchange (and closes its connection).
    ex_->on_abort([weak] {
      if (auto self = weak.lock()) self->on_client_gone();
    });
    ex_->set_drain_handler([weak] {
      if (auto self = weak.lock(); self && self->up_) self->up_->resume_body();
    });
    activity_.ping(shared_->loop);
    attempt();
  }

 private:
  void attempt() {
    if (!shared_->client) return fail(503, "The terminal proxy is shutting down");
    auto self = shared_from_this();
    ++attempts_;
    up_ = shared_->client->request(endpoint_, head_, RequestOptions{batchable_},
                                   [self](Result<ResponseHead> r) {
                                     self->on_response(std::move(r));
                                   });
    std::weak_ptr<HttpForward> weak = self;
    up_->set_drain_handler([weak] {
      if (auto s = weak.lock()) s->ex_->resume_body();
    });
    if (!has_body_) {
      up_->end();
      return;
    }
    if (body_reading_) {  // a retry: what the client sent so far, then the rest as it comes
      if (body_broken_) return fail(400, "The request body broke off");
      if (!body_copy_.empty()) up_->write(body_copy_);
      if (body_ended_) return up_->end();
      ex_->resume_body();
      return;
    }
    body_reading_ = true;
    ex_->read_body(BodyHandlers{
        [self](std::string_view chunk) {
          self->touch();
          if (self->keep_copy_ && !self->head_sent_) self->body_copy_.append(chunk);
          // No upstream while a retry waits: the copy has it, or the request will fail.
          if (self->done_ || !self->up_) return;
          if (!self->up_->write(chunk)) self->ex_->pause_body();  // resumed by the upstream's drain
        },
        [self](Status status) {
          if (status) self->body_ended_ = true;
          else self->body_broken_ = true;
          if (self->done_ || !self->up_) return;
          if (status) return self->up_->end();
          // The client's body broke off (gone, too large, malformed): the agent must not take
          // a partial body for a whole one.
          self->up_->cancel();
        }});
  }

  void on_response(Result<ResponseHead> result) {
    if (done_) return;
    if (ex_->ended() || ex_->aborted()) return finish();
    if (!result) return on_upstream_error(std::move(result).error());
    ResponseHead& in = *result;
    if (in.status == 101) {  // we never ask for an upgrade; a 101 cannot be passed on
      return fail(502, "Unexpected protocol switch from " + where());
    }
    touch();
    ResponseHead out;
    out.status = in.status;
    out.reason = in.reason;
    // Content-Length and Content-Encoding stay: the body goes on byte for byte.
    out.headers = end_to_end(in.headers, {});
    head_sent_ = true;
    std::string().swap(body_copy_);  // no retry after a response
    ex_->write_head(out);
    auto self = shared_from_this();
    up_->read_body(BodyHandlers{
        [self](std::string_view data) {
          if (self->done_) return;
          self->touch();
          if (!self->ex_->write(data)) self->up_->pause_body();  // resumed by the client's drain
        },
        [self](Status status) {
          if (self->done_) return;
          if (!status && status.error().code != Errc::Cancelled) {
            log(LogLevel::Warning, "proxy",
                "response body from " + self->where() + " cut short: " + status.error().message);
          }
          // Cut short: with a Content-Length the server then closes the connection, so the
          // client sees the truncation.
          self->ex_->end();
          self->finish();
        }});
  }

  void on_upstream_error(Error error) {
    if (error.code == Errc::Cancelled) {
      return fail(503, "The terminal proxy is shutting down");
    }
    if (is_refused_connect(error) && (!has_body_ || keep_copy_) && retry_for_.count() > 0) {
      const std::uint64_t now = shared_->loop.now_ms();
      if (now < retry_deadline_) return schedule_retry(retry_deadline_ - now);
      if (on_unreachable_) return ask_again();
      return fail(503, where() + " did not accept connections within " +
                           std::to_string(retry_for_.count()) + " ms; the terminal may still be starting");
    }
    if (is_refused_connect(error) && on_unreachable_) return ask_again();
    log(LogLevel::Warning, "proxy", "request to " + where() + " failed: " + error.message);
    switch (error.code) {
      case Errc::Timeout: return fail(504, "Timed out connecting to or waiting for " + where());
      case Errc::UpstreamProtocol: return fail(502, "Invalid HTTP response from " + where());
      case Errc::NotFound: return fail(502, where() + " is not listening (no socket)");
      default: break;
    }
    if (is_refused_connect(error)) return fail(502, "Connection refused by " + where());
    return fail(502, "Connection to " + where() + " failed");
  }

  // Nobody listens where the terminal was: ask the caller, once, where it is now.
  void ask_again() {
    auto ask = std::move(on_unreachable_);
    on_unreachable_ = nullptr;
    shared_->loop.defer([old = std::move(up_)] {});
    ask([self = shared_from_this()](Result<ProxyTarget> target) {
      if (self->done_) return;
      if (!target) {
        const Error& e = target.error();
        int status = e.native >= 400 && e.native <= 599 ? e.native : 503;
        return self->fail(status, e.message);
      }
      if (self->has_body_ && !self->keep_copy_) {
        return self->fail(503, self->where() + " was not reachable and the terminal was checked or "
                                              "started again; send the request again");
      }
      self->endpoint_ = target->endpoint;
      self->head_.headers.set("Authorization", "Bearer " + target->api_key);
      self->retry_for_ = kRetryAfterRecheck;
      self->retry_deadline_ = self->shared_->loop.now_ms() + static_cast<std::uint64_t>(kRetryAfterRecheck.count());
      self->attempt();
    });
  }

  void schedule_retry(std::uint64_t remaining_ms) {
    // The failed exchange is inside its own callback: drop it later.
    shared_->loop.defer([old = std::move(up_)] {});
    // Nothing else holds us while we wait; the reference is dropped when the timer fires or
    // the exchange finishes.
    waiting_ = shared_from_this();
    std::weak_ptr<HttpForward> weak = weak_from_this();
    if (!retry_timer_) {
      retry_timer_ = shared_->loop.create_timer([weak] {
        auto self = weak.lock();
        if (!self) return;
        self->waiting_.reset();
        if (!self->done_) self->attempt();
      });
    }
    retry_timer_->start(std::min(kRetryInterval, std::chrono::milliseconds(remaining_ms)));
  }

  // For messages only (built when one is needed, not per request).
  std::string where() const { return "the terminal's agent (" + endpoint_kind(endpoint_) + ")"; }

  void on_idle_timeout() override {
    auto self = shared_from_this();  // cancelling the upstream may drop the other references
    if (done_) return;
    if (up_) up_->cancel();
    if (!head_sent_) {
      return fail(504, "No response from " + where() + " within " +
                           std::to_string(shared_->options.idle_timeout.count()) + " ms");
    }
    log(LogLevel::Warning, "proxy", "exchange with " + where() + " idle, closed");
    ex_->end();  // short of its length: the client sees the truncation
    finish();
  }

  void on_client_gone() {
    if (done_) return;
    if (up_) up_->cancel();
    finish();
  }

  void touch() {
    if (done_) return;
    mark_active(shared_->loop.now_ms());
    activity_.ping(shared_->loop);
  }

  void fail(int status, const std::string& message) {
    if (done_) return;
    if (up_) up_->cancel();
    // The request body, if still coming, is read and dropped, so the client's connection stays
    // usable.
    ex_->resume_body();
    send_error(*ex_, status, message);
    finish();
  }

  void finish() {
    if (done_) return;
    done_ = true;
    unwatch();
    if (retry_timer_) retry_timer_->stop();
    if (waiting_) shared_->loop.defer([held = std::move(waiting_)] {});
    // We may be inside the upstream exchange's callback: it goes in the next iteration.
    shared_->loop.defer([old = std::move(up_)] {});
  }

  std::shared_ptr<ProxyShared> shared_;
  ServerExchangePtr ex_;
  Endpoint endpoint_;
  RequestHead head_;
  std::chrono::milliseconds retry_for_;
  ActivityLimiter activity_;
  MoveOnlyFunction<void(MoveOnlyFunction<void(Result<ProxyTarget>)>)> on_unreachable_;
  bool has_body_ = false;
  bool keep_copy_ = false;
  bool batchable_ = false;
  std::string body_copy_;  // while keep_copy_ and no response yet
  bool body_reading_ = false;
  bool body_ended_ = false;
  bool body_broken_ = false;
  ClientExchangePtr up_;
  std::unique_ptr<Timer> retry_timer_;
  std::shared_ptr<HttpForward> waiting_;
  std::uint64_t retry_deadline_ = 0;
  int attempts_ = 0;
  bool head_sent_ = false;
  bool done_ = false;
};

class TerminalProxyImpl final : public TerminalProxy {
 public:
  TerminalProxyImpl(Loop& loop, ProxyOptions options)
      : shared_(std::make_shared<ProxyShared>(loop, options)) {
    ClientOptions client;
    client.connect_timeout = options.connect_timeout;
    // Our own idle timer covers both directions; the client's covers a silent agent too.
    client.read_timeout = options.idle_timeout;
    // Kept connections per terminal: as many as a busy client keeps in flight, or every request
    // past the pool opens (and the agent accepts) a new connection; bench/run proxy measured 8
    // costing about half the throughput at 64 concurrent requests. Idle ones close after 30 s.
    client.max_idle_per_upstream = 64;
    client.max_batch = options.max_batch;
    shared_->client = HttpClient::create(loop, client);
  }

  ~TerminalProxyImpl() override {
    shared_->closed = true;
    close_all_tunnels(*shared_);
    shared_->client.reset();  // exchanges in flight complete with Cancelled
  }

  void forward(ServerExchangePtr exchange, const ProxyTarget& target,
               ForwardOptions options) override {
    if (!exchange || exchange->ended() || exchange->aborted()) return;
    auto f = std::make_shared<HttpForward>(shared_, std::move(exchange), target, std::move(options));
    f->start();
  }

  void forward_websocket(ServerExchangePtr exchange, const ProxyTarget& target,
                         WsOptions options) override {
    if (!exchange || exchange->ended() || exchange->aborted()) return;
    start_ws_tunnel(shared_, std::move(exchange), target, std::move(options));
  }

  std::size_t open_tunnels() const override { return shared_->tunnels.size(); }

 private:
  std::shared_ptr<ProxyShared> shared_;
};

}  // namespace

std::unique_ptr<TerminalProxy> TerminalProxy::create(Loop& loop, ProxyOptions options) {
  return std::make_unique<TerminalProxyImpl>(loop, options);
}

}  // namespace terminals::detail
