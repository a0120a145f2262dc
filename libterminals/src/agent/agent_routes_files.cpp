// The agent's /files/* routes: parse the request, call the file layer (files.hpp), answer with
// the reference's JSON field names, or {"detail"} with the status the file layer chose.
//
// Parsing and validation happen on the loop thread; the file system calls run on libuv's thread
// pool (run_off_loop), so a slow disk or a huge directory does not stall other connections.
// GET /files/cwd only reads the in-memory session map and stays on the loop.
//
// Bodies that can be large never sit in memory whole: view, serve and archive stream the file
// from disk one chunk at a time (each read on the thread pool, the next one only once the
// socket drained), and upload feeds the request body to MultipartUpload as it arrives.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/agent_internal.hpp"
#include "agent/files_internal.hpp"
#include "json/json.hpp"

namespace terminals::detail {

namespace {

FileContext context(AgentState& state, const AgentRequest& r) {
  return make_file_context(state.cwds, state.home, session_id(r), state.file_options);
}

void send_path(AgentRequest& r, const Result<PathResult>& result, const char* key) {
  send_result(r, result, [key](JsonWriter& w, const PathResult& p) { w.field(key, p.path); });
}

std::string string_json(std::string_view s) {
  JsonWriter w;
  w.value(s);
  return w.take();
}

std::vector<LocPart> at(std::vector<LocPart> loc, LocPart part) {
  loc.push_back(std::move(part));
  return loc;
}

// ---- streaming a file from disk -------------------------------------------------------------

/// An open file descriptor, closed when the last owner lets go (also when a read job is
/// dropped because the agent went away).
class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

struct OpenedFile {
  std::shared_ptr<UniqueFd> fd;
  std::uint64_t size = 0;  ///< what is sent: the size when opened
};

/// Opens a regular file for streaming (blocking: call off the loop). O_NONBLOCK so that a FIFO
/// swapped in after view_file's check cannot hang the open; fstat then refuses it.
Result<OpenedFile> open_for_streaming(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) return file_error(404, "File not found");
    return files::os_error(400, err, path, {}, 403);
  }
  auto owned = std::make_shared<UniqueFd>(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return file_error(404, "File not found");
  return OpenedFile{std::move(owned), static_cast<std::uint64_t>(st.st_size)};
}

/// Sends an open file as the response body: one chunk is read on the thread pool, written, and
/// the next read starts only when the connection's write queue is below its high watermark
/// again, so memory stays at about a chunk plus the server's watermark whatever the file size.
/// Each step holds the sender through its pending job or drain handler; when the client goes
/// away the exchange drops the drain handler and the sender (and the descriptor) go with it.
class FileSender : public std::enable_shared_from_this<FileSender> {
 public:
  static constexpr std::size_t kChunkBytes = 256 * 1024;

  static void start(const std::shared_ptr<AgentState>& state, AgentRequest& r, OpenedFile file,
                    Headers headers) {
    auto sender = std::make_shared<FileSender>(state, r.shared_from_this(), std::move(file));
    headers.set("Content-Length", std::to_string(sender->file_.size));
    ResponseHead head;
    head.status = 200;
    head.headers = std::move(headers);
    ServerExchange& ex = *r.exchange;
    ex.write_head(head);
    if (sender->file_.size == 0 || ex.request().method == "HEAD") {
      ex.end();
      return;
    }
    sender->read_next();
  }

  FileSender(std::shared_ptr<AgentState> state, std::shared_ptr<AgentRequest> request,
             OpenedFile file)
      : state_(std::move(state)), request_(std::move(request)), file_(std::move(file)) {}

 private:
  bool gone() const { return request_->exchange->aborted() || request_->exchange->ended(); }

