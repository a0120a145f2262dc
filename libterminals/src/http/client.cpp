#include "http/client.hpp"

#include <algorithm>
#include <utility>

namespace terminals {

std::unique_ptr<HttpClient> HttpClient::create(Loop& loop, ClientOptions options) {
  return std::make_unique<detail::ClientImpl>(loop, options);
}

}  // namespace terminals

namespace terminals::detail {

namespace {
// Chunk framing for bodies written straight to the socket: one write per chunk, without a
// fresh allocation each time. Single-threaded per loop, and UvStream copies what it queues.
thread_local std::string t_chunk_scratch;
// Above this, a chunk is not copied to join its framing (the copy would cost more than a write).
constexpr std::size_t kCopyChunkLimit = 16 * 1024;
}  // namespace

// ---------------------------------------------------------------------------------------------
// Connection

Connection::Connection(Loop& loop, StreamPtr stream, std::string key, HttpParser::Limits limits)
    : loop_(loop),
      stream_(std::move(stream)),
      parser_(HttpParser::Kind::Response, limits, *this),
      timer_(loop.create_timer([this] { on_timer(); })),
      key_(std::move(key)) {}

Connection::~Connection() { close(); }

void Connection::start() {
  stream_->set_drain_handler([this] { on_drain(); });
  stream_->read_start([this](Result<std::string_view> r) { on_read(std::move(r)); });
}

void Connection::close() {
  owner_ = nullptr;
  pool_ = nullptr;
  if (stream_) stream_->close();
  timer_->stop();
  timer_armed_ = false;
}

StreamPtr Connection::take_stream() {
  // The stream keeps its read handler after read_stop(); replace ours so that a later
  // read_resume() by the new owner cannot call into this (soon freed) object.
  stream_->read_start([](Result<std::string_view>) {});
  stream_->read_stop();
  stream_->set_drain_handler(nullptr);
  return std::move(stream_);
}

void Connection::on_read(Result<std::string_view> r) {
  if (owner_) {
    ExchangeImpl::Guard keep(owner_->shared_from_this());
    owner_->on_conn_read(std::move(r));
    return;
  }
  if (sink_for_) {
    sink_for_->on_sink_read(this, std::move(r));
    return;
  }
  // Idle: the server closed the connection, or sent bytes nobody asked for. Either way it can
  // no longer carry a request.
  if (pool_) pool_->drop_idle(this);
}

bool Connection::rearm_if_read_within(std::chrono::milliseconds timeout) {
  // Each read only records its time; the timer re-arms itself here for the remainder.
  const auto limit = static_cast<std::uint64_t>(timeout.count());
  const std::uint64_t idle = loop_.now_ms() - last_read_ms_;
  if (idle >= limit) return false;
  timer_armed_ = true;
  timer_->start(std::chrono::milliseconds(limit - idle));
  return true;
}

void Connection::on_timer() {
  timer_armed_ = false;
  if (owner_) {
    ExchangeImpl::Guard keep(owner_->shared_from_this());
    owner_->on_read_timer();
    return;
  }
  if (sink_for_) {
    sink_for_->on_sink_timer(this);
    return;
  }
  if (pool_) pool_->drop_idle(this);
}

void Connection::on_drain() {
  if (owner_) {
    ExchangeImpl::Guard keep(owner_->shared_from_this());
    owner_->on_conn_drain();
  }
}

// Parser events arrive inside on_read(), which already holds the owner alive.
bool Connection::on_response_head(ResponseHead&& head) {
  if (owner_) return owner_->on_head(std::move(head));
  return sink_is_head_;
}

void Connection::on_body(std::string_view data) {
  if (owner_) owner_->on_body(data);
}

void Connection::on_message_complete() {
  if (owner_) owner_->message_complete_ = true;
}

void discard(Loop& loop, std::unique_ptr<Connection> conn) {
  if (!conn) return;
  auto queue = std::move(conn->queue_);
  conn->queue_.clear();
  const bool sent = !conn->batch_open_;
  conn->sink_for_ = nullptr;
  conn->close();
  loop.defer_delete(std::move(conn));
  for (auto& q : queue) {
    if (auto ex = q.exchange.lock()) ExchangeImpl::Guard(std::move(ex))->connection_lost(sent);
  }
}

void pass_turn(Loop& loop, std::unique_ptr<Connection> conn, std::string_view leftover) {
  QueuedRequest next = std::move(conn->queue_.front());
  conn->queue_.pop_front();
  auto ex = next.exchange.lock();
  if (ex && !ex->failed()) {
    ExchangeImpl::Guard(std::move(ex))->take_turn(std::move(conn), leftover);
    return;
  }
  // Nobody waits for this answer any more, but the ones behind it need it read.
  ClientImpl* client = conn->sink_for_;
  conn->sink_for_ = nullptr;
  if (!client || client->destroying()) {
    discard(loop, std::move(conn));
    return;
  }
  client->sink(std::move(conn), next.is_head, leftover);
}

// ---------------------------------------------------------------------------------------------
// ExchangeImpl: setup and request side

ExchangeImpl::ExchangeImpl(ClientImpl& client, const Endpoint& upstream,
                           Callback<ResponseHead> on_response)
    : loop_(client.loop()),
      client_(&client),
      options_(client.options()),
      upstream_(upstream),
      key_(upstream_key(upstream)),
      on_response_(std::move(on_response)) {}

ExchangeImpl::~ExchangeImpl() {
  if (client_) client_->unlink(this);
  // Most exchanges end complete; only build an error when something is still pending.
  if (conn_ || on_response_ || (reading_ && !end_delivered_)) {
    fail(Error(Errc::Cancelled,
               "request to " + describe() + " cancelled: the exchange was dropped"));
  }
}

std::string ExchangeImpl::describe() const { return upstream_.to_string(); }

void ExchangeImpl::start(const RequestHead& head, bool batchable) {
  const bool upgrade = head.headers.has("upgrade");
  auto plan = serialize_request(head, upstream_, out_);
  if (!plan) {
    Error e = std::move(plan).error();
    e.message = "request to " + describe() + ": " + e.message;
    fail(std::move(e));
    return;
  }
  framing_ = plan->framing;
  body_left_ = plan->length;
  request_keep_alive_ = plan->keep_alive;
  idempotent_ = plan->idempotent;
  is_head_ = plan->is_head;
  request_complete_ = framing_ == BodyFraming::None;
  // Only requests that are whole, safe to send twice and keep the connection open are batched:
  // a batch's failure is recovered by sending them again.
  batchable_ = batchable && options_.max_batch > 1 && request_complete_ && idempotent_ &&
               request_keep_alive_ && !upgrade && (head.method == "GET" || head.method == "HEAD");
  if (batchable_) {
    if (ExchangeImpl* owner = client_->open_batch(key_)) {
      join(*owner);
      return;
    }
  }
  dispatch();
}

void ExchangeImpl::dispatch() {
  if (auto conn = client_->take_idle(key_)) {
    attach(std::move(conn), false);
  } else {
    connect();
  }
}

// Our request goes out in `owner`'s write and waits on its connection for its turn.
void ExchangeImpl::join(ExchangeImpl& owner) {
  // Room for a full batch of requests like this one, so the write grows once, not by doubling.
  if (owner.batch_size_ == 1) owner.out_.reserve(owner.out_.size() + out_.size() * (options_.max_batch - 1));
  owner.out_.append(out_);
  replay_ = std::move(out_);  // to send it again if the connection fails before our answer
  out_.clear();
  owner.conn_->queue_.push_back(QueuedRequest{weak_from_this(), is_head_});
  if (++owner.batch_size_ >= options_.max_batch) client_->close_batch(key_, &owner);
}

void ExchangeImpl::connection_lost(bool sent) {
  if (failed_ || finished_) return;
  if (!client_ || client_->destroying()) {
    fail(Error(Errc::Cancelled, "request to " + describe() + " cancelled: the client was destroyed"));
    return;
  }
  out_ = std::move(replay_);
  replay_.clear();
  head_flushed_ = false;
  got_bytes_ = false;
  if (!sent) {
    dispatch();  // it never went out: this is its first attempt
    return;
  }
  if (retried_ || out_.empty()) {
    fail(Error(Errc::Io, describe() + " closed the connection before answering a batched request"));
    return;
  }
  retried_ = true;  // idempotent and unanswered: once more, on a new connection
  connect();
}

void ExchangeImpl::take_turn(std::unique_ptr<Connection> conn, std::string_view leftover) {
  conn_ = std::move(conn);
  conn_->owner_ = this;
  conn_->sink_for_ = nullptr;
  reused_ = true;
  ++conn_->exchanges_;
  got_bytes_ = false;
  head_flushed_ = true;
  conn_->stream_->read_resume();
  arm_read_timer();
  if (!leftover.empty()) on_conn_read(leftover);
}

void ExchangeImpl::connect() {
  Stream::connect(loop_, upstream_, options_.connect_timeout,
                  [w = weak_from_this()](Result<StreamPtr> r) {
                    if (auto self = w.lock()) Guard(std::move(self))->on_connected(std::move(r));
                  });
}

void ExchangeImpl::on_connected(Result<StreamPtr> r) {
  if (failed_ || finished_ || !client_) return;  // the stream, if any, closes with `r`
  if (!r) {
    fail(std::move(r).error());
    return;
  }
  auto conn = std::make_unique<Connection>(loop_, std::move(r).value(), key_,
                                           client_->parser_limits());
  client_->count_opened();
  conn->start();
  attach(std::move(conn), true);
}

void ExchangeImpl::attach(std::unique_ptr<Connection> conn, bool may_call_user) {
  conn_ = std::move(conn);
  conn_->owner_ = this;
  reused_ = conn_->exchanges_++ > 0;
  got_bytes_ = false;
  conn_->stream_->set_watermarks(options_.write_high_watermark / 4, options_.write_high_watermark);
  conn_->stream_->read_resume();
  if (batchable_ && !may_call_user && client_) {
    // The first of a batch: our write waits for the end of this loop iteration, and requests
    // to the same upstream that start meanwhile join it (and the connection's queue).
    replay_ = out_;
    batch_size_ = 1;
    conn_->batch_open_ = true;
    client_->set_open_batch(key_, this);
    schedule_flush();
    return;
  }
  // A complete request goes out now, head and body in one write. A request whose body is still
  // to come waits one iteration, so that body written right after request() joins the head.
  if (request_complete_) flush(may_call_user);
  else if (may_call_user) flush(true);
  else schedule_flush();
}

void ExchangeImpl::schedule_flush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  loop_.defer([w = weak_from_this()] {
    if (auto locked = w.lock()) {
      Guard self(std::move(locked));
      self->flush_scheduled_ = false;
      self->flush(true);
    }
  });
}

