// PolicyApi: the policy and lifecycle routes (see policy_api.hpp).

#include "service/policy_api.hpp"

#include <cstdlib>
#include <ctime>

#include "json/json.hpp"
#include "terminals/log.hpp"
#include "uv/work.hpp"

namespace terminals::detail {

namespace {

constexpr std::string_view kPrefix = "/api/v1/policies";

std::string policy_json(const StoredPolicy& p) {
  JsonWriter w;
  w.object().field("id", p.id).key("data").raw(p.data).field("created_at", iso_time(p.created_at))
      .field("updated_at", iso_time(p.updated_at)).field("revision", p.revision);
  return w.end_object().take();
}

// The field an error is about: the message's first word ("cpu_limit: ..." / "cpu_limit '4' ...").
std::string field_of(const std::string& message) {
  auto end = message.find_first_of(": ");
  return message.substr(0, end == std::string::npos ? message.size() : end);
}

}  // namespace

std::string iso_time(std::chrono::system_clock::time_point t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(us / 1'000'000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lld+00:00", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(us % 1'000'000));
  return buf;
}

ApiResponse error_response(const Error& e) {
  switch (e.code) {
    case Errc::InvalidArgument: {
      std::string field = field_of(e.message);
      JsonWriter w;
      w.object().key("detail").array().object().field("type", "value_error").key("loc").array().value("body");
      if (field != "policy" && !field.empty()) w.value(field);
      w.end_array().field("msg", e.message).end_object().end_array();
      return {422, w.end_object().take()};
    }
    case Errc::PolicyDenied: return {400, detail_json(e.message)};
    case Errc::NotFound: return {404, detail_json(e.message)};
    case Errc::AlreadyExists: return {409, detail_json(e.message)};
    default: return {500, detail_json(e.message)};
  }
}

PolicyApi::PolicyApi(Loop& loop, std::shared_ptr<PolicyStore> store, std::shared_ptr<AuditLog> audit, Caps caps)
    : loop_(loop), store_(std::move(store)), audit_(std::move(audit)), caps_(std::move(caps)) {
  for (const auto& stored : store_->list()) {
    if (auto p = parse_policy(stored.data, Caps{}); p && p->max_terminals) max_terminals_[stored.id] = *p->max_terminals;
  }
}

PolicyApi::~PolicyApi() { *alive_ = false; }

bool PolicyApi::handles(std::string_view path) {
  return path == kPrefix || (path.starts_with(kPrefix) && path.size() > kPrefix.size() && path[kPrefix.size()] == '/');
}

void PolicyApi::later(MoveOnlyFunction<void(ApiResponse)> done, ApiResponse response) {
  loop_.defer([done = std::move(done), r = std::move(response)]() mutable { done(std::move(r)); });
}

void PolicyApi::write(MoveOnlyFunction<Result<ApiResponse>()> work, MoveOnlyFunction<void(ApiResponse)> done) {
  run_blocking<ApiResponse>(loop_, std::move(work), [done = std::move(done)](Result<ApiResponse> r) mutable {
    done(r ? std::move(*r) : error_response(r.error()));
  });
}

void PolicyApi::remember_max_terminals(const std::string& policy_id, std::optional<std::uint32_t> limit) {
  if (limit) {
    max_terminals_[policy_id] = *limit;
  } else {
    max_terminals_.erase(policy_id);
  }
}

void PolicyApi::audit(std::string_view action, const std::string& actor, const std::string& policy_id) {
  if (!audit_) return;
  if (auto s = audit_->record(action, {{"actor", actor}, {"policy_id", policy_id}}); !s) {
    log(LogLevel::Error, "audit", "cannot write the audit log: " + s.error().message);
  }
}

Result<std::optional<Schedule>> PolicyApi::parse_lifecycle(std::string_view json) {
  auto doc = parse_json(json);
  if (!doc || !doc->IsObject()) return Error(Errc::PolicyDenied, "Invalid lifecycle configuration: not a JSON object");
  auto reset = doc->FindMember("reset");
  if (reset == doc->MemberEnd() || reset->value.IsNull()) return std::optional<Schedule>();
  if (!reset->value.IsObject()) return Error(Errc::PolicyDenied, "Invalid lifecycle configuration: reset must be an object");
  auto schedule = json_string(reset->value, "schedule");
  if (!schedule || schedule->empty()) {
    return Error(Errc::PolicyDenied, "Invalid lifecycle configuration: reset.schedule must be a non-empty string");
  }
  std::string zone = "UTC";
  if (auto tz = reset->value.FindMember("timezone"); tz != reset->value.MemberEnd() && !tz->value.IsNull()) {
    if (!tz->value.IsString()) return Error(Errc::PolicyDenied, "Invalid lifecycle configuration: reset.timezone must be a string");
    zone = tz->value.GetString();
  }
  // Unlike the reference, an unknown zone is an error, not a silent UTC.
  auto tz = TimeZone::load(zone);
  if (!tz) return Error(Errc::PolicyDenied, "Invalid lifecycle configuration: reset.timezone: " + tz.error().message);
  auto s = Schedule::parse(*schedule, *tz);
  if (!s) return Error(Errc::PolicyDenied, "Invalid lifecycle configuration: reset.schedule: " + s.error().message);
  return std::optional<Schedule>(std::move(*s));
}

Result<std::optional<Schedule>> PolicyApi::schedule_for(const std::string& policy_id) const {
  return parse_lifecycle(store_->lifecycle(policy_id));
}

bool PolicyApi::has(const std::string& policy_id) const { return store_->get(policy_id).has_value(); }
std::size_t PolicyApi::count() const { return store_->list().size(); }

std::optional<std::uint32_t> PolicyApi::max_terminals(const std::string& policy_id) const {
  auto it = max_terminals_.find(policy_id);
  if (it == max_terminals_.end()) return std::nullopt;
  return it->second;
}

Result<TerminalSpec> PolicyApi::spec_for(const std::string& policy_id, const std::string& default_image) const {
  auto stored = store_->get(policy_id);
  if (!stored) return std::move(stored).error();
  // Stored data was validated when written; the caps are applied again below.
  auto p = parse_policy(stored->data, Caps{});
  if (!p) return Error(Errc::InvalidArgument, "stored policy '" + policy_id + "' is invalid: " + p.error().message);
  return policy_spec(*p, caps_, default_image);
}

void PolicyApi::handle(const std::string& method, const std::string& path, std::string body, std::string actor,
                       MoveOnlyFunction<void(ApiResponse)> done, std::string_view if_match) {
  std::string rest = path.substr(kPrefix.size());  // "", "/{id}" or "/{id}/lifecycle"
  auto not_allowed = [&](const char* allow) {
    later(std::move(done), {405, detail_json(std::string("Method Not Allowed (allowed: ") + allow + ")")});
  };
  if (rest.empty() || rest == "/") {
    if (method == "GET" || method == "HEAD") {
      JsonWriter w;
      w.array();
      for (const auto& p : store_->list()) w.raw(policy_json(p));
      return later(std::move(done), {200, w.end_array().take()});
    }
    if (method != "POST") return not_allowed("GET, POST");
    auto doc = parse_json(body);
    if (!doc || !doc->IsObject()) return later(std::move(done), error_response(Error(Errc::InvalidArgument, "policy: the body must be {\"id\": ..., \"data\": {...}}")));
    auto id = json_string(*doc, "id");
    if (!id) return later(std::move(done), error_response(Error(Errc::InvalidArgument, "id: required, a string")));
    std::string pid(*id);
    if (auto ok = check_policy_id(pid); !ok) return later(std::move(done), error_response(Error(Errc::InvalidArgument, "id: " + ok.error().message)));
    std::string data = "{}";
    if (auto d = doc->FindMember("data"); d != doc->MemberEnd() && !d->value.IsNull()) data = to_json(d->value);
    auto p = parse_policy(data, caps_);
    if (!p) return later(std::move(done), error_response(p.error()));
    std::string canonical = policy_to_json(*p);
    return write(
        [store = store_, pid, canonical]() -> Result<ApiResponse> {
          auto stored = store->create(pid, canonical);
          if (!stored) return std::move(stored).error();
          return ApiResponse{201, policy_json(*stored)};
        },
        [this, alive = std::weak_ptr<bool>(alive_), pid, actor, limit = p->max_terminals,
         done = std::move(done)](ApiResponse r) mutable {
          if (alive.lock() && r.status == 201) {
            remember_max_terminals(pid, limit);
            audit("policy.create", actor, pid);
          }
          done(std::move(r));
        });
  }

  std::string id = rest.substr(1);
  bool lifecycle = false;
  if (auto slash = id.find('/'); slash != std::string::npos) {
    if (id.substr(slash) != "/lifecycle") return later(std::move(done), {404, detail_json("Not Found")});
    id.resize(slash);
    lifecycle = true;
  }
  if (auto ok = check_policy_id(id); !ok) {
    if (method == "GET" || method == "DELETE" || method == "HEAD") {
      return later(std::move(done), {404, detail_json("Policy '" + id + "' not found")});
    }
    return later(std::move(done), error_response(Error(Errc::InvalidArgument, "id: " + ok.error().message)));
  }

  if (lifecycle) {
    if (method == "GET" || method == "HEAD") {
      JsonWriter w;
      w.object().field("policy_id", id).key("data").raw(store_->lifecycle(id));
      return later(std::move(done), {200, w.end_object().take()});
    }
    if (method != "PUT") return not_allowed("GET, PUT");
    auto doc = parse_json(body.empty() ? std::string("{}") : body);
    if (!doc || !doc->IsObject()) return later(std::move(done), {400, detail_json("Invalid lifecycle configuration: not a JSON object")});
    // Top-level nulls are dropped, as the reference drops them.
    rapidjson::Document clean(rapidjson::kObjectType);
    for (auto it = doc->MemberBegin(); it != doc->MemberEnd(); ++it) {
      if (it->value.IsNull()) continue;
      rapidjson::Value k(it->name, clean.GetAllocator()), v(it->value, clean.GetAllocator());
      clean.AddMember(k, v, clean.GetAllocator());
    }
    std::string data = to_json(clean);
    if (auto ok = parse_lifecycle(data); !ok) return later(std::move(done), error_response(ok.error()));
    return write(
        [store = store_, id, data]() -> Result<ApiResponse> {
          if (auto s = store->put_lifecycle(id, data); !s) return std::move(s).error();
          JsonWriter w;
          w.object().field("policy_id", id).key("data").raw(data);
          return ApiResponse{200, w.end_object().take()};
        },
        [this, alive = std::weak_ptr<bool>(alive_), id, actor, done = std::move(done)](ApiResponse r) mutable {
          if (alive.lock() && r.status == 200) audit("policy.lifecycle", actor, id);
          done(std::move(r));
        });
  }

  if (method == "GET" || method == "HEAD") {
    auto stored = store_->get(id);
    if (!stored) return later(std::move(done), error_response(stored.error()));
    return later(std::move(done), {200, policy_json(*stored)});
  }
  if (method == "PUT") {
    // If-Match: "3" or "\"3\"" (an ETag-style quoted revision); guards read-edit-write clients.
    std::optional<std::uint64_t> expected;
    if (!if_match.empty()) {
      std::string v(if_match);
      if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
      char* end = nullptr;
      unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || v.front() == '-') {
        return later(std::move(done), {400, detail_json("If-Match: '" + std::string(if_match) + "' is not a policy revision")});
      }
      expected = n;
    }
    auto p = parse_policy(body.empty() ? std::string("{}") : body, caps_);
    if (!p) return later(std::move(done), error_response(p.error()));
    std::string canonical = policy_to_json(*p);
    return write(
        [store = store_, id, canonical, expected]() -> Result<ApiResponse> {
          auto stored = store->put(id, canonical, expected);
          if (!stored) return std::move(stored).error();
          return ApiResponse{200, policy_json(*stored)};
        },
        [this, alive = std::weak_ptr<bool>(alive_), id, actor, limit = p->max_terminals,
         done = std::move(done)](ApiResponse r) mutable {
          if (alive.lock() && r.status == 200) {
            remember_max_terminals(id, limit);
            audit("policy.put", actor, id);
          }
          done(std::move(r));
        });
  }
  if (method == "DELETE") {
    return write(
        [store = store_, id]() -> Result<ApiResponse> {
          if (auto s = store->remove(id); !s) return std::move(s).error();
          return ApiResponse{200, R"({"ok":true})"};
        },
        [this, alive = std::weak_ptr<bool>(alive_), id, actor, done = std::move(done)](ApiResponse r) mutable {
          if (alive.lock() && r.status == 200) {
            remember_max_terminals(id, std::nullopt);
            audit("policy.delete", actor, id);
          }
          done(std::move(r));
        });
  }
  not_allowed("GET, PUT, DELETE");
}

}  // namespace terminals::detail