  void read_next() {
    if (gone() || reading_) return;
    reading_ = true;
    const std::uint64_t left = file_.size - sent_;
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunkBytes));
    run_off_loop(state_, *request_, [self = shared_from_this(), n,
                                     offset = sent_]() -> Responder {
      std::string buf(n, '\0');
      std::size_t got = 0;
      bool failed = false;
      while (got < n) {
        ssize_t k = ::pread(self->file_.fd->get(), buf.data() + got, n - got,
                            static_cast<off_t>(offset + got));
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) failed = true;
        if (k <= 0) break;
        got += static_cast<std::size_t>(k);
      }
      buf.resize(got);
      return [self, data = std::move(buf), failed](AgentRequest&) mutable {
        self->on_chunk(std::move(data), failed);
      };
    });
  }

  void on_chunk(std::string data, bool failed) {
    reading_ = false;
    if (gone()) return;
    ServerExchange& ex = *request_->exchange;
    if (failed || data.empty()) {
      // The file shrank or could not be read: the status is already out, so end short of the
      // Content-Length, which makes the server close the connection; the client sees a
      // truncated body instead of a silently wrong one.
      ex.end();
      return;
    }
    sent_ += data.size();
    const bool below_watermark = ex.write(data);
    if (sent_ >= file_.size) {
      ex.end();
      return;
    }
    if (below_watermark) {
      read_next();
    } else {
      // The server keeps a drain handler until it is replaced, so this one removes itself:
      // a later drain must not start a second read while one is in flight.
      ex.set_drain_handler([self = shared_from_this()] {
        self->request_->exchange->set_drain_handler(nullptr);
        self->read_next();
      });
    }
  }

  std::shared_ptr<AgentState> state_;
  std::shared_ptr<AgentRequest> request_;
  OpenedFile file_;
  std::uint64_t sent_ = 0;
  bool reading_ = false;  ///< a read job is in flight
};

/// Starlette adds a charset to text types; browsers showing /files/serve HTML rely on it.
std::string content_type_header(const std::string& mime) {
  if (mime.starts_with("text/") && mime.find("charset=") == std::string::npos) {
    return mime + "; charset=utf-8";
  }
  return mime;
}

/// Resolves (view_file / serve_file), opens and streams: the route body of view and serve.
template <class Resolve>
void stream_view(const std::shared_ptr<AgentState>& s, AgentRequest& r, Resolve resolve) {
  run_off_loop(s, r, [s, resolve = std::move(resolve)]() mutable -> Responder {
    Result<ViewResult> view = resolve();
    Result<OpenedFile> opened = view ? open_for_streaming(view->path)
                                     : Result<OpenedFile>(view.error());
    return [s, view = std::move(view), opened = std::move(opened)](AgentRequest& q) mutable {
      if (!opened) return send_error(*q.exchange, opened.error());
      FileSender::start(s, q, std::move(*opened),
                        Headers{{"Content-Type", content_type_header(view->content_type)}});
    };
  });
}

