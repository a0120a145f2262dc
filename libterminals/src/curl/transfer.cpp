#include "curl/transfer.hpp"

#include <string_view>

#include "curl/curl_error.hpp"

namespace terminals::detail {

namespace {

// Response heads above this are refused; libcurl already caps a single header at 100 KiB.
constexpr std::size_t kMaxHeaderBytes = 1u << 20;

bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~': return true;
    default: return false;
  }
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!is_tchar(c)) return false;
  }
  return true;
}

// Header values must not smuggle a second header or request line into what libcurl sends.
bool is_safe_value(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

Transfer::Transfer(CurlMulti& multi, CurlRequest request, CurlStreamHandlers h, bool streaming)
    : handlers(std::move(h)), multi_(multi), request_(std::move(request)), streaming_(streaming) {}

Transfer::~Transfer() {
  // CurlMulti removed the handle from the multi before dropping the transfer.
  if (easy_) curl_easy_cleanup(easy_);
  curl_slist_free_all(header_list_);
}

std::string Transfer::what() const {
  std::string w = request_.method + " " + request_.url;
  if (!request_.unix_socket_path.empty()) w += " via unix:" + request_.unix_socket_path;
  return w;
}

Status Transfer::setup() {
  const CurlRequest& r = request_;
  if (!is_token(r.method)) {
    return Error(Errc::InvalidArgument, what() + ": '" + r.method + "' is not an HTTP method");
  }
  if (r.url.empty()) return Error(Errc::InvalidArgument, "HTTP request without a URL");
  for (const auto& h : r.headers) {
    if (!is_token(h.name) || !is_safe_value(h.value)) {
      return Error(Errc::InvalidArgument,
                   what() + ": header '" + h.name + "' has a bad name or a CR/LF/NUL in its value");
    }
  }

  easy_ = curl_easy_init();
  if (!easy_) return Error(Errc::Internal, what() + ": curl_easy_init failed (out of memory?)");

  // The first failing option decides the error; later ones are not even tried.
  CURLcode rc = CURLE_OK;
  auto set = [&](CURLoption opt, auto value) {
    if (rc == CURLE_OK) rc = curl_easy_setopt(easy_, opt, value);
  };

  set(CURLOPT_PRIVATE, static_cast<void*>(this));
  set(CURLOPT_ERRORBUFFER, error_buffer_);
  set(CURLOPT_URL, r.url.c_str());
  // Only HTTP(S), also after a redirect, so a URL from config cannot read file:// and friends.
  set(CURLOPT_PROTOCOLS_STR, "http,https");
  set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  set(CURLOPT_NOSIGNAL, 1L);  // several loops may run curl on several threads
  set(CURLOPT_TCP_KEEPALIVE, 1L);
  set(CURLOPT_WRITEFUNCTION, &Transfer::on_write);
  set(CURLOPT_WRITEDATA, static_cast<void*>(this));
  set(CURLOPT_HEADERFUNCTION, &Transfer::on_header);
  set(CURLOPT_HEADERDATA, static_cast<void*>(this));
  if (r.timeout.count() > 0) set(CURLOPT_TIMEOUT_MS, static_cast<long>(r.timeout.count()));
  if (r.connect_timeout.count() > 0) {
    set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(r.connect_timeout.count()));
  }
  if (!r.unix_socket_path.empty()) set(CURLOPT_UNIX_SOCKET_PATH, r.unix_socket_path.c_str());
  if (streaming_) {
    // pause() must push back on the server. Over HTTP/2 libcurl keeps receiving a paused
    // stream into memory (curl issue #4939) and unpausing has stalled (curl PR #16960); over
    // HTTP/1.1 a paused transfer stops reading its own socket. One connection per stream is
    // fine for the control plane's few watches.
    set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  } else {
    // Refuses early when Content-Length announces too much; on_write enforces it otherwise.
    set(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(r.max_response_bytes));
  }

  // Method and body. POSTFIELDS points into request_, which lives as long as the handle.
  const bool sends_body = !r.body.empty() || r.method == "POST" || r.method == "PUT" ||
                          r.method == "PATCH";
  if (r.method == "HEAD") {
    set(CURLOPT_NOBODY, 1L);
  } else if (sends_body) {
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    set(CURLOPT_POSTFIELDS, r.body.data());
    if (r.method != "POST") set(CURLOPT_CUSTOMREQUEST, r.method.c_str());
  } else if (r.method == "GET") {
    set(CURLOPT_HTTPGET, 1L);
  } else {
    set(CURLOPT_CUSTOMREQUEST, r.method.c_str());
  }

  // Headers. Empty values use curl's "Name;" spelling; "Name:" would delete the header.
  auto append = [&](const std::string& line) {
    if (curl_slist* l = curl_slist_append(header_list_, line.c_str())) header_list_ = l;
    else if (rc == CURLE_OK) rc = CURLE_OUT_OF_MEMORY;
  };
  for (const auto& h : r.headers) append(h.value.empty() ? h.name + ";" : h.name + ": " + h.value);
  // libcurl would add "Expect: 100-continue" to larger bodies and wait for a 100 that small API
  // servers never send; and a form Content-Type to every body. Drop both unless asked for.
  if (!r.headers.has("Expect")) append("Expect:");
  if (sends_body && !r.headers.has("Content-Type")) append("Content-Type:");
  if (!r.bearer_token.empty() && !r.headers.has("Authorization")) {
    if (!is_safe_value(r.bearer_token)) {
      return Error(Errc::InvalidArgument, what() + ": the bearer token contains CR/LF/NUL");
    }
    append("Authorization: Bearer " + r.bearer_token);
  }
  set(CURLOPT_HTTPHEADER, header_list_);

  // TLS. Blobs are copied by libcurl (CURL_BLOB_COPY), so the structs may be temporaries.
  if (!r.ca_file.empty()) set(CURLOPT_CAINFO, r.ca_file.c_str());
  if (!r.ca_pem.empty()) {
    curl_blob b{const_cast<char*>(r.ca_pem.data()), r.ca_pem.size(), CURL_BLOB_COPY};
    set(CURLOPT_CAINFO_BLOB, &b);
  }
  if (!r.client_cert_file.empty() || !r.client_cert_pem.empty()) set(CURLOPT_SSLCERTTYPE, "PEM");
  if (!r.client_cert_file.empty()) set(CURLOPT_SSLCERT, r.client_cert_file.c_str());
  if (!r.client_cert_pem.empty()) {
    curl_blob b{const_cast<char*>(r.client_cert_pem.data()), r.client_cert_pem.size(), CURL_BLOB_COPY};
    set(CURLOPT_SSLCERT_BLOB, &b);
  }
  if (!r.client_key_file.empty() || !r.client_key_pem.empty()) set(CURLOPT_SSLKEYTYPE, "PEM");
  if (!r.client_key_file.empty()) set(CURLOPT_SSLKEY, r.client_key_file.c_str());
  if (!r.client_key_pem.empty()) {
    curl_blob b{const_cast<char*>(r.client_key_pem.data()), r.client_key_pem.size(), CURL_BLOB_COPY};
    set(CURLOPT_SSLKEY_BLOB, &b);
  }
  set(CURLOPT_SSL_VERIFYPEER, r.verify_peer ? 1L : 0L);
  set(CURLOPT_SSL_VERIFYHOST, r.verify_peer ? 2L : 0L);

  if (rc != CURLE_OK) return curl_error(rc, what() + ": set up the request", error_buffer_);
  return {};
}

