// Policy validation and resolution (see policy.hpp). Every rule names its field, so an admin
// sees which value to fix; caps are checked in exact units (quantity.hpp), at write time and
// again when a terminal is provisioned.

#include "terminals/policy.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <set>

#include "json/json.hpp"

namespace terminals {

namespace {

using Json = rapidjson::Value;

Error invalid(std::string_view field, std::string rule) {
  return Error(Errc::InvalidArgument, std::string(field) + ": " + std::move(rule));
}
Error denied(std::string_view field, std::string rule) {
  return Error(Errc::PolicyDenied, std::string(field) + ": " + std::move(rule));
}

std::string kind_of(const Json& v) {
  if (v.IsString()) return "a string";
  if (v.IsBool()) return "a boolean";
  if (v.IsNumber()) return "a number";
  if (v.IsArray()) return "an array";
  if (v.IsObject()) return "an object";
  return "null";
}

// A quantity may be written as a JSON string or, leniently, as a plain number (2, 0.5).
Result<std::string> quantity_text(std::string_view field, const Json& v) {
  if (v.IsString()) return std::string(v.GetString(), v.GetStringLength());
  if (v.IsUint64()) return std::to_string(v.GetUint64());  // GetInt64 asserts above 2^63
  if (v.IsInt64()) return std::to_string(v.GetInt64());
  if (v.IsDouble()) {
    std::string s = detail::to_json(v);
    return s;
  }
  return invalid(field, "must be a string such as \"2\", \"500m\" or \"4Gi\", not " + kind_of(v));
}

Result<std::int64_t> integer(std::string_view field, const Json& v, std::int64_t lo, std::int64_t hi) {
  std::int64_t n = 0;
  if (v.IsInt64()) {
    n = v.GetInt64();
  } else if (v.IsString()) {  // numeric strings are coerced, as Pydantic does
    std::string s(v.GetString(), v.GetStringLength());
    char* end = nullptr;
    errno = 0;
    long long parsed = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno != 0) return invalid(field, "'" + s + "' is not a whole number");
    n = parsed;
  } else if (v.IsDouble() && std::abs(v.GetDouble()) < 9.0e18 &&  // the cast is undefined beyond
             v.GetDouble() == static_cast<double>(static_cast<std::int64_t>(v.GetDouble()))) {
    n = static_cast<std::int64_t>(v.GetDouble());
  } else if (v.IsUint64() || (v.IsDouble() && std::trunc(v.GetDouble()) == v.GetDouble())) {
    return invalid(field, detail::to_json(v) + " is out of range " + std::to_string(lo) + "-" + std::to_string(hi));
  } else {
    return invalid(field, "must be a whole number, not " + kind_of(v));
  }
  if (n < lo || n > hi) {
    return invalid(field, std::to_string(n) + " is out of range " + std::to_string(lo) + "-" + std::to_string(hi));
  }
  return n;
}

Result<bool> boolean(std::string_view field, const Json& v) {
  if (v.IsBool()) return v.GetBool();
  if (v.IsString()) {
    std::string s(v.GetString(), v.GetStringLength());
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "0" || s == "no" || s == "off") return false;
  }
  if (v.IsInt64() && (v.GetInt64() == 0 || v.GetInt64() == 1)) return v.GetInt64() == 1;
  return invalid(field, "must be true or false, not " + (v.IsString() ? "'" + std::string(v.GetString()) + "'" : kind_of(v)));
}

bool valid_env_name(std::string_view k) {
  if (k.empty() || k.size() > 128 || (k[0] >= '0' && k[0] <= '9')) return false;
  for (char c : k) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

// Egress destinations: host names, IPv4/IPv6 addresses and CIDRs, "*.example.com".
bool valid_destination(std::string_view d) {
  if (d.empty() || d.size() > 253) return false;
  for (char c : d) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
          c == ':' || c == '/' || c == '*')) {
      return false;
    }
  }
  return true;
}

