#pragma once

// What the HTTP and WebSocket halves of the terminal proxy share.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/terminal_proxy.hpp"
#include "terminals/http_client.hpp"
#include "terminals/loop.hpp"
#include "terminals/result.hpp"

namespace terminals::detail {

class WsTunnel;
struct ProxyShared;

/// An exchange whose idleness one shared sweep checks: a timer per request (created, re-armed on
/// every chunk, closed) cost more than the sweep, which walks an intrusive list (no allocation
/// per request) every quarter of the idle timeout, at most once a second. So an idle exchange
/// is noticed between 1 and 1.25 idle timeouts after its last byte.
class IdleWatch {
 public:
  virtual ~IdleWatch() = default;

 protected:
  /// Starts watching (the clock starts now); `unwatch` before destruction.
  void watch(ProxyShared& shared);
  void unwatch();
  void mark_active(std::uint64_t now_ms) { last_active_ms_ = now_ms; }
  /// Called from the sweep once idle for the timeout; the watch is already removed.
  virtual void on_idle_timeout() = 0;

 private:
  friend struct ProxyShared;
  ProxyShared* shared_ = nullptr;
  IdleWatch* prev_ = nullptr;
  IdleWatch* next_ = nullptr;
  std::uint64_t last_active_ms_ = 0;
};

/// Owned by the TerminalProxy; exchanges in flight keep it alive past the proxy (then `client`
/// is null and `closed` set), tunnels are closed with the proxy.
struct ProxyShared {
  explicit ProxyShared(Loop& l, ProxyOptions o) : loop(l), options(o) {}
  Loop& loop;
  ProxyOptions options;
  std::unique_ptr<HttpClient> client;
  std::map<WsTunnel*, std::shared_ptr<WsTunnel>> tunnels;
  bool closed = false;

  // The idle sweep (see IdleWatch). The timer runs only while something is watched.
  IdleWatch* watched = nullptr;
  std::unique_ptr<Timer> sweep_timer;
  void add_watch(IdleWatch* w);
  void remove_watch(IdleWatch* w);
  void sweep();
};

/// Starts a WebSocket tunnel (terminal_ws_proxy.cpp).
void start_ws_tunnel(const std::shared_ptr<ProxyShared>& shared, ServerExchangePtr exchange,
                     const ProxyTarget& target, TerminalProxy::WsOptions options);
/// Closes every tunnel now (the proxy is going away).
void close_all_tunnels(ProxyShared& shared);

/// "unix socket" or "tcp": what a message may say about where the agent is, without paths.
std::string endpoint_kind(const Endpoint& endpoint);
/// A connect that never reached a listener: refused, or a unix socket that does not exist yet.
/// Such an attempt can be repeated whatever the request, as nothing was delivered.
bool is_refused_connect(const Error& error);

/// Calls `fn` at most once per second.
class ActivityLimiter {
 public:
  ActivityLimiter() = default;
  explicit ActivityLimiter(MoveOnlyFunction<void()> fn) : fn_(std::move(fn)) {}
  void ping(Loop& loop) {
    if (!fn_) return;
    const std::uint64_t now = loop.now_ms();
    if (called_ && now - last_ < 1000) return;
    called_ = true;
    last_ = now;
    fn_();
  }

 private:
  MoveOnlyFunction<void()> fn_;
  std::uint64_t last_ = 0;
  bool called_ = false;
};

}  // namespace terminals::detail