void ExchangeImpl::flush(bool may_call_user) {
  if (!conn_ || failed_ || finished_) return;
  if (!out_.empty()) {
    conn_->stream_->write(out_);
    if (!head_flushed_ && request_complete_ && idempotent_ && !retried_ && replay_.empty()) {
      replay_ = std::move(out_);  // keep it: a stale keep-alive connection means sending it again
    }
    out_.clear();
  }
  if (conn_->batch_open_) {
    conn_->batch_open_ = false;
    if (client_) client_->close_batch(key_, this);
  }
  head_flushed_ = true;
  if (request_complete_) arm_read_timer();
  if (may_call_user && want_drain_ && !above_watermark()) {
    want_drain_ = false;
    if (drain_) drain_();
    check_abandoned();
  }
}

bool ExchangeImpl::above_watermark() const {
  std::size_t queued = out_.size() + (conn_ ? conn_->stream_->write_queue_size() : 0);
  return queued > options_.write_high_watermark;
}

bool ExchangeImpl::write(std::string_view data) {
  // After the exchange ended (failed, cancelled, or answered early) body bytes are dropped, so
  // a producer that keeps writing does not stall on a drain that will never come.
  if (failed_ || finished_ || request_complete_) return true;
  if (data.empty()) return !above_watermark();
  if (framing_ == BodyFraming::Length) {
    if (data.size() > body_left_) {
      fail(Error(Errc::InvalidArgument,
                 "request to " + describe() + ": body longer than its Content-Length"));
      return true;
    }
    body_left_ -= data.size();
    if (body_left_ == 0) request_complete_ = true;
  }
  send_body(data, false);
  if (request_complete_) {
    if (conn_ && head_flushed_) arm_read_timer();
    return true;  // nothing more to write, so nothing to wait for
  }
  if (above_watermark()) {
    want_drain_ = true;
    return false;
  }
  return true;
}