constexpr std::string_view kLifecycleKeys[] = {"lifecycle", "reset", "reset_schedule", "reset_timezone"};
// Env keys the orchestrator or the agent's launcher owns.
constexpr std::string_view kReservedEnv[] = {"OPEN_TERMINAL_API_KEY", "OPEN_TERMINAL_API_KEY_FILE", "TERMINALS_AGENT_LISTEN"};
// The reference's restricted-mode rules (Kubernetes/OpenShift): these need privileges there.
constexpr std::string_view kRestrictedEnv[] = {"OPEN_TERMINAL_ALLOWED_DOMAINS", "OPEN_TERMINAL_PACKAGES",
                                               "OPEN_TERMINAL_PIP_PACKAGES", "OPEN_TERMINAL_NPM_PACKAGES"};

// Caps inside pod_template: every container's limits and requests (cpu, memory,
// ephemeral-storage) parse and stay under the caps in every spelling, the containers of the pod
// together stay under them too (a sidecar must not carry what the terminal may not), and with a
// cap set every container needs a limit of that kind. Container images obey the allow-list.
Status check_pod_template(const Policy& p, const Caps& caps) {
  if (p.pod_template.empty()) return {};
  auto doc = detail::parse_json(p.pod_template);
  if (!doc || !doc->IsObject()) return invalid("pod_template", "must be an object");
  auto spec = doc->FindMember("spec");
  if (spec == doc->MemberEnd()) return {};
  if (!spec->value.IsObject()) return invalid("pod_template.spec", "must be an object");
  struct Kind {
    const char* resource;
    const std::optional<std::uint64_t>* cap;
    const char* setting;
    const std::optional<std::string>* policy_value;
  };
  const Kind kinds[] = {{"cpu", &caps.max_cpu_millis, "TERMINALS_MAX_CPU", &p.cpu_limit},
                        {"memory", &caps.max_memory_bytes, "TERMINALS_MAX_MEMORY", &p.memory_limit},
                        {"ephemeral-storage", &caps.max_storage_bytes, "TERMINALS_MAX_STORAGE", &p.storage}};
  std::uint64_t totals[3] = {0, 0, 0};
  for (const char* list : {"containers", "initContainers"}) {
    auto cs = spec->value.FindMember(list);
    if (cs == spec->value.MemberEnd()) continue;
    if (!cs->value.IsArray()) return invalid(std::string("pod_template.spec.") + list, "must be an array");
    bool regular = std::string_view(list) == "containers";
    for (rapidjson::SizeType i = 0; i < cs->value.Size(); ++i) {
      const Json& c = cs->value[i];
      std::string where = std::string("pod_template.spec.") + list + "[" + std::to_string(i) + "]";
      if (!c.IsObject()) return invalid(where, "must be an object");
      std::string name(detail::json_string(c, "name").value_or(""));
      if (auto image = detail::json_string(c, "image")) {
        if (auto s = check_image(*image, caps); !s) return denied(where + ".image", s.error().message);
      }
      // The terminal's own container takes the policy's value where the policy sets one.
      bool terminal = regular && name == "open-terminal";
      const Json* res = nullptr;
      if (auto r = c.FindMember("resources"); r != c.MemberEnd()) res = &r->value;
      for (std::size_t k = 0; k < 3; ++k) {
        const Kind& kind = kinds[k];
        bool from_policy = terminal && kind.policy_value->has_value();
        bool has_limit = false;
        for (const char* section : {"limits", "requests"}) {
          if (!res || !res->IsObject()) break;
          auto sec = res->FindMember(section);
          if (sec == res->MemberEnd() || !sec->value.IsObject()) continue;
          auto q = sec->value.FindMember(kind.resource);
          if (q == sec->value.MemberEnd()) continue;
          std::string field = where + ".resources." + section + "." + kind.resource;
          auto text = quantity_text(field, q->value);
          if (!text) return std::move(text).error();
          Status st = k == 0 ? check_cpu(field, *text, caps) : k == 1 ? check_memory(field, *text, caps)
                                                                    : check_storage(field, *text, caps);
          if (!st) return st;
          if (std::string_view(section) == "limits") {
            has_limit = true;
            if (regular && !from_policy) {
              auto v = k == 0 ? parse_cpu_millis(*text) : parse_bytes(*text);
              if (v) totals[k] += *v;
            }
          }
        }
        // The terminal's container always ends up limited (by the policy or by the cap itself,
        // see policy_spec); a sidecar without a limit would be unbounded.
        if (*kind.cap && regular && !terminal && !has_limit) {
          return denied(where + ".resources.limits." + kind.resource,
                        "missing: with " + std::string(kind.setting) + " set, every container of the pod needs a " +
                            kind.resource + " limit" + (name.empty() ? "" : " ('" + name + "' has none)"));
        }
      }
    }
  }
  // The pod as a whole: sidecars plus the terminal's own limit.
  for (std::size_t k = 0; k < 3; ++k) {
    const Kind& kind = kinds[k];
    if (!*kind.cap) continue;
    std::uint64_t total = totals[k];
    if (kind.policy_value->has_value()) {
      auto v = k == 0 ? parse_cpu_millis(**kind.policy_value) : parse_bytes(**kind.policy_value);
      if (v) total += *v;
    } else if (totals[k] > 0) {
      total += **kind.cap;  // the terminal's container gets the cap as its limit
    }
    if (total > **kind.cap) {
      std::string shown = k == 0 ? format_cpu_millis(total) : format_bytes(total);
      std::string cap = k == 0 ? format_cpu_millis(**kind.cap) : format_bytes(**kind.cap);
      return denied("pod_template", std::string("the pod's containers together ask for ") + kind.resource + " " + shown +
                                        ", over " + kind.setting + " " + cap);
    }
  }
  return {};
}

