#include "uv/uv_stream.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "uv/uv_error.hpp"

namespace terminals::detail {

namespace {
// One read buffer per thread (= per loop): data is handed to the read handler synchronously
// and must be copied by whoever keeps it, so no per-connection buffer is needed.
constexpr std::size_t kReadBufferSize = 64 * 1024;
thread_local char t_read_buffer[kReadBufferSize];
thread_local bool t_read_buffer_busy = false;

void alloc_cb(uv_handle_t*, size_t, uv_buf_t* buf) {
  // A nested read on the same thread while the buffer is being delivered cannot happen with
  // libuv's single-threaded dispatch; keep the check for safety all the same.
  if (t_read_buffer_busy) {
    buf->base = static_cast<char*>(malloc(kReadBufferSize));
    buf->len = buf->base ? kReadBufferSize : 0;
    return;
  }
  buf->base = t_read_buffer;
  buf->len = kReadBufferSize;
}

void free_read_buf(const uv_buf_t* buf) {
  if (buf->base && buf->base != t_read_buffer) free(buf->base);
}
}  // namespace

std::string tcp_peer_name(const uv_tcp_t* tcp) {
  sockaddr_storage ss{};
  int len = sizeof(ss);
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "unknown";
  char ip[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    uv_ip4_name(a, ip, sizeof(ip));
    return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
  }
  auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
  uv_ip6_name(a, ip, sizeof(ip));
  return "[" + std::string(ip) + "]:" + std::to_string(ntohs(a->sin6_port));
}

struct UvStream::WriteReq {
  uv_write_t req;
  std::string data;
  Callback<void> done;
};

UvStream::UvStream(Loop& loop, std::unique_ptr<UvHandle<StreamStorage>> handle, std::string peer)
    : loop_(loop), handle_(std::move(handle)), peer_(std::move(peer)) {
  handle_->get()->handle.data = this;
}

UvStream::~UvStream() { close(); }

void UvStream::read_start(ReadHandler handler) {
  read_handler_ = std::move(handler);
  read_resume();
}

void UvStream::read_resume() {
  if (!handle_ || reading_ || read_done_ || !read_handler_) return;
  int rc = uv_read_start(&handle_->get()->stream, alloc_cb,
                         [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                           auto* self = owner_of<UvStream>(s);
                           if (self) self->on_read(n, buf);
                           free_read_buf(buf);
                         });
  if (rc != 0) {
    // Deliver the failure from the next iteration, never inside read_start().
    read_done_ = true;
    loop_.defer([this, alive = std::weak_ptr<char>(alive_), rc] {
      if (alive.expired()) return;
      if (read_handler_) {
        auto h = std::move(read_handler_);
        h(uv_error(rc, "start reading from " + peer_));
      }
    });
    return;
  }
  reading_ = true;
}

void UvStream::read_stop() {
  if (handle_ && reading_) uv_read_stop(&handle_->get()->stream);
  reading_ = false;
}

void UvStream::fail_reading(Error error) {
  read_done_ = true;
  read_stop();
  if (read_handler_) {
    auto h = std::move(read_handler_);
    h(std::move(error));
  }
}

void UvStream::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;  // EAGAIN: nothing to do
  if (nread < 0) {
    fail_reading(nread == UV_EOF ? Error(Errc::Eof, "connection closed by " + peer_,
                                         ErrorSource::Uv, UV_EOF)
                                 : uv_error(static_cast<int>(nread), "read from " + peer_));
    return;
  }
  if (!read_handler_) return;
  bool was_busy = t_read_buffer_busy;
  if (buf->base == t_read_buffer) t_read_buffer_busy = true;
  read_handler_(std::string_view(buf->base, static_cast<std::size_t>(nread)));
  if (buf->base == t_read_buffer) t_read_buffer_busy = was_busy;
}

