#include "http/parser.hpp"

#include <llhttp.h>

namespace terminals::detail {

struct HttpParser::Impl {
  Impl(Kind k, Limits l, Listener& li) : kind(k), limits(l), listener(li) {
    llhttp_settings_init(&settings);
    settings.on_message_begin = [](llhttp_t* p) { return self(p)->on_message_begin(); };
    settings.on_url = [](llhttp_t* p, const char* at, size_t n) { return self(p)->append(self(p)->target, at, n); };
    settings.on_status = [](llhttp_t* p, const char* at, size_t n) { return self(p)->append(self(p)->reason, at, n); };
    settings.on_header_field = [](llhttp_t* p, const char* at, size_t n) { return self(p)->append(self(p)->field, at, n); };
    settings.on_header_value = [](llhttp_t* p, const char* at, size_t n) { return self(p)->on_value(at, n); };
    settings.on_header_value_complete = [](llhttp_t* p) { return self(p)->on_header_done(); };
    settings.on_headers_complete = [](llhttp_t* p) { return self(p)->on_headers_complete(); };
    settings.on_body = [](llhttp_t* p, const char* at, size_t n) {
      self(p)->listener.on_body(std::string_view(at, n));
      return 0;
    };
    settings.on_message_complete = [](llhttp_t* p) { return self(p)->on_message_complete(); };
    llhttp_init(&parser, k == Kind::Request ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
    parser.data = this;
  }

  static Impl* self(llhttp_t* p) { return static_cast<Impl*>(p->data); }

  int on_message_begin() {
    in_message = true;
    interim = false;
    head_bytes = 0;
    header_count = 0;
    folded = false;
    target.clear();
    reason.clear();
    field.clear();
    value.clear();
    headers.clear();
    return 0;
  }

  int append(std::string& into, const char* at, size_t n) {
    head_bytes += n;
    if (head_bytes > limits.max_header_bytes) {
      limit_error = "request head larger than " + std::to_string(limits.max_header_bytes) + " bytes";
      limit_hit = true;
      return HPE_USER;
    }
    into.append(at, n);
    return 0;
  }

  // llhttp 8 accepts obsolete line folding (a header line starting with SP or HTAB continues the
  // previous value) and hands the continuation over as one more value span, but decides
  // Connection/Content-Length/Transfer-Encoding from the first line alone: the head we would
  // pass on then means something else than what llhttp framed. RFC 9112 5.2 lets a server
  // refuse folding with 400; we do, for responses too (no agent folds). The refusal waits for
  // the end of the field line, so that where the error is reported does not depend on how the
  // bytes were cut (a span is also handed over where a read ends).
  int on_value(const char* at, size_t n) {
    if (n > 0 && follows_line_break(at)) folded = true;
    return append(value, at, n);
  }

  // Whether only SP/HTAB stand between `at` and a preceding LF. A value span that merely
  // continues across two execute() calls follows a value byte instead, which `before_buf`
  // remembers for spans that start a buffer.
  bool follows_line_break(const char* at) const {
    const char* p = at;
    while (p > buf_begin && (p[-1] == ' ' || p[-1] == '\t')) --p;
    return (p > buf_begin ? p[-1] : before_buf) == '\n';
  }

  // RFC 9110 token characters. llhttp 8 lets some others (such as a space) into header names,
  // which proxies disagree about; we refuse them.
  static bool is_tchar(unsigned char c) {
    if (c >= '0' && c <= '9') return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
    switch (c) {
      case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
      case '-': case '.': case '^': case '_': case '`': case '|': case '~': return true;
      default: return false;
    }
  }

  int on_header_done() {
    if (folded) {
      protocol_error = "obsolete line folding (a header line starting with whitespace)";
      return -1;
    }
    if (field.empty()) {
      protocol_error = "empty header name";
      return -1;
    }
    for (unsigned char c : field) {
      if (!is_tchar(c)) {
        protocol_error = "invalid character in header name";
        return -1;
      }
    }
    if (++header_count > limits.max_headers) {
      limit_error = "more than " + std::to_string(limits.max_headers) + " header fields";
      limit_hit = true;
      return HPE_USER;
    }
    head_bytes += 4;  // ": " and CRLF count towards the limit as on the wire
    headers.add(std::move(field), std::move(value));
    field.clear();
    value.clear();
    return 0;
  }

  int on_headers_complete() {
    const bool has_cl = (parser.flags & F_CONTENT_LENGTH) != 0;
    const bool chunked = (parser.flags & F_CHUNKED) != 0;
    if (has_cl && (parser.flags & F_TRANSFER_ENCODING)) {
      // Both framings at once is the classic request-smuggling vector; llhttp accepts it when
      // the encoding is chunked, we do not (RFC 9112 6.1 allows rejecting).
      protocol_error = "both Content-Length and Transfer-Encoding";
      return -1;
    }
    // llhttp also takes HTTP/0.9 request lines (no version) and other majors; our heads are
    // HTTP/1.x only (they keep just the minor), so anything else is refused.
    if (parser.http_major != 1) {
      protocol_error = "unsupported HTTP version";
      return -1;
    }
    if (kind == Kind::Request && (parser.flags & F_TRANSFER_ENCODING) && !chunked) {
      // llhttp refuses this too, but only after this callback, when the handler already has a
      // request it takes for body-less (RFC 9112 6.3: chunked must be the final coding).
      protocol_error = "Transfer-Encoding without chunked as the final coding";
      return -1;
    }
    if (kind == Kind::Request) {
      RequestHead h;
      h.method = llhttp_method_name(static_cast<llhttp_method_t>(parser.method));
      h.target = std::move(target);
      h.http_minor = parser.http_minor;
      h.headers = std::move(headers);
      if (has_cl) h.content_length = parser.content_length;
      h.chunked = chunked;
      h.keep_alive = llhttp_should_keep_alive(&parser) != 0;
      h.upgrade = parser.upgrade != 0;
      if (auto e = h.headers.get("expect")) h.expect_continue = iequals(*e, "100-continue");
      listener.on_request_head(std::move(h));
      return 0;
    }
    const int status = parser.status_code;
    if (status < 100) {  // llhttp reads any three digits ("010")
      protocol_error = "status code below 100";
      return -1;
    }
    if (status >= 100 && status < 200 && status != 101) {
      // Interim responses (100 Continue, 103 Early Hints) are not shown to the listener, and
      // have no body whatever their headers say (RFC 9110 15.2): bytes after one are the next
      // response, never body bytes of a response the listener has not seen.
      interim = true;
      return 1;
    }
    ResponseHead h;
    h.status = status;
    h.reason = std::move(reason);
    h.http_minor = parser.http_minor;
    h.headers = std::move(headers);
    if (has_cl) h.content_length = parser.content_length;
    h.chunked = chunked;
    h.keep_alive = llhttp_should_keep_alive(&parser) != 0;
    h.upgrade = status == 101;
    bool no_body = listener.on_response_head(std::move(h));
    if (status == 101) return 2;  // the rest of the bytes belong to the new protocol
    return (no_body || status == 204 || status == 304) ? 1 : 0;
  }

  int on_message_complete() {
    in_message = false;
    if (interim) return 0;
    listener.on_message_complete();
    // Upgrades stop by themselves (HPE_PAUSED_UPGRADE). Everything else pauses so that the
    // owner handles one message at a time.
    if (parser.upgrade) return 0;
    return HPE_PAUSED;
  }

  Kind kind;
  Limits limits;
  Listener& listener;
  llhttp_settings_t settings{};
  llhttp_t parser{};

  bool in_message = false;
  bool interim = false;
  std::size_t head_bytes = 0;
  std::size_t header_count = 0;
  std::string target, reason, field, value;
  Headers headers;
  std::string limit_error;
  bool limit_hit = false;
  const char* protocol_error = nullptr;
  bool folded = false;              // the current field line continues on another line
  const char* buf_begin = nullptr;  // the bytes execute() is parsing now
  char before_buf = 0;              // the last byte before them other than SP/HTAB
};

HttpParser::HttpParser(Kind kind, Limits limits, Listener& listener)
    : impl_(std::make_unique<Impl>(kind, limits, listener)) {}

HttpParser::~HttpParser() = default;

HttpParser::Outcome HttpParser::execute(std::string_view data) {
  Outcome out;
  llhttp_t* p = &impl_->parser;
  impl_->buf_begin = data.data();
  llhttp_errno_t err = llhttp_execute(p, data.data(), data.size());
  auto pos = [&] {
    const char* at = llhttp_get_error_pos(p);
    return at ? static_cast<std::size_t>(at - data.data()) : data.size();
  };
  // What the next buffer's first value span follows: the last consumed byte other than
  // SP/HTAB (after a pause the rest of this buffer is fed again, so it is not counted).
  const std::size_t used = err == HPE_OK ? data.size() : pos();
  for (std::size_t i = used; i > 0; --i) {
    if (data[i - 1] != ' ' && data[i - 1] != '\t') {
      impl_->before_buf = data[i - 1];
      break;
    }
  }
  switch (err) {
    case HPE_OK:
      out.consumed = data.size();
      return out;
    case HPE_PAUSED:
      out.state = State::Paused;
      out.consumed = pos();
      return out;
    case HPE_PAUSED_UPGRADE:
      out.state = State::Upgrade;
      out.consumed = pos();
      return out;
    default:
      break;
  }
  out.state = State::Error;
  out.consumed = pos();
  if (impl_->limit_hit) {
    out.http_status = 431;
    out.error = Error(Errc::LimitExceeded, impl_->limit_error, ErrorSource::Llhttp, err);
  } else {
    out.http_status = 400;
    const char* reason = impl_->protocol_error ? impl_->protocol_error : llhttp_get_error_reason(p);
    out.error = Error(impl_->kind == Kind::Request ? Errc::InvalidArgument : Errc::UpstreamProtocol,
                      std::string("malformed HTTP: ") + llhttp_errno_name(err) + ": " +
                          (reason ? reason : "?"),
                      ErrorSource::Llhttp, err);
  }
  return out;
}

void HttpParser::resume() { llhttp_resume(&impl_->parser); }

Status HttpParser::finish() {
  llhttp_errno_t err = llhttp_finish(&impl_->parser);
  if (err == HPE_OK || err == HPE_PAUSED) return {};
  const char* reason = llhttp_get_error_reason(&impl_->parser);
  return Error(Errc::UpstreamProtocol,
               std::string("message cut short: ") + llhttp_errno_name(err) + ": " + (reason ? reason : "?"),
               ErrorSource::Llhttp, err);
}

bool HttpParser::in_message() const noexcept { return impl_->in_message; }

bool HttpParser::should_keep_alive() const noexcept {
  return llhttp_should_keep_alive(&impl_->parser) != 0;
}

}  // namespace terminals::detail
