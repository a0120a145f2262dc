#include "http/server_connection.hpp"

#include <algorithm>
#include <utility>

#include "http/server_wire.hpp"

namespace terminals::detail {

namespace {
// Pipelined bytes read ahead while a response is in flight. Reading on lets us notice a client
// that goes away; the cap keeps a client that floods requests from growing our memory.
constexpr std::size_t kMaxReadAhead = 64 * 1024;
// After the last response, how long we keep draining what the client sends before closing, so
// that unread input does not make the kernel reset the connection under the response.
constexpr std::uint64_t kLingerMs = 2000;
// Body data up to this size is copied next to a head or chunk framing to go out in one write;
// larger data is written on its own, which costs less than copying it.
constexpr std::size_t kCoalesceLimit = 64 * 1024;
// The assembly buffer keeps its capacity between responses unless it grew beyond this.
constexpr std::size_t kOutKeepCapacity = 64 * 1024;

bool request_has_body(const RequestHead& head) {
  return head.chunked || head.content_length.value_or(0) > 0;
}

std::chrono::milliseconds ms(std::uint64_t n) { return std::chrono::milliseconds(n); }
std::uint64_t count(std::chrono::milliseconds d) {
  return d.count() > 0 ? static_cast<std::uint64_t>(d.count()) : 0;
}
// A deadline `d` after `start`; a zero (or negative) timeout disables it.
constexpr std::uint64_t kNever = ~std::uint64_t{0};
std::uint64_t after(std::uint64_t start, std::chrono::milliseconds d) {
  return d.count() > 0 ? start + static_cast<std::uint64_t>(d.count()) : kNever;
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// ServerExchangeImpl: the handler's view; everything that touches the wire is the connection's.

ServerExchangeImpl::ServerExchangeImpl(ServerConnection& connection, Loop& loop, RequestHead&& head,
                                       const std::string& peer)
    : conn_(&connection), loop_(loop), head_(std::move(head)), peer_(peer) {
  head_request_ = head_.method == "HEAD";
}

void ServerExchangeImpl::refuse_body(BodyHandlers handlers, Error error) {
  if (!handlers.on_end) return;
  loop_.defer([cb = std::move(handlers.on_end), e = std::move(error)]() mutable { cb(std::move(e)); });
}

void ServerExchangeImpl::read_body(BodyHandlers handlers) {
  if (reading_) {
    refuse_body(std::move(handlers), Error(Errc::InvalidArgument, "read_body() called twice"));
    return;
  }
  if (!live()) {
    refuse_body(std::move(handlers),
                Error(Errc::Cancelled, aborted_ ? "the request was aborted" : "the response already ended"));
    return;
  }
  conn_->read_body(*this, std::move(handlers));
}

void ServerExchangeImpl::pause_body() {
  if (live()) conn_->pause_body(*this);
}

void ServerExchangeImpl::resume_body() {
  if (live()) conn_->resume_body(*this);
}

bool ServerExchangeImpl::write_head(const ResponseHead& head) {
  if (!live() || head_written_) return false;
  std::optional<std::uint64_t> length;
  if (auto v = head.headers.get("content-length")) length = parse_content_length(*v);
  else if (head.content_length) length = head.content_length;
  return conn_->start_response(*this, head.status, head.reason, head.headers, length, true,
                               &extra_headers_);
}

bool ServerExchangeImpl::write(std::string_view data) {
  if (!live()) return false;
  return conn_->write_body(*this, data, false);
}

void ServerExchangeImpl::set_drain_handler(MoveOnlyFunction<void()> on_drain) {
  if (!live()) return;
  on_drain_ = std::move(on_drain);
  ++drain_generation_;
}

void ServerExchangeImpl::end(std::string_view last_data) {
  if (live()) conn_->end(*this, last_data);
}

void ServerExchangeImpl::respond(int status, Headers headers, std::string_view body) {
  if (!live()) return;
  // Head and body are assembled together and go out in one write from end().
  if (!head_written_) {
    conn_->start_response(*this, status, {}, headers, body.size(), false, &extra_headers_);
  }
  conn_->end(*this, body);
}

void ServerExchangeImpl::on_abort(MoveOnlyFunction<void()> handler) {
  if (ended_ && !aborted_) return;
  if (aborted_ && abort_notified_) {
    // The abort was already reported: tell this late subscriber too, but never synchronously.
    loop_.defer([h = std::move(handler)]() mutable { h(); });
    return;
  }
  on_abort_ = std::move(handler);
}

StreamPtr ServerExchangeImpl::take_upgrade(std::string& leftover) {
  if (!live()) return nullptr;
  return conn_->take_upgrade(*this, leftover);
}

// ---------------------------------------------------------------------------------------------
// ServerConnection: set-up and reading

ServerConnection::ServerConnection(ConnectionOwner& owner, StreamPtr stream, bool counted)
    : owner_(owner),
      loop_(owner.loop()),
      opts_(owner.options()),
      stream_(std::move(stream)),
      parser_(HttpParser::Kind::Request, {opts_.max_header_bytes, opts_.max_headers}, *this),
      timer_(loop_.create_timer([this] { on_timer(); })),
      peer_(stream_->peer()),
      counted_(counted) {}

ServerConnection::~ServerConnection() {
  if (exchange_) exchange_->conn_ = nullptr;
}

void ServerConnection::start() {
  const std::size_t high = opts_.write_high_watermark;
  stream_->set_watermarks(high / 4, high);
  stream_->set_drain_handler([this] { on_drain(); });
  stream_->read_start([this](Result<std::string_view> r) { on_read(std::move(r)); });
  reading_ = true;
  phase_ = Phase::Head;
  head_start_ = loop_.now_ms();
  set_wait(Wait::Head, after(head_start_, opts_.header_timeout));
}

void ServerConnection::reject(int status, std::string_view detail) {
  stream_->read_start([this](Result<std::string_view> r) { on_read(std::move(r)); });
  reading_ = true;
  parser_dead_ = true;
  send_error_and_close(status, detail);
}

void ServerConnection::on_read(Result<std::string_view> r) {
  if (!r) {
    on_read_error(r.error());
    return;
  }
  std::string_view data = *r;
  switch (phase_) {
    case Phase::Closing:
    case Phase::Closed:
      return;  // lingering: what the client still sends is dropped
    case Phase::Done:
    case Phase::Upgrade:
      buffer_.append(data);
      update_reading();
      return;
    case Phase::Idle:
      phase_ = Phase::Head;
      head_start_ = loop_.now_ms();
      break;
    case Phase::Body:
      if (wait_ == Wait::Body) deadline_ = after(loop_.now_ms(), opts_.body_idle_timeout);
      break;
    case Phase::Head:
      break;
  }
  process(data);
}

void ServerConnection::on_read_error(const Error& error) {
  const bool eof = error.code == Errc::Eof;
  switch (phase_) {
    case Phase::Closed:
      return;
    case Phase::Closing:
      // Wait for our queued bytes to be written unless the connection is broken.
      if (eof && !shutdown_done_) {
        peer_eof_ = true;
        reading_ = false;
      } else {
        close_now();
      }
      return;
    case Phase::Idle:
    case Phase::Head:
      // Nothing in flight (a partial head is simply dropped), but answers may still be queued
      // for a client that sent its requests and half-closed.
      if (eof && stream_ && stream_->write_queue_size() > 0) {
        peer_eof_ = true;
        reading_ = false;
        close_graceful();
      } else {
        close_now();
      }
      return;
    case Phase::Body:
    case Phase::Done:
    case Phase::Upgrade:
      if (exchange_) {
        close_now(eof ? Error(Errc::Eof, msg_complete_
                                             ? "client " + peer_ + " went away before the response ended"
                                             : "client " + peer_ + " closed the connection mid-body",
                              ErrorSource::Uv, error.native)
                      : error);
        return;
      }
      // The response has ended; only discarded input or queued output remain.
      peer_eof_ = true;
      reading_ = false;
      close_graceful();
      return;
  }
}

// Feeds the parser until it needs more bytes or must wait for a response. Bytes it did not
// consume stay in buffer_ (so user code called from here always finds the leftover there).
void ServerConnection::process(std::string_view fresh) {
  processing_ = true;
  if (!buffer_.empty() && !fresh.empty()) {
    buffer_.append(fresh);
    fresh = {};
  }
  while ((phase_ == Phase::Head || phase_ == Phase::Body) && !parser_dead_) {
    const bool from_buffer = !buffer_.empty();
    std::string_view input = from_buffer ? std::string_view(buffer_) : fresh;
    if (input.empty()) break;
    HttpParser::Outcome out = parser_.execute(input);
    if (from_buffer) {
      buffer_.erase(0, out.consumed);
    } else {
      fresh.remove_prefix(std::min(out.consumed, fresh.size()));
      if (!fresh.empty()) buffer_.assign(fresh);
      fresh = {};
    }
    if (phase_ == Phase::Closed || phase_ == Phase::Closing) break;
    if (reject_status_ != 0) {
      on_body_limit();
      break;
    }
    switch (out.state) {
      case HttpParser::State::Ok:
        break;
      case HttpParser::State::Paused:
        on_message_end();
        break;
      case HttpParser::State::Upgrade:
        on_upgrade_head();
        break;
      case HttpParser::State::Error:
        on_parse_error(out);
        break;
    }
  }
  processing_ = false;
  if (phase_ == Phase::Closed) return;
  if (!out_.empty()) send_out();
  if (phase_ == Phase::Closed) return;
  update_reading();
  refresh_wait();
}

void ServerConnection::on_request_head(RequestHead&& head) {
  phase_ = Phase::Body;
  msg_complete_ = false;
  body_received_ = 0;
  keep_alive_ = head.keep_alive;
  if (head.content_length && *head.content_length > opts_.max_body_bytes) {
    // Answered as soon as execute() returns; the handler never sees this request.
    reject_status_ = 413;
    reject_detail_ = "request body of " + std::to_string(*head.content_length) +
                     " bytes is larger than the limit of " + std::to_string(opts_.max_body_bytes) +
                     " bytes";
    return;
  }
  const bool has_body = request_has_body(head);
  auto ex = std::make_shared<ServerExchangeImpl>(*this, loop_, std::move(head), peer_);
  exchange_ = ex;
  if (ex->head_.upgrade && !has_body) {
    // The handler may take the stream at once, so it needs the leftover bytes, which are known
    // only when execute() returns.
    pending_dispatch_ = true;
    return;
  }
  // Dispatched from inside execute() so that a handler that reads the body at once gets the
  // bytes that follow the head in this same read without a copy.
  owner_.dispatch(std::move(ex));
}

void ServerConnection::on_body(std::string_view data) {
  if (reject_status_ != 0 || phase_ != Phase::Body) return;
  body_received_ += data.size();
  if (body_received_ > opts_.max_body_bytes) {
    reject_status_ = 413;
    reject_detail_ = "request body larger than the limit of " +
                     std::to_string(opts_.max_body_bytes) + " bytes";
    return;
  }
  ServerExchangeImpl* ex = exchange_.get();
  if (!ex) return;  // the response has ended: the rest of the body is discarded
  if (ex->reading_ && !ex->paused_ && ex->stash_.empty()) {
    call_on_data(data);
  } else {
    ex->stash_.append(data.data(), data.size());
  }
}

// Runs the handler from a moved-out copy: it may end the exchange (which releases body_) while
// it runs, and must not be destroyed under its own feet.
void ServerConnection::call_on_data(std::string_view data) {
  auto ex = exchange_;  // the handler may end the exchange and drop its reference
  if (!ex->body_.on_data) return;
  auto handler = std::move(ex->body_.on_data);
  handler(data);
  if (exchange_ == ex && !ex->body_done_ && !ex->body_.on_data) ex->body_.on_data = std::move(handler);
}

void ServerConnection::on_message_end() {
  msg_complete_ = true;
  if (!exchange_) {
    // The response ended before the request body did; that body has now been discarded.
    next_request();
    return;
  }
  phase_ = Phase::Done;
  deliver_body_end_if_ready();
}

void ServerConnection::on_upgrade_head() {
  parser_dead_ = true;
  msg_complete_ = true;
  upgrade_ready_ = true;
  phase_ = Phase::Upgrade;
  update_reading();  // the bytes that follow belong to the new protocol
  if (!exchange_) {
    close_graceful();  // the handler answered before the head was over
    return;
  }
  if (pending_dispatch_) {
    pending_dispatch_ = false;
    owner_.dispatch(exchange_);
    return;
  }
  deliver_body_end_if_ready();
}

void ServerConnection::on_parse_error(const HttpParser::Outcome& outcome) {
  parser_dead_ = true;
  bool can_answer = !response_started_;
  if (exchange_) {
    // The head was fine; the body was not.
    can_answer = !exchange_->head_written_;
    fail_exchange(outcome.error);
  }
  if (can_answer) send_error_and_close(outcome.http_status, outcome.error.message);
  else close_graceful();
}

void ServerConnection::on_body_limit() {
  parser_dead_ = true;
  bool can_answer = !response_started_;
  if (exchange_) {
    can_answer = !exchange_->head_written_;
    fail_exchange(Error(Errc::LimitExceeded, reject_detail_, ErrorSource::Http, 413));
  }
  if (can_answer) send_error_and_close(reject_status_, reject_detail_);
  else close_graceful();
}

// The current request and its response are both over: move on to the next one.
void ServerConnection::next_request() {
  msg_complete_ = false;
  response_started_ = false;
  body_received_ = 0;
  if (close_after_response_ || !keep_alive_ || parser_dead_ || peer_eof_ || owner_.shutting_down()) {
    close_graceful();
    return;
  }
  parser_.resume();
  if (stream_->write_queue_size() > opts_.write_high_watermark) {
    // A client that pipelines requests but does not read the answers gets no more answers
    // until it does; queued responses would otherwise grow without bound.
    phase_ = Phase::Done;
    wait_drain_ = true;
    update_reading();
    wait_ = Wait::None;
    return;
  }
  continue_after_drain();
}

void ServerConnection::continue_after_drain() {
  if (!buffer_.empty()) {
    phase_ = Phase::Head;
    head_start_ = loop_.now_ms();
    // Inside process() its loop parses on; otherwise parse from the next iteration so that the
    // next handler never runs inside the call (end(), a drain) that finished this request.
    if (!processing_) schedule_process();
  } else {
    phase_ = Phase::Idle;
    set_wait(Wait::Idle, after(loop_.now_ms(), opts_.keep_alive_timeout));
  }
  update_reading();
  refresh_wait();
}

void ServerConnection::schedule_process() {
  if (process_scheduled_) return;
  process_scheduled_ = true;
  loop_.defer([this, alive = std::weak_ptr<char>(alive_)] {
    if (alive.expired()) return;
    process_scheduled_ = false;
    if (phase_ == Phase::Head && !processing_) process({});
  });
}

// ---------------------------------------------------------------------------------------------
// Request body

void ServerConnection::read_body(ServerExchangeImpl& ex, BodyHandlers&& handlers) {
  ex.reading_ = true;
  ex.body_ = std::move(handlers);
  if (ex.head_.expect_continue && !ex.continue_sent_ && !ex.head_written_ && !msg_complete_ &&
      phase_ == Phase::Body) {
    ex.continue_sent_ = true;
    if (!send("HTTP/1.1 100 Continue\r\n\r\n") && phase_ == Phase::Closed) return;
  }
  if (!ex.stash_.empty() || msg_complete_) {
    schedule_body_delivery();
  } else {
    update_reading();
    refresh_wait();
  }
}

void ServerConnection::pause_body(ServerExchangeImpl& ex) {
  if (ex.paused_) return;
  ex.paused_ = true;
  update_reading();
  refresh_wait();
}

void ServerConnection::resume_body(ServerExchangeImpl& ex) {
  if (!ex.paused_) return;
  ex.paused_ = false;
  if (!ex.reading_) return;
  if (!ex.stash_.empty() || msg_complete_) {
    schedule_body_delivery();
  } else {
    update_reading();
    refresh_wait();
  }
}

void ServerConnection::schedule_body_delivery() {
  if (delivery_scheduled_) return;
  delivery_scheduled_ = true;
  loop_.defer([this, alive = std::weak_ptr<char>(alive_)] {
    if (alive.expired()) return;
    delivery_scheduled_ = false;
    deliver_body();
  });
}

void ServerConnection::deliver_body() {
  auto ex = exchange_;
  if (!ex || !ex->reading_ || ex->paused_ || phase_ == Phase::Closed) return;
  if (!ex->stash_.empty()) {
    std::string data;
    data.swap(ex->stash_);
    call_on_data(data);
    if (exchange_ != ex || ex->paused_ || phase_ == Phase::Closed) return;
  }
  if (msg_complete_) {
    deliver_body_end_if_ready();
  } else {
    update_reading();
    refresh_wait();
  }
}

void ServerConnection::deliver_body_end_if_ready() {
  auto ex = exchange_;
  if (!ex || !msg_complete_ || !ex->reading_ || ex->paused_ || ex->body_done_ || !ex->stash_.empty()) {
    return;
  }
  ex->body_done_ = true;
  ex->body_.on_data = nullptr;  // releases what it captured (often the exchange itself)
  if (ex->body_.on_end) {
    auto cb = std::move(ex->body_.on_end);
    cb(Status{});
  }
}

// ---------------------------------------------------------------------------------------------
// Response

bool ServerConnection::start_response(ServerExchangeImpl& ex, int status, std::string_view reason,
                                      const Headers& headers, std::optional<std::uint64_t> length,
                                      bool flush_later, const Headers* extra) {
  ex.head_written_ = true;
  response_started_ = true;
  // A 1xx is never a final response (100 Continue is ours, 101 goes through take_upgrade): a
  // handler that sends one made a mistake, and the client must still get an answer.
  if (status < 200 || status > 999) status = 500;
  const bool no_body = ex.head_request_ || status == 204 || status == 304;
  bool close = close_after_response_ || !keep_alive_ || parser_dead_ || peer_eof_ ||
               owner_.shutting_down() || headers.has_token("connection", "close") ||
               (extra && extra->has_token("connection", "close"));
  // The client waits for "100 Continue" before sending a body we never asked for: we cannot
  // tell where its next request would start.
  if (ex.head_.expect_continue && !ex.continue_sent_ && !msg_complete_ && request_has_body(ex.head_)) {
    close = true;
  }
  using Framing = ServerExchangeImpl::Framing;
  if (no_body) ex.framing_ = Framing::None;
  else if (length) ex.framing_ = Framing::Length;
  else if (ex.head_.http_minor >= 1) ex.framing_ = Framing::Chunked;
  else {
    ex.framing_ = Framing::Close;  // an HTTP/1.0 client reads to the end of the connection
    close = true;
  }
  ex.remaining_ = ex.framing_ == Framing::Length ? *length : 0;
  close_after_response_ = close;

  append_status_line(out_, status, reason);
  for (const auto& h : headers) {
    if (is_framing_header(h.name) || !is_safe_header(h.name, h.value)) continue;
    append_header(out_, h.name, h.value);
  }
  // The exchange's added headers (add_response_header), unless the response sets its own.
  if (extra) {
    for (const auto& h : *extra) {
      if (headers.has(h.name) || is_framing_header(h.name) || !is_safe_header(h.name, h.value)) continue;
      append_header(out_, h.name, h.value);
    }
  }
  if (length && status != 204) {
    out_.append("Content-Length: ");
    append_decimal(out_, *length);
    out_.append("\r\n");
  }
  if (ex.framing_ == Framing::Chunked) out_.append("Transfer-Encoding: chunked\r\n");
  if (close) out_.append("Connection: close\r\n");
  else if (ex.head_.http_minor == 0) out_.append("Connection: keep-alive\r\n");
  out_.append("\r\n");
  // Corked: the head goes out with the first body bytes, or on its own next iteration.
  if (flush_later) schedule_flush();
  return !above_high();
}

bool ServerConnection::write_body(ServerExchangeImpl& ex, std::string_view data, bool last) {
  using Framing = ServerExchangeImpl::Framing;
  if (!ex.head_written_) {
    // end() without a head: the whole body is known, so it gets a Content-Length.
    std::optional<std::uint64_t> length;
    if (last) length = data.size();
    start_response(ex, 200, {}, Headers{}, length, false);
  }
  bool ok = true;
  // Small data joins what is being assembled (a head, chunk framing, earlier pipelined
  // responses) so that it all leaves in one write; large data is written as it is.
  auto emit = [&](std::string_view d) {
    if (d.size() <= kCoalesceLimit && (!out_.empty() || processing_)) out_.append(d);
    else ok = send(d);
  };
  switch (ex.framing_) {
    case Framing::None:
      break;
    case Framing::Length:
      if (data.size() > ex.remaining_) data = data.substr(0, ex.remaining_);  // never past the length
      ex.remaining_ -= data.size();
      [[fallthrough]];
    case Framing::Close:
      if (!data.empty()) emit(data);
      break;
    case Framing::Chunked:
      if (!data.empty()) {
        append_chunk_size(out_, data.size());
        emit(data);
        out_.append("\r\n", 2);
      }
      if (last) out_.append("0\r\n\r\n", 5);
      break;
  }
  if (phase_ == Phase::Closed) return false;
  // Inside process() the output is flushed once at its end: pipelined answers share a write.
  if (!out_.empty() && (!processing_ || out_.size() > kCoalesceLimit)) ok = send_out() && ok;
  return ok && !above_high();
}

void ServerConnection::end(ServerExchangeImpl& ex, std::string_view last) {
  write_body(ex, last, true);
  if (phase_ == Phase::Closed) return;
  if (ex.framing_ == ServerExchangeImpl::Framing::Length && ex.remaining_ > 0) {
    // The body fell short of its Content-Length: the client cannot find the next response.
    close_after_response_ = true;
  }
  ex.ended_ = true;
  ex.on_abort_ = nullptr;
  ex.on_drain_ = nullptr;
  response_done(ex);
}

void ServerConnection::response_done(ServerExchangeImpl& ex) {
  auto hold = std::move(exchange_);
  ex.conn_ = nullptr;
  ex.stash_.clear();
  if (ex.reading_ && !ex.body_done_) {
    ex.body_done_ = true;
    if (!request_has_body(ex.head_) && ex.body_.on_end) {
      // Nothing was lost: an empty body simply ends.
      loop_.defer([cb = std::move(ex.body_.on_end)]() mutable { cb(Status{}); });
    } else {
      ex.refuse_body(std::move(ex.body_),
                     Error(Errc::Cancelled, "the response ended before the request body was read"));
    }
  }
  if (phase_ == Phase::Upgrade || parser_dead_ || close_after_response_) {
    close_graceful();
    return;
  }
  if (!msg_complete_) {
    // Read and drop the rest of the body (up to the body limit) so the connection stays usable.
    update_reading();
    refresh_wait();
    return;
  }
  next_request();
}

bool ServerConnection::send(std::string_view data) {
  // Whatever is being assembled goes first: bytes leave in the order they were produced.
  if (!out_.empty() && !send_out()) {
    if (phase_ == Phase::Closed) return false;
  }
  return write_raw(data);
}

bool ServerConnection::write_raw(std::string_view data) {
  if (!stream_ || phase_ == Phase::Closed) return false;
  const bool ok = stream_->write(data);
  if (!ok && stream_->write_queue_size() == 0) {
    // Nothing is queued, so false means the write failed: the client is gone.
    close_now(Error(Errc::Io, "write to " + peer_ + " failed"));
    return false;
  }
  return ok;
}

bool ServerConnection::send_out() {
  if (out_.empty()) return !above_high();
  const bool ok = write_raw(out_);
  out_.clear();
  if (out_.capacity() > kOutKeepCapacity) out_.shrink_to_fit();
  return ok;
}

void ServerConnection::schedule_flush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  loop_.defer([this, alive = std::weak_ptr<char>(alive_)] {
    if (alive.expired()) return;
    flush_scheduled_ = false;
    if (!out_.empty() && phase_ != Phase::Closed) send_out();
  });
}

bool ServerConnection::above_high() const {
  return !stream_ || stream_->write_queue_size() > opts_.write_high_watermark;
}

void ServerConnection::on_drain() {
  if (wait_drain_) {
    wait_drain_ = false;
    continue_after_drain();
    return;
  }
  auto ex = exchange_;
  if (!ex || !ex->on_drain_) return;
  // Called from a moved-out copy so that the handler may replace itself.
  auto handler = std::move(ex->on_drain_);
  const auto generation = ex->drain_generation_;
  handler();
  if (ex->drain_generation_ == generation && ex->live()) ex->on_drain_ = std::move(handler);
}

StreamPtr ServerConnection::take_upgrade(ServerExchangeImpl& ex, std::string& leftover) {
  if (phase_ != Phase::Upgrade || !upgrade_ready_ || ex.head_written_ || !stream_) return nullptr;
  // Answers to earlier pipelined requests may still be assembled: they go first.
  if (!out_.empty()) {
    send_out();
    if (phase_ == Phase::Closed) return nullptr;
  }
  // Detach: our read and drain handlers must never run for the new owner.
  stream_->read_stop();
  stream_->read_start(nullptr);
  stream_->set_drain_handler(nullptr);
  reading_ = false;
  leftover = std::move(buffer_);
  buffer_.clear();
  StreamPtr stream = std::move(stream_);
  auto hold = std::move(exchange_);
  ex.ended_ = true;
  ex.conn_ = nullptr;
  ex.on_abort_ = nullptr;
  ex.on_drain_ = nullptr;
  phase_ = Phase::Closed;
  wait_ = Wait::None;
  timer_->stop();
  owner_.release(this);
  return stream;
}

// ---------------------------------------------------------------------------------------------
// Closing

// Detaches the exchange in flight and tells its handler, from the next iteration, that the
// body ended with `error` and that the exchange was aborted.
void ServerConnection::fail_exchange(Error error) {
  auto ex = std::move(exchange_);
  if (!ex) return;
  ex->conn_ = nullptr;
  ex->stash_.clear();
  const bool notify_end = ex->reading_ && !ex->body_done_;
  ex->body_done_ = true;
  const bool notify_abort = !ex->ended_;
  if (notify_abort) ex->aborted_ = true;
  ex->on_drain_ = nullptr;
  if (!notify_end && !notify_abort) return;
  loop_.defer([ex = std::move(ex), e = std::move(error), notify_end, notify_abort]() mutable {
    ex->body_.on_data = nullptr;
    if (notify_end && ex->body_.on_end) {
      auto cb = std::move(ex->body_.on_end);
      cb(e);
    }
    if (notify_abort) {
      ex->abort_notified_ = true;
      if (ex->on_abort_) {
        auto h = std::move(ex->on_abort_);
        h();
      }
    }
  });
}

void ServerConnection::send_error_and_close(int status, std::string_view detail) {
  if (phase_ == Phase::Closed || phase_ == Phase::Closing) return;
  response_started_ = true;
  append_error_response(out_, status, detail);
  send_out();
  close_graceful();
}

void ServerConnection::close_graceful() {
  if (phase_ == Phase::Closing || phase_ == Phase::Closed) return;
  if (exchange_) fail_exchange(Error(Errc::Cancelled, "the server closed the connection"));
  if (!out_.empty()) send_out();
  if (phase_ == Phase::Closed) return;
  phase_ = Phase::Closing;
  parser_dead_ = true;
  // The shutdown completes once everything queued is written; a client that never reads is
  // cut off by the Closing timer.
  stream_->shutdown([this, alive = std::weak_ptr<char>(alive_)](Status) {
    if (!alive.expired()) on_shutdown_done();
  });
  set_wait(Wait::Closing, loop_.now_ms() + std::max<std::uint64_t>(count(opts_.body_idle_timeout), kLingerMs));
  update_reading();
}

void ServerConnection::on_shutdown_done() {
  if (phase_ != Phase::Closing) return;
  shutdown_done_ = true;
  if (peer_eof_) {
    close_now();
    return;
  }
  set_wait(Wait::Closing, loop_.now_ms() + kLingerMs);
}

void ServerConnection::close_now(Error reason) {
  if (phase_ == Phase::Closed) return;
  phase_ = Phase::Closed;
  if (exchange_) fail_exchange(std::move(reason));
  wait_ = Wait::None;
  timer_->stop();
  reading_ = false;
  if (stream_) stream_->close();
  owner_.release(this);
}

void ServerConnection::begin_shutdown() {
  if (phase_ == Phase::Idle || (phase_ == Phase::Head && !parser_.in_message() && buffer_.empty())) {
    close_now();
  }
  // Otherwise the response in flight carries "Connection: close" (if its head is not out yet)
  // and the connection closes after it.
}

// ---------------------------------------------------------------------------------------------
// Reading and timers

bool ServerConnection::want_read() const {
  switch (phase_) {
    case Phase::Idle:
    case Phase::Head:
      return true;
    case Phase::Body:
      // Read the body only as fast as the handler takes it; without a handler it is discarded.
      if (!exchange_) return true;
      return exchange_->reading_ && !exchange_->paused_ && exchange_->stash_.empty();
    case Phase::Done:
      return buffer_.size() < kMaxReadAhead;
    case Phase::Closing:
      return !peer_eof_;
    case Phase::Upgrade:
    case Phase::Closed:
      return false;
  }
  return false;
}

void ServerConnection::update_reading() {
  if (!stream_ || phase_ == Phase::Closed) return;
  const bool want = want_read();
  if (want == reading_) return;
  reading_ = want;
  if (want) stream_->read_resume();
  else stream_->read_stop();
}

void ServerConnection::refresh_wait() {
  switch (phase_) {
    case Phase::Idle:
    case Phase::Closing:
    case Phase::Closed:
      return;  // set on entering the phase
    case Phase::Head:
      if (wait_ != Wait::Head) set_wait(Wait::Head, after(head_start_, opts_.header_timeout));
      return;
    case Phase::Body:
      // Only a body we are reading can stall; one the handler paused is the handler's business.
      if (!reading_) wait_ = Wait::None;
      else if (wait_ != Wait::Body) set_wait(Wait::Body, after(loop_.now_ms(), opts_.body_idle_timeout));
      return;
    case Phase::Done:
    case Phase::Upgrade:
      wait_ = Wait::None;
      return;
  }
}

// The timer is armed lazily: a later deadline only moves `deadline_`, and the timer re-arms
// itself when it fires early. Per request this costs no timer operation at all.
void ServerConnection::set_wait(Wait wait, std::uint64_t deadline_ms) {
  wait_ = wait;
  deadline_ = deadline_ms;
  if (deadline_ms == kNever) return;  // disabled: a timer armed earlier finds nothing due
  if (timer_due_ == 0 || deadline_ms < timer_due_) {
    const std::uint64_t now = loop_.now_ms();
    timer_->start(ms(deadline_ms > now ? deadline_ms - now : 0));
    timer_due_ = deadline_ms;
  }
}

void ServerConnection::on_timer() {
  timer_due_ = 0;
  if (wait_ == Wait::None || deadline_ == kNever || phase_ == Phase::Closed) return;
  const std::uint64_t now = loop_.now_ms();
  if (now < deadline_) {
    timer_->start(ms(deadline_ - now));
    timer_due_ = deadline_;
    return;
  }
  const Wait w = wait_;
  wait_ = Wait::None;
  switch (w) {
    case Wait::None:
      return;
    case Wait::Idle:
      close_now();  // an idle keep-alive connection closes silently
      return;
    case Wait::Head:
      if (parser_.in_message() || !buffer_.empty()) {
        send_error_and_close(408, "the request head was not received within " +
                                      std::to_string(opts_.header_timeout.count()) + " ms");
      } else {
        close_now();  // nothing was sent at all
      }
      return;
    case Wait::Body:
      close_now(Error(Errc::Timeout, "no request body byte from " + peer_ + " for " +
                                         std::to_string(opts_.body_idle_timeout.count()) + " ms"));
      return;
    case Wait::Closing:
      close_now();
      return;
  }
}

}  // namespace terminals::detail
