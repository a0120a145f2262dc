#pragma once

// Authentication for `terminals-cli serve` (data plane, WebSocket and admin routes).
//
// Credentials, in the order they are tried for a data-plane request:
//   * open mode (explicit flag): nothing is checked; X-User-Id is still required and validated.
//   * `Authorization: Bearer <service key>`: the caller is trusted (Open WebUI's backend or an
//     operator) and names the user in X-User-Id, which is required.
//   * Open WebUI mode (open_webui_url set): `Authorization: Bearer <user token>`, checked
//     offline as an HS256 JWT when jwt_secret is set, else by GET {url}/api/v1/auths/ with that
//     token (the user id is the response's "id"). X-User-Id is optional and, when present, must
//     equal the verified id.
//
// Differences from the reference, on purpose: X-User-Id is validated (never empty or
// path-like), key comparisons are constant-time everywhere, the service key works alongside
// Open WebUI tokens, failed Open WebUI validations are cached briefly, the cache evicts its
// oldest entries instead of being cleared wholesale, and concurrent validations of one token
// share a single upstream call.
//
// Errors: every authentication failure is an Error with source ErrorSource::Http and native =
// the HTTP status to answer with (400, 401, 403, 502, 503), its code consistent with it
// (400 InvalidArgument; 401/403 PolicyDenied; 502 BackendUnavailable when Open WebUI is
// unreachable, UpstreamProtocol when it answers garbage; 503 LimitExceeded). The message is
// safe to return to the client (`{"detail": message}` or a close reason): it never contains a
// token or key. auth_http_status / auth_ws_close_code do the mapping.
//
// Threading and lifetime follow loop.hpp: loop thread only; callbacks run exactly once, never
// inside the call that started them; destroying the Authenticator completes pending
// validations with Cancelled (503).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "terminals/function.hpp"
#include "terminals/http.hpp"
#include "terminals/loop.hpp"
#include "terminals/result.hpp"

namespace terminals::detail {

class CurlMulti;
class TransferHandle;

struct AuthOptions {
  std::string service_key;                 ///< required unless open_mode
  std::string open_webui_url;              ///< empty: Open WebUI mode off; else http(s)://host[:port][/prefix]
  std::chrono::seconds token_cache_ttl{60};  ///< successful validations; 0 disables the cache
  std::string jwt_secret;                  ///< non-empty: verify Open WebUI JWTs offline (HS256)
  bool open_mode = false;                  ///< no auth at all (the caller logs a loud warning)
  std::size_t max_cache_entries = 100000;  ///< beyond it the oldest entries are evicted
  /// Tokens rejected by Open WebUI are remembered this long (capped by token_cache_ttl), so a
  /// client retrying a bad token does not hit Open WebUI each time. Transport errors are never
  /// cached.
  std::chrono::seconds negative_cache_ttl{5};
  /// One call to Open WebUI, connect included.
  std::chrono::milliseconds open_webui_timeout{10'000};
  /// Distinct tokens being validated at once; beyond it: 503.
  std::size_t max_pending_validations = 1024;
  /// Clock skew allowed for exp/nbf of offline-verified JWTs.
  std::chrono::seconds jwt_leeway{30};
};

struct Identity {
  std::string user_id;
  bool service = false;  ///< authenticated with the service key (open mode: false)
};

/// The accepted user ids (X-User-Id, ?user_id=, and the ids Open WebUI returns): 1 to 255
/// bytes; the first an ASCII letter or digit; the rest ASCII letters, digits or `. _ - @ + = ~`.
/// That covers Open WebUI's UUIDs, user names and e-mail addresses, and rules out empty,
/// "." / "..", slashes, spaces, control characters, ':' and non-ASCII, so an id is safe as a
/// path component, a label value after hashing, and a key part.
bool is_valid_user_id(std::string_view id) noexcept;
/// InvalidArgument (400) "Invalid X-User-Id: ..." for an invalid id (`what` names the source).
Status validate_user_id(std::string_view id, std::string_view what = "X-User-Id");

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, one header only, token
/// non-empty without spaces), or a 401 error: "Missing Authorization header" / "Invalid
/// Authorization header".
Result<std::string_view> bearer_token(const RequestHead& head);

/// An auth Error for `status` (400, 401, 403, 502, 503), shaped as described above.
Error auth_error(int status, std::string message);
/// The HTTP status for an authentication Error: its native status when it came from here,
/// else by code (PolicyDenied 401, InvalidArgument 400, BackendUnavailable/UpstreamProtocol/
/// Timeout 502, LimitExceeded/Cancelled 503, anything else 500).
int auth_http_status(const Error& e);
/// The WebSocket close code (§2.1): 4002 for a missing or invalid user_id (400), 4003 for a
/// user mismatch (403), 4001 for everything else (bad or unverifiable token, Open WebUI down).
/// The close reason is the Error's message.
int auth_ws_close_code(const Error& e);

class Authenticator {
 public:
  /// Checks the options: service_key non-empty unless open_mode (any shape is accepted here,
  /// load_or_create_service_key enforces the strength of configured keys); open_webui_url is
  /// http:// or https:// (a trailing '/' is dropped). `curl` is the loop's control-plane client,
  /// used for Open WebUI calls; when null and one is needed (Open WebUI mode without
  /// jwt_secret), the Authenticator creates its own. InvalidArgument on bad options.
  static Result<std::unique_ptr<Authenticator>> create(Loop& loop, AuthOptions options,
                                                       CurlMulti* curl = nullptr);
  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  /// A data-plane HTTP request (see the file comment). Failures: 401 missing/invalid
  /// Authorization or token, or X-User-Id missing with the service key or in open mode; 400
  /// empty, repeated or invalid X-User-Id; 403 X-User-Id differs from the verified user; 502
  /// Open WebUI unreachable or answering something other than 200 with an "id" or 401/403;
  /// 503 too many validations in flight. `head` is read during the call only.
  void authenticate(const RequestHead& head, Callback<Identity> done);