/// Content-Disposition for a download: a plain quoted name when it is printable ASCII without
/// quotes or backslashes, else an ASCII fallback plus RFC 5987's filename* with the real name.
std::string attachment_disposition(std::string_view name) {
  bool plain = true;
  std::string fallback;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f || c == '"' || c == '\\') {
      plain = false;
      fallback += '_';
    } else {
      fallback += c;
    }
  }
  std::string out = "attachment; filename=\"" + fallback + "\"";
  if (plain) return out;
  static constexpr char kHex[] = "0123456789ABCDEF";
  out += "; filename*=UTF-8''";
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    const bool unreserved = (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') ||
                            (u >= '0' && u <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

// ---- JSON members in Pydantic's lax mode ----------------------------------------------------

/// An optional integer member (absent or null: nullopt). Like Pydantic: integral floats and
/// numeric strings are accepted, booleans count as 0/1.
bool optional_int_member(AgentRequest& r, const rapidjson::Value& obj, const char* name,
                         std::optional<std::int64_t>& out, const std::vector<LocPart>& loc,
                         Bounds bounds) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return true;
  const rapidjson::Value& v = it->value;
  std::vector<LocPart> where = at(loc, std::string(name));
  std::int64_t n = 0;
  if (v.IsInt64()) {
    n = v.GetInt64();
  } else if (v.IsBool()) {
    n = v.GetBool() ? 1 : 0;
  } else if (v.IsDouble()) {
    double d = v.GetDouble();
    if (std::floor(d) != d || std::fabs(d) > 9.0e18) {
      send_validation_error(*r.exchange,
                            {"int_from_float", std::move(where),
                             "Input should be a valid integer, got a number with a fractional part",
                             to_json(v)});
      return false;
    }
    n = static_cast<std::int64_t>(d);
  } else if (v.IsString()) {
    std::string_view t(v.GetString(), v.GetStringLength());
    while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
    while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
    if (!t.empty() && t.front() == '+') t.remove_prefix(1);
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
    if (t.empty() || ec != std::errc() || end != t.data() + t.size()) {
      send_validation_error(*r.exchange,
                            {"int_parsing", std::move(where),
                             "Input should be a valid integer, unable to parse string as an integer",
                             to_json(v)});
      return false;
    }
  } else {
    send_validation_error(*r.exchange, {"int_type", std::move(where),
                                        "Input should be a valid integer", to_json(v)});
    return false;
  }
  if (bounds.ge && static_cast<double>(n) < *bounds.ge) {
    auto ge = static_cast<std::int64_t>(*bounds.ge);
    send_validation_error(*r.exchange,
                          {"greater_than_equal", std::move(where),
                           "Input should be greater than or equal to " + std::to_string(ge),
                           to_json(v), "{\"ge\":" + std::to_string(ge) + "}"});
    return false;
  }
  out = n;
  return true;
}

/// A boolean member with a default (Pydantic lax: 0/1 and the usual words are accepted; null is
/// not, the field is not Optional).
bool bool_member(AgentRequest& r, const rapidjson::Value& obj, const char* name, bool& out,
                 const std::vector<LocPart>& loc) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd()) return true;
  const rapidjson::Value& v = it->value;
  if (v.IsBool()) {
    out = v.GetBool();
    return true;
  }
  if (v.IsNumber() && (v.GetDouble() == 0.0 || v.GetDouble() == 1.0)) {
    out = v.GetDouble() == 1.0;
    return true;
  }
  if (v.IsString()) {
    std::string_view t(v.GetString(), v.GetStringLength());
    for (std::string_view yes : {"true", "1", "yes", "on", "t", "y"}) {
      if (iequals(t, yes)) {
        out = true;
        return true;
      }
    }
    for (std::string_view no : {"false", "0", "no", "off", "f", "n"}) {
      if (iequals(t, no)) {
        out = false;
        return true;
      }
    }
    send_validation_error(*r.exchange,
                          {"bool_parsing", at(loc, std::string(name)),
                           "Input should be a valid boolean, unable to interpret input", to_json(v)});
    return false;
  }
  send_validation_error(*r.exchange, {"bool_type", at(loc, std::string(name)),
                                      "Input should be a valid boolean", to_json(v)});
  return false;
}

/// A required array member; sends "missing" or "list_type" and returns null otherwise.
const rapidjson::Value* required_array(AgentRequest& r, const rapidjson::Value& obj,
                                       const char* name) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd()) {
    send_validation_error(*r.exchange,
                          {"missing", {"body", std::string(name)}, "Field required", to_json(obj)});
    return nullptr;
  }
  if (!it->value.IsArray()) {
    send_validation_error(*r.exchange, {"list_type", {"body", std::string(name)},
                                        "Input should be a valid list", to_json(it->value)});
    return nullptr;
  }
  return &it->value;
}

