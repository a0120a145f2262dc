#pragma once

/// @file policy.hpp
/// `Policy`: what the terminals of one policy id get (image, limits, environment, storage,
/// network, idle timeout, isolation). The reference's fields with its names, plus ours
/// (`isolation`, `network`, `pids_limit`, `max_terminals`). Policies are validated when written
/// and their caps checked again when a terminal is provisioned, because the operator's caps
/// (TERMINALS_MAX_*) may have been tightened since.
///
/// Unlike the reference, a value over a cap is refused (the reference clamped it silently, and
/// skipped the check entirely for spellings it could not compare, such as "2000m" or "8G"), and
/// every quantity is compared in exact units whatever its spelling (quantity.hpp).

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/backend.hpp"
#include "terminals/export.hpp"
#include "terminals/quantity.hpp"
#include "terminals/result.hpp"

namespace terminals {

struct Policy {
  std::optional<std::string> image;
  /// Extra environment for the terminal (values stringified; null values dropped).
  std::map<std::string, std::string> env;
  std::optional<std::string> cpu_limit;     ///< as written: "2", "0.5", "500m"
  std::optional<std::string> memory_limit;  ///< as written: "4Gi", "512M", "1.5Gi"
  std::optional<std::string> storage;       ///< as written
  std::optional<std::string> storage_mode;  ///< "per-user" | "shared" | "shared-rwo"
  std::optional<std::int64_t> idle_timeout_minutes;  ///< 0: never idle-stopped
  std::optional<bool> restricted;           ///< restricted pod defaults (Kubernetes)
  /// Kubernetes objects, kept as JSON object text (empty: not set). The camelCase spellings
  /// (podSecurityContext, ...) are read too and stored under these names.
  std::string pod_security_context, container_security_context, pod_template;

  // Ours.
  std::optional<Isolation> isolation;  ///< local backend: none | user | sandbox
  /// "none" (loopback only), "host", or an egress allow-list: JSON {"allow": ["pypi.org",
  /// "10.0.0.0/8"]}. A backend that cannot enforce an allow-list refuses to provision it.
  std::optional<std::string> network;
  std::vector<std::string> egress_allow;  ///< the allow-list when network is "allow"
  std::optional<std::uint32_t> pids_limit;
  /// At most this many terminals of this policy run at once; more users get 429.
  std::optional<std::uint32_t> max_terminals;

  /// Keys we do not know, kept verbatim (JSON object text, "{}" when none) as the reference
  /// keeps them.
  std::string extra = "{}";
};

/// Parses and validates a policy object. Null values are dropped first. Errors name the field
/// and the rule, as "<field>: <rule>":
///  - InvalidArgument (HTTP 422): not a JSON object, a field of the wrong type or out of range
///    ("cpu_limit: 'abc' is not a CPU quantity ..."), an unknown storage_mode, a bad env name,
///    env keys the orchestrator sets itself (OPEN_TERMINAL_API_KEY);
///  - PolicyDenied (HTTP 400): over a cap or 0 while a cap is set, an image outside
///    TERMINALS_ALLOWED_IMAGES, lifecycle keys in a policy ("reset", "lifecycle", ...), and the
///    reference's restricted-mode env rules.
TERMINALS_API Result<Policy> parse_policy(std::string_view json, const Caps& caps);

/// The policy as a JSON object: the fields that are set (quantities as written), then the extra
/// keys. parse_policy(to_json(p)) gives p back.
TERMINALS_API std::string policy_to_json(const Policy& policy);

/// What a terminal of this policy is provisioned with. Checks the caps again (PolicyDenied with
/// the same messages as parse_policy). A cap is also the limit of a policy that sets none (the
/// reference gave such terminals no limit at all). `default_image` is used when the policy names
/// none. Caps hold inside `pod_template` too: every container's limits and requests, the pod's
/// containers together, a limit on every sidecar while a cap is set, and the images. The
/// environment follows the reference: the policy's env, then OPEN_TERMINAL_CPU_LIMIT and
/// OPEN_TERMINAL_CPU_COUNT for a cpu_limit, OPEN_TERMINAL_MEMORY_LIMIT and
/// OPEN_TERMINAL_MEMORY_BYTES for a memory_limit.
TERMINALS_API Result<TerminalSpec> policy_spec(const Policy& policy, const Caps& caps,
                                               const std::string& default_image);

/// Policy ids: 1-128 characters from [A-Za-z0-9._-], not starting with '.'. InvalidArgument.
TERMINALS_API Status check_policy_id(std::string_view id);

}  // namespace terminals