bool UvStream::write(std::string_view data, Callback<void> done) {
  if (!handle_) {
    if (done) {
      loop_.defer([d = std::move(done), p = peer_]() mutable {
        d(Error(Errc::Cancelled, "write to " + p + " after close"));
      });
    }
    return false;
  }
  uv_stream_t* s = &handle_->get()->stream;
  std::size_t offset = 0;
  if (queued_ == 0 && !data.empty()) {
    // Fast path: most writes complete at once and need no copy.
    uv_buf_t b = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
    int n = uv_try_write(s, &b, 1);
    if (n > 0) offset = static_cast<std::size_t>(n);
    else if (n != UV_EAGAIN && n != UV_ENOSYS) {
      // The error surfaces through the read side too; report it to this writer.
      if (done) {
        loop_.defer([d = std::move(done), e = uv_error(n, "write to " + peer_)]() mutable {
          d(std::move(e));
        });
      }
      return false;
    }
  }
  if (offset == data.size()) {
    if (done) loop_.defer([d = std::move(done)]() mutable { d(Status{}); });
    return !above_high_;
  }
  auto* w = new WriteReq{};
  w->data.assign(data.substr(offset));
  w->done = std::move(done);
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  int rc = uv_write(&w->req, s, &b, 1, [](uv_write_t* req, int status) {
    auto* wr = static_cast<WriteReq*>(req->data);
    std::unique_ptr<WriteReq> owned(wr);
    // The owning stream may be gone (closed with writes queued): then only the callback runs.
    if (auto* self = static_cast<UvStream*>(req->handle->data)) self->on_written(wr->data.size());
    if (wr->done) {
      if (status == 0) wr->done(Status{});
      else wr->done(uv_error(status, "write"));
    }
  });
  if (rc != 0) {
    std::unique_ptr<WriteReq> owned(w);
    if (owned->done) {
      loop_.defer([d = std::move(owned->done), e = uv_error(rc, "write to " + peer_)]() mutable {
        d(std::move(e));
      });
    }
    return false;
  }
  queued_ += w->data.size();
  if (queued_ > high_watermark_) above_high_ = true;
  return !above_high_;
}

void UvStream::on_written(std::size_t bytes) {
  queued_ -= bytes;
  if (above_high_ && queued_ <= low_watermark_) {
    above_high_ = false;
    if (drain_handler_) drain_handler_();
  }
}

std::size_t UvStream::write_queue_size() const { return queued_; }

void UvStream::set_drain_handler(MoveOnlyFunction<void()> on_drain) {
  drain_handler_ = std::move(on_drain);
}

void UvStream::set_watermarks(std::size_t low, std::size_t high) {
  low_watermark_ = low;
  high_watermark_ = high < low ? low : high;
}

void UvStream::shutdown(Callback<void> done) {
  if (!handle_) {
    if (done) loop_.defer([d = std::move(done)]() mutable {
      d(Error(Errc::Cancelled, "shutdown after close"));
    });
    return;
  }
  struct ShutdownReq {
    uv_shutdown_t req;
    Callback<void> done;
  };
  auto* r = new ShutdownReq{};
  r->done = std::move(done);
  r->req.data = r;
  int rc = uv_shutdown(&r->req, &handle_->get()->stream, [](uv_shutdown_t* req, int status) {
    std::unique_ptr<ShutdownReq> owned(static_cast<ShutdownReq*>(req->data));
    if (owned->done) {
      if (status == 0 || status == UV_ENOTCONN) owned->done(Status{});
      else owned->done(uv_error(status, "shutdown"));
    }
  });
  if (rc != 0) {
    std::unique_ptr<ShutdownReq> owned(r);
    if (owned->done) {
      loop_.defer([d = std::move(owned->done), e = uv_error(rc, "shutdown")]() mutable {
        d(std::move(e));
      });
    }
  }
}

void UvStream::close() {
  if (!handle_) return;
  reading_ = false;
  handle_.reset();  // UvHandle::close clears data, so cancelled writes will not call back here
  read_handler_ = nullptr;
  drain_handler_ = nullptr;
}

// ---------------------------------------------------------------------------------------------
// connect

namespace {

struct ConnectOp {
  Loop& loop;
  std::unique_ptr<UvHandle<StreamStorage>> handle = std::make_unique<UvHandle<StreamStorage>>();
  std::unique_ptr<Timer> timer;
  Callback<std::unique_ptr<Stream>> done;
  std::string what;
  bool is_unix = false;
  uv_connect_t req{};
  uv_getaddrinfo_t gai{};
  bool resolving = false;
  bool finished = false;
  int port = 0;

  explicit ConnectOp(Loop& l) : loop(l) {}