void ExchangeImpl::set_drain_handler(MoveOnlyFunction<void()> on_drain) {
  drain_ = std::move(on_drain);
}

void ExchangeImpl::end(std::string_view last_data) {
  if (failed_ || finished_ || request_complete_) return;
  if (framing_ == BodyFraming::Length) {
    if (last_data.size() != body_left_) {
      fail(Error(Errc::InvalidArgument,
                 "request to " + describe() + ": body " +
                     (last_data.size() > body_left_ ? "longer" : "shorter") +
                     " than its Content-Length"));
      return;
    }
    body_left_ = 0;
    request_complete_ = true;
    if (!last_data.empty()) send_body(last_data, false);
  } else {
    request_complete_ = true;
    send_body(last_data, true);
  }
  want_drain_ = false;
  if (conn_) {
    if (!head_flushed_) flush(false);  // head and body together, now
    else arm_read_timer();
  }
}

void ExchangeImpl::send_body(std::string_view data, bool last) {
  const bool direct = conn_ && head_flushed_ && out_.empty();
  if (framing_ == BodyFraming::Chunked) {
    if (direct && data.size() > kCopyChunkLimit) {
      // Large chunk: framing and data as separate writes rather than copying the data.
      std::string& frame = t_chunk_scratch;
      frame.clear();
      append_chunk_header(frame, data.size());
      conn_->stream_->write(frame);
      conn_->stream_->write(data);
      conn_->stream_->write(last ? std::string_view("\r\n0\r\n\r\n", 7)
                                 : std::string_view("\r\n", 2));
      return;
    }
    std::string& buf = direct ? t_chunk_scratch : out_;
    if (direct) buf.clear();
    if (!data.empty()) {
      append_chunk_header(buf, data.size());
      buf.append(data);
      buf.append("\r\n", 2);
    }
    if (last) buf.append("0\r\n\r\n", 5);
    if (direct && !buf.empty()) conn_->stream_->write(buf);
    return;
  }
  if (direct) conn_->stream_->write(data);
  else out_.append(data);
}

