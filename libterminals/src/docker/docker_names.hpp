#pragma once

// Names and labels of Docker terminals: the reference's deterministic container names (so a
// deployment that switches keeps finding its containers) without its collisions, and the labels
// that let a restarted orchestrator adopt exactly its own containers.

#include <map>
#include <string>
#include <string_view>

namespace terminals::detail {

// The reference's labels, then ours.
inline constexpr std::string_view kLabelManagedBy = "app.kubernetes.io/managed-by";
inline constexpr std::string_view kManagedByValue = "terminals";
inline constexpr std::string_view kLabelUserId = "openwebui.com/user-id";
inline constexpr std::string_view kLabelPolicy = "openwebui.com/policy";
inline constexpr std::string_view kLabelContextId = "openwebui.com/context-id";
inline constexpr std::string_view kLabelContextType = "openwebui.com/context-type";
inline constexpr std::string_view kLabelContextHash = "openwebui.com/context-hash";
inline constexpr std::string_view kLabelUserHash = "io.libterminals.user-hash";
/// A hash of the data directory: which orchestrator installation owns the container.
inline constexpr std::string_view kLabelInstance = "io.libterminals.instance";
/// How the agent is reached: "unix", "port" or "network:<name>".
inline constexpr std::string_view kLabelEndpoint = "io.libterminals.endpoint";
/// On an image: it runs our agent, which listens on the unix socket at this container path
/// when TERMINALS_AGENT_LISTEN says so.
inline constexpr std::string_view kImageLabelAgentListen = "io.libterminals.agent-listen";

/// sha256(text) in hex, cut to 12 characters (the reference's user and context hashes).
std::string hash12(std::string_view text);

/// The policy id lower-cased, [^a-z0-9-] turned into '-', '-' trimmed at both ends, cut to 20
/// characters (then trimmed again).
std::string policy_slug(std::string_view policy_id);

/// `<prefix>-<hash12(user)>` for policy "default" (or ""), else `-<slug>` appended, plus
/// `-<hash of the policy id, 8>` when the slug is not the id itself (two ids that slug alike,
/// "Team A" and "team-a", must not share a container), plus `-<hash12(context)>` for a context
/// other than "" / "default".
std::string container_name(std::string_view prefix, std::string_view user_id, std::string_view policy_id,
                           std::string_view context_id);

/// "chat" for "chat:42", "default" for "" and "default", else the text before ':' (or the
/// whole id when it has none).
std::string context_type(std::string_view context_id);

/// A capability in the engine's spelling: upper-cased, without "CAP_" ("cap_net_raw" is
/// NET_RAW). Empty when it is not a capability name (anything but letters and '_').
std::string normalize_capability(std::string_view name);

/// The labels a terminal's container carries.
std::map<std::string, std::string> terminal_labels(std::string_view instance, std::string_view user_id,
                                                   std::string_view policy_id, std::string_view context_id,
                                                   std::string_view endpoint_kind);

}  // namespace terminals::detail