  void finish(Result<std::unique_ptr<Stream>> r) {
    if (finished) return;
    finished = true;
    if (timer) timer->stop();
    auto d = std::move(done);
    d(std::move(r));
  }
};

// The op is freed when both the connect request has completed and the op has finished; the
// uv_connect_t callback always runs (with ECANCELED when the handle is closed by a timeout).
void start_tcp_connect(ConnectOp* op, const sockaddr* addr) {
  uv_tcp_t* tcp = &op->handle->get()->tcp;
  int rc = uv_tcp_init(op->loop.native(), tcp);
  if (rc != 0) {
    op->finish(uv_error(rc, op->what));
    op->loop.defer([op] { delete op; });
    return;
  }
  op->handle->set_initialized();
  op->req.data = op;
  rc = uv_tcp_connect(&op->req, tcp, addr, [](uv_connect_t* req, int status) {
    auto* o = static_cast<ConnectOp*>(req->data);
    std::unique_ptr<ConnectOp> owned(o);
    if (o->finished) return;  // timed out: the error was already delivered
    if (status != 0) {
      o->finish(uv_error(status, o->what));
      return;
    }
    uv_tcp_nodelay(&o->handle->get()->tcp, 1);
    std::string peer = tcp_peer_name(&o->handle->get()->tcp);
    o->finish(StreamPtr(new UvStream(o->loop, std::move(o->handle), std::move(peer))));
  });
  if (rc != 0) {
    op->finish(uv_error(rc, op->what));
    op->loop.defer([op] { delete op; });
  }
}

}  // namespace

}  // namespace terminals::detail

namespace terminals {

void Stream::connect(Loop& loop, const Endpoint& endpoint, std::chrono::milliseconds timeout,
                     Callback<std::unique_ptr<Stream>> done) {
  using namespace detail;
  auto* op = new ConnectOp(loop);
  op->done = std::move(done);
  op->what = "connect to " + endpoint.to_string();
  if (timeout.count() > 0) {
    op->timer = loop.create_timer([op, timeout] {
      // Closing the handle cancels the pending connect; its callback then frees the op.
      op->finish(Error(Errc::Timeout, op->what + " timed out after " +
                                          std::to_string(timeout.count()) + " ms"));
      op->handle->close();
      if (op->resolving) uv_cancel(reinterpret_cast<uv_req_t*>(&op->gai));
    });
    op->timer->start(timeout);
  }

  if (endpoint.kind == Endpoint::Kind::Unix) {
    uv_pipe_t* pipe = &op->handle->get()->pipe;
    uv_pipe_init(loop.native(), pipe, 0);
    op->handle->set_initialized();
    op->req.data = op;
    // uv_pipe_connect has no synchronous error return: failures arrive in the callback.
    uv_pipe_connect(&op->req, pipe, endpoint.path.c_str(), [](uv_connect_t* req, int status) {
      auto* o = static_cast<ConnectOp*>(req->data);
      std::unique_ptr<ConnectOp> owned(o);
      if (o->finished) return;
      if (status != 0) {
        o->finish(uv_error(status, o->what));
        return;
      }
      o->finish(StreamPtr(new UvStream(o->loop, std::move(o->handle), "unix")));
    });
    return;
  }

  std::string host = endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host;
  sockaddr_storage ss{};
  if (uv_ip4_addr(host.c_str(), endpoint.port, reinterpret_cast<sockaddr_in*>(&ss)) == 0 ||
      uv_ip6_addr(host.c_str(), endpoint.port, reinterpret_cast<sockaddr_in6*>(&ss)) == 0) {
    start_tcp_connect(op, reinterpret_cast<sockaddr*>(&ss));
    return;
  }
  // A name (a container on a shared Docker network, a Kubernetes Service): resolve it on
  // libuv's thread pool, never on the loop.
  op->resolving = true;
  op->port = endpoint.port;
  op->gai.data = op;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(loop.native(), &op->gai, [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
    auto* o = static_cast<ConnectOp*>(req->data);
    o->resolving = false;
    if (o->finished || status != 0 || !res) {
      if (!o->finished) o->finish(uv_error(status ? status : UV_EAI_NONAME, o->what));
      uv_freeaddrinfo(res);
      delete o;
      return;
    }
    sockaddr_storage addr{};
    std::memcpy(&addr, res->ai_addr, res->ai_addrlen);
    uv_freeaddrinfo(res);
    if (addr.ss_family == AF_INET) reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(o->port);
    else reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = htons(o->port);
    start_tcp_connect(o, reinterpret_cast<sockaddr*>(&addr));
  }, host.c_str(), nullptr, &hints);
  if (rc != 0) {
    op->resolving = false;
    op->finish(uv_error(rc, op->what));
    loop.defer([op] { delete op; });
  }
}

}  // namespace terminals

