// Server: accepts connections on a detail::Listener and owns them; each ServerConnection does
// the HTTP work. Shutdown and destruction are the only places that act on all connections.

#include "terminals/server.hpp"

#include <utility>
#include <vector>

#include "http/server_connection.hpp"
#include "terminals/loop.hpp"
#include "uv/uv_stream.hpp"

namespace terminals {

namespace detail {
namespace {

class ServerImpl final : public Server, public ConnectionOwner {
 public:
  ServerImpl(Loop& loop, ServerOptions options, RequestHandler handler)
      : loop_(loop), options_(std::move(options)), handler_(std::move(handler)) {}

  ~ServerImpl() override {
    destroying_ = true;
    listener_.reset();
    grace_timer_.reset();
    // Not inside any connection's callback here (rule 5), so they can go at once.
    while (head_) {
      ServerConnection* c = head_;
      c->close_now();  // aborts its exchange (reported from the next iteration) and unlinks it
      if (head_ == c) unlink(c);
      delete c;
    }
    if (!shutdown_done_.empty()) {
      loop_.defer([cbs = std::move(shutdown_done_)]() mutable {
        for (auto& cb : cbs) cb(Error(Errc::Cancelled, "the server was destroyed during shutdown"));
      });
    }
  }

  Status listen() {
    Listener::Options lo;
    lo.unix_mode = options_.unix_socket_mode;
    auto l = Listener::create(loop_, options_.listen, lo,
                              [this](Result<StreamPtr> r) { on_accept(std::move(r)); });
    if (!l) return std::move(l).error();
    listener_ = std::move(l).value();
    endpoint_ = listener_->local_endpoint();
    return {};
  }

  Endpoint local_endpoint() const override { return endpoint_; }

  void shutdown(std::chrono::milliseconds grace, Callback<void> done) override {
    if (done) shutdown_done_.push_back(std::move(done));
    if (!shutting_down_) {
      shutting_down_ = true;
      if (listener_) listener_->close();
      for (ServerConnection* c : snapshot()) c->begin_shutdown();
      if (head_) {
        grace_timer_ = loop_.create_timer([this] {
          for (ServerConnection* c : snapshot()) {
            c->close_now(Error(Errc::Cancelled, "the server's shutdown grace period ran out"));
          }
        });
        grace_timer_->start(grace);
      }
    }
    check_shutdown_done();
  }

  std::size_t connection_count() const override { return count_; }

  // ConnectionOwner
  Loop& loop() override { return loop_; }
  const ServerOptions& options() const override { return options_; }
  void dispatch(ServerExchangePtr exchange) override { handler_(std::move(exchange)); }
  bool shutting_down() const override { return shutting_down_; }

  void release(ServerConnection* c) override {
    unlink(c);
    if (destroying_) return;  // the destructor frees it
    loop_.defer_delete(std::unique_ptr<ServerConnection>(c));
    check_shutdown_done();
  }

 private:
  void on_accept(Result<StreamPtr> r) {
    // Accept errors (EMFILE and the like) are transient; libuv keeps listening.
    if (!r) return;
    const bool over = active_ >= options_.max_connections || shutting_down_;
    auto* c = new ServerConnection(*this, std::move(r).value(), !over);
    link(c);
    if (over) {
      c->reject(503, "the server is at its limit of " + std::to_string(options_.max_connections) +
                         " connections; retry later");
    } else {
      c->start();
    }
  }

  void link(ServerConnection* c) {
    c->next_ = head_;
    c->prev_ = nullptr;
    if (head_) head_->prev_ = c;
    head_ = c;
    ++count_;
    if (c->counted()) ++active_;
  }

  void unlink(ServerConnection* c) {
    if (c->prev_) c->prev_->next_ = c->next_;
    else if (head_ == c) head_ = c->next_;
    else return;  // not linked
    if (c->next_) c->next_->prev_ = c->prev_;
    c->prev_ = c->next_ = nullptr;
    --count_;
    if (c->counted()) --active_;
  }

  // Connections may unlink themselves while we act on them; act on a copy of the list.
  std::vector<ServerConnection*> snapshot() const {
    std::vector<ServerConnection*> v;
    v.reserve(count_);
    for (ServerConnection* c = head_; c; c = c->next_) v.push_back(c);
    return v;
  }

  void check_shutdown_done() {
    if (!shutting_down_ || head_ || shutdown_done_.empty()) return;
    if (grace_timer_) grace_timer_->stop();
    // Never inside the call that started it (shutdown() itself may find nothing to wait for).
    loop_.defer([cbs = std::move(shutdown_done_)]() mutable {
      for (auto& cb : cbs) cb(Status{});
    });
    shutdown_done_.clear();
  }

  Loop& loop_;
  ServerOptions options_;
  RequestHandler handler_;
  std::unique_ptr<Listener> listener_;
  Endpoint endpoint_;
  ServerConnection* head_ = nullptr;
  std::size_t count_ = 0;   // every open connection
  std::size_t active_ = 0;  // those that count towards max_connections
  bool shutting_down_ = false;
  bool destroying_ = false;
  std::unique_ptr<Timer> grace_timer_;
  std::vector<Callback<void>> shutdown_done_;
};

}  // namespace
}  // namespace detail

Result<std::unique_ptr<Server>> Server::create(Loop& loop, ServerOptions options,
                                               RequestHandler handler) {
  if (!handler) return Error(Errc::InvalidArgument, "Server::create needs a request handler");
  if (options.max_headers == 0 || options.max_header_bytes == 0) {
    return Error(Errc::InvalidArgument, "max_headers and max_header_bytes must be above zero");
  }
  if (options.max_connections == 0) {
    return Error(Errc::InvalidArgument, "max_connections must be above zero");
  }
  if (options.write_high_watermark == 0) options.write_high_watermark = 256 * 1024;
  auto server = std::make_unique<detail::ServerImpl>(loop, std::move(options), std::move(handler));
  if (auto st = server->listen(); !st) return std::move(st).error();
  return std::unique_ptr<Server>(std::move(server));
}

}  // namespace terminals
