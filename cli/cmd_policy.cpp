// terminals-cli policy ls|get|put|rm: the policies of a running `terminals-cli serve`, through
// its admin API (/api/v1/policies).

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "admin_client.hpp"
#include "commands.hpp"

namespace terminals::cli {

namespace {

constexpr std::string_view kHelpHead = R"(Usage: terminals-cli policy ls [OPTIONS]
       terminals-cli policy get ID [--data | --lifecycle] [OPTIONS]
       terminals-cli policy put ID [FILE | -] [--set KEY=VALUE]... [--unset KEY]... [OPTIONS]
       terminals-cli policy put ID --lifecycle FILE|- [OPTIONS]
       terminals-cli policy rm ID [OPTIONS]

Manages the policies of a running `terminals-cli serve` through its admin API. A policy is what
the terminals of one policy id get (image, cpu_limit, memory_limit, storage, env,
idle_timeout_minutes, isolation, network, pids_limit, max_terminals, ...); users reach the
terminal of policy ID under /p/ID/. The server validates every policy and refuses values over
its caps (TERMINALS_MAX_CPU, ...), naming the field and the rule.

Subcommands:
  ls                 A table of the policies: id, revision, last update (UTC), image, cpu,
                     memory
  get ID             The stored policy and its lifecycle as one JSON object; --data prints
                     the policy alone and --lifecycle the lifecycle alone (both are what put
                     takes back)
  put ID [FILE|-]    Stores policy ID (creating or replacing it) from a JSON object in FILE or
                     on standard input (-), then prints it as stored. --set KEY=VALUE sets one
                     field on top (numbers for idle_timeout_minutes, pids_limit and
                     max_terminals, true/false for restricted, env.NAME=VALUE for one variable,
                     KEY:=JSON for any JSON value); --unset KEY removes one. Without FILE,
                     --set and --unset edit the stored policy (or start an empty one)
  put ID --lifecycle FILE|-
                     Stores the lifecycle of policy ID, e.g.
                     {"reset": {"schedule": "0 3 * * *", "timezone": "Europe/Berlin"}}
  rm ID              Removes policy ID (its running terminals keep running until stopped)

Options:
)";

constexpr std::string_view kHelpTail = R"(  -h, --help               Show this help

Exit status: 0 on success; 1 when the server refused (its reason is printed: for a policy, the
field and the rule) or could not be reached; 2 when the command line or the input file is wrong
(nothing was sent).

Examples:
  terminals-cli policy put gpu --set image=ghcr.io/acme/cuda:12 --set cpu_limit=4 --set memory_limit=16Gi
  terminals-cli policy put gpu --set env.HF_HOME=/data/hf --unset storage
  echo '{"image": "terminals-agent:dev", "idle_timeout_minutes": 30}' | terminals-cli policy put dev -
  terminals-cli policy get gpu --data > gpu.json && terminals-cli policy put gpu gpu.json
  terminals-cli policy put gpu --lifecycle - <<< '{"reset": {"schedule": "@daily"}}'
  terminals-cli policy ls --url http://10.0.0.5:3000
  terminals-cli policy rm gpu
)";

const std::string kHelp = std::string(kHelpHead) + std::string(kAdminOptionsHelp) + std::string(kHelpTail);

constexpr std::string_view kName = "policy";

const std::string kPrefix = "/api/v1/policies";

// Integer and boolean fields, so that `--set pids_limit=100` sends a number.
bool is_integer_field(std::string_view key) {
  return key == "idle_timeout_minutes" || key == "pids_limit" || key == "max_terminals";
}

// "2024-05-01T12:34:56.123456+00:00" -> "2024-05-01 12:34:56".
std::string short_time(std::string iso) {
  if (iso.size() >= 19 && iso[10] == 'T') return iso.substr(0, 10) + ' ' + iso.substr(11, 8);
  return iso;
}

std::string member_text(const rapidjson::Value& v, const char* name) {
  if (!v.IsObject()) return "-";
  auto it = v.FindMember(name);
  if (it == v.MemberEnd() || it->value.IsNull()) return "-";
  if (it->value.IsString()) return std::string(it->value.GetString(), it->value.GetStringLength());
  return json_text(it->value, false);
}