  /// A WebSocket after its first message (§2.1): `token` from {"type":"auth","token":...},
  /// `claimed_user_id` from ?user_id=. The user id is required in every mode (400, close 4002,
  /// when absent, empty or invalid); the token is the service key (the user id is trusted) or,
  /// in Open WebUI mode, a user token whose verified id must equal the claim (403, 4003).
  /// Open mode accepts any token. Views are read during the call only.
  void authenticate_token(std::string_view token, std::optional<std::string_view> claimed_user_id,
                          Callback<Identity> done);

  /// Admin routes: whether `bearer_token` is the service key (constant time; the length does
  /// not leak either). In open mode every caller is admin: returns true.
  bool is_service_key(std::string_view bearer_token) const;
  /// Admin routes, whole check: ok, or 401 ("Missing Authorization header", "Invalid
  /// Authorization header", "Invalid admin API key"). Open WebUI user tokens never grant admin.
  Status authenticate_admin(const RequestHead& head) const;

  bool open_mode() const noexcept { return options_.open_mode; }
  bool open_webui_mode() const noexcept { return !options_.open_webui_url.empty(); }

  /// Upstream calls made to Open WebUI so far, entries cached, validations in flight (tests,
  /// metrics).
  std::uint64_t upstream_calls() const noexcept { return upstream_calls_; }
  std::size_t cache_size() const noexcept { return cache_.size(); }
  std::size_t pending_validations() const noexcept { return pending_.size(); }

 private:
  using UserCallback = MoveOnlyFunction<void(Result<std::string>)>;
  struct CacheEntry {
    Result<std::string> user{std::string()};  // the user id, or the (401) error to repeat
    std::chrono::steady_clock::time_point expires;
    std::list<std::string>::iterator order;
  };
  struct Pending;

  Authenticator(Loop& loop, AuthOptions options);

  /// Checks a service key or Open WebUI token (not the X-User-Id); `done` gets the identity
  /// (user_id empty for the service key and open mode) or the error, never synchronously.
  void verify_credential(std::string_view token, MoveOnlyFunction<void(Result<Identity>)> done);
  void validate_open_webui_token(std::string_view token, UserCallback done);
  void finish_upstream(const std::string& key, Result<std::string> user);
  void cache_put(const std::string& key, Result<std::string> user, std::chrono::seconds ttl);
  const CacheEntry* cache_get(const std::string& key);
  template <class T>
  void complete(Callback<T> done, Result<T> result);

  Loop& loop_;
  AuthOptions options_;
  std::string service_key_digest_;  // raw sha256 of the key: compared instead of the key itself
  CurlMulti* curl_ = nullptr;
  std::unique_ptr<CurlMulti> own_curl_;
  std::unordered_map<std::string, CacheEntry> cache_;  // by sha256_hex(token)
  std::list<std::string> cache_order_;                 // oldest first
  std::unordered_map<std::string, std::unique_ptr<Pending>> pending_;  // single flight, by digest
  std::uint64_t upstream_calls_ = 0;
  std::shared_ptr<char> alive_ = std::make_shared<char>();
};

}  // namespace terminals::detail
