#include "auth/authenticator.hpp"

#include <algorithm>
#include <ctime>

#include "auth/jwt.hpp"
#include "curl/multi.hpp"
#include "json/json.hpp"
#include "terminals/log.hpp"
#include "util/crypto.hpp"

namespace terminals::detail {

namespace {

constexpr std::size_t kMaxUserIdBytes = 255;
// Longer bearer tokens are refused before hashing or sending them anywhere.
constexpr std::size_t kMaxTokenBytes = 8 * 1024;

bool is_alnum(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool is_user_id_char(char c) noexcept {
  switch (c) {
    case '.': case '_': case '-': case '@': case '+': case '=': case '~':
      return true;
    default:
      return is_alnum(c);
  }
}

}  // namespace

bool is_valid_user_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > kMaxUserIdBytes || !is_alnum(id.front())) return false;
  return std::all_of(id.begin(), id.end(), is_user_id_char);
}

Status validate_user_id(std::string_view id, std::string_view what) {
  if (is_valid_user_id(id)) return {};
  std::string why;
  if (id.empty()) {
    why = "empty";
  } else if (id.size() > kMaxUserIdBytes) {
    why = "longer than 255 bytes";
  } else {
    why = "must start with a letter or digit and contain only letters, digits and . _ - @ + = ~";
  }
  return auth_error(400, "Invalid " + std::string(what) + ": " + why);
}

Error auth_error(int status, std::string message) {
  Errc code = Errc::Internal;
  switch (status) {
    case 400: code = Errc::InvalidArgument; break;
    case 401: case 403: code = Errc::PolicyDenied; break;
    case 502: code = Errc::BackendUnavailable; break;
    case 503: code = Errc::LimitExceeded; break;
    default: break;
  }
  return Error(code, std::move(message), ErrorSource::Http, status);
}

int auth_http_status(const Error& e) {
  if (e.source == ErrorSource::Http && e.native >= 400 && e.native <= 599) return e.native;
  switch (e.code) {
    case Errc::PolicyDenied: return 401;
    case Errc::InvalidArgument: return 400;
    case Errc::BackendUnavailable:
    case Errc::UpstreamProtocol:
    case Errc::Timeout: return 502;
    case Errc::LimitExceeded:
    case Errc::Cancelled: return 503;
    default: return 500;
  }
}

int auth_ws_close_code(const Error& e) {
  switch (auth_http_status(e)) {
    case 400: return 4002;
    case 403: return 4003;
    default: return 4001;
  }
}

Result<std::string_view> bearer_token(const RequestHead& head) {
  std::size_t n = head.headers.count("Authorization");
  if (n == 0) return auth_error(401, "Missing Authorization header");
  if (n > 1) return auth_error(401, "Invalid Authorization header");
  std::string_view value = *head.headers.get("Authorization");
  auto space = value.find(' ');
  if (space == std::string_view::npos || !iequals(value.substr(0, space), "bearer")) {
    return auth_error(401, "Invalid Authorization header");
  }
  std::string_view token = value.substr(space + 1);
  while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
  if (token.empty() || token.size() > kMaxTokenBytes ||
      std::any_of(token.begin(), token.end(), [](char c) { return c <= 0x20 || c == 0x7F; })) {
    return auth_error(401, "Invalid Authorization header");
  }
  return token;
}

// ---------------------------------------------------------------------------------------------

struct Authenticator::Pending {
  std::vector<UserCallback> waiters;
  TransferHandle transfer;
};

Authenticator::Authenticator(Loop& loop, AuthOptions options)
    : loop_(loop), options_(std::move(options)) {}

Result<std::unique_ptr<Authenticator>> Authenticator::create(Loop& loop, AuthOptions options,
                                                             CurlMulti* curl) {
  if (!options.open_mode) {
    if (options.service_key.empty()) {
      return Error(Errc::InvalidArgument, "a service key is required unless open mode is enabled");
    }
    std::string& url = options.open_webui_url;
    while (!url.empty() && url.back() == '/') url.pop_back();
    if (!url.empty() && url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      return Error(Errc::InvalidArgument, "TERMINALS_OPEN_WEBUI_URL must start with http:// or https://");
    }
    if (!url.empty() && url.find_first_of(" \t\r\n?#") != std::string::npos) {
      return Error(Errc::InvalidArgument, "TERMINALS_OPEN_WEBUI_URL must not contain spaces, '?' or '#'");
    }
  }
  if (options.token_cache_ttl.count() < 0 || options.negative_cache_ttl.count() < 0) {
    return Error(Errc::InvalidArgument, "token cache TTLs must not be negative");
  }
  std::unique_ptr<Authenticator> auth(new Authenticator(loop, std::move(options)));
  if (!auth->options_.service_key.empty()) {
    unsigned char d[32];
    sha256_raw(auth->options_.service_key, d);
    auth->service_key_digest_.assign(reinterpret_cast<const char*>(d), sizeof(d));
  }
  if (!auth->options_.open_mode && auth->open_webui_mode() && auth->options_.jwt_secret.empty()) {
    if (curl) {
      auth->curl_ = curl;
    } else {
      auto own = CurlMulti::create(loop);
      if (!own) return std::move(own).error();
      auth->own_curl_ = std::move(*own);
      auth->curl_ = auth->own_curl_.get();
    }
  }
  return auth;
}