// Reads FILE or standard input ("-") as a JSON object; a usage error otherwise.
std::optional<std::string> read_json_object(Io io, const std::string& file, rapidjson::Document& doc) {
  std::string text;
  if (file == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), {});
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) return "cannot read '" + file + "'";
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  (void)io;
  std::string name = file == "-" ? std::string("standard input") : "'" + file + "'";
  doc.Parse(text.data(), text.size());
  if (doc.HasParseError()) {
    return name + " is not JSON (error at byte " + std::to_string(doc.GetErrorOffset()) + ")";
  }
  if (!doc.IsObject()) return name + " is not a JSON object";
  return std::nullopt;
}

// Applies one --set KEY=VALUE (or KEY:=JSON, env.NAME=VALUE). Returns a usage error message.
std::optional<std::string> apply_set(rapidjson::Document& doc, const std::string& assignment) {
  auto& alloc = doc.GetAllocator();
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) return "--set needs KEY=VALUE, got '" + assignment + "'";
  bool raw = assignment[eq - 1] == ':';
  std::string key = assignment.substr(0, raw ? eq - 1 : eq);
  std::string text = assignment.substr(eq + 1);
  if (key.empty()) return "--set needs KEY=VALUE, got '" + assignment + "'";
  rapidjson::Value value;
  if (raw) {
    rapidjson::Document parsed;
    parsed.Parse(text.data(), text.size());
    if (parsed.HasParseError()) return "--set " + key + ":= needs a JSON value, got '" + text + "'";
    value.CopyFrom(parsed, alloc);
  } else if (is_integer_field(key)) {
    char* end = nullptr;
    long long n = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0') return "--set " + key + " needs a whole number, got '" + text + "'";
    value.SetInt64(n);
  } else if (key == "restricted") {
    if (text != "true" && text != "false") return "--set restricted needs true or false, got '" + text + "'";
    value.SetBool(text == "true");
  } else {
    value.SetString(text.data(), static_cast<rapidjson::SizeType>(text.size()), alloc);
  }
  if (key.starts_with("env.") && key.size() > 4) {
    std::string name = key.substr(4);
    auto env = doc.FindMember("env");
    if (env == doc.MemberEnd() || !env->value.IsObject()) {
      doc.RemoveMember("env");
      doc.AddMember("env", rapidjson::Value(rapidjson::kObjectType), alloc);
      env = doc.FindMember("env");
    }
    env->value.RemoveMember(name.c_str());
    env->value.AddMember(rapidjson::Value(name.c_str(), alloc), value, alloc);
    return std::nullopt;
  }
  doc.RemoveMember(key.c_str());
  doc.AddMember(rapidjson::Value(key.c_str(), alloc), value, alloc);
  return std::nullopt;
}

void apply_unset(rapidjson::Document& doc, const std::string& key) {
  if (key.starts_with("env.")) {
    auto env = doc.FindMember("env");
    if (env != doc.MemberEnd() && env->value.IsObject()) env->value.RemoveMember(key.substr(4).c_str());
    return;
  }
  doc.RemoveMember(key.c_str());
}

void print_json(Io io, const rapidjson::Value& v, bool compact) { io.out << json_text(v, !compact) << '\n'; }

int list(AdminClient& client, Io io, bool json) {
  rapidjson::Document doc;
  if (auto failed = client.call_json(io, kName, "GET", kPrefix, {}, doc)) return *failed;
  if (json) {
    print_json(io, doc, true);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"ID", "REVISION", "UPDATED (UTC)", "IMAGE", "CPU", "MEMORY"}};
  if (doc.IsArray()) {
    for (const auto& p : doc.GetArray()) {
      const rapidjson::Value& data = p.IsObject() && p.HasMember("data") ? p["data"] : p;
      rows.push_back({member_text(p, "id"), member_text(p, "revision"), short_time(member_text(p, "updated_at")),
                      member_text(data, "image"), member_text(data, "cpu_limit"),
                      member_text(data, "memory_limit")});
    }
  }
  print_table(io.out, rows);
  return kExitOk;
}

