#pragma once

// CurlMulti: libcurl's multi interface driven by the libuv loop, for the control plane (Docker
// Engine API over its unix socket, Kubernetes API over HTTPS, token checks). One per Loop.
//
// How it is wired (curl's docs/examples/multi-uv.c, without its bugs):
//   - one uv timer for curl's single timeout (CURLMOPT_TIMERFUNCTION): -1 stops it, >= 0
//     (including 0) starts it once, never repeating;
//   - one uv_poll per socket, created on the first CURL_POLL_* for it and attached with
//     curl_multi_assign, closed on CURL_POLL_REMOVE (freed in its close callback);
//   - after every curl_multi_socket_action, finished transfers are collected with
//     curl_multi_info_read; their `done` callbacks run from the next loop iteration
//     (Loop::defer), outside curl's call stack, so user code may start or cancel transfers.
//
// Threading and lifetime follow loop.hpp: loop thread only; destroying the CurlMulti cancels
// every transfer (each `done` then gets Cancelled); never destroy it from inside an `on_head`
// / `on_data` callback (those run inside libcurl), use Loop::defer_delete.

#include <curl/curl.h>
#include <uv.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "terminals/function.hpp"
#include "terminals/http.hpp"
#include "terminals/loop.hpp"
#include "terminals/result.hpp"
#include "uv/handle.hpp"