void ExchangeImpl::on_conn_drain() {
  if (failed_ || !want_drain_ || !out_.empty()) return;
  want_drain_ = false;
  if (drain_) drain_();
  check_abandoned();
}

// ---------------------------------------------------------------------------------------------
// ExchangeImpl: response side

void ExchangeImpl::on_conn_read(Result<std::string_view> r) {
  Connection* c = conn_.get();
  if (!c) return;
  if (!r) {
    on_conn_error(std::move(r).error());
    return;
  }
  std::string_view data = *r;
  c->last_read_ms_ = loop_.now_ms();
  got_bytes_ = true;
  parsing_ = true;
  auto out = c->parser_.execute(data);
  parsing_ = false;
  if (conn_.get() != c || failed_) return;  // cancelled from a callback during the parse
  switch (out.state) {
    case HttpParser::State::Ok:
      update_reading();
      return;
    case HttpParser::State::Paused:
      finish_response(out.consumed == data.size(), data.substr(out.consumed));
      return;
    case HttpParser::State::Upgrade:
      on_upgrade(data.substr(out.consumed));
      return;
    case HttpParser::State::Error: {
      Error e = std::move(out.error);
      if (e.code != Errc::UpstreamProtocol) e.code = Errc::UpstreamProtocol;  // e.g. head too large
      e.message = "response from " + describe() + ": " + e.message;
      fail(std::move(e));
      return;
    }
  }
}

void ExchangeImpl::on_conn_error(Error error) {
  Connection* c = conn_.get();
  if (error.code == Errc::Eof && head_received_ && !message_complete_) {
    // A body that runs to the end of the connection ends here; any other is cut short.
    Status st = c->parser_.finish();
    if (conn_.get() != c || failed_) return;
    if (st && message_complete_) {
      finish_response(false, {});
      return;
    }
    fail(Error(Errc::UpstreamProtocol,
               describe() + " closed the connection in the middle of the response body"));
    return;
  }
  // A keep-alive connection the server closed just as we reused it: the request never reached
  // an application, so sending it again on a fresh connection is safe for idempotent methods.
  if (!got_bytes_ && reused_ && !retried_ && !replay_.empty() && error.code != Errc::Timeout) {
    retry();
    return;
  }
  if (error.code == Errc::Eof) {
    error = Error(got_bytes_ ? Errc::UpstreamProtocol : Errc::Io,
                  describe() + " closed the connection before " +
                      (got_bytes_ ? "the end of the response head" : "responding"),
                  ErrorSource::Uv, error.native);
  }
  fail(std::move(error));
}

void ExchangeImpl::retry() {
  retried_ = true;
  auto old = std::move(conn_);
  old->owner_ = nullptr;
  discard(loop_, std::move(old));
  out_ = std::move(replay_);
  replay_.clear();
  head_flushed_ = false;
  got_bytes_ = false;
  connect();
}

bool ExchangeImpl::on_head(ResponseHead&& head) {
  if (failed_) return false;
  head_received_ = true;
  if (head.status == 101) {
    // Delivered once the parser has stopped, when the bytes after the head are known.
    upgrade_head_ = std::move(head);
    return false;
  }
  replay_.clear();
  arm_read_timer();
  if (auto cb = std::move(on_response_)) {
    cb(std::move(head));
    check_abandoned();
  }
  return is_head_;
}