/// The replacements of POST /files/replace, validated like the ReplacementChunk model.
bool parse_replacements(AgentRequest& r, const rapidjson::Value& list,
                        std::vector<Replacement>& out) {
  for (rapidjson::SizeType i = 0; i < list.Size(); ++i) {
    const rapidjson::Value& item = list[i];
    std::vector<LocPart> loc{"body", "replacements", static_cast<std::int64_t>(i)};
    if (!item.IsObject()) {
      send_validation_error(*r.exchange,
                            {"model_type", loc,
                             "Input should be a valid dictionary or instance of ReplacementChunk",
                             to_json(item), R"({"class_name":"ReplacementChunk"})"});
      return false;
    }
    Replacement rep;
    std::string_view target;
    std::string_view replacement;
    if (!required_string(r, item, "target", target, loc)) return false;
    if (!required_string(r, item, "replacement", replacement, loc)) return false;
    rep.target = std::string(target);
    rep.replacement = std::string(replacement);
    if (!optional_int_member(r, item, "start_line", rep.start_line, loc, {1, {}})) return false;
    if (!optional_int_member(r, item, "end_line", rep.end_line, loc, {1, {}})) return false;
    if (!bool_member(r, item, "allow_multiple", rep.allow_multiple, loc)) return false;
    out.push_back(std::move(rep));
  }
  return true;
}

// ---- upload ---------------------------------------------------------------------------------

/// POST /files/upload: the body goes to MultipartUpload as it arrives. Writing to disk blocks,
/// so the parser runs on the thread pool, one batch of body bytes per job; bytes that arrive
/// meanwhile collect in `pending`, and past kMaxPending the socket is paused until the job is
/// back. At most one job touches `upload` at a time, and the loop leaves it alone meanwhile.
/// Memory: a batch in flight plus `pending`, about 2 * kMaxPending whatever the upload size.
class UploadReceiver : public std::enable_shared_from_this<UploadReceiver> {
 public:
  static constexpr std::size_t kMaxPending = 1u << 20;

  UploadReceiver(std::shared_ptr<AgentState> state, std::shared_ptr<AgentRequest> request,
                 MultipartUpload upload)
      : state_(std::move(state)), request_(std::move(request)), upload_(std::move(upload)) {}

  void start() {
    // The body handlers hold the receiver until the body ends (the exchange drops them then).
    request_->exchange->read_body(BodyHandlers{
        [self = shared_from_this()](std::string_view chunk) { self->on_data(chunk); },
        [self = shared_from_this()](Status status) { self->on_end(std::move(status)); }});
  }

 private:
  void on_data(std::string_view chunk) {
    if (failed_) return;
    pending_.append(chunk);
    if (!busy_) {
      pump();
    } else if (pending_.size() >= kMaxPending && !paused_) {
      paused_ = true;
      request_->exchange->pause_body();
    }
  }

  void on_end(Status status) {
    if (failed_) return;
    if (!status) {
      failed_ = true;
      // LimitExceeded: the server already answered 413; Eof, Timeout, Cancelled: nobody to
      // answer. The unfinished upload removes its temporary file when the receiver goes.
      if (status.error().code == Errc::InvalidArgument) {
        send_detail(*request_->exchange, 400, "Malformed request body");
      }
      return;
    }
    body_done_ = true;
    pump();
  }

  void pump() {
    if (busy_ || failed_) return;
    if (!pending_.empty()) {
      busy_ = true;
      std::string batch;
      batch.swap(pending_);
      if (paused_) {
        paused_ = false;
        request_->exchange->resume_body();
      }
      run_off_loop(state_, *request_,
                   [self = shared_from_this(), batch = std::move(batch)]() -> Responder {
                     Status fed = self->upload_.feed(batch);
                     return [self, fed = std::move(fed)](AgentRequest&) mutable {
                       self->on_fed(std::move(fed));
                     };
                   });
      return;
    }
    if (!body_done_) return;
    busy_ = true;
    run_off_loop(state_, *request_, [self = shared_from_this()]() -> Responder {
      return [self, done = self->upload_.finish()](AgentRequest& q) {
        self->busy_ = false;
        if (!done) return self->fail(done.error());
        send_result(q, done, [](JsonWriter& w, const UploadResult& u) {
          w.field("path", u.path).field("size", u.size);
        });
      };
    });
  }