namespace terminals::detail {

struct CurlRequest {
  std::string method = "GET";
  /// Absolute URL. For Docker over a unix socket the host is a dummy:
  /// "http://localhost/v1.43/containers/json".
  std::string url;
  Headers headers;
  /// Sent with Content-Length. Set for POST/PUT/PATCH even when empty (then "Content-Length: 0").
  std::string body;
  /// When non-empty, connect to this unix socket instead of the URL's host (CURLOPT_UNIX_SOCKET_PATH).
  std::string unix_socket_path;
  /// The whole transfer, connect included; 0 means no limit (long-lived watch/log streams).
  std::chrono::milliseconds timeout{30'000};
  std::chrono::milliseconds connect_timeout{5'000};

  // TLS. The CA and the client certificate/key can be given as file paths or as PEM text
  // (kubeconfig's *-data fields, base64-decoded). Verification is on unless turned off.
  std::string ca_file;
  std::string ca_pem;
  std::string client_cert_file;
  std::string client_cert_pem;
  std::string client_key_file;
  std::string client_key_pem;
  bool verify_peer = true;  ///< also checks the host name against the certificate
  /// Sent as "Authorization: Bearer <token>" when non-empty (Kubernetes service accounts).
  std::string bearer_token;

  /// perform(): a longer response body fails with LimitExceeded. Not applied by stream().
  std::size_t max_response_bytes = 64u << 20;
};

struct CurlResponse {
  long status = 0;
  Headers headers;  ///< of the final response (interim 1xx heads are dropped)
  std::string body; ///< empty for stream(): the body went to on_data
};

/// What a streamed transfer reports. `on_head` and `on_data` run inside libcurl's write
/// callback (views valid only during the call); `done` runs once, from a later loop iteration.
struct CurlStreamHandlers {
  /// Optional: the status and headers, once, before the first on_data (or before `done` when
  /// there is no body). Error statuses arrive here too: check `head.status`.
  MoveOnlyFunction<void(const CurlResponse& head)> on_head;
  /// Each body chunk, in order.
  MoveOnlyFunction<void(std::string_view chunk)> on_data;
  /// The end: the head (body empty) on success, or the error.
  Callback<CurlResponse> done;
};

class CurlMulti;
class Transfer;

/// Owns one transfer's right to run. Destroying the handle or calling cancel() cancels the
/// transfer: its `done` then gets Errc::Cancelled exactly once, from a later loop iteration
/// (never inside cancel() or the destructor), and on_head/on_data are not called again. Because
/// `done` may run after the handle's owner is gone, a `done` must not touch state it does not
/// own or check for weakly; on Cancelled it should just return. After `done` was scheduled
/// (the transfer finished), cancel() does nothing. A default-constructed or moved-from handle
/// is empty. Loop thread only.
class [[nodiscard]] TransferHandle {
 public:
  TransferHandle() = default;
  TransferHandle(TransferHandle&& other) noexcept = default;
  TransferHandle& operator=(TransferHandle&& other) noexcept;
  TransferHandle(const TransferHandle&) = delete;
  TransferHandle& operator=(const TransferHandle&) = delete;
  ~TransferHandle() { cancel(); }

  /// Cancels the transfer (see the class comment). Idempotent.
  void cancel();
  /// Stops delivering body data (on_data) until resume(); libcurl stops reading the socket,
  /// so the server's sends back up (TCP backpressure). May be called from inside on_data: the
  /// current chunk counts as consumed. The transfer's timeout still runs while paused.
  void pause();
  /// Delivers again; data held while paused arrives from a later loop iteration, never inside
  /// this call.
  void resume();
  /// True until the transfer finished or was cancelled.
  bool active() const;
  /// Lets the transfer run to completion without a handle: `done` still runs exactly once.
  void detach();

 private:
  friend class CurlMulti;
  explicit TransferHandle(std::weak_ptr<Transfer> transfer) : transfer_(std::move(transfer)) {}
  std::weak_ptr<Transfer> transfer_;
};

class CurlMulti {
 public:
  /// Initialises libcurl once per process and a multi handle on `loop`. Loop thread only.
  static Result<std::unique_ptr<CurlMulti>> create(Loop& loop);
  /// Cancels every transfer (their `done` gets Cancelled from a later iteration), closes the
  /// sockets and the timer.
  ~CurlMulti();
  CurlMulti(const CurlMulti&) = delete;
  CurlMulti& operator=(const CurlMulti&) = delete;

  /// One request, whole response in memory. `done` runs exactly once, never inside this call,
  /// with the response (any HTTP status: map error statuses with errc_for_http_status) or an
  /// Error: Timeout; BackendUnavailable (connection refused, unix socket missing, name not
  /// resolved); LimitExceeded (body over max_response_bytes); InvalidArgument (bad URL, method,
  /// header or TLS file); PolicyDenied (server certificate not trusted); UpstreamProtocol; Io;
  /// Cancelled. The message comes from curl_easy_strerror and CURLOPT_ERRORBUFFER; native is
  /// the CURLcode. Safe to call from any callback, on_data included.
  TransferHandle perform(CurlRequest request, Callback<CurlResponse> done);

  /// A streamed response (watches, pull progress, logs): see CurlStreamHandlers. Same errors
  /// as perform() except that no size limit applies. `handlers.done` is required.
  TransferHandle stream(CurlRequest request, CurlStreamHandlers handlers);

  /// Transfers started and not yet finished or cancelled (one cancelled from inside on_data
  /// is let go, and stops counting, in the next iteration).
  std::size_t active_transfers() const noexcept { return transfers_.size(); }
  Loop& loop() const noexcept { return loop_; }

 private:
  friend class TransferHandle;
  struct SocketWatch;
  explicit CurlMulti(Loop& loop);

  // The four callbacks that tie libcurl to libuv (bodies in multi.cpp).
  static int on_curl_socket(CURL* easy, curl_socket_t s, int what, void* userp, void* socketp);
  static int on_curl_timer(CURLM* multi, long timeout_ms, void* userp);
  static void on_uv_poll(uv_poll_t* poll, int status, int events);
  static void on_uv_timer(uv_timer_t* timer);

  TransferHandle start(CurlRequest request, CurlStreamHandlers handlers, bool streaming);
  void add(Transfer* t);
  void cancel(Transfer* t);
  void pause(Transfer* t);
  void resume(Transfer* t);
  /// Removes `t` from libcurl and from this multi, and schedules its `done` with `result`
  /// (nothing if `done` already ran or was scheduled). Never called inside a libcurl callback.
  void finish(Transfer* t, Result<CurlResponse> result);
  void unpause_now(Transfer* t);
  void socket_action(curl_socket_t s, int events);
  void drain_completed();
  void fail_all(const Error& error);
  void remove_watch(SocketWatch* w);
  void defer_socket_error(curl_socket_t s);
  void update_refs();

  Loop& loop_;
  CURLM* multi_ = nullptr;
  UvHandle<uv_timer_t> timer_;  // curl's one timeout
  std::unordered_map<Transfer*, std::shared_ptr<Transfer>> transfers_;
  std::unordered_map<curl_socket_t, std::unique_ptr<SocketWatch>> watches_;
  int in_curl_ = 0;       // > 0 while libcurl is on the stack: its API must not be re-entered
  bool refed_ = false;    // timer and polls ref'd (only while transfers exist)
  bool closing_ = false;  // in the destructor: curl's callbacks must not create watches
  std::shared_ptr<char> alive_ = std::make_shared<char>();  // for deferred tasks that need `this`
};

}  // namespace terminals::detail