Status check_quantities(const Policy& p, const Caps& caps) {
  if (auto s = check_pod_template(p, caps); !s) return s;
  if (p.cpu_limit) {
    if (auto s = check_cpu("cpu_limit", *p.cpu_limit, caps); !s) return s;
  }
  if (p.memory_limit) {
    if (auto s = check_memory("memory_limit", *p.memory_limit, caps); !s) return s;
  }
  if (p.storage) {
    if (auto s = check_storage("storage", *p.storage, caps); !s) return s;
  }
  if (p.image) {
    if (auto s = check_image(*p.image, caps); !s) {
      Error e = std::move(s).error();
      e.message = "image: " + e.message;
      return e;
    }
  }
  return {};
}

}  // namespace

Status check_policy_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return Error(Errc::InvalidArgument, "policy id: must be 1-128 characters");
  if (id.front() == '.') return Error(Errc::InvalidArgument, "policy id: must not start with '.'");
  for (char c : id) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
      return Error(Errc::InvalidArgument, "policy id: '" + std::string(id) +
                                              "' may only contain letters, digits, '.', '_' and '-'");
    }
  }
  return {};
}

Result<Policy> parse_policy(std::string_view json, const Caps& caps) {
  auto doc = detail::parse_json(json);
  if (!doc) return Error(Errc::InvalidArgument, "policy: not valid JSON (" + doc.error().message + ")");
  if (!doc->IsObject()) return Error(Errc::InvalidArgument, "policy: must be a JSON object");

  std::vector<std::string> lifecycle;
  for (auto it = doc->MemberBegin(); it != doc->MemberEnd(); ++it) {
    std::string_view k(it->name.GetString(), it->name.GetStringLength());
    for (auto l : kLifecycleKeys) {
      if (k == l && !it->value.IsNull()) lifecycle.emplace_back(k);
    }
  }
  if (!lifecycle.empty()) {
    std::sort(lifecycle.begin(), lifecycle.end());  // sorted, as the reference lists them
    std::string list;
    for (const auto& l : lifecycle) list += (list.empty() ? "" : ", ") + l;
    return Error(Errc::PolicyDenied, "Lifecycle keys are not valid policy fields: " + list +
                                         " (set them with PUT /api/v1/policies/{id}/lifecycle)");
  }

  Policy p;
  rapidjson::Document extra(rapidjson::kObjectType);
  auto& alloc = extra.GetAllocator();
  std::set<std::string> seen_objects;
  for (auto it = doc->MemberBegin(); it != doc->MemberEnd(); ++it) {
    std::string k(it->name.GetString(), it->name.GetStringLength());
    const Json& v = it->value;
    if (v.IsNull()) continue;  // nulls are dropped, as the reference drops them
    if (k == "image") {
      if (!v.IsString() || v.GetStringLength() == 0) return invalid(k, "must be a non-empty string");
      p.image = std::string(v.GetString(), v.GetStringLength());
    } else if (k == "env") {
      if (!v.IsObject()) return invalid(k, "must be an object of NAME: value");
      if (v.MemberCount() > 256) return invalid(k, "at most 256 variables");
      for (auto e = v.MemberBegin(); e != v.MemberEnd(); ++e) {
        std::string name(e->name.GetString(), e->name.GetStringLength());
        std::string field = "env." + name;
        if (!valid_env_name(name)) return invalid(field, "not a valid variable name (letters, digits and '_', not starting with a digit)");
        for (auto r : kReservedEnv) {
          if (name == r) return invalid(field, "set by the orchestrator for each terminal; a policy cannot set it");
        }
        if (e->value.IsNull()) continue;
        std::string value;
        if (e->value.IsString()) value.assign(e->value.GetString(), e->value.GetStringLength());
        else if (e->value.IsBool()) value = e->value.GetBool() ? "true" : "false";
        else if (e->value.IsNumber()) value = detail::to_json(e->value);
        else return invalid(field, "must be a string, number or boolean, not " + kind_of(e->value));
        if (value.size() > 32768) return invalid(field, "longer than 32 KiB");
        if (value.find('\0') != std::string::npos) return invalid(field, "contains a NUL byte");
        p.env[name] = std::move(value);
      }
    } else if (k == "cpu_limit" || k == "memory_limit" || k == "storage") {
      auto text = quantity_text(k, v);
      if (!text) return std::move(text).error();
      (k == "cpu_limit" ? p.cpu_limit : k == "memory_limit" ? p.memory_limit : p.storage) = *text;
    } else if (k == "storage_mode") {
      if (!v.IsString()) return invalid(k, "must be a string");
      std::string m = v.GetString();
      if (m != "per-user" && m != "shared" && m != "shared-rwo") {
        return invalid(k, "'" + m + "' is not one of per-user, shared, shared-rwo");
      }
      p.storage_mode = m;
    } else if (k == "idle_timeout_minutes") {
      auto n = integer(k, v, 0, 525600);
      if (!n) return std::move(n).error();
      p.idle_timeout_minutes = *n;
    } else if (k == "restricted") {
      auto b = boolean(k, v);
      if (!b) return std::move(b).error();
      p.restricted = *b;
    } else if (k == "pod_security_context" || k == "podSecurityContext" || k == "container_security_context" ||
               k == "containerSecurityContext" || k == "pod_template" || k == "podTemplate") {
      std::string canonical = k == "podSecurityContext" ? "pod_security_context"
                              : k == "containerSecurityContext" ? "container_security_context"
                              : k == "podTemplate" ? "pod_template" : k;
      if (!v.IsObject()) return invalid(k, "must be an object");
      // The snake_case spelling wins when both are given (as the reference prefers it).
      if (seen_objects.count(canonical) && canonical != k) continue;
      seen_objects.insert(canonical);
      std::string text = detail::to_json(v);
      (canonical == "pod_security_context" ? p.pod_security_context
       : canonical == "container_security_context" ? p.container_security_context : p.pod_template) = text;
    } else if (k == "isolation") {
      if (!v.IsString()) return invalid(k, "must be one of none, user, sandbox");
      auto iso = parse_isolation(v.GetString());
      if (!iso) return invalid(k, iso.error().message);
      p.isolation = *iso;
    } else if (k == "network") {
      p.egress_allow.clear();  // a repeated key replaces, as for every other field
      if (v.IsString()) {
        std::string n = v.GetString();
        if (n != "none" && n != "host") return invalid(k, "'" + n + "' is not none, host or {\"allow\": [...]}");
        p.network = n;
      } else if (v.IsObject()) {
        auto allow = v.FindMember("allow");
        if (v.MemberCount() != 1 || allow == v.MemberEnd() || !allow->value.IsArray() || allow->value.Empty()) {
          return invalid(k, "an allow-list is {\"allow\": [\"host.example.com\", \"10.0.0.0/8\", ...]} with at least one entry");
        }
        for (const auto& d : allow->value.GetArray()) {
          if (!d.IsString() || !valid_destination(d.GetString())) {
            return invalid("network.allow", "'" + (d.IsString() ? std::string(d.GetString()) : kind_of(d)) +
                                                "' is not a host name, address or CIDR");
          }
          p.egress_allow.emplace_back(d.GetString());
        }
        p.network = "allow";
      } else {
        return invalid(k, "must be \"none\", \"host\" or {\"allow\": [...]}");
      }
    } else if (k == "pids_limit") {
      // 0 would mean "no limit" to Docker and cgroups.
      auto n = integer(k, v, 1, 1'000'000);
      if (!n) return std::move(n).error();
      p.pids_limit = static_cast<std::uint32_t>(*n);
    } else if (k == "max_terminals") {
      auto n = integer(k, v, 1, 1'000'000);
      if (!n) return std::move(n).error();
      p.max_terminals = static_cast<std::uint32_t>(*n);
    } else {
      Json key(it->name, alloc);
      Json value(v, alloc);
      extra.AddMember(key, value, alloc);
    }
  }
  if (extra.MemberCount() > 0) p.extra = detail::to_json(extra);

  if (p.restricted.value_or(false)) {
    std::string problems;
    for (auto r : kRestrictedEnv) {
      if (p.env.count(std::string(r))) {
        problems += (problems.empty() ? "" : "; ") + std::string(r) + " is not supported in restricted Kubernetes/OpenShift mode";
      }
    }
    if (auto m = p.env.find("OPEN_TERMINAL_MULTI_USER"); m != p.env.end()) {
      std::string v = m->second;
      for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (v == "1" || v == "true" || v == "yes" || v == "on") {
        problems += std::string(problems.empty() ? "" : "; ") +
                    "OPEN_TERMINAL_MULTI_USER=true is not supported in restricted Kubernetes/OpenShift mode";
      }
    }
    if (!problems.empty()) return denied("env", problems);
  }
  if (auto s = check_quantities(p, caps); !s) return std::move(s).error();
  return p;
}

