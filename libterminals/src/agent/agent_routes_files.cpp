// The agent's /files/* routes: parse the request, call the file layer (files.hpp), answer with
// the reference's JSON field names, or {"detail"} with the status the file layer chose.
//
// TODO: these calls block the loop thread while the file system works (a slow disk or a huge
// directory stalls every connection). Move them to the thread pool with uv_queue_work.

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "agent/agent_internal.hpp"
#include "json/json.hpp"

namespace terminals::detail {

namespace {

std::string_view session_id(const AgentRequest& r) {
  return r.exchange->request().headers.get("X-Session-Id").value_or(std::string_view());
}

FileContext context(AgentState& state, const AgentRequest& r) {
  return make_file_context(state.cwds, state.home, session_id(r), state.file_options);
}

// A required query parameter, or a 422 sent and nullopt.
std::optional<std::string_view> required_query(AgentRequest& r, std::string_view name) {
  auto v = r.query.get(name);
  if (!v) send_detail(*r.exchange, 422, "Missing query parameter '" + std::string(name) + "'");
  return v;
}

// An optional integer query parameter: the value, nullopt when absent, or a 422 sent (ok=false).
std::optional<std::int64_t> int_query(AgentRequest& r, std::string_view name, bool& ok) {
  auto v = r.query.get(name);
  if (!v) return std::nullopt;
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || end != v->data() + v->size()) {
    send_detail(*r.exchange, 422, "Query parameter '" + std::string(name) + "' must be an integer");
    ok = false;
    return std::nullopt;
  }
  return n;
}

// The JSON object body, or a 422 sent and nullopt.
std::optional<rapidjson::Document> json_body(AgentRequest& r) {
  auto doc = parse_json(r.body);
  if (!doc) {
    send_detail(*r.exchange, 422, "Invalid JSON body: " + doc.error().message);
    return std::nullopt;
  }
  if (!doc->IsObject()) {
    send_detail(*r.exchange, 422, "The JSON body must be an object");
    return std::nullopt;
  }
  return std::move(doc).value();
}

// A required string member, or a 422 sent and nullopt.
std::optional<std::string_view> required_string(AgentRequest& r, const rapidjson::Value& obj,
                                                const char* name) {
  auto v = json_string(obj, name);
  if (!v) send_detail(*r.exchange, 422, std::string("Field '") + name + "' must be a string");
  return v;
}

void send_path(AgentRequest& r, const Result<PathResult>& result, const char* key) {
  if (!result) return send_error(*r.exchange, result.error());
  send_json(*r.exchange, 200, JsonWriter().object().field(key, result->path).end_object().take());
}

}  // namespace

void add_file_routes(AgentRouter& router, AgentState& state) {
  AgentState* s = &state;

  router.add("GET", "/files/cwd", {false, [s](AgentRequest& r) {
               CwdInfo info = get_cwd(context(*s, r));
               JsonWriter w;
               w.object().field("cwd", info.cwd).field("home", info.home);
               if (info.root) {
                 w.key("root").object().field("path", info.root->path)
                     .field("label", info.root->label).end_object();
               }
               send_json(*r.exchange, 200, w.end_object().take());
             }});
  router.add("POST", "/files/cwd", {true, [s](AgentRequest& r) {
               auto doc = json_body(r);
               if (!doc) return;
               auto path = required_string(r, *doc, "path");
               if (!path) return;
               send_path(r, set_cwd(s->cwds, context(*s, r), session_id(r), *path), "cwd");
             }});

  router.add("GET", "/files/list", {false, [s](AgentRequest& r) {
               auto listing = list_files(context(*s, r), r.query.get("directory").value_or("."));
               if (!listing) return send_error(*r.exchange, listing.error());
               JsonWriter w;
               w.object().field("dir", listing->dir).key("entries").array();
               for (const DirEntry& e : listing->entries) {
                 w.object().field("name", e.name).field("type", e.type).field("size", e.size)
                     .field("modified", e.modified).end_object();
               }
               send_json(*r.exchange, 200, w.end_array().end_object().take());
             }});

  router.add("GET", "/files/read", {false, [s](AgentRequest& r) {
               auto path = required_query(r, "path");
               if (!path) return;
               bool ok = true;
               auto start = int_query(r, "start_line", ok);
               if (!ok) return;
               auto end = int_query(r, "end_line", ok);
               if (!ok) return;
               auto read = read_file(context(*s, r), *path, start, end);
               if (!read) return send_error(*r.exchange, read.error());
               if (read->kind == ReadResult::Kind::Binary) {
                 r.exchange->respond(200, Headers{{"Content-Type", read->content_type}},
                                     read->content);
                 return;
               }
               send_json(*r.exchange, 200,
                         JsonWriter().object().field("path", read->path)
                             .field("total_lines", read->total_lines)
                             .field("content", read->content).end_object().take());
             }});

  router.add("GET", "/files/display", {false, [s](AgentRequest& r) {
               auto path = required_query(r, "path");
               if (!path) return;
               auto shown = display_file(context(*s, r), *path);
               if (!shown) return send_error(*r.exchange, shown.error());
               send_json(*r.exchange, 200,
                         JsonWriter().object().field("path", shown->path)
                             .field("exists", shown->exists).end_object().take());
             }});

  router.add("POST", "/files/write", {true, [s](AgentRequest& r) {
               auto doc = json_body(r);
               if (!doc) return;
               auto path = required_string(r, *doc, "path");
               if (!path) return;
               auto content = required_string(r, *doc, "content");
               if (!content) return;
               auto written = write_file(context(*s, r), *path, *content);
               if (!written) return send_error(*r.exchange, written.error());
               send_json(*r.exchange, 200,
                         JsonWriter().object().field("path", written->path)
                             .field("size", written->size).end_object().take());
             }});

  router.add("POST", "/files/mkdir", {true, [s](AgentRequest& r) {
               auto doc = json_body(r);
               if (!doc) return;
               auto path = required_string(r, *doc, "path");
               if (!path) return;
               send_path(r, mkdir_p(context(*s, r), *path), "path");
             }});

  router.add("DELETE", "/files/delete", {false, [s](AgentRequest& r) {
               auto path = required_query(r, "path");
               if (!path) return;
               auto deleted = delete_path(context(*s, r), *path);
               if (!deleted) return send_error(*r.exchange, deleted.error());
               send_json(*r.exchange, 200,
                         JsonWriter().object().field("path", deleted->path)
                             .field("type", deleted->type).end_object().take());
             }});

  router.add("POST", "/files/move", {true, [s](AgentRequest& r) {
               auto doc = json_body(r);
               if (!doc) return;
               auto source = required_string(r, *doc, "source");
               if (!source) return;
               auto destination = required_string(r, *doc, "destination");
               if (!destination) return;
               auto moved = move_path(context(*s, r), *source, *destination);
               if (!moved) return send_error(*r.exchange, moved.error());
               send_json(*r.exchange, 200,
                         JsonWriter().object().field("source", moved->source)
                             .field("destination", moved->destination).end_object().take());
             }});
}

}  // namespace terminals::detail