void ExchangeImpl::on_body(std::string_view data) {
  if (failed_) return;
  if (reading_ && !paused_ && pending_.empty() && !dispatch_scheduled_) {
    if (body_.on_data) {
      body_.on_data(data);
      check_abandoned();
    }
  } else {
    // At most one read's worth: reading stops until the consumer is ready again.
    pending_.append(data);
  }
}

void ExchangeImpl::finish_response(bool clean, std::string_view rest) {
  auto conn = std::move(conn_);
  conn->owner_ = nullptr;
  conn->timer_->stop();
  conn->timer_armed_ = false;
  const bool keep = client_ && !client_->destroying() && request_complete_ && out_.empty() &&
                    request_keep_alive_ && conn->parser_.should_keep_alive() &&
                    conn->stream_->write_queue_size() == 0;
  // Batched requests wait for their answers on this connection: the bytes after ours are
  // theirs, and the next one takes the connection once our exchange is done with it.
  // `rest` stays valid until we return: it is the read buffer being delivered (no other read can
  // happen meanwhile), so it is passed on without a copy (a copy per answer was quadratic in
  // the batch and showed in the profile).
  std::unique_ptr<Connection> next_turn;
  if (keep && !conn->queue_.empty()) {
    conn->parser_.resume();
    conn->sink_for_ = client_;
    next_turn = std::move(conn);
  } else if (keep && clean) {
    conn->parser_.resume();
    client_->release(std::move(conn));  // before on_end, so a request from on_end reuses it
  } else {
    discard(loop_, std::move(conn));
  }
  finished_ = true;
  end_ready_ = true;
  end_status_ = Status{};
  if (want_drain_) {
    // Answered before the request body was done: let the producer finish; its bytes are dropped.
    want_drain_ = false;
    if (drain_) drain_();
    check_abandoned();
  }
  dispatch_body();
  if (next_turn) {
    // Our consumer may have destroyed the client meanwhile: then nobody is left to answer.
    if (next_turn->sink_for_ != client_ || !client_ || client_->destroying()) {
      discard(loop_, std::move(next_turn));
      return;
    }
    pass_turn(loop_, std::move(next_turn), rest);
  }
}

void ExchangeImpl::on_upgrade(std::string_view rest) {
  leftover_.assign(rest.data(), rest.size());
  disarm_read_timer();
  conn_->stream_->read_stop();
  upgraded_ = true;
  finished_ = true;
  end_ready_ = true;
  end_status_ = Status{};
  auto cb = std::move(on_response_);
  if (cb && upgrade_head_) {
    cb(std::move(*upgrade_head_));
    check_abandoned();  // an upgrade not taken closes with the exchange
  }
}

StreamPtr ExchangeImpl::take_upgrade(std::string& leftover) {
  if (!upgraded_ || !conn_ || failed_) return nullptr;
  auto conn = std::move(conn_);
  conn->owner_ = nullptr;
  StreamPtr stream = conn->take_stream();
  discard(loop_, std::move(conn));
  leftover = std::move(leftover_);
  leftover_.clear();
  return stream;
}

void ExchangeImpl::read_body(BodyHandlers handlers) {
  if (reading_) {
    if (handlers.on_end) {
      loop_.defer([cb = std::move(handlers.on_end)]() mutable {
        cb(Error(Errc::InvalidArgument, "read_body() called twice on one exchange"));
      });
    }
    return;
  }
  reading_ = true;
  body_ = std::move(handlers);
  if (failed_) {
    end_delivered_ = true;
    body_.on_data = nullptr;
    if (body_.on_end) {
      loop_.defer([cb = std::move(body_.on_end), st = std::move(end_status_)]() mutable {
        cb(std::move(st));
      });
    }
    return;
  }
  if (!pending_.empty() || end_ready_) schedule_dispatch();
  else update_reading();
}

void ExchangeImpl::pause_body() {
  if (paused_) return;
  paused_ = true;
  update_reading();
}

void ExchangeImpl::resume_body() {
  if (!paused_) return;
  paused_ = false;
  if (!pending_.empty() || (end_ready_ && !end_delivered_)) schedule_dispatch();
  else update_reading();
}

void ExchangeImpl::schedule_dispatch() {
  if (dispatch_scheduled_ || !reading_) return;
  dispatch_scheduled_ = true;
  loop_.defer([w = weak_from_this()] {
    if (auto locked = w.lock()) {
      Guard self(std::move(locked));
      self->dispatch_scheduled_ = false;
      self->dispatch_body();
    }
  });
}