void Transfer::deliver_head() {
  head_delivered_ = true;
  long status = 0;
  curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &status);
  response_.status = status;
  if (handlers.on_head) handlers.on_head(response_);
}

size_t Transfer::on_write(char* data, size_t size, size_t count, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  const size_t len = size * count;
  // Returning less than `len` makes libcurl fail the transfer (CURLE_WRITE_ERROR), which is how
  // a cancel or a limit stops it from inside the callback.
  if (t->cancelled) return 0;
  if (t->paused) {
    // libcurl keeps this chunk and hands it over again after CURLPAUSE_CONT.
    t->curl_paused = true;
    return CURL_WRITEFUNC_PAUSE;
  }
  if (!t->streaming_) {
    if (len > t->request_.max_response_bytes - t->response_.body.size()) {
      t->body_too_large_ = true;
      return 0;
    }
    t->response_.body.append(data, len);
    return len;
  }
  if (!t->head_delivered_) {
    t->deliver_head();
    if (t->cancelled) return 0;
    if (t->paused) {
      t->curl_paused = true;
      return CURL_WRITEFUNC_PAUSE;
    }
  }
  if (t->handlers.on_data) t->handlers.on_data(std::string_view(data, len));
  // A pause() inside on_data takes effect at the next chunk: this one was consumed.
  return t->cancelled ? 0 : len;
}

size_t Transfer::on_header(char* data, size_t size, size_t count, void* userp) {
  auto* t = static_cast<Transfer*>(userp);
  const size_t len = size * count;
  if (t->cancelled) return 0;
  t->header_bytes_ += len;
  if (t->header_bytes_ > kMaxHeaderBytes) {
    t->headers_too_large_ = true;
    return 0;
  }
  std::string_view line = trim(std::string_view(data, len));
  if (line.starts_with("HTTP/")) {
    // A new head begins (after a 1xx interim one, or the first): keep only the final one.
    t->response_.headers.clear();
    return len;
  }
  auto colon = line.find(':');
  if (line.empty() || colon == std::string_view::npos) return len;  // end of head, or junk
  t->response_.headers.add(std::string(trim(line.substr(0, colon))),
                           std::string(trim(line.substr(colon + 1))));
  return len;
}

Result<CurlResponse> Transfer::result(CURLcode code) {
  if (cancelled) return Error(Errc::Cancelled, what() + ": cancelled", ErrorSource::Curl, code);
  if (body_too_large_ || code == CURLE_FILESIZE_EXCEEDED) {
    return Error(Errc::LimitExceeded,
                 what() + ": response body larger than " +
                     std::to_string(request_.max_response_bytes) + " bytes (max_response_bytes)",
                 ErrorSource::Curl, code);
  }
  if (headers_too_large_) {
    return Error(Errc::LimitExceeded,
                 what() + ": response headers larger than " + std::to_string(kMaxHeaderBytes) +
                     " bytes",
                 ErrorSource::Curl, code);
  }
  if (code != CURLE_OK) return curl_error(code, what(), error_buffer_);
  long status = 0;
  curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &status);
  response_.status = status;
  return std::move(response_);
}

}  // namespace terminals::detail
