// terminals-cli terminals ls|stop|refresh: the running terminals of a `terminals-cli serve`,
// through its admin API (/api/v1/terminals).

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "admin_client.hpp"
#include "commands.hpp"

namespace terminals::cli {

namespace {

constexpr std::string_view kHelpHead = R"(Usage: terminals-cli terminals ls [--user USER] [--policy POLICY] [OPTIONS]
       terminals-cli terminals stop --user USER [--policy POLICY] [--context CONTEXT] [OPTIONS]
       terminals-cli terminals refresh [--user USER] [--policy POLICY] [--context CONTEXT]
                                       [--all] [--reset] [OPTIONS]

Shows and stops the terminals of a running `terminals-cli serve` through its admin API. A
terminal is one user's sandbox for one policy (and context); the server starts it again on
the user's next request, so stopping is safe: only unsaved processes are lost.

Subcommands:
  ls        A table of the terminals: user, policy, context, status, idle time, open
            connections, instance name and why it is in that state. --user and --policy
            show only those
  stop      Stops the terminals of USER: of POLICY (default "default") and CONTEXT (default
            "default"). A user's home is kept
  refresh   Stops the matching terminals (every terminal without filters) so that their next
            start picks up changed policies. Only idle ones unless --all (a terminal with an
            open connection counts as active); --reset also wipes their homes

Options:
      --user USER          A user id
      --policy POLICY      A policy id
      --context CONTEXT    A context id (a user's further terminals of one policy)
      --all                refresh: active terminals too
      --reset              refresh: wipe the homes of the refreshed terminals (their files are
                           lost)
)";

constexpr std::string_view kHelpTail = R"(  -h, --help               Show this help

Exit status: 0 on success; 1 when the server refused (e.g. stop: no such terminal) or could
not be reached; 2 when the command line is wrong (nothing was sent).

Examples:
  terminals-cli terminals ls
  terminals-cli terminals ls --policy gpu --json
  terminals-cli terminals stop --user alice
  terminals-cli terminals stop --user alice --policy gpu
  terminals-cli terminals refresh --policy gpu
  terminals-cli terminals refresh --user alice --all --reset
)";

const std::string kHelp = std::string(kHelpHead) + std::string(kAdminOptionsHelp) + std::string(kHelpTail);

constexpr std::string_view kName = "terminals";

std::string number_text(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return "-";
  auto it = v.FindMember(name);
  if (it == v.MemberEnd() || !it->value.IsNumber()) return "-";
  return json_text(it->value, false);
}

std::uint64_t count(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return 0;
  auto it = v.FindMember(name);
  return it != v.MemberEnd() && it->value.IsUint64() ? it->value.GetUint64() : 0;
}

// 42 -> "42s", 150 -> "2m30s", 7260 -> "2h1m", 2 days -> "2d0h".
std::string duration_text(const rapidjson::Value& row) {
  if (!row.IsObject()) return "-";
  auto it = row.FindMember("idle_seconds");
  if (it == row.MemberEnd() || !it->value.IsInt64()) return "-";
  std::int64_t s = it->value.GetInt64();
  if (s < 0) s = 0;
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  if (s < 86400) return std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m";
  return std::to_string(s / 86400) + "d" + std::to_string(s % 86400 / 3600) + "h";
}

std::string plural(std::uint64_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

struct Filter {
  std::optional<std::string> user, policy, context;
};

// {"user_id": ..., "policy_id": ..., "context_id": ...} with the given fields, plus extras.
std::string filter_body(const Filter& f, std::optional<bool> only_idle = {}, std::optional<bool> reset = {}) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  auto field = [&](const char* name, const std::optional<std::string>& v) {
    if (!v) return;
    w.Key(name);
    w.String(v->data(), static_cast<rapidjson::SizeType>(v->size()));
  };
  field("user_id", f.user);
  field("policy_id", f.policy);
  field("context_id", f.context);
  if (only_idle) {
    w.Key("only_idle");
    w.Bool(*only_idle);
  }
  if (reset) {
    w.Key("reset");
    w.Bool(*reset);
  }
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

int list(AdminClient& client, Io io, const Filter& f, bool json) {
  rapidjson::Document doc;
  if (auto failed = client.call_json(io, kName, "GET", "/api/v1/terminals", {}, doc)) return *failed;
  // The server lists them all; the filters are ours.
  rapidjson::Value shown(rapidjson::kArrayType);
  if (doc.IsArray()) {
    for (auto& row : doc.GetArray()) {
      if (f.user && json_str(row, "user_id", "") != *f.user) continue;
      if (f.policy && json_str(row, "policy_id", "") != *f.policy) continue;
      if (f.context && json_str(row, "context_id", "") != *f.context) continue;
      shown.PushBack(rapidjson::Value(row, doc.GetAllocator()), doc.GetAllocator());
    }
  }
  if (json) {
    io.out << json_text(shown, false) << '\n';
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {
      {"USER", "POLICY", "CONTEXT", "STATUS", "IDLE", "CONNS", "NAME", "REASON"}};
  for (const auto& row : shown.GetArray()) {
    std::string reason = json_str(row, "reason", "");
    rows.push_back({json_str(row, "user_id"), json_str(row, "policy_id"), json_str(row, "context_id"),
                    json_str(row, "status"), duration_text(row), number_text(row, "open_connections"),
                    json_str(row, "instance_name"), reason.empty() ? "-" : reason});
  }
  print_table(io.out, rows);
  return kExitOk;
}

int stop(AdminClient& client, Io io, const Filter& f, bool json) {
  rapidjson::Document doc;
  if (auto failed = client.call_json(io, kName, "POST", "/api/v1/terminals/stop", filter_body(f), doc)) {
    return *failed;
  }
  if (json) {
    io.out << json_text(doc, false) << '\n';
    return kExitOk;
  }
  io.out << "stopped " << count(doc, "stopped") << " of " << plural(count(doc, "matched"), "matching terminal")
         << '\n';
  return kExitOk;
}

int refresh(AdminClient& client, Io io, const Filter& f, bool all, bool reset, bool json) {
  rapidjson::Document doc;
  if (auto failed = client.call_json(io, kName, "POST", "/api/v1/terminals/refresh",
                                     filter_body(f, !all, reset), doc)) {
    return *failed;
  }
  if (json) {
    io.out << json_text(doc, false) << '\n';
    return kExitOk;
  }
  io.out << "refreshed " << count(doc, "refreshed") << " of " << plural(count(doc, "matched"), "matching terminal");
  if (reset) io.out << ", " << count(doc, "reset") << " reset";
  if (std::uint64_t skipped = count(doc, "skipped_active")) io.out << ", " << skipped << " skipped as active";
  io.out << '\n';
  return kExitOk;
}

int run(Args args, Io io) {
  AdminOptions options;
  std::optional<std::string> sub;
  Filter filter;
  bool all = false, reset = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    std::string error;
    if (!a.starts_with('-')) {
      if (sub) return usage_error(io, kName, "unexpected argument '" + std::string(a) + "'");
      sub = std::string(a);
      continue;
    }
    if (parse_admin_flag(args, i, options, error)) {
      if (!error.empty()) return usage_error(io, kName, error);
      continue;
    }
    std::optional<std::string>* target = nullptr;
    std::string_view flag;
    for (auto [name, field] : {std::pair{std::string_view("--user"), &filter.user},
                               std::pair{std::string_view("--policy"), &filter.policy},
                               std::pair{std::string_view("--context"), &filter.context}}) {
      if (a == name || (a.starts_with(name) && a.size() > name.size() && a[name.size()] == '=')) {
        target = field;
        flag = name;
      }
    }
    if (target) {
      if (a.size() > flag.size()) {
        *target = std::string(a.substr(flag.size() + 1));
      } else if (i + 1 < args.size()) {
        *target = std::string(args[++i]);
      } else {
        return usage_error(io, kName, std::string(flag) + " needs a value");
      }
      if (target->value().empty()) return usage_error(io, kName, std::string(flag) + " needs a non-empty value");
    } else if (a == "--all") {
      all = true;
    } else if (a == "--reset") {
      reset = true;
    } else {
      return usage_error(io, kName, "unexpected argument '" + std::string(a) + "'");
    }
  }
  if (!sub) return usage_error(io, kName, "no subcommand given (ls, stop or refresh)");
  if (*sub != "ls" && *sub != "stop" && *sub != "refresh") {
    return usage_error(io, kName, "unknown subcommand '" + *sub + "' (ls, stop or refresh)");
  }
  if (*sub != "refresh" && (all || reset)) {
    return usage_error(io, kName, std::string(all ? "--all" : "--reset") + " is for refresh only");
  }
  if (*sub == "stop" && !filter.user) return usage_error(io, kName, "stop needs --user USER");

  auto client = AdminClient::create(options);
  if (!client) {
    if (client.error().code == Errc::InvalidArgument) return usage_error(io, kName, client.error().message);
    io.err << kProgram << ' ' << kName << ": " << client.error().message << '\n';
    return kExitFailure;
  }
  if (*sub == "ls") return list(**client, io, filter, options.json);
  if (*sub == "stop") return stop(**client, io, filter, options.json);
  return refresh(**client, io, filter, all, reset, options.json);
}

}  // namespace

const Command terminals_command = {
    "terminals",
    "List, stop and refresh the terminals of a running server",
    kHelp,
    run,
};

}  // namespace terminals::cli