void ExchangeImpl::dispatch_body() {
  while (!failed_ && reading_ && !paused_ && !dispatch_scheduled_) {
    if (!pending_.empty()) {
      std::string chunk = std::move(pending_);
      pending_.clear();
      if (body_.on_data) body_.on_data(chunk);
      check_abandoned();
      continue;
    }
    if (end_ready_ && !end_delivered_) {
      end_delivered_ = true;
      body_.on_data = nullptr;
      if (auto cb = std::move(body_.on_end)) cb(std::move(end_status_));
    }
    break;
  }
  update_reading();
}

void ExchangeImpl::update_reading() {
  if (!conn_ || failed_ || upgraded_) return;
  // Before the head the socket is always read (the answer, or the server closing). After it,
  // only while the consumer takes the body: that is the backpressure towards the upstream.
  const bool want = !head_received_ || (reading_ && !paused_ && !dispatch_scheduled_);
  if (want) {
    conn_->stream_->read_resume();
    if (head_received_ || (request_complete_ && head_flushed_)) arm_read_timer();
  } else {
    conn_->stream_->read_stop();
    disarm_read_timer();
  }
}

void ExchangeImpl::arm_read_timer() {
  if (!conn_ || options_.read_timeout.count() <= 0) return;
  // Each read only records its time; the timer re-arms itself for the remainder when it fires,
  // so the hot path never touches the timer heap.
  conn_->last_read_ms_ = loop_.now_ms();
  if (!conn_->timer_armed_) {
    conn_->timer_armed_ = true;
    conn_->timer_->start(options_.read_timeout);
  }
}

void ExchangeImpl::disarm_read_timer() {
  if (conn_ && conn_->timer_armed_) {
    conn_->timer_armed_ = false;
    conn_->timer_->stop();
  }
}

void ExchangeImpl::on_read_timer() {
  Connection* c = conn_.get();
  if (!c || c->rearm_if_read_within(options_.read_timeout)) return;
  fail(Error(Errc::Timeout, describe() + " sent nothing for " +
                                std::to_string(options_.read_timeout.count()) + " ms"));
}

void ExchangeImpl::check_abandoned() {
  // Only the library's own temporary references are left: the user dropped the exchange from
  // inside a callback. That must act as the destructor would, now, not once the event is over
  // (the rest of the read buffer would otherwise still reach callbacks whose state is gone).
  if (!failed_ && weak_from_this().use_count() <= guards_) {
    fail(Error(Errc::Cancelled,
               "request to " + describe() + " cancelled: the exchange was dropped"));
  }
}

void ExchangeImpl::cancel() {
  fail(Error(Errc::Cancelled, "request to " + describe() + " cancelled"));
}

void ExchangeImpl::client_destroyed() {
  client_ = nullptr;
  fail(Error(Errc::Cancelled, "request to " + describe() + " cancelled: the client was destroyed"));
}

void ExchangeImpl::fail(Error error) {
  if (failed_) return;
  failed_ = true;
  if (conn_) {
    if (conn_->batch_open_ && client_) client_->close_batch(key_, this);
    conn_->owner_ = nullptr;
    // Cancelled (a client gone) with batched requests queued behind ours, which went out whole:
    // the connection stays, our answer is read and dropped, and theirs follow as if nothing
    // happened. Not from inside a parse of this connection (the parser is mid-call), and not
    // for failures that leave the connection unusable.
    const bool keep_for_queue = error.code == Errc::Cancelled && !parsing_ &&
                                !conn_->queue_.empty() && !conn_->batch_open_ && head_flushed_ &&
                                request_complete_ && !upgraded_ && client_ && !client_->destroying();
    if (keep_for_queue) client_->sink(std::move(conn_), is_head_, {});
    else discard(loop_, std::move(conn_));
  }
  out_.clear();
  replay_.clear();
  pending_.clear();
  drain_ = nullptr;
  want_drain_ = false;
  // Never delivered from here directly: fail() runs inside user calls (cancel, write, the
  // destructor) and callbacks must not re-enter them.
  if (on_response_) {
    loop_.defer([cb = std::move(on_response_), e = error]() mutable { cb(std::move(e)); });
    on_response_ = nullptr;
  }
  if (end_delivered_) return;
  if (reading_) {
    end_delivered_ = true;
    body_.on_data = nullptr;
    if (body_.on_end) {
      loop_.defer([cb = std::move(body_.on_end), e = std::move(error)]() mutable {
        cb(std::move(e));
      });
      body_.on_end = nullptr;
    }
  } else {
    end_ready_ = true;  // for a read_body() still to come
    end_status_ = std::move(error);
  }
}

