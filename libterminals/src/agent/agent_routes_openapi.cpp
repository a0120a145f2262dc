// The agent's /info and /openapi.json (open-terminal-api.md §4.1 and §5).
//
// The OpenAPI document is what an AI client turns into tools: one tool per operation, named by
// its operationId, described by its summary and description, typed by its parameters. So it
// carries exactly the reference's operations with the same names, parameters, required flags,
// bounds, defaults and component schema names, in the shape FastAPI with Pydantic v2 emits
// (OpenAPI 3.1.0, optional values as anyOf [..., null]); the prose is our own, written for a
// model deciding which tool to call. It is built once, when the agent starts, and served as is.

#include <pwd.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "agent/agent_internal.hpp"
#include "json/json.hpp"
#include "terminals/version.hpp"

namespace terminals::detail {

namespace {

constexpr std::string_view kRefPrefix = "#/components/schemas/";

// One sentence on where commands run, for run_command's description: a model writes better
// commands when it knows the OS, architecture and shell up front.
std::string system_sentence() {
  HostFacts f = host_facts();
  std::string s = "Commands run on " + f.os;
  if (!f.kernel.empty()) s += " " + f.kernel;
  if (!f.arch.empty()) s += " (" + f.arch + ")";
  if (!f.host.empty()) s += ", host " + f.host;
  if (!f.user.empty()) s += ", as user " + f.user;
  s += ", under /bin/sh; the user's login shell is " + f.shell + ".";
  return s;
}

// The JSON type of a parameter or property, with its constraints.
struct Schema {
  std::string type;  ///< "string", "integer", "number", "boolean", "array" (of strings)
  std::optional<double> minimum = std::nullopt;
  std::optional<double> maximum = std::nullopt;
  std::initializer_list<const char*> choices = {};  ///< enum values, for strings
};

void write_number(JsonWriter& w, double v) {
  if (static_cast<double>(static_cast<std::int64_t>(v)) == v) {
    w.value(static_cast<std::int64_t>(v));
  } else {
    w.value(v);
  }
}

// The members of a bare type schema (type, items, enum, bounds) into the open object.
void write_type_members(JsonWriter& w, const Schema& s) {
  w.field("type", s.type);
  if (s.type == "array") w.key("items").object().field("type", "string").end_object();
  if (s.choices.size() > 0) {
    w.key("enum").array();
    for (const char* c : s.choices) w.value(c);
    w.end_array();
  }
  if (s.maximum) {
    w.key("maximum");
    write_number(w, *s.maximum);
  }
  if (s.minimum) {
    w.key("minimum");
    write_number(w, *s.minimum);
  }
}

// The bare type schema (no title, default or description).
void write_type(JsonWriter& w, const Schema& s) {
  w.object();
  write_type_members(w, s);
  w.end_object();
}

// "start_line" -> "Start Line", as Pydantic titles fields.
std::string title_of(std::string_view name) {
  std::string t;
  bool upper = true;
  for (char c : name) {
    if (c == '_') {
      t += ' ';
      upper = true;
      continue;
    }
    t += upper && c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
    upper = false;
  }
  return t;
}

/// What a default is: absent, or already-serialised JSON.
using Default = std::optional<std::string_view>;

// The schema of a field: required and optional-with-default fields carry their type directly;
// optional fields without a default may be null (anyOf [type, null]), as Pydantic writes
// Optional[...] = None.
void write_field_schema(JsonWriter& w, std::string_view name, const Schema& s, bool required,
                        Default def, std::string_view description, bool nullable) {
  if (nullable && !required) {
    w.object().key("anyOf").array();
    write_type(w, s);
    w.object().field("type", "null").end_object().end_array();
  } else {
    // The type's members go straight into the field's own object.
    w.object();
    write_type_members(w, s);
  }
  if (!description.empty()) w.field("description", description);
  if (def) w.key("default").raw(*def);
  w.field("title", title_of(name));
  w.end_object();
}

struct Param {
  const char* name;
  const char* in;  ///< "query" or "path"
  Schema schema;
  bool required = false;
  Default def = std::nullopt;
  bool nullable = false;  ///< Optional[...] = None
  const char* description = "";
};

void write_param(JsonWriter& w, const Param& p) {
  w.object().field("name", p.name).field("in", p.in).field("required", p.required);
  w.key("schema");
  write_field_schema(w, p.name, p.schema, p.required, p.def, p.description, p.nullable);
  if (*p.description) w.field("description", p.description);
  w.end_object();
}

struct Operation {
  const char* path;
  const char* method;
  const char* operation_id;
  const char* summary;
  std::string description;
  std::initializer_list<Param> params = {};
  const char* body_schema = nullptr;  ///< a component name, for a JSON body
  /// Documented failures besides 401 and 422: {status, description}.
  std::initializer_list<std::pair<const char*, const char*>> errors = {};
};

void write_operation(JsonWriter& w, const Operation& op) {
  w.object().field("summary", op.summary).field("description", op.description)
      .field("operationId", op.operation_id);
  if (op.params.size() > 0) {
    w.key("parameters").array();
    for (const Param& p : op.params) write_param(w, p);
    w.end_array();
  }
  if (op.body_schema) {
    w.key("requestBody").object().key("required").value(true).key("content").object()
        .key("application/json").object().key("schema").object()
        .field("$ref", std::string(kRefPrefix) + op.body_schema)
        .end_object().end_object().end_object().end_object();
  }
  w.key("responses").object();
  w.key("200").object().field("description", "Successful Response").key("content").object()
      .key("application/json").object().key("schema").object().end_object().end_object()
      .end_object().end_object();
  for (const auto& [status, description] : op.errors) {
    w.key(status).object().field("description", description).end_object();
  }
  w.key("401").object().field("description", "Missing or wrong API key.").end_object();
  if (op.params.size() > 0 || op.body_schema) {
    w.key("422").object().field("description", "Validation Error").key("content").object()
        .key("application/json").object().key("schema").object()
        .field("$ref", std::string(kRefPrefix) + "HTTPValidationError")
        .end_object().end_object().end_object().end_object();
  }
  w.end_object();
  w.key("security").array().object().key("HTTPBearer").array().end_array().end_object()
      .end_array();
  w.end_object();
}

// A component schema: an object with `properties` written by `fill` and `required` members.
template <class Fill>
void write_component(JsonWriter& w, const char* name, std::initializer_list<const char*> required,
                     Fill fill, const char* description = nullptr) {
  w.key(name).object().key("properties").object();
  fill(w);
  w.end_object().field("type", "object");
  if (required.size() > 0) {
    w.key("required").array();
    for (const char* r : required) w.value(r);
    w.end_array();
  }
  w.field("title", name);
  if (description) w.field("description", description);
  w.end_object();
}

void write_property(JsonWriter& w, const char* name, const Schema& s, bool required,
                    Default def, const char* description, bool nullable = false) {
  w.key(name);
  write_field_schema(w, name, s, required, def, description, nullable);
}

void write_components(JsonWriter& w) {
  const Schema str{"string"};
  w.key("components").object().key("schemas").object();
  write_component(w, "ExecRequest", {"command"}, [&](JsonWriter& c) {
    c.key("command").object().field("type", "string")
        .field("description",
               "The shell command line, run by /bin/sh -c: pipes, redirections, && and ; "
               "work as in a terminal.")
        .key("examples").array().value("ls -la").value("make test 2>&1 | tail -n 20")
        .end_array().field("title", "Command").end_object();
    write_property(c, "cwd", str, false, std::nullopt,
                   "Directory to run in. Relative paths start at the session's working "
                   "directory; without it the command runs there.",
                   true);
    c.key("env").object().key("anyOf").array().object().field("type", "object")
        .key("additionalProperties").object().field("type", "string").end_object().end_object()
        .object().field("type", "null").end_object().end_array()
        .field("description",
               "Environment variables to set for this command, on top of the inherited ones.")
        .field("title", "Env").end_object();
  });
  write_component(w, "InputRequest", {"input"}, [&](JsonWriter& c) {
    write_property(c, "input", str, true, std::nullopt,
                   "Text for the command's terminal. End a line with \\n to submit it; "
                   "escapes such as \\x03 (Ctrl-C) are understood.");
  });
  write_component(w, "WriteRequest", {"path", "content"}, [&](JsonWriter& c) {
    write_property(c, "path", str, true, std::nullopt,
                   "File to write, absolute or relative to the session's working directory. "
                   "Missing parent directories are created.");
    write_property(c, "content", str, true, std::nullopt,
                   "The complete new text of the file.");
  });
  write_component(w, "ReplacementChunk", {"target", "replacement"}, [&](JsonWriter& c) {
    write_property(c, "target", str, true, std::nullopt,
                   "Text to look for, character for character (whitespace and indentation "
                   "included).");
    write_property(c, "replacement", str, true, std::nullopt, "Text to put in its place.");
    write_property(c, "start_line", Schema{"integer", 1.0}, false, std::nullopt,
                   "Only search from this line on (1-based).", true);
    write_property(c, "end_line", Schema{"integer", 1.0}, false, std::nullopt,
                   "Only search up to this line (1-based, inclusive).", true);
    write_property(c, "allow_multiple", Schema{"boolean"}, false, "false",
                   "Replace every occurrence. When false, a target found more than once is an "
                   "error and nothing changes.");
  });
  write_component(w, "ReplaceRequest", {"path", "replacements"}, [&](JsonWriter& c) {
    write_property(c, "path", str, true, std::nullopt, "File to edit.");
    c.key("replacements").object().field("type", "array").key("items").object()
        .field("$ref", std::string(kRefPrefix) + "ReplacementChunk").end_object()
        .field("description",
               "Edits applied one after another; the file is written once, only if all of "
               "them succeed.")
        .field("title", "Replacements").end_object();
  });
  write_component(w, "HTTPValidationError", {}, [&](JsonWriter& c) {
    c.key("detail").object().key("items").object()
        .field("$ref", std::string(kRefPrefix) + "ValidationError").end_object()
        .field("type", "array").field("title", "Detail").end_object();
  });
  write_component(w, "ValidationError", {"loc", "msg", "type"}, [&](JsonWriter& c) {
    c.key("loc").object().key("items").object().key("anyOf").array()
        .object().field("type", "string").end_object()
        .object().field("type", "integer").end_object().end_array().end_object()
        .field("type", "array").field("title", "Location").end_object();
    c.key("msg").object().field("type", "string").field("title", "Message").end_object();
    c.key("type").object().field("type", "string").field("title", "Error Type").end_object();
  });
  w.end_object();
  w.key("securitySchemes").object().key("HTTPBearer").object().field("type", "http")
      .field("scheme", "bearer").end_object().end_object();
  w.end_object();
}

std::string build_openapi(bool with_info) {
  const Schema str{"string"};
  const Param process_id{"process_id", "path", str, true, std::nullopt, false,
                         "The id run_command returned."};
  const Param wait_param{"wait", "query", Schema{"number", 0.0, 300.0}, false, std::nullopt, true,
                         "Seconds (0 to 300) to wait for the command to finish before "
                         "answering; output gathered so far comes back either way. Leave out "
                         "to answer at once."};
  const Param tail_param{"tail", "query", Schema{"integer", 1.0}, false, std::nullopt, true,
                         "Return only the last N output entries."};

  const Operation operations[] = {
      {"/info", "get", "get_info", "Describe this environment",
       "Notes from the operator about this machine: what it is for, what is installed, rules "
       "to follow. Read them before starting work."},
      {"/files/list", "get", "list_files", "List a directory",
       "Names, types, sizes and modification times of the entries of one directory, sorted "
       "by name.",
       {{"directory", "query", str, false, "\".\"", false,
         "Directory to list, absolute or relative to the session's working directory."}},
       nullptr,
       {{"404", "The directory does not exist."}}},
      {"/files/read", "get", "read_file", "Read a file",
       "The text of a file, whole or a range of lines, with its total line count. Documents "
       "(PDF, Office) come back as extracted text; images come back as the image itself. To "
       "show a file to the user instead, use display_file.",
       {{"path", "query", str, true, std::nullopt, false,
         "File to read, absolute or relative to the session's working directory."},
        {"start_line", "query", Schema{"integer", 1.0}, false, std::nullopt, true,
         "First line to return (1-based). Default: the first line."},
        {"end_line", "query", Schema{"integer", 1.0}, false, std::nullopt, true,
         "Last line to return (1-based, inclusive). Default: the last line."}},
       nullptr,
       {{"404", "The file does not exist."}, {"415", "A binary file that cannot be shown as text."}}},
      {"/files/display", "get", "display_file", "Show a file to the user",
       "Opens the file in the user's viewer. It returns only whether the file exists, not its "
       "content: call read_file to see the content yourself.",
       {{"path", "query", str, true, std::nullopt, false, "File to show."}}},
      {"/files/write", "post", "write_file", "Write a file",
       "Creates or replaces a text file with the given content, creating missing parent "
       "directories. Returns the path and the size in bytes.",
       {}, "WriteRequest", {{"400", "The file could not be written."}}},
      {"/files/replace", "post", "replace_file_content", "Edit a file by replacing text",
       "Applies exact find-and-replace edits to a file, optionally within a line range. "
       "Cheaper and safer than rewriting the whole file for small changes. Fails without "
       "changing anything when a target is missing or ambiguous.",
       {}, "ReplaceRequest",
       {{"400", "A target was not found, or found several times without allow_multiple."},
        {"404", "The file does not exist."}}},
      {"/files/grep", "get", "grep_search", "Search file contents",
       "Finds lines matching a pattern in a file or, recursively, in a directory. Returns "
       "file, line number and line for each match (or only the matching files). Binary files "
       "are skipped.",
       {{"query", "query", str, true, std::nullopt, false, "The pattern to look for."},
        {"path", "query", str, false, "\".\"", false, "File or directory to search."},
        {"regex", "query", Schema{"boolean"}, false, "true", false,
         "Treat the query as a regular expression; false searches for the literal text."},
        {"case_insensitive", "query", Schema{"boolean"}, false, "false", false,
         "Ignore upper and lower case."},
        {"include", "query", Schema{"array"}, false, std::nullopt, true,
         "Only search files whose name matches one of these globs, e.g. *.cpp."},
        {"match_per_line", "query", Schema{"boolean"}, false, "true", false,
         "Return every matching line; false returns each matching file once."},
        {"max_results", "query", Schema{"integer", 1.0, 500.0}, false, "50", false,
         "Stop after this many matches."}},
       nullptr,
       {{"400", "The regular expression is invalid."}, {"404", "The search path does not exist."}}},
      {"/files/glob", "get", "glob_search", "Find files by name",
       "Finds files and directories whose name or relative path matches a glob pattern, "
       "recursively. Returns paths relative to the search directory with type, size and "
       "modification time.",
       {{"pattern", "query", str, true, std::nullopt, false,
         "Glob to match, e.g. *.py or src/**/test_*."},
        {"path", "query", str, false, "\".\"", false, "Directory to search in."},
        {"exclude", "query", Schema{"array"}, false, std::nullopt, true,
         "Globs of names or paths to leave out."},
        {"type", "query", Schema{"string", std::nullopt, std::nullopt, {"any", "file", "directory"}},
         false, "\"any\"", true, "Only files, only directories, or any."},
        {"max_results", "query", Schema{"integer", 1.0, 500.0}, false, "50", false,
         "Stop after this many matches."}},
       nullptr,
       {{"404", "The search directory does not exist."}}},
      {"/execute", "get", "list_processes", "List commands",
       "Every command started with run_command that is still known: running, finished or "
       "killed, with its exit code."},
      {"/execute", "post", "run_command", "Run a command",
       "Starts a shell command in the background and returns its id. Give wait to block "
       "until it finishes (up to that many seconds) and get its output in the same answer; "
       "otherwise poll get_process_status. Interactive programs read from "
       "send_process_input.\n\n" + system_sentence(),
       {wait_param, tail_param}, "ExecRequest",
       {{"404", "The working directory does not exist."}}},
      {"/execute/{process_id}/status", "get", "get_process_status", "Get a command's output",
       "Status, exit code and output of a command from a given offset. Reading consumes "
       "nothing: pass next_offset from the previous answer to get only what is new.",
       {process_id,
        {"wait", "query", Schema{"number", 0.0, 300.0}, false, std::nullopt, true,
         "Seconds (0 to 300) to wait for a running command to finish before answering."},
        {"offset", "query", Schema{"integer", 0.0}, false, "0", false,
         "Skip this many output entries (next_offset of the previous answer)."},
        tail_param},
       nullptr,
       {{"404", "No command with this id."}}},
      {"/execute/{process_id}/input", "post", "send_process_input", "Type into a command",
       "Writes text to a running command's terminal, as if typed: answers to prompts, input "
       "for a REPL, or \\x03 to interrupt it.",
       {process_id}, "InputRequest",
       {{"400", "The command has already exited."}, {"404", "No command with this id."}}},
      {"/execute/{process_id}", "delete", "kill_process", "Stop a command",
       "Terminates a command and everything it started (SIGTERM, or SIGKILL with force) and "
       "forgets it.",
       {process_id,
        {"force", "query", Schema{"boolean"}, false, "false", false,
         "Kill at once (SIGKILL) instead of asking the command to stop (SIGTERM)."}},
       nullptr,
       {{"404", "No command with this id."}}},
  };

  JsonWriter w;
  w.object().field("openapi", "3.1.0");
  w.key("info").object().field("title", "Open Terminal")
      .field("description",
             "Files, shell commands and processes of one machine, over HTTP. Compatible with "
             "Open Terminal.")
      .field("version", TERMINALS_VERSION_STRING).end_object();
  w.key("paths").object();
  // Operations sharing a path go under one path item, which must not repeat: they are
  // adjacent in the table above.
  std::string_view open_path;
  for (const Operation& op : operations) {
    if (!with_info && std::string_view(op.operation_id) == "get_info") continue;
    if (op.path != open_path) {
      if (!open_path.empty()) w.end_object();
      w.key(op.path).object();
      open_path = op.path;
    }
    w.key(op.method);
    write_operation(w, op);
  }
  if (!open_path.empty()) w.end_object();
  w.end_object();
  write_components(w);
  w.end_object();
  return w.take();
}

}  // namespace

void add_openapi_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state) {
  auto document = std::make_shared<const std::string>(build_openapi(!state->info.empty()));
  router.add("GET", "/openapi.json", {false, [document](AgentRequest& r) {
               send_json(*r.exchange, 200, *document);
             }});
  if (state->info.empty()) return;  // like the reference: no info, no route
  auto body = std::make_shared<const std::string>(
      JsonWriter().object().field("info", state->info).end_object().take());
  router.add("GET", "/info", {false, [body](AgentRequest& r) {
               send_json(*r.exchange, 200, *body);
             }});
}

}  // namespace terminals::detail