namespace terminals::detail {

// ---------------------------------------------------------------------------------------------
// Listener

namespace {
// A unix socket path left by a dead process is replaced; one that still answers is not ours.
Status prepare_unix_path(const std::string& path) {
  struct stat st{};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return {};
    // libuv reports a missing directory as EACCES (for Windows' sake), which misleads: name it.
    auto slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    if (stat(dir.c_str(), &st) != 0 && errno == ENOENT) {
      return Error(Errc::NotFound, "cannot listen on " + path + ": the directory " + dir +
                                       " does not exist; create it first");
    }
    return {};
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Error(Errc::AlreadyExists,
                 path + " exists and is not a socket; remove it or choose another path");
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error(Errc::Io, "socket(): " + std::string(strerror(errno)));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof(sa.sun_path) - 1);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  ::close(fd);
  if (rc == 0) {
    return Error(Errc::AlreadyExists, path + " is in use by a running server");
  }
  ::unlink(path.c_str());
  return {};
}
}  // namespace

Result<std::unique_ptr<Listener>> Listener::create(Loop& loop, const Endpoint& endpoint,
                                                   Options options, AcceptHandler on_accept) {
  std::unique_ptr<Listener> l(new Listener(loop, std::move(on_accept)));
  l->handle_ = std::make_unique<UvHandle<StreamStorage>>();
  const std::string what = "listen on " + endpoint.to_string();
  if (endpoint.kind == Endpoint::Kind::Unix) {
    if (auto st = prepare_unix_path(endpoint.path); !st) return std::move(st).error();
    uv_pipe_init(loop.native(), &l->handle_->get()->pipe, 0);
    l->handle_->set_initialized();
    // Create the socket file with the final mode from the start (no window with a wider one).
    mode_t old = ::umask(static_cast<mode_t>(~options.unix_mode & 0777));
    int rc = uv_pipe_bind(&l->handle_->get()->pipe, endpoint.path.c_str());
    ::umask(old);
    if (rc != 0) return uv_error(rc, what);
    ::chmod(endpoint.path.c_str(), static_cast<mode_t>(options.unix_mode));
    l->is_unix_ = true;
    l->bound_ = endpoint;
  } else {
    uv_tcp_init(loop.native(), &l->handle_->get()->tcp);
    l->handle_->set_initialized();
    std::string host = endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host;
    sockaddr_storage ss{};
    if (uv_ip4_addr(host.c_str(), endpoint.port, reinterpret_cast<sockaddr_in*>(&ss)) != 0 &&
        uv_ip6_addr(host.c_str(), endpoint.port, reinterpret_cast<sockaddr_in6*>(&ss)) != 0) {
      return Error(Errc::InvalidArgument,
                   what + ": '" + endpoint.host + "' is not an IP address (use e.g. 127.0.0.1 or ::1)");
    }
    if (int rc = uv_tcp_bind(&l->handle_->get()->tcp, reinterpret_cast<sockaddr*>(&ss), 0); rc != 0) {
      return uv_error(rc, what);
    }
    l->bound_ = endpoint;
  }
  l->handle_->get()->handle.data = l.get();
  int rc = uv_listen(&l->handle_->get()->stream, options.backlog, [](uv_stream_t* s, int status) {
    if (auto* self = owner_of<Listener>(s)) self->on_connection(status);
  });
  if (rc != 0) {
    if (l->is_unix_) ::unlink(endpoint.path.c_str());
    return uv_error(rc, what);
  }
  if (!l->is_unix_) {
    sockaddr_storage ss{};
    int len = sizeof(ss);
    uv_tcp_getsockname(&l->handle_->get()->tcp, reinterpret_cast<sockaddr*>(&ss), &len);
    l->bound_.port = ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                                   : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  }
  return l;
}

Listener::~Listener() { close(); }

void Listener::close() {
  if (!handle_) return;
  handle_.reset();
  if (is_unix_) ::unlink(bound_.path.c_str());
}

void Listener::on_connection(int status) {
  if (status != 0) {
    on_accept_(uv_error(status, "accept on " + bound_.to_string()));
    return;
  }
  auto client = std::make_unique<UvHandle<StreamStorage>>();
  std::string peer;
  if (is_unix_) uv_pipe_init(loop_.native(), &client->get()->pipe, 0);
  else uv_tcp_init(loop_.native(), &client->get()->tcp);
  client->set_initialized();
  if (int rc = uv_accept(&handle_->get()->stream, &client->get()->stream); rc != 0) {
    on_accept_(uv_error(rc, "accept on " + bound_.to_string()));
    return;
  }
  if (is_unix_) {
    peer = "unix";
  } else {
    uv_tcp_nodelay(&client->get()->tcp, 1);
    peer = tcp_peer_name(&client->get()->tcp);
  }
  on_accept_(StreamPtr(new UvStream(loop_, std::move(client), std::move(peer))));
}

}  // namespace terminals::detail