// ---------------------------------------------------------------------------------------------
// ClientImpl

ClientImpl::ClientImpl(Loop& loop, ClientOptions options) : loop_(loop), options_(options) {}

ClientImpl::~ClientImpl() {
  destroying_ = true;
  open_batches_.clear();
  for (ExchangeImpl* e = exchanges_; e;) {
    ExchangeImpl* next = e->next_;
    e->prev_ = e->next_ = nullptr;
    e->client_destroyed();
    e = next;
  }
  exchanges_ = nullptr;
  for (auto& entry : idle_) {
    for (auto& conn : entry.second) discard(loop_, std::move(conn));
  }
  idle_.clear();
  idle_count_ = 0;
  for (auto& conn : sinks_) discard(loop_, std::move(conn));
  sinks_.clear();
}

HttpParser::Limits ClientImpl::parser_limits() const {
  HttpParser::Limits limits;
  limits.max_header_bytes = options_.max_response_header_bytes;
  return limits;
}

ClientExchangePtr ClientImpl::request(const Endpoint& upstream, const RequestHead& head,
                                      RequestOptions request_options,
                                      Callback<ResponseHead> on_response) {
  auto exchange = std::make_shared<ExchangeImpl>(*this, upstream, std::move(on_response));
  link(exchange.get());
  exchange->start(head, request_options.batchable);
  return exchange;
}

ExchangeImpl* ClientImpl::open_batch(const std::string& key) const {
  auto it = open_batches_.find(key);
  return it == open_batches_.end() ? nullptr : it->second;
}

void ClientImpl::close_batch(const std::string& key, const ExchangeImpl* owner) {
  auto it = open_batches_.find(key);
  if (it != open_batches_.end() && it->second == owner) open_batches_.erase(it);
}

void ClientImpl::sink(std::unique_ptr<Connection> conn, bool is_head, std::string_view leftover) {
  Connection* c = conn.get();
  c->sink_for_ = this;
  c->sink_is_head_ = is_head;
  c->stream_->read_resume();
  c->last_read_ms_ = loop_.now_ms();
  if (options_.read_timeout.count() > 0) {
    c->timer_->start(options_.read_timeout);
    c->timer_armed_ = true;
  }
  sinks_.push_back(std::move(conn));
  if (!leftover.empty()) on_sink_read(c, leftover);
}

std::unique_ptr<Connection> ClientImpl::take_sink(Connection* conn) {
  auto pos = std::find_if(sinks_.begin(), sinks_.end(),
                          [conn](const std::unique_ptr<Connection>& c) { return c.get() == conn; });
  if (pos == sinks_.end()) return nullptr;
  auto owned = std::move(*pos);
  sinks_.erase(pos);
  owned->timer_->stop();
  owned->timer_armed_ = false;
  return owned;
}

void ClientImpl::on_sink_read(Connection* conn, Result<std::string_view> r) {
  if (!r) {
    discard(loop_, take_sink(conn));  // the answers behind it are sent again or fail
    return;
  }
  std::string_view data = *r;
  conn->last_read_ms_ = loop_.now_ms();
  auto out = conn->parser_.execute(data);
  switch (out.state) {
    case HttpParser::State::Ok:
      return;
    case HttpParser::State::Paused: {
      auto owned = take_sink(conn);
      if (!owned) return;
      owned->sink_for_ = this;
      if (owned->queue_.empty() || !owned->parser_.should_keep_alive()) {
        if (out.consumed == data.size() && owned->parser_.should_keep_alive()) {
          owned->parser_.resume();
          owned->sink_for_ = nullptr;
          release(std::move(owned));
        } else {
          discard(loop_, std::move(owned));
        }
        return;
      }
      owned->parser_.resume();
      pass_turn(loop_, std::move(owned), data.substr(out.consumed));
      return;
    }
    default:  // an upgrade or garbage where an answer was due: nothing more can be read here
      discard(loop_, take_sink(conn));
      return;
  }
}

void ClientImpl::on_sink_timer(Connection* conn) {
  if (conn->rearm_if_read_within(options_.read_timeout)) return;
  discard(loop_, take_sink(conn));
}

void ClientImpl::link(ExchangeImpl* exchange) {
  exchange->next_ = exchanges_;
  exchange->prev_ = nullptr;
  if (exchanges_) exchanges_->prev_ = exchange;
  exchanges_ = exchange;
}

