// The agent's /files/* routes: parse the request, call the file layer (files.hpp), answer with
// the reference's JSON field names, or {"detail"} with the status the file layer chose.
//
// Parsing and validation happen on the loop thread; the file system calls run on libuv's thread
// pool (run_off_loop), so a slow disk or a huge directory does not stall other connections.
// GET /files/cwd only reads the in-memory session map and stays on the loop.

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

// Answers 200 with the JSON object `fill` writes from a successful result, or the result's
// error with its status; every file route replies this way.
template <class T, class Fill>
void send_result(AgentRequest& r, const Result<T>& result, Fill fill) {
  if (!result) return send_error(*r.exchange, result.error());
  JsonWriter w;
  w.object();
  fill(w, *result);
  send_json(*r.exchange, 200, w.end_object().take());
}

void send_path(AgentRequest& r, const Result<PathResult>& result, const char* key) {
  send_result(r, result, [key](JsonWriter& w, const PathResult& p) { w.field(key, p.path); });
}

}  // namespace

void add_file_routes(AgentRouter& router, const std::shared_ptr<AgentState>& state) {
  std::shared_ptr<AgentState> s = state;

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
               run_off_loop(s, r, [s, ctx = context(*s, r), id = std::string(session_id(r)),
                                   p = std::string(*path)]() -> Responder {
                 return [res = set_cwd(s->cwds, ctx, id, p)](AgentRequest& q) {
                   send_path(q, res, "cwd");
                 };
               });
             }});

  router.add("GET", "/files/list", {false, [s](AgentRequest& r) {
               run_off_loop(s, r, [ctx = context(*s, r),
                                   dir = std::string(r.query.get("directory").value_or("."))]()
                                      -> Responder {
                 return [listing = list_files(ctx, dir)](AgentRequest& q) {
                   send_result(q, listing, [](JsonWriter& w, const DirListing& l) {
                     w.field("dir", l.dir).key("entries").array();
                     for (const DirEntry& e : l.entries) {
                       w.object().field("name", e.name).field("type", e.type).field("size", e.size)
                           .field("modified", e.modified).end_object();
                     }
                     w.end_array();
                   });
                 };
               });
             }});

  router.add("GET", "/files/read", {false, [s](AgentRequest& r) {
               auto path = required_query(r, "path");
               if (!path) return;
               bool ok = true;
               auto start = int_query(r, "start_line", ok);
               if (!ok) return;
               auto end = int_query(r, "end_line", ok);
               if (!ok) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(*path), start,
                                   end]() -> Responder {
                 return [read = read_file(ctx, p, start, end)](AgentRequest& q) {
                   if (!read) return send_error(*q.exchange, read.error());
                   if (read->kind == ReadResult::Kind::Binary) {
                     q.exchange->respond(200, Headers{{"Content-Type", read->content_type}},
                                         read->content);
                     return;
                   }
                   send_result(q, read, [](JsonWriter& w, const ReadResult& t) {
                     w.field("path", t.path).field("total_lines", t.total_lines)
                         .field("content", t.content);
                   });
                 };
               });
             }});

  router.add("GET", "/files/display", {false, [s](AgentRequest& r) {
               auto path = required_query(r, "path");
               if (!path) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(*path)]() -> Responder {
                 return [shown = display_file(ctx, p)](AgentRequest& q) {
                   send_result(q, shown, [](JsonWriter& w, const DisplayResult& d) {
                     w.field("path", d.path).field("exists", d.exists);
                   });
                 };
               });
             }});

  router.add("POST", "/files/write", {true, [s](AgentRequest& r) {
               auto doc = json_body(r);
               if (!doc) return;
               auto path = required_string(r, *doc, "path");
               if (!path) return;
               auto content = required_string(r, *doc, "content");
               if (!content) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(*path),
                                   c = std::string(*content)]() -> Responder {
                 return [written = write_file(ctx, p, c)](AgentRequest& q) {
                   send_result(q, written, [](JsonWriter& w, const WriteResult& x) {
                     w.field("path", x.path).field("size", x.size);
                   });
                 };
               });
             }});

  router.add("POST", "/files/mkdir", {true, [s](AgentRequest& r) {
               auto doc = json_body(r);
               if (!doc) return;
               auto path = required_string(r, *doc, "path");
               if (!path) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(*path)]() -> Responder {
                 return [res = mkdir_p(ctx, p)](AgentRequest& q) { send_path(q, res, "path"); };
               });
             }});

  router.add("DELETE", "/files/delete", {false, [s](AgentRequest& r) {
               auto path = required_query(r, "path");
               if (!path) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(*path)]() -> Responder {
                 return [deleted = delete_path(ctx, p)](AgentRequest& q) {
                   send_result(q, deleted, [](JsonWriter& w, const DeleteResult& d) {
                     w.field("path", d.path).field("type", d.type);
                   });
                 };
               });
             }});

  router.add("POST", "/files/move", {true, [s](AgentRequest& r) {
               auto doc = json_body(r);
               if (!doc) return;
               auto source = required_string(r, *doc, "source");
               if (!source) return;
               auto destination = required_string(r, *doc, "destination");
               if (!destination) return;
               run_off_loop(s, r, [ctx = context(*s, r), from = std::string(*source),
                                   to = std::string(*destination)]() -> Responder {
                 return [moved = move_path(ctx, from, to)](AgentRequest& q) {
                   send_result(q, moved, [](JsonWriter& w, const MoveResult& m) {
                     w.field("source", m.source).field("destination", m.destination);
                   });
                 };
               });
             }});
}

}  // namespace terminals::detail