int get(AdminClient& client, Io io, const std::string& id, bool json, bool data_only, bool lifecycle_only) {
  std::string path = kPrefix + "/" + encode_path_segment(id);
  rapidjson::Document policy;
  if (!lifecycle_only) {
    if (auto failed = client.call_json(io, kName, "GET", path, {}, policy)) return *failed;
    if (data_only) {
      if (policy.IsObject() && policy.HasMember("data")) print_json(io, policy["data"], json);
      return kExitOk;
    }
  }
  rapidjson::Document lifecycle;
  if (auto failed = client.call_json(io, kName, "GET", path + "/lifecycle", {}, lifecycle)) return *failed;
  rapidjson::Value none(rapidjson::kObjectType);
  const rapidjson::Value& lifecycle_data =
      lifecycle.IsObject() && lifecycle.HasMember("data") ? lifecycle["data"] : none;
  if (lifecycle_only) {
    print_json(io, lifecycle_data, json);
    return kExitOk;
  }
  if (policy.IsObject()) {
    rapidjson::Value copy(lifecycle_data, policy.GetAllocator());
    policy.AddMember("lifecycle", copy, policy.GetAllocator());
  }
  print_json(io, policy, json);
  return kExitOk;
}

// Applies the --set/--unset edits in order; a usage error message if one is malformed.
std::optional<std::string> apply_edits(rapidjson::Document& doc, const std::vector<std::pair<bool, std::string>>& edits) {
  for (const auto& [is_set, edit] : edits) {
    if (!is_set) {
      apply_unset(doc, edit);
    } else if (auto bad = apply_set(doc, edit)) {
      return bad;
    }
  }
  return std::nullopt;
}

// `doc` holds the input file's object, or is null to edit the stored policy.
int put(AdminClient& client, Io io, const std::string& id, rapidjson::Document& doc,
        const std::vector<std::pair<bool, std::string>>& edits, bool json) {
  std::string path = kPrefix + "/" + encode_path_segment(id);
  if (doc.IsNull()) {
    // Edit what is stored; a missing policy starts empty.
    auto current = client.call("GET", path);
    if (!current) {
      io.err << kProgram << ' ' << kName << ": " << current.error().message << '\n';
      return kExitFailure;
    }
    if (current->status == 404) {
      doc.SetObject();
    } else if (current->status != 200) {
      io.err << kProgram << ' ' << kName << ": " << client.describe_refusal(*current) << '\n';
      return kExitFailure;
    } else {
      rapidjson::Document stored;
      stored.Parse(current->body.data(), current->body.size());
      if (stored.HasParseError() || !stored.IsObject() || !stored.HasMember("data") || !stored["data"].IsObject()) {
        io.err << kProgram << ' ' << kName << ": unexpected answer from " << client.url() << '\n';
        return kExitFailure;
      }
      doc.CopyFrom(stored["data"], doc.GetAllocator());
    }
  }
  if (auto bad = apply_edits(doc, edits)) return usage_error(io, kName, *bad);
  rapidjson::Document stored;
  if (auto failed = client.call_json(io, kName, "PUT", path, json_text(doc, false), stored)) return *failed;
  print_json(io, stored, json);
  return kExitOk;
}

int put_lifecycle(AdminClient& client, Io io, const std::string& id, const rapidjson::Document& doc, bool json) {
  rapidjson::Document stored;
  std::string path = kPrefix + "/" + encode_path_segment(id) + "/lifecycle";
  if (auto failed = client.call_json(io, kName, "PUT", path, json_text(doc, false), stored)) return *failed;
  print_json(io, stored, json);
  return kExitOk;
}

int remove(AdminClient& client, Io io, const std::string& id, bool json) {
  rapidjson::Document doc;
  if (auto failed = client.call_json(io, kName, "DELETE", kPrefix + "/" + encode_path_segment(id), {}, doc)) {
    return *failed;
  }
  if (json) print_json(io, doc, true);
  else io.out << "removed policy " << id << '\n';
  return kExitOk;
}