std::string policy_to_json(const Policy& p) {
  detail::JsonWriter w;
  w.object();
  if (p.image) w.field("image", *p.image);
  if (!p.env.empty()) {
    w.key("env").object();
    for (const auto& [k, v] : p.env) w.field(k, v);
    w.end_object();
  }
  if (p.cpu_limit) w.field("cpu_limit", *p.cpu_limit);
  if (p.memory_limit) w.field("memory_limit", *p.memory_limit);
  if (p.storage) w.field("storage", *p.storage);
  if (p.storage_mode) w.field("storage_mode", *p.storage_mode);
  if (p.idle_timeout_minutes) w.field("idle_timeout_minutes", *p.idle_timeout_minutes);
  if (p.restricted) w.field("restricted", *p.restricted);
  if (!p.pod_security_context.empty()) w.key("pod_security_context").raw(p.pod_security_context);
  if (!p.container_security_context.empty()) w.key("container_security_context").raw(p.container_security_context);
  if (!p.pod_template.empty()) w.key("pod_template").raw(p.pod_template);
  if (p.isolation) w.field("isolation", isolation_name(*p.isolation));
  if (p.network) {
    if (*p.network == "allow") {
      w.key("network").object().key("allow").array();
      for (const auto& d : p.egress_allow) w.value(d);
      w.end_array().end_object();
    } else {
      w.field("network", *p.network);
    }
  }
  if (p.pids_limit) w.field("pids_limit", static_cast<std::uint64_t>(*p.pids_limit));
  if (p.max_terminals) w.field("max_terminals", static_cast<std::uint64_t>(*p.max_terminals));
  std::string head = w.end_object().take();
  if (p.extra.size() <= 2) return head;
  // Splice the extra members in before the closing brace.
  std::string tail = p.extra.substr(1);  // "...}" without the opening brace
  return head.size() == 2 ? "{" + tail : head.substr(0, head.size() - 1) + "," + tail;
}