Authenticator::~Authenticator() {
  // Waiters still get their one call; the transfers' own `done` then finds alive_ gone.
  for (auto& [key, pending] : pending_) {
    for (auto& waiter : pending->waiters) {
      loop_.defer([w = std::move(waiter)]() mutable {
        w(auth_error(503, "Authentication cancelled: the server is shutting down"));
      });
    }
  }
  pending_.clear();
  alive_.reset();
}

template <class T>
void Authenticator::complete(Callback<T> done, Result<T> result) {
  loop_.defer([done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
}

bool Authenticator::is_service_key(std::string_view bearer) const {
  if (options_.open_mode) return true;
  if (service_key_digest_.empty()) return false;
  // Digests have one length, so neither the key's length nor its prefix leaks.
  unsigned char d[32];
  sha256_raw(bearer, d);
  return constant_time_equals(std::string_view(reinterpret_cast<const char*>(d), sizeof(d)),
                              service_key_digest_);
}

Status Authenticator::authenticate_admin(const RequestHead& head) const {
  if (options_.open_mode) return {};
  auto token = bearer_token(head);
  if (!token) return std::move(token).error();
  if (!is_service_key(*token)) return auth_error(401, "Invalid admin API key");
  return {};
}

void Authenticator::authenticate(const RequestHead& head, Callback<Identity> done) {
  std::size_t claims = head.headers.count("X-User-Id");
  if (claims > 1) return complete(std::move(done), Result<Identity>(auth_error(400, "Repeated X-User-Id header")));
  std::optional<std::string> claimed;
  if (claims == 1) {
    std::string_view value = *head.headers.get("X-User-Id");
    auto ok = validate_user_id(value);
    if (!ok) return complete(std::move(done), Result<Identity>(std::move(ok).error()));
    claimed = std::string(value);
  }
  if (options_.open_mode) {
    if (!claimed) return complete(std::move(done), Result<Identity>(auth_error(401, "Missing X-User-Id header")));
    return complete(std::move(done), Result<Identity>(Identity{std::move(*claimed), false}));
  }
  auto token = bearer_token(head);
  if (!token) return complete(std::move(done), Result<Identity>(std::move(token).error()));
  verify_credential(*token, [claimed = std::move(claimed), done = std::move(done)](Result<Identity> r) mutable {
    if (!r) return done(std::move(r));
    if (r->service) {
      // The service key speaks for any user, so it must say which one.
      if (!claimed) return done(auth_error(401, "Missing X-User-Id header"));
      return done(Identity{std::move(*claimed), true});
    }
    if (claimed && *claimed != r->user_id) {
      return done(auth_error(403, "X-User-Id does not match authenticated identity"));
    }
    done(std::move(r));
  });
}

void Authenticator::authenticate_token(std::string_view token, std::optional<std::string_view> claimed_user_id,
                                       Callback<Identity> done) {
  if (!claimed_user_id || claimed_user_id->empty()) {
    return complete(std::move(done), Result<Identity>(auth_error(400, "Missing user_id")));
  }
  auto ok = validate_user_id(*claimed_user_id, "user_id");
  if (!ok) return complete(std::move(done), Result<Identity>(std::move(ok).error()));
  std::string claimed(*claimed_user_id);
  if (options_.open_mode) return complete(std::move(done), Result<Identity>(Identity{std::move(claimed), false}));
  if (token.empty() || token.size() > kMaxTokenBytes) {
    return complete(std::move(done), Result<Identity>(auth_error(401, open_webui_mode() ? "Invalid token" : "Invalid API key")));
  }
  verify_credential(token, [claimed = std::move(claimed), done = std::move(done)](Result<Identity> r) mutable {
    if (!r) return done(std::move(r));
    if (r->service) return done(Identity{std::move(claimed), true});
    if (claimed != r->user_id) return done(auth_error(403, "user_id does not match authenticated identity"));
    done(std::move(r));
  });
}

void Authenticator::verify_credential(std::string_view token, MoveOnlyFunction<void(Result<Identity>)> done) {
  if (is_service_key(token)) return complete<Identity>(std::move(done), Identity{std::string(), true});
  if (!open_webui_mode()) return complete<Identity>(std::move(done), auth_error(401, "Invalid API key"));
  validate_open_webui_token(token, [done = std::move(done)](Result<std::string> user) mutable {
    if (!user) return done(std::move(user).error());
    done(Identity{std::move(*user), false});
  });
}

void Authenticator::validate_open_webui_token(std::string_view token, UserCallback done) {
  if (!options_.jwt_secret.empty()) {
    // Offline: cheap enough to check every time, and exp is then honoured to the second.
    auto now = static_cast<std::int64_t>(std::time(nullptr));
    auto claims = verify_jwt_hs256(token, options_.jwt_secret, now, options_.jwt_leeway.count());
    Result<std::string> user = std::string();
    if (!claims) {
      user = claims.error().code == Errc::PolicyDenied ? auth_error(401, claims.error().message)
                                                       : auth_error(500, "token verification failed");
    } else if (!is_valid_user_id(claims->id)) {
      user = auth_error(401, "Invalid token: unusable user id");
    } else {
      user = std::move(claims->id);
    }
    return complete<std::string>(std::move(done), std::move(user));
  }

  std::string key = sha256_hex(token);
  if (const CacheEntry* hit = cache_get(key)) return complete<std::string>(std::move(done), hit->user);
  auto it = pending_.find(key);
  if (it != pending_.end()) {
    it->second->waiters.push_back(std::move(done));
    return;
  }
  if (pending_.size() >= options_.max_pending_validations) {
    return complete<std::string>(std::move(done), auth_error(503, "Too many token validations in progress; retry shortly"));
  }

  CurlRequest request;
  request.method = "GET";
  request.url = options_.open_webui_url + "/api/v1/auths/";
  request.headers.add("Accept", "application/json");
  request.bearer_token = std::string(token);
  request.timeout = options_.open_webui_timeout;
  request.connect_timeout = std::min(options_.open_webui_timeout, std::chrono::milliseconds(5'000));
  request.max_response_bytes = 1u << 20;

  auto pending = std::make_unique<Pending>();
  pending->waiters.push_back(std::move(done));
  Pending* p = pending.get();
  pending_.emplace(key, std::move(pending));
  ++upstream_calls_;
  std::weak_ptr<char> alive = alive_;
  p->transfer = curl_->perform(std::move(request), [this, alive, key](Result<CurlResponse> r) {
    if (alive.expired()) return;
    Result<std::string> user = std::string();
    if (!r) {
      if (r.error().code == Errc::Cancelled) {
        user = auth_error(503, "Token validation cancelled");
      } else {
        log(LogLevel::Warning, "auth", "cannot reach Open WebUI at " + options_.open_webui_url + ": " + r.error().to_string());
        user = auth_error(502, "Failed to reach Open WebUI");
      }
    } else if (r->status == 401 || r->status == 403) {
      user = auth_error(401, "Invalid token");
    } else if (r->status != 200) {
      log(LogLevel::Warning, "auth", "Open WebUI answered the token check with HTTP " + std::to_string(r->status));
      user = Error(Errc::UpstreamProtocol, "Open WebUI answered the token check with HTTP " + std::to_string(r->status),
                   ErrorSource::Http, 502);
    } else {
      auto doc = parse_json(r->body);
      std::optional<std::string_view> id;
      if (doc && doc->IsObject()) id = json_string(*doc, "id");
      if (!id || !is_valid_user_id(*id)) {
        log(LogLevel::Warning, "auth", "Open WebUI answered the token check without a usable \"id\"");
        user = Error(Errc::UpstreamProtocol, "Open WebUI answered without a valid user id", ErrorSource::Http, 502);
      } else {
        user = std::string(*id);
      }
    }
    finish_upstream(key, std::move(user));
  });
}

void Authenticator::finish_upstream(const std::string& key, Result<std::string> user) {
  if (user) {
    cache_put(key, user, options_.token_cache_ttl);
  } else if (auth_http_status(user.error()) == 401) {
    // Only Open WebUI's own "no": transport trouble must not lock a valid token out.
    cache_put(key, user, std::min(options_.negative_cache_ttl, options_.token_cache_ttl));
  }
  auto it = pending_.find(key);
  if (it == pending_.end()) return;
  std::unique_ptr<Pending> pending = std::move(it->second);
  pending_.erase(it);
  // A waiter may destroy this Authenticator: nothing below touches members.
  std::vector<UserCallback> waiters = std::move(pending->waiters);
  pending.reset();
  for (auto& waiter : waiters) waiter(user);
}

void Authenticator::cache_put(const std::string& key, Result<std::string> user, std::chrono::seconds ttl) {
  if (ttl.count() <= 0 || options_.max_cache_entries == 0) return;
  auto existing = cache_.find(key);
  if (existing != cache_.end()) {
    cache_order_.erase(existing->second.order);
    cache_.erase(existing);
  }
  while (cache_.size() >= options_.max_cache_entries && !cache_order_.empty()) {
    cache_.erase(cache_order_.front());
    cache_order_.pop_front();
  }
  cache_order_.push_back(key);
  CacheEntry entry;
  entry.user = std::move(user);
  entry.expires = std::chrono::steady_clock::now() + ttl;
  entry.order = std::prev(cache_order_.end());
  cache_.emplace(key, std::move(entry));
}

const Authenticator::CacheEntry* Authenticator::cache_get(const std::string& key) {
  auto it = cache_.find(key);
  if (it == cache_.end()) return nullptr;
  if (std::chrono::steady_clock::now() >= it->second.expires) {
    cache_order_.erase(it->second.order);
    cache_.erase(it);
    return nullptr;
  }
  return &it->second;
}

}  // namespace terminals::detail