int run(Args args, Io io) {
  AdminOptions options;
  std::optional<std::string> sub;
  std::vector<std::string> positional;
  std::vector<std::pair<bool, std::string>> edits;  // (true: --set, false: --unset)
  std::optional<std::string> lifecycle_file;
  bool data_only = false, lifecycle_only = false, dashdash = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    std::string error;
    if (!dashdash && a == "--") {
      dashdash = true;
      continue;
    }
    if (dashdash || a == "-" || !a.starts_with('-')) {
      if (!sub) sub = std::string(a);
      else positional.emplace_back(a);
      continue;
    }
    if (parse_admin_flag(args, i, options, error)) {
      if (!error.empty()) return usage_error(io, kName, error);
      continue;
    }
    auto value = [&](std::string_view flag) -> std::optional<std::string> {
      if (a.size() > flag.size() && a[flag.size()] == '=') return std::string(a.substr(flag.size() + 1));
      if (a != flag || i + 1 >= args.size()) return std::nullopt;
      return std::string(args[++i]);
    };
    bool is_put = sub == "put";
    if (is_put && (a == "--set" || a.starts_with("--set=") || a == "--unset" || a.starts_with("--unset="))) {
      bool is_set = a.starts_with("--set");
      auto v = value(is_set ? "--set" : "--unset");
      if (!v) return usage_error(io, kName, std::string(is_set ? "--set needs KEY=VALUE" : "--unset needs a KEY"));
      edits.emplace_back(is_set, *v);
    } else if (is_put && (a == "--lifecycle" || a.starts_with("--lifecycle="))) {
      auto v = value("--lifecycle");
      if (!v) return usage_error(io, kName, "--lifecycle needs a FILE (or - for standard input)");
      lifecycle_file = *v;
    } else if (sub == "get" && a == "--data") {
      data_only = true;
    } else if (sub == "get" && a == "--lifecycle") {
      lifecycle_only = true;
    } else {
      return usage_error(io, kName, "unexpected argument '" + std::string(a) + "'" +
                                        (sub ? "" : " (the subcommand comes first: ls, get, put or rm)"));
    }
  }
  if (!sub) return usage_error(io, kName, "no subcommand given (ls, get, put or rm)");
  if (*sub != "ls" && *sub != "get" && *sub != "put" && *sub != "rm") {
    return usage_error(io, kName, "unknown subcommand '" + *sub + "' (ls, get, put or rm)");
  }
  std::size_t max_positional = *sub == "ls" ? 0 : *sub == "put" && !lifecycle_file ? 2 : 1;
  if (*sub != "ls" && positional.empty()) return usage_error(io, kName, *sub + " needs a policy ID");
  if (positional.size() > max_positional) {
    return usage_error(io, kName, "unexpected argument '" + positional[max_positional] + "'");
  }
  if (data_only && lifecycle_only) return usage_error(io, kName, "--data and --lifecycle are exclusive");
  if (lifecycle_file && !edits.empty()) {
    return usage_error(io, kName, "--lifecycle stores the lifecycle only; --set and --unset edit the policy");
  }
  std::optional<std::string> file;
  if (*sub == "put" && positional.size() == 2) file = positional[1];
  if (*sub == "put" && !file && !lifecycle_file && edits.empty()) {
    return usage_error(io, kName, "put needs a FILE, - (standard input), --set or --lifecycle");
  }
  // Everything local is checked before anything is sent.
  if (!lifecycle_file) {
    rapidjson::Document scratch(rapidjson::kObjectType);
    if (auto bad = apply_edits(scratch, edits)) return usage_error(io, kName, *bad);
  }
  rapidjson::Document input;  // null: edit the stored policy
  if (file || lifecycle_file) {
    if (auto bad = read_json_object(io, file ? *file : *lifecycle_file, input)) return usage_error(io, kName, *bad);
  }

  auto client = AdminClient::create(options);
  if (!client) {
    if (client.error().code == Errc::InvalidArgument) return usage_error(io, kName, client.error().message);
    io.err << kProgram << ' ' << kName << ": " << client.error().message << '\n';
    return kExitFailure;
  }
  AdminClient& c = **client;
  if (*sub == "ls") return list(c, io, options.json);
  const std::string& id = positional[0];
  if (*sub == "get") return get(c, io, id, options.json, data_only, lifecycle_only);
  if (*sub == "rm") return remove(c, io, id, options.json);
  if (lifecycle_file) return put_lifecycle(c, io, id, input, options.json);
  return put(c, io, id, input, edits, options.json);
}

}  // namespace

const Command policy_command = {
    "policy",
    "List, show, store and remove the policies of a running server",
    kHelp,
    run,
};

}  // namespace terminals::cli