Result<TerminalSpec> policy_spec(const Policy& p, const Caps& caps, const std::string& default_image) {
  if (auto s = check_quantities(p, caps); !s) return std::move(s).error();
  TerminalSpec spec;
  spec.image = p.image.value_or(default_image);
  if (!p.image && !default_image.empty()) {
    if (auto s = check_image(default_image, caps); !s) {
      Error e = std::move(s).error();
      e.message = "image: " + e.message + " (TERMINALS_IMAGE)";
      return e;
    }
  }
  spec.env = p.env;
  if (p.cpu_limit) {
    auto millis = parse_cpu_millis(*p.cpu_limit);
    if (!millis) return std::move(millis).error();
    if (*millis > 0) spec.limits.cpus = static_cast<double>(*millis) / 1000.0;
    spec.env["OPEN_TERMINAL_CPU_LIMIT"] = *p.cpu_limit;
    std::string count = std::to_string(*millis / 1000);
    if (*millis % 1000) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(*millis) / 1000.0);
      count = buf;
      while (count.back() == '0') count.pop_back();
    }
    spec.env["OPEN_TERMINAL_CPU_COUNT"] = count;
  }
  if (p.memory_limit) {
    auto bytes = parse_bytes(*p.memory_limit);
    if (!bytes) return std::move(bytes).error();
    if (*bytes > 0) spec.limits.memory_bytes = *bytes;
    spec.env["OPEN_TERMINAL_MEMORY_LIMIT"] = *p.memory_limit;
    spec.env["OPEN_TERMINAL_MEMORY_BYTES"] = std::to_string(*bytes);
  }
  if (p.storage) {
    auto bytes = parse_bytes(*p.storage);
    if (!bytes) return std::move(bytes).error();
    if (*bytes > 0) spec.limits.storage_bytes = *bytes;
  }
  // A cap is also the limit of terminals whose policy sets none: "no limit" would exceed it.
  if (!spec.limits.cpus && caps.max_cpu_millis) spec.limits.cpus = static_cast<double>(*caps.max_cpu_millis) / 1000.0;
  if (!spec.limits.memory_bytes && caps.max_memory_bytes) spec.limits.memory_bytes = *caps.max_memory_bytes;
  if (!spec.limits.storage_bytes && caps.max_storage_bytes) spec.limits.storage_bytes = *caps.max_storage_bytes;
  if (p.pids_limit) spec.limits.pids = *p.pids_limit;
  if (p.idle_timeout_minutes) spec.idle_timeout = std::chrono::minutes(*p.idle_timeout_minutes);
  spec.isolation = p.isolation;
  if (p.network == "host") spec.network = NetworkMode::Host;
  if (p.network == "allow") {
    spec.network = NetworkMode::Host;
    spec.egress_allow = p.egress_allow;
  }
  return spec;
}

}  // namespace terminals
