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

FileContext context(AgentState& state, const AgentRequest& r) {
  return make_file_context(state.cwds, state.home, session_id(r), state.file_options);
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
               std::string_view path;
               if (!required_string(r, *doc, "path", path)) return;
               run_off_loop(s, r, [s, ctx = context(*s, r), id = std::string(session_id(r)),
                                   p = std::string(path)]() -> Responder {
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
               std::string_view path;
               if (!required_query(r, "path", path)) return;
               std::optional<std::int64_t> start;
               std::optional<std::int64_t> end;
               if (!int_query(r, "start_line", start, {1, {}})) return;
               if (!int_query(r, "end_line", end, {1, {}})) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(path), start,
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
               std::string_view path;
               if (!required_query(r, "path", path)) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(path)]() -> Responder {
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
               std::string_view path;
               if (!required_string(r, *doc, "path", path)) return;
               std::string_view content;
               if (!required_string(r, *doc, "content", content)) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(path),
                                   c = std::string(content)]() -> Responder {
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
               std::string_view path;
               if (!required_string(r, *doc, "path", path)) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(path)]() -> Responder {
                 return [res = mkdir_p(ctx, p)](AgentRequest& q) { send_path(q, res, "path"); };
               });
             }});

  router.add("DELETE", "/files/delete", {false, [s](AgentRequest& r) {
               std::string_view path;
               if (!required_query(r, "path", path)) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(path)]() -> Responder {
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
               std::string_view source;
               if (!required_string(r, *doc, "source", source)) return;
               std::string_view destination;
               if (!required_string(r, *doc, "destination", destination)) return;
               run_off_loop(s, r, [ctx = context(*s, r), from = std::string(source),
                                   to = std::string(destination)]() -> Responder {
                 return [moved = move_path(ctx, from, to)](AgentRequest& q) {
                   send_result(q, moved, [](JsonWriter& w, const MoveResult& m) {
                     w.field("source", m.source).field("destination", m.destination);
                   });
                 };
               });
             }});
}

}  // namespace terminals::detail
