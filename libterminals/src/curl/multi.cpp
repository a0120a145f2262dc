#include "curl/multi.hpp"

#include <vector>

#include "curl/curl_error.hpp"
#include "curl/global.hpp"
#include "curl/transfer.hpp"
#include "uv/uv_error.hpp"

namespace terminals::detail {

// One per socket libcurl asked us to watch; attached to the socket with curl_multi_assign.
struct CurlMulti::SocketWatch {
  UvHandle<uv_poll_t> poll;
  curl_socket_t fd = CURL_SOCKET_BAD;
  CurlMulti* multi = nullptr;
};

// ---------------------------------------------------------------------------------------------
// TransferHandle

TransferHandle& TransferHandle::operator=(TransferHandle&& other) noexcept {
  if (this != &other) {
    cancel();
    transfer_ = std::move(other.transfer_);
  }
  return *this;
}

void TransferHandle::cancel() {
  if (auto t = transfer_.lock()) t->multi().cancel(t.get());
  transfer_.reset();
}

void TransferHandle::pause() {
  if (auto t = transfer_.lock()) t->multi().pause(t.get());
}

void TransferHandle::resume() {
  if (auto t = transfer_.lock()) t->multi().resume(t.get());
}

bool TransferHandle::active() const {
  auto t = transfer_.lock();
  return t && !t->cancelled && t->state != Transfer::State::Done;
}

void TransferHandle::detach() { transfer_.reset(); }

// ---------------------------------------------------------------------------------------------
// Setup and teardown

CurlMulti::CurlMulti(Loop& loop) : loop_(loop) {}

Result<std::unique_ptr<CurlMulti>> CurlMulti::create(Loop& loop) {
  if (auto st = curl_global_init_once(); !st) return std::move(st).error();
  std::unique_ptr<CurlMulti> m(new CurlMulti(loop));
  m->multi_ = curl_multi_init();
  if (!m->multi_) return Error(Errc::Internal, "curl_multi_init failed (out of memory?)");
  if (int rc = uv_timer_init(loop.native(), m->timer_.get()); rc != 0) {
    return uv_error(rc, "create the curl multi timer");
  }
  m->timer_.set_initialized();
  m->timer_->data = m.get();  // multi-uv.c forgot this, so its timeouts never ran
  // Idle (no transfers) the timer must not keep a borrowed loop, or run(), alive.
  uv_unref(m->timer_.handle());
  curl_multi_setopt(m->multi_, CURLMOPT_SOCKETFUNCTION, &CurlMulti::on_curl_socket);
  curl_multi_setopt(m->multi_, CURLMOPT_SOCKETDATA, static_cast<void*>(m.get()));
  curl_multi_setopt(m->multi_, CURLMOPT_TIMERFUNCTION, &CurlMulti::on_curl_timer);
  curl_multi_setopt(m->multi_, CURLMOPT_TIMERDATA, static_cast<void*>(m.get()));
  return m;
}

CurlMulti::~CurlMulti() {
  closing_ = true;
  if (multi_) {
    // Every transfer is cancelled: `done` gets Cancelled from a later iteration.
    auto transfers = std::move(transfers_);
    transfers_.clear();
    for (auto& [t, owned] : transfers) {
      if (!t->cancelled && t->handlers.done) {
        loop_.defer([d = std::move(t->handlers.done), e = Error(Errc::Cancelled, t->what() +
                     ": cancelled (the curl multi was destroyed)")]() mutable { d(std::move(e)); });
      }
      t->cancelled = true;
      if (t->state == Transfer::State::Running) {
        ++in_curl_;
        curl_multi_remove_handle(multi_, t->easy());
        --in_curl_;
      }
      t->state = Transfer::State::Done;
    }
    transfers.clear();
    // Stop watching before libcurl closes its cached connections: libuv must not poll a closed
    // fd. Unassigned, the REMOVE notifications curl_multi_cleanup still sends are ignored.
    for (auto& [fd, w] : watches_) curl_multi_assign(multi_, fd, nullptr);
    watches_.clear();
    ++in_curl_;
    curl_multi_cleanup(multi_);
    --in_curl_;
    multi_ = nullptr;
  }
  watches_.clear();
  timer_.close();
}

// ---------------------------------------------------------------------------------------------
// Starting, cancelling, pausing

TransferHandle CurlMulti::perform(CurlRequest request, Callback<CurlResponse> done) {
  CurlStreamHandlers h;
  h.done = std::move(done);
  return start(std::move(request), std::move(h), false);
}

TransferHandle CurlMulti::stream(CurlRequest request, CurlStreamHandlers handlers) {
  return start(std::move(request), std::move(handlers), true);
}

TransferHandle CurlMulti::start(CurlRequest request, CurlStreamHandlers handlers, bool streaming) {
  auto t = std::make_shared<Transfer>(*this, std::move(request), std::move(handlers), streaming);
  if (auto st = t->setup(); !st) {
    // Never call back inside perform(): report the bad request from the next iteration.
    if (t->handlers.done) {
      loop_.defer([d = std::move(t->handlers.done), e = std::move(st).error()]() mutable {
        d(std::move(e));
      });
    }
    return {};
  }
  transfers_.emplace(t.get(), t);
  update_refs();
  if (in_curl_ > 0) {
    // Called from on_data/on_head, i.e. inside libcurl: curl_multi_add_handle would fail with
    // CURLM_RECURSIVE_API_CALL. Add it from the next iteration.
    loop_.defer([w = std::weak_ptr<Transfer>(t)] {
      if (auto s = w.lock()) s->multi().add(s.get());
    });
  } else {
    add(t.get());
  }
  return TransferHandle(t);
}

void CurlMulti::add(Transfer* t) {
  if (t->cancelled || t->state != Transfer::State::Pending) return;
  ++in_curl_;
  CURLMcode rc = curl_multi_add_handle(multi_, t->easy());
  --in_curl_;
  if (rc != CURLM_OK) {
    finish(t, Error(Errc::Internal, t->what() + ": curl_multi_add_handle: " + curl_multi_strerror(rc),
                    ErrorSource::Curl, rc));
    return;
  }
  // libcurl now asks for a 0 ms timeout; the first socket_action runs from the timer.
  t->state = Transfer::State::Running;
}

void CurlMulti::cancel(Transfer* t) {
  if (t->cancelled || t->state == Transfer::State::Done) return;
  t->cancelled = true;
  // Cancelled is reported now (from the next iteration), whatever libcurl still does with the
  // handle; on_head/on_data are not called again (the write callback checks `cancelled`).
  if (t->handlers.done) {
    loop_.defer([d = std::move(t->handlers.done),
                 e = Error(Errc::Cancelled, t->what() + ": cancelled")]() mutable { d(std::move(e)); });
  }
  if (in_curl_ > 0) {
    // Inside libcurl (the user cancelled from on_data): removing the handle now would be a
    // recursive API call, and the transfer's own callback may be on the stack. Do it next turn.
    loop_.defer([w = t->weak_from_this()] {
      if (auto s = w.lock()) s->multi().finish(s.get(), Error(Errc::Cancelled, "cancelled"));
    });
    return;
  }
  finish(t, Error(Errc::Cancelled, "cancelled"));
}

void CurlMulti::pause(Transfer* t) {
  if (t->cancelled || t->state == Transfer::State::Done || t->paused) return;
  t->paused = true;
  // Outside libcurl, stop reading the socket at once. Inside (from on_data), the flag is
  // enough: the write callback answers CURL_WRITEFUNC_PAUSE to the next chunk.
  if (in_curl_ == 0 && t->state == Transfer::State::Running && !t->curl_paused) {
    ++in_curl_;
    CURLcode rc = curl_easy_pause(t->easy(), CURLPAUSE_RECV);
    --in_curl_;
    if (rc == CURLE_OK) t->curl_paused = true;
  }
}

void CurlMulti::resume(Transfer* t) {
  if (t->cancelled || t->state == Transfer::State::Done || !t->paused) return;
  t->paused = false;
  if (!t->curl_paused) return;
  // CURLPAUSE_CONT delivers held data synchronously; do it from the next iteration so on_data
  // never runs inside resume().
  loop_.defer([w = t->weak_from_this()] {
    if (auto s = w.lock()) s->multi().unpause_now(s.get());
  });
}

void CurlMulti::unpause_now(Transfer* t) {
  if (t->cancelled || t->state != Transfer::State::Running || t->paused || !t->curl_paused) return;
  t->curl_paused = false;
  ++in_curl_;
  curl_easy_pause(t->easy(), CURLPAUSE_CONT);
  --in_curl_;
  drain_completed();
}

void CurlMulti::finish(Transfer* t, Result<CurlResponse> result) {
  auto it = transfers_.find(t);
  if (it == transfers_.end()) return;  // already finished
  std::shared_ptr<Transfer> owned = std::move(it->second);
  transfers_.erase(it);
  if (t->state == Transfer::State::Running) {
    ++in_curl_;
    curl_multi_remove_handle(multi_, t->easy());
    --in_curl_;
  }
  t->state = Transfer::State::Done;
  update_refs();
  if (t->handlers.done) {
    // A stream without body still owes its head: deliver it just before `done`, from the same
    // deferred task, so both run outside libcurl.
    MoveOnlyFunction<void(const CurlResponse&)> head_cb;
    if (!t->head_delivered() && result.has_value()) head_cb = std::move(t->handlers.on_head);
    loop_.defer([h = std::move(head_cb), d = std::move(t->handlers.done),
                 r = std::move(result)]() mutable {
      if (h) h(r.value());
      d(std::move(r));
    });
  }
  // `owned` goes here (or when the TransferHandle that called cancel() lets go): easy cleanup.
}

// ---------------------------------------------------------------------------------------------
// libcurl <-> libuv

int CurlMulti::on_curl_socket(CURL*, curl_socket_t s, int what, void* userp, void* socketp) {
  // Callback from libcurl to libuv: which events to wait for on socket `s` (or stop).
  auto* self = static_cast<CurlMulti*>(userp);
  auto* w = static_cast<SocketWatch*>(socketp);
  if (what == CURL_POLL_REMOVE) {
    if (w) self->remove_watch(w);
    return 0;
  }
  if (self->closing_) return 0;
  if (!w) {
    auto watch = std::make_unique<SocketWatch>();
    watch->fd = s;
    watch->multi = self;
    if (uv_poll_init_socket(self->loop_.native(), watch->poll.get(), s) != 0) {
      self->defer_socket_error(s);
      return 0;
    }
    watch->poll.set_initialized();
    watch->poll->data = watch.get();
    if (!self->refed_) uv_unref(watch->poll.handle());
    w = watch.get();
    self->watches_[s] = std::move(watch);
    curl_multi_assign(self->multi_, s, w);
  }
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
  if (uv_poll_start(w->poll.get(), events, &CurlMulti::on_uv_poll) != 0) self->defer_socket_error(s);
  return 0;
}

void CurlMulti::defer_socket_error(curl_socket_t s) {
  // The socket cannot be watched: make libcurl fail whatever uses it, from the next turn.
  // (Returning -1 from the socket callback instead would mark the whole multi dead.)
  loop_.defer([this, s, alive = std::weak_ptr<char>(alive_)] {
    if (!alive.expired()) socket_action(s, CURL_CSELECT_ERR);
  });
}

int CurlMulti::on_curl_timer(CURLM*, long timeout_ms, void* userp) {
  // Callback from libcurl to libuv: (re)arm the one multi timer, or stop it on -1.
  auto* self = static_cast<CurlMulti*>(userp);
  if (self->closing_) return 0;
  if (timeout_ms < 0) {
    uv_timer_stop(self->timer_.get());
  } else {
    // 0 too is a real timer: libuv fires it in the next iteration, which is "soon, but not
    // inside this callback" as libcurl requires, without multi-uv.c's extra 1 ms. One-shot:
    // libcurl re-arms it each time.
    uv_timer_start(self->timer_.get(), &CurlMulti::on_uv_timer, static_cast<uint64_t>(timeout_ms), 0);
  }
  return 0;
}

void CurlMulti::on_uv_poll(uv_poll_t* poll, int status, int events) {
  // Callback from libuv to libcurl: the socket is readable/writable (or failed).
  auto* w = owner_of<SocketWatch>(poll);
  if (!w) return;
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  // `w` may be freed inside socket_action (CURL_POLL_REMOVE): do not touch it afterwards.
  w->multi->socket_action(w->fd, flags);
}

void CurlMulti::on_uv_timer(uv_timer_t* timer) {
  // Callback from libuv to libcurl: the timeout libcurl asked for expired.
  if (auto* self = owner_of<CurlMulti>(timer)) self->socket_action(CURL_SOCKET_TIMEOUT, 0);
}

void CurlMulti::socket_action(curl_socket_t s, int events) {
  if (closing_ || !multi_) return;
  int running = 0;
  ++in_curl_;
  CURLMcode rc = curl_multi_socket_action(multi_, s, events, &running);
  --in_curl_;
  // BAD_SOCKET: an event for a socket libcurl already forgot (closed in this iteration).
  if (rc != CURLM_OK && rc != CURLM_BAD_SOCKET) {
    fail_all(Error(Errc::Internal, std::string("curl_multi_socket_action: ") + curl_multi_strerror(rc),
                   ErrorSource::Curl, rc));
    return;
  }
  drain_completed();
}

void CurlMulti::drain_completed() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    // The message dies with curl_multi_remove_handle: copy what we need first.
    CURL* easy = msg->easy_handle;
    CURLcode code = msg->data.result;
    char* priv = nullptr;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
    auto* t = reinterpret_cast<Transfer*>(priv);
    if (!transfers_.count(t)) continue;
    finish(t, t->result(code));
  }
}

void CurlMulti::fail_all(const Error& error) {
  std::vector<Transfer*> running;
  for (auto& [t, owned] : transfers_) {
    if (t->state == Transfer::State::Running) running.push_back(t);
  }
  for (Transfer* t : running) finish(t, Error(error.code, t->what() + ": " + error.message, error.source, error.native));
}

void CurlMulti::remove_watch(SocketWatch* w) {
  curl_multi_assign(multi_, w->fd, nullptr);
  uv_poll_stop(w->poll.get());
  watches_.erase(w->fd);  // UvHandle closes the poll; its node is freed in the close callback
}

void CurlMulti::update_refs() {
  // Ref'd only while transfers exist: the loop must not exit with a transfer in flight
  // (curl issue #942), and an idle multi must not pin a borrowed loop.
  const bool want = !transfers_.empty();
  if (want == refed_) return;
  refed_ = want;
  auto apply = [want](uv_handle_t* h) { want ? uv_ref(h) : uv_unref(h); };
  apply(timer_.handle());
  for (auto& [fd, w] : watches_) apply(w->poll.handle());
}

}  // namespace terminals::detail
