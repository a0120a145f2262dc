#pragma once

// PolicyApi: the reference's policy routes on top of a PolicyStore.
//   GET    /api/v1/policies                     every policy, oldest first
//   POST   /api/v1/policies                     {"id", "data"} -> 201; 409 if it exists
//   GET    /api/v1/policies/{id}                -> {"id","data","created_at","updated_at"}
//   PUT    /api/v1/policies/{id}                body = the policy object: create or replace
//   DELETE /api/v1/policies/{id}                -> {"ok": true}
//   GET    /api/v1/policies/{id}/lifecycle      -> {"policy_id", "data"}
//   PUT    /api/v1/policies/{id}/lifecycle      {"reset": {"schedule", "timezone"}}
// Rejections: 422 (FastAPI's shape, `loc` naming the field) for wrong types and values, 400
// {"detail"} for caps, allow-lists and lifecycle keys. Writes go to the thread pool (the store
// fsyncs); every change is recorded in the audit log. Responses also carry "revision" (ours).

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "terminals/function.hpp"
#include "terminals/loop.hpp"
#include "terminals/policy.hpp"
#include "terminals/policy_store.hpp"
#include "terminals/schedule.hpp"

namespace terminals::detail {

struct ApiResponse {
  int status = 200;
  std::string body;  // JSON
};

class PolicyApi {
 public:
  /// The store and the audit log are shared with the pool threads that write (a write in flight
  /// keeps them alive past this object).
  PolicyApi(Loop& loop, std::shared_ptr<PolicyStore> store, std::shared_ptr<AuditLog> audit, Caps caps);
  ~PolicyApi();

  /// True for /api/v1/policies and everything under it.
  static bool handles(std::string_view path);
  /// Answers one request; `done` runs once, never inside this call. `if_match` is the request's
  /// If-Match header: a PUT then only replaces the policy at that revision ("0": only if it does
  /// not exist yet), else 409; a bad value is 400.
  void handle(const std::string& method, const std::string& path, std::string body, std::string actor,
              MoveOnlyFunction<void(ApiResponse)> done, std::string_view if_match = {});

  /// The spec of a stored policy, caps checked again. NotFound "Policy '<id>' not found".
  Result<TerminalSpec> spec_for(const std::string& policy_id, const std::string& default_image) const;
  /// Whether a policy of this id is stored.
  bool has(const std::string& policy_id) const;
  /// The policy's max_terminals, from memory (this is asked on the request path, so stored
  /// policies are not re-read or re-parsed per request). Empty when none or no such policy.
  std::optional<std::uint32_t> max_terminals(const std::string& policy_id) const;
  std::size_t count() const;

  /// The reset schedule of a policy's lifecycle configuration; empty when it has none.
  /// InvalidArgument for a stored configuration that no longer parses (a time zone removed).
  Result<std::optional<Schedule>> schedule_for(const std::string& policy_id) const;
  /// Validates a lifecycle configuration: {"reset": {"schedule": "...", "timezone": "..."}}.
  static Result<std::optional<Schedule>> parse_lifecycle(std::string_view json);

 private:
  void write(MoveOnlyFunction<Result<ApiResponse>()> work, MoveOnlyFunction<void(ApiResponse)> done);
  void later(MoveOnlyFunction<void(ApiResponse)> done, ApiResponse response);
  void audit(std::string_view action, const std::string& actor, const std::string& policy_id);
  void remember_max_terminals(const std::string& policy_id, std::optional<std::uint32_t> limit);

  Loop& loop_;
  std::shared_ptr<PolicyStore> store_;
  std::shared_ptr<AuditLog> audit_;
  Caps caps_;
  std::map<std::string, std::uint32_t> max_terminals_;  // policies that set one; kept with the store
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

/// An Error as an HTTP response: InvalidArgument -> 422 in FastAPI's shape with loc ["body",
/// field] (the field is the message's first word, before ':' or ' '), PolicyDenied -> 400,
/// NotFound -> 404, AlreadyExists -> 409, anything else 500; all with the message.
ApiResponse error_response(const Error& error);

/// ISO-8601 UTC with "+00:00", as the reference renders timestamps.
std::string iso_time(std::chrono::system_clock::time_point t);

}  // namespace terminals::detail
