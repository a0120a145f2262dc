// Names and labels of Docker terminals (see docker_names.hpp).

#include "docker/docker_names.hpp"

#include <cctype>

#include "util/crypto.hpp"

namespace terminals::detail {

namespace {
bool is_default_context(std::string_view c) { return c.empty() || c == "default"; }
}  // namespace

std::string hash12(std::string_view text) { return sha256_hex(text).substr(0, 12); }

std::string policy_slug(std::string_view policy_id) {
  std::string slug;
  for (char c : policy_id) {
    char l = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    bool ok = (l >= 'a' && l <= 'z') || (l >= '0' && l <= '9') || l == '-';
    slug.push_back(ok ? l : '-');
  }
  auto trim = [](std::string& s) {
    std::size_t b = s.find_first_not_of('-');
    if (b == std::string::npos) return s.clear();
    s = s.substr(b, s.find_last_not_of('-') - b + 1);
  };
  trim(slug);
  if (slug.size() > 20) slug.resize(20);
  trim(slug);
  return slug;
}

std::string container_name(std::string_view prefix, std::string_view user_id, std::string_view policy_id,
                           std::string_view context_id) {
  std::string name = std::string(prefix) + "-" + hash12(user_id);
  if (!policy_id.empty() && policy_id != "default") {
    std::string slug = policy_slug(policy_id);
    if (!slug.empty()) name += "-" + slug;
    // The reference stops here, so "Team A" and "team-a" shared one container. A lossless slug
    // keeps the reference's name; a lossy one gets a hash of the real id.
    if (slug != policy_id) name += "-" + sha256_hex(policy_id).substr(0, 8);
  }
  if (!is_default_context(context_id)) name += "-" + hash12(context_id);
  return name;
}

std::string context_type(std::string_view context_id) {
  if (is_default_context(context_id)) return "default";
  return std::string(context_id.substr(0, context_id.find(':')));
}

std::string normalize_capability(std::string_view name) {
  std::string c(name);
  for (char& ch : c) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (c.rfind("CAP_", 0) == 0) c.erase(0, 4);
  if (c.empty() || c.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != std::string::npos) return {};
  return c;
}

std::map<std::string, std::string> terminal_labels(std::string_view instance, std::string_view user_id,
                                                   std::string_view policy_id, std::string_view context_id,
                                                   std::string_view endpoint_kind) {
  std::string context = is_default_context(context_id) ? "default" : std::string(context_id);
  return {
      {std::string(kLabelManagedBy), std::string(kManagedByValue)},
      {std::string(kLabelUserId), std::string(user_id)},
      {std::string(kLabelPolicy), policy_id.empty() ? "default" : std::string(policy_id)},
      {std::string(kLabelContextId), context},
      {std::string(kLabelContextType), context_type(context_id)},
      {std::string(kLabelContextHash), hash12(context)},
      {std::string(kLabelUserHash), hash12(user_id)},
      {std::string(kLabelInstance), std::string(instance)},
      {std::string(kLabelEndpoint), std::string(endpoint_kind)},
  };
}

}  // namespace terminals::detail