void ClientImpl::unlink(ExchangeImpl* exchange) {
  if (exchange->prev_) exchange->prev_->next_ = exchange->next_;
  else if (exchanges_ == exchange) exchanges_ = exchange->next_;
  if (exchange->next_) exchange->next_->prev_ = exchange->prev_;
  exchange->prev_ = exchange->next_ = nullptr;
}

std::unique_ptr<Connection> ClientImpl::take_idle(const std::string& key) {
  auto it = idle_.find(key);
  if (it == idle_.end() || it->second.empty()) return nullptr;
  auto conn = std::move(it->second.back());
  it->second.pop_back();
  --idle_count_;
  conn->pool_ = nullptr;
  conn->timer_->stop();
  conn->timer_armed_ = false;
  return conn;
}

void ClientImpl::release(std::unique_ptr<Connection> conn) {
  if (options_.max_idle_per_upstream == 0) {
    discard(loop_, std::move(conn));
    return;
  }
  auto& list = idle_[conn->key()];
  if (list.size() >= options_.max_idle_per_upstream) {
    // Full: the oldest idle connection goes, the one just used stays (it is the warmest).
    discard(loop_, std::move(list.front()));
    list.erase(list.begin());
    --idle_count_;
  }
  conn->pool_ = this;
  conn->stream_->read_resume();  // an idle socket is read to notice the server closing it
  if (options_.idle_timeout.count() > 0) {
    conn->timer_->start(options_.idle_timeout);
    conn->timer_armed_ = true;
  }
  list.push_back(std::move(conn));
  ++idle_count_;
}

void ClientImpl::drop_idle(Connection* conn) {
  auto it = idle_.find(conn->key());
  if (it == idle_.end()) return;
  auto& list = it->second;
  auto pos = std::find_if(list.begin(), list.end(),
                          [conn](const std::unique_ptr<Connection>& c) { return c.get() == conn; });
  if (pos == list.end()) return;
  auto owned = std::move(*pos);
  list.erase(pos);
  --idle_count_;
  if (list.empty()) idle_.erase(it);
  discard(loop_, std::move(owned));
}

// ---------------------------------------------------------------------------------------------
// fetch

namespace {
struct FetchState {
  ClientExchangePtr exchange;
  FetchResponse response;
  Callback<FetchResponse> done;
  std::size_t max_body = 0;
};

void finish_fetch(const std::shared_ptr<FetchState>& st, Result<FetchResponse> r) {
  auto d = std::move(st->done);
  if (!d) return;
  auto exchange = std::move(st->exchange);
  // A limit hit: close now, even if the rest of the response is already buffered, rather than
  // when the last reference goes (which may be after the connection was pooled).
  if (!r && exchange) exchange->cancel();
  d(std::move(r));
}
}  // namespace

void ClientImpl::fetch(const Endpoint& upstream, RequestHead head, std::string body,
                       Callback<FetchResponse> done, std::size_t max_body) {
  if (!body.empty() || !method_without_body(head.method)) {
    head.headers.remove("transfer-encoding");
    head.headers.set("Content-Length", std::to_string(body.size()));
  }
  auto st = std::make_shared<FetchState>();
  st->done = std::move(done);
  st->max_body = max_body;
  auto exchange = request(upstream, std::move(head), [st](Result<ResponseHead> r) {
    if (!r) {
      finish_fetch(st, std::move(r).error());
      return;
    }
    st->response.head = std::move(r).value();
    const auto& cl = st->response.head.content_length;
    if (cl && *cl > st->max_body) {
      finish_fetch(st, Error(Errc::LimitExceeded,
                             "response body of " + std::to_string(*cl) + " bytes is over the " +
                                 std::to_string(st->max_body) + "-byte limit"));
      return;
    }
    if (cl) st->response.body.reserve(static_cast<std::size_t>(*cl));
    BodyHandlers handlers;
    handlers.on_data = [st](std::string_view data) {
      if (!st->done) return;
      if (st->response.body.size() + data.size() > st->max_body) {
        finish_fetch(st, Error(Errc::LimitExceeded, "response body over the " +
                                                        std::to_string(st->max_body) +
                                                        "-byte limit"));
        return;
      }
      st->response.body.append(data);
    };
    handlers.on_end = [st](Status s) {
      if (!s) finish_fetch(st, std::move(s).error());
      else finish_fetch(st, std::move(st->response));
    };
    st->exchange->read_body(std::move(handlers));
  });
  st->exchange = exchange;
  exchange->end(body);
}

}  // namespace terminals::detail