  void on_fed(Status fed) {
    busy_ = false;
    if (!fed) return fail(fed.error());
    pump();
  }

  void fail(const Error& error) {
    failed_ = true;
    pending_.clear();
    ServerExchange& ex = *request_->exchange;
    // The server reads and drops the rest of the body once the response ended.
    if (paused_) ex.resume_body();
    if (file_error_status(error) == 422) {
      // FastAPI's answer for a form without the `file` field.
      send_validation_error(ex, {"missing", {"body", "file"}, "Field required"});
      return;
    }
    send_error(ex, error);
  }

  std::shared_ptr<AgentState> state_;
  std::shared_ptr<AgentRequest> request_;
  MultipartUpload upload_;  // only touched by the job in flight, or by nobody
  std::string pending_;
  bool busy_ = false;
  bool paused_ = false;
  bool body_done_ = false;
  bool failed_ = false;
};

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

  router.add("GET", "/files/view", {false, [s](AgentRequest& r) {
               std::string_view path;
               if (!required_query(r, "path", path)) return;
               stream_view(s, r, [ctx = context(*s, r), p = std::string(path)] {
                 return view_file(ctx, p);
               });
             }});
  router.add("GET", "/files/serve/{path...}", {false, [s](AgentRequest& r) {
               stream_view(s, r, [ctx = context(*s, r), tail = std::string(r.params.get("path"))] {
                 return serve_file(ctx, tail);
               });
             }});

  router.add("POST", "/files/replace", {true, [s](AgentRequest& r) {
               auto doc = json_body(r);
               if (!doc) return;
               std::string_view path;
               if (!required_string(r, *doc, "path", path)) return;
               const rapidjson::Value* list = required_array(r, *doc, "replacements");
               if (!list) return;
               std::vector<Replacement> replacements;
               if (!parse_replacements(r, *list, replacements)) return;
               run_off_loop(s, r, [ctx = context(*s, r), p = std::string(path),
                                   reps = std::move(replacements)]() -> Responder {
                 return [done = replace_file_content(ctx, p, reps)](AgentRequest& q) {
                   send_result(q, done, [](JsonWriter& w, const WriteResult& x) {
                     w.field("path", x.path).field("size", x.size);
                   });
                 };
               });
             }});

  router.add("GET", "/files/grep", {false, [s](AgentRequest& r) {
               GrepRequest req;
               std::string_view query;
               if (!required_query(r, "query", query)) return;
               req.query = std::string(query);
               req.path = std::string(r.query.get("path").value_or("."));
               if (!bool_query(r, "regex", req.regex)) return;
               if (!bool_query(r, "case_insensitive", req.case_insensitive)) return;
               for (std::string_view g : r.query.get_all("include")) req.include.emplace_back(g);
               if (!bool_query(r, "match_per_line", req.match_per_line)) return;
               std::optional<std::int64_t> max;
               if (!int_query(r, "max_results", max, {1, 500})) return;
               if (max) req.max_results = static_cast<int>(*max);
               run_off_loop(s, r, [ctx = context(*s, r), req = std::move(req)]() -> Responder {
                 return [found = grep_search(ctx, req)](AgentRequest& q) {
                   send_result(q, found, [](JsonWriter& w, const GrepResult& g) {
                     w.field("query", g.query).field("path", g.path).key("matches").array();
                     for (const GrepMatch& m : g.matches) {
                       w.object().field("file", m.file);
                       if (g.match_per_line) w.field("line", m.line).field("content", m.content);
                       w.end_object();
                     }
                     w.end_array().field("truncated", g.truncated);
                     // Not in the reference: only said when the search budget cut it short.
                     if (g.timed_out) w.field("timed_out", true);
                   });
                 };
               });
             }});

  router.add("GET", "/files/glob", {false, [s](AgentRequest& r) {
               GlobRequest req;
               std::string_view pattern;
               if (!required_query(r, "pattern", pattern)) return;
               req.pattern = std::string(pattern);
               req.path = std::string(r.query.get("path").value_or("."));
               for (std::string_view g : r.query.get_all("exclude")) req.exclude.emplace_back(g);
               if (auto type = r.query.get("type")) {
                 if (*type != "any" && *type != "file" && *type != "directory") {
                   send_validation_error(
                       *r.exchange,
                       {"literal_error", {"query", "type"},
                        "Input should be 'any', 'file' or 'directory'", string_json(*type),
                        R"({"expected":"'any', 'file' or 'directory'"})"});
                   return;
                 }
                 req.type = std::string(*type);
               }
               std::optional<std::int64_t> max;
               if (!int_query(r, "max_results", max, {1, 500})) return;
               if (max) req.max_results = static_cast<int>(*max);
               run_off_loop(s, r, [ctx = context(*s, r), req = std::move(req)]() -> Responder {
                 return [found = glob_search(ctx, req)](AgentRequest& q) {
                   send_result(q, found, [](JsonWriter& w, const GlobResult& g) {
                     w.field("pattern", g.pattern).field("path", g.path).key("matches").array();
                     for (const GlobMatch& m : g.matches) {
                       w.object().field("path", m.path).field("type", m.type)
                           .field("size", m.size).field("modified", m.modified).end_object();
                     }
                     w.end_array().field("truncated", g.truncated);
                     if (g.timed_out) w.field("timed_out", true);
                   });
                 };
               });
             }});

  // Streamed: no needs_body, the receiver reads the body itself (see UploadReceiver).
  router.add("POST", "/files/upload", {false, [s](AgentRequest& r) {
               std::string_view directory;
               if (!required_query(r, "directory", directory)) return;
               std::string_view type =
                   r.exchange->request().headers.get("Content-Type").value_or(std::string_view());
               // start() only parses the header and resolves the path: no disk access yet.
               auto upload = MultipartUpload::start(context(*s, r), directory, type);
               if (!upload) return send_error(*r.exchange, upload.error());
               std::make_shared<UploadReceiver>(s, r.shared_from_this(), std::move(*upload))
                   ->start();
             }});

  router.add("POST", "/files/archive", {true, [s](AgentRequest& r) {
               auto doc = json_body(r);
               if (!doc) return;
               const rapidjson::Value* list = required_array(r, *doc, "paths");
               if (!list) return;
               std::vector<std::string> paths;
               for (rapidjson::SizeType i = 0; i < list->Size(); ++i) {
                 const rapidjson::Value& v = (*list)[i];
                 if (!v.IsString()) {
                   send_validation_error(*r.exchange,
                                         {"string_type", {"body", "paths", std::int64_t{i}},
                                          "Input should be a valid string", to_json(v)});
                   return;
                 }
                 paths.emplace_back(v.GetString(), v.GetStringLength());
               }
               run_off_loop(s, r, [s, ctx = context(*s, r),
                                   paths = std::move(paths)]() -> Responder {
                 auto zip = archive_paths(ctx, paths);
                 Result<OpenedFile> opened = zip ? open_for_streaming(zip->file.path())
                                                 : Result<OpenedFile>(zip.error());
                 // The open descriptor keeps the data; the name can go now, so nothing is left
                 // behind in the temp directory however the download ends.
                 if (zip) zip->file.reset();
                 return [s, zip = std::move(zip), opened = std::move(opened)](AgentRequest& q) mutable {
                   if (!opened) return send_error(*q.exchange, opened.error());
                   FileSender::start(s, q, std::move(*opened),
                                     Headers{{"Content-Type", zip->content_type},
                                             {"Content-Disposition",
                                              attachment_disposition(zip->filename)}});
                 };
               });
             }});
}

}  // namespace terminals::detail
