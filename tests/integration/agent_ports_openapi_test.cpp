// The agent's /openapi.json, /info, /ports and /proxy over real sockets: the OpenAPI document
// an AI client builds its tools from, a real listening child process, and a real upstream
// Server on the same loop behind the proxy.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "json/json.hpp"
#include "support/agent_fixture.hpp"
#include "terminals/agent.hpp"
#include "terminals/http_client.hpp"
#include "terminals/server.hpp"
#include "terminals/version.hpp"

using namespace terminals;
using namespace std::chrono_literals;

using test::AgentFixture;
using test::kKey;

namespace {

rapidjson::Document parse(const std::string& body) {
  auto doc = terminals::detail::parse_json(body);
  REQUIRE_MESSAGE(doc.has_value(), body);
  return std::move(doc).value();
}

std::string str(const rapidjson::Value& v) {
  REQUIRE(v.IsString());
  return std::string(v.GetString(), v.GetStringLength());
}

// operationId -> (path, method, operation object), over the whole document.
struct OperationRef {
  std::string path;
  std::string method;
  const rapidjson::Value* op;
};

std::map<std::string, OperationRef> operations(const rapidjson::Document& doc) {
  std::map<std::string, OperationRef> out;
  REQUIRE(doc.HasMember("paths"));
  for (auto p = doc["paths"].MemberBegin(); p != doc["paths"].MemberEnd(); ++p) {
    for (auto m = p->value.MemberBegin(); m != p->value.MemberEnd(); ++m) {
      REQUIRE(m->value.HasMember("operationId"));
      std::string id = str(m->value["operationId"]);
      CHECK_MESSAGE(out.count(id) == 0, id);
      out[id] = {str(p->name), str(m->name), &m->value};
    }
  }
  return out;
}

const rapidjson::Value* param(const rapidjson::Value& op, const std::string& name) {
  if (!op.HasMember("parameters")) return nullptr;
  for (const auto& p : op["parameters"].GetArray()) {
    if (str(p["name"]) == name) return &p;
  }
  return nullptr;
}

// The schema that carries the type: the schema itself, or the non-null branch of an anyOf.
const rapidjson::Value& typed(const rapidjson::Value& schema) {
  if (!schema.HasMember("anyOf")) return schema;
  const auto& any = schema["anyOf"];
  REQUIRE(any.Size() == 2);
  CHECK(str(any[1]["type"]) == "null");
  return any[0];
}

// Checks a query or path parameter: where it is, required, type, bounds and default.
void check_param(const rapidjson::Value& op, const std::string& name, const std::string& in,
                 bool required, const std::string& type, bool nullable = false,
                 std::optional<double> minimum = std::nullopt,
                 std::optional<double> maximum = std::nullopt,
                 std::optional<std::string> default_json = std::nullopt) {
  INFO("parameter " << name);
  const rapidjson::Value* p = param(op, name);
  REQUIRE(p != nullptr);
  CHECK(str((*p)["in"]) == in);
  CHECK((*p)["required"].GetBool() == required);
  const rapidjson::Value& schema = (*p)["schema"];
  CHECK(schema.HasMember("anyOf") == nullable);
  const rapidjson::Value& t = typed(schema);
  CHECK(str(t["type"]) == type);
  CHECK(t.HasMember("minimum") == minimum.has_value());
  if (minimum) CHECK(t["minimum"].GetDouble() == *minimum);
  CHECK(t.HasMember("maximum") == maximum.has_value());
  if (maximum) CHECK(t["maximum"].GetDouble() == *maximum);
  CHECK(schema.HasMember("default") == default_json.has_value());
  if (default_json) CHECK(terminals::detail::to_json(schema["default"]) == *default_json);
  CHECK_FALSE(str((*p)["description"]).empty());
}

// Every "$ref" anywhere in `v` names a schema that exists in components.
void check_refs(const rapidjson::Value& v, const rapidjson::Value& schemas, int& count) {
  if (v.IsObject()) {
    for (auto m = v.MemberBegin(); m != v.MemberEnd(); ++m) {
      if (str(m->name) == "$ref") {
        std::string ref = str(m->value);
        const std::string prefix = "#/components/schemas/";
        REQUIRE_MESSAGE(ref.rfind(prefix, 0) == 0, ref);
        CHECK_MESSAGE(schemas.HasMember(ref.substr(prefix.size()).c_str()), ref);
        ++count;
      } else {
        check_refs(m->value, schemas, count);
      }
    }
  } else if (v.IsArray()) {
    for (const auto& e : v.GetArray()) check_refs(e, schemas, count);
  }
}

const std::set<std::string> kToolsWithoutInfo = {
    "list_files",   "read_file",          "display_file",   "write_file",
    "replace_file_content", "grep_search", "glob_search",   "list_processes",
    "run_command",  "get_process_status", "send_process_input", "kill_process"};

// The document's checks that do not depend on `info`.
void check_document(const rapidjson::Document& doc) {
  CHECK(str(doc["openapi"]) == "3.1.0");
  CHECK(str(doc["info"]["title"]) == "Open Terminal");
  CHECK(str(doc["info"]["version"]) == TERMINALS_VERSION_STRING);
  const auto& components = doc["components"];
  const auto& scheme = components["securitySchemes"]["HTTPBearer"];
  CHECK(str(scheme["type"]) == "http");
  CHECK(str(scheme["scheme"]) == "bearer");
  const auto& schemas = components["schemas"];
  for (const char* name : {"ExecRequest", "InputRequest", "WriteRequest", "ReplaceRequest",
                           "ReplacementChunk", "HTTPValidationError", "ValidationError"}) {
    CHECK_MESSAGE(schemas.HasMember(name), name);
  }
  int refs = 0;
  check_refs(doc, schemas, refs);
  CHECK(refs >= 6);  // four request bodies, the chunk list, the validation error items, ...

  auto ops = operations(doc);
  for (const auto& [id, ref] : ops) {
    INFO("operation " << id);
    const auto& op = *ref.op;
    REQUIRE(op.HasMember("security"));
    CHECK(terminals::detail::to_json(op["security"]) == R"([{"HTTPBearer":[]}])");
    CHECK_FALSE(str(op["summary"]).empty());
    CHECK_FALSE(str(op["description"]).empty());
    CHECK(op["responses"].HasMember("200"));
  }
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("agent openapi: twelve tools without info with the reference parameters") {
  AgentFixture f;
  auto res = f.fetch("GET", "/openapi.json", {}, std::nullopt);  // open: no key
  REQUIRE(res.head.status == 200);
  CHECK(res.head.headers.get("Content-Type") == std::optional<std::string_view>("application/json"));
  auto doc = parse(res.body);
  check_document(doc);
  auto ops = operations(doc);
  std::set<std::string> ids;
  for (const auto& [id, ref] : ops) ids.insert(id);
  CHECK(ids == kToolsWithoutInfo);
  CHECK_FALSE(doc["paths"].HasMember("/info"));

  auto where = [&](const char* id, const char* path, const char* method) {
    INFO(id);
    REQUIRE(ops.count(id) == 1);
    CHECK(ops[id].path == path);
    CHECK(ops[id].method == method);
    return ops[id].op;
  };
  const auto& list = *where("list_files", "/files/list", "get");
  check_param(list, "directory", "query", false, "string", false, {}, {}, "\".\"");
  const auto& read = *where("read_file", "/files/read", "get");
  check_param(read, "path", "query", true, "string");
  check_param(read, "start_line", "query", false, "integer", true, 1.0);
  check_param(read, "end_line", "query", false, "integer", true, 1.0);
  check_param(*where("display_file", "/files/display", "get"), "path", "query", true, "string");
  const auto& grep = *where("grep_search", "/files/grep", "get");
  check_param(grep, "query", "query", true, "string");
  check_param(grep, "path", "query", false, "string", false, {}, {}, "\".\"");
  check_param(grep, "regex", "query", false, "boolean", false, {}, {}, "true");
  check_param(grep, "case_insensitive", "query", false, "boolean", false, {}, {}, "false");
  check_param(grep, "include", "query", false, "array", true);
  check_param(grep, "match_per_line", "query", false, "boolean", false, {}, {}, "true");
  check_param(grep, "max_results", "query", false, "integer", false, 1.0, 500.0, "50");
  const auto& glob = *where("glob_search", "/files/glob", "get");
  check_param(glob, "pattern", "query", true, "string");
  check_param(glob, "path", "query", false, "string", false, {}, {}, "\".\"");
  check_param(glob, "exclude", "query", false, "array", true);
  check_param(glob, "type", "query", false, "string", true, {}, {}, "\"any\"");
  CHECK(terminals::detail::to_json(typed((*param(glob, "type"))["schema"])["enum"]) ==
        R"(["any","file","directory"])");
  check_param(glob, "max_results", "query", false, "integer", false, 1.0, 500.0, "50");
  CHECK_FALSE(where("list_processes", "/execute", "get")->HasMember("parameters"));
  const auto& run = *where("run_command", "/execute", "post");
  check_param(run, "wait", "query", false, "number", true, 0.0, 300.0);
  check_param(run, "tail", "query", false, "integer", true, 1.0);
  const auto& status = *where("get_process_status", "/execute/{process_id}/status", "get");
  check_param(status, "process_id", "path", true, "string");
  check_param(status, "wait", "query", false, "number", true, 0.0, 300.0);
  check_param(status, "offset", "query", false, "integer", false, 0.0, {}, "0");
  check_param(status, "tail", "query", false, "integer", true, 1.0);
  const auto& input = *where("send_process_input", "/execute/{process_id}/input", "post");
  check_param(input, "process_id", "path", true, "string");
  const auto& kill = *where("kill_process", "/execute/{process_id}", "delete");
  check_param(kill, "process_id", "path", true, "string");
  check_param(kill, "force", "query", false, "boolean", false, {}, {}, "false");

  // Request bodies, and what the body schemas require.
  auto body_ref = [&](const char* id) {
    const auto& op = *ops[id].op;
    REQUIRE(op.HasMember("requestBody"));
    CHECK(op["requestBody"]["required"].GetBool());
    return str(op["requestBody"]["content"]["application/json"]["schema"]["$ref"]);
  };
  CHECK(body_ref("write_file") == "#/components/schemas/WriteRequest");
  CHECK(body_ref("replace_file_content") == "#/components/schemas/ReplaceRequest");
  CHECK(body_ref("run_command") == "#/components/schemas/ExecRequest");
  CHECK(body_ref("send_process_input") == "#/components/schemas/InputRequest");
  const auto& schemas = doc["components"]["schemas"];
  auto required = [&](const char* name) {
    return terminals::detail::to_json(schemas[name]["required"]);
  };
  CHECK(required("ExecRequest") == R"(["command"])");
  CHECK(required("InputRequest") == R"(["input"])");
  CHECK(required("WriteRequest") == R"(["path","content"])");
  CHECK(required("ReplaceRequest") == R"(["path","replacements"])");
  CHECK(required("ReplacementChunk") == R"(["target","replacement"])");
  const auto& chunk = schemas["ReplacementChunk"]["properties"];
  CHECK(typed(chunk["start_line"])["minimum"].GetInt() == 1);
  CHECK(chunk["allow_multiple"]["default"].IsFalse());
  CHECK(str(typed(schemas["ExecRequest"]["properties"]["env"])["type"]) == "object");

  // run_command tells the model about the machine.
  struct utsname u {};
  REQUIRE(::uname(&u) == 0);
  std::string description = str(run["description"]);
  CHECK(description.find(u.sysname) != std::string::npos);
  CHECK(description.find(u.machine) != std::string::npos);
  CHECK(description.find("Python") == std::string::npos);

  // Without info there is no /info either.
  CHECK(f.fetch("GET", "/info").head.status == 404);
  f.finish();
}

TEST_CASE("agent openapi: with info get_info is the thirteenth tool and /info answers") {
  AgentFixture f([](AgentOptions& o) { o.info = "GPU box: \"cuda\" 12 installed"; });
  auto doc = parse(f.fetch("GET", "/openapi.json", {}, std::nullopt).body);
  check_document(doc);
  auto ops = operations(doc);
  std::set<std::string> ids;
  for (const auto& [id, ref] : ops) ids.insert(id);
  auto expected = kToolsWithoutInfo;
  expected.insert("get_info");
  CHECK(ids == expected);
  CHECK(ops["get_info"].path == "/info");
  CHECK(ops["get_info"].method == "get");

  auto info = f.fetch("GET", "/info");
  CHECK(info.head.status == 200);
  CHECK(info.body == R"({"info":"GPU box: \"cuda\" 12 installed"})");
  CHECK(f.fetch("GET", "/info", {}, std::nullopt).head.status == 401);
  CHECK(f.fetch("GET", "/openapi.json", {}, std::string("wrong")).head.status == 200);
  f.finish();
}

TEST_CASE("agent ports: a port a started command listens on is listed until it is killed") {
#ifndef TERMINALS_CLI_PATH
  WARN_MESSAGE(false, "SKIPPED: terminals-cli is not built, no listener to start");
  return;
#else
  AgentFixture f;
  // The listener is our own agent binary, started through /execute like any user command: a
  // descendant of the agent (the test process), unlike the agent's own socket.
  std::string command = std::string("exec '") + TERMINALS_CLI_PATH +
                        "' agent --listen tcp://127.0.0.1:0 --api-key child --home " +
                        f.home.path();
  auto started = f.fetch("POST", "/execute", terminals::detail::JsonWriter().object()
                                                 .field("command", command).end_object().take());
  REQUIRE(started.head.status == 200);
  std::string id = str(parse(started.body)["id"]);

  int port = 0;
  test::run_until(*f.loop, [&] {
    auto status = parse(f.fetch("GET", "/execute/" + id + "/status").body);
    std::string out;
    for (const auto& e : status["output"].GetArray()) out += str(e["data"]);
    const std::string marker = "listening on tcp://127.0.0.1:";
    auto at = out.find(marker);
    if (at != std::string::npos) port = std::atoi(out.c_str() + at + marker.size());
    if (port == 0) test::run_for(*f.loop, 50ms);
    return port != 0;
  });
  REQUIRE(port > 0);

  auto listed = [&](int p) -> std::optional<std::pair<int, std::string>> {
    auto res = f.fetch("GET", "/ports");
    REQUIRE(res.head.status == 200);
    auto doc = parse(res.body);
    for (const auto& e : doc["ports"].GetArray()) {
      if (e["port"].GetInt() == p) return std::make_pair(e["pid"].GetInt(), str(e["process"]));
    }
    return std::nullopt;
  };
  auto entry = listed(port);
  REQUIRE(entry.has_value());
  CHECK(entry->first > 0);
  CHECK(entry->first != ::getpid());
  std::ifstream comm("/proc/" + std::to_string(entry->first) + "/comm");
  std::string name;
  std::getline(comm, name);
  CHECK(entry->second == name);
  CHECK(entry->second.rfind("terminals-", 0) == 0);
  // The agent's own port belongs to the agent, not to a descendant.
  CHECK_FALSE(listed(f.agent->local_endpoint().port).has_value());
  CHECK(f.fetch("GET", "/ports", {}, std::nullopt).head.status == 401);

  CHECK(f.fetch("DELETE", "/execute/" + id + "?force=true").head.status == 200);
  CHECK(test::run_until(*f.loop, [&] {
    if (!listed(port)) return true;
    test::run_for(*f.loop, 50ms);
    return false;
  }));
  f.finish();
#endif
}

}  // TEST_SUITE

// ---------------------------------------------------------------------------------------------
// The proxy

namespace {

// A Server on 127.0.0.1:0 in the test's loop. Per path:
//   /echo...      answers 201 with X-Upstream and a JSON body describing the request
//   /redirect     302 with Location (must reach the client unchanged, not followed)
//   /missing      404
//   /count        reads the body, counting bytes; answers with the count
//   /download     `download_size` bytes, with backpressure; when `hold_after` is set, stops
//                 after that many bytes until `release` is called
//   /endless      bytes until the client goes away (then `aborted` is set)
struct Upstream {
  ServerPtr server;
  std::vector<RequestHead> seen;
  std::vector<std::string> bodies;
  std::uint64_t received = 0;       ///< body bytes /count got so far
  bool count_done = false;
  std::uint64_t download_size = 0;
  std::uint64_t sent = 0;           ///< bytes /download or /endless wrote
  std::uint64_t hold_after = 0;
  std::function<void()> release;
  bool aborted = false;

  explicit Upstream(Loop& loop, const char* host = "127.0.0.1") {
    ServerOptions o;
    o.listen = Endpoint::tcp(host, 0);
    auto created = Server::create(loop, o, [this](ServerExchangePtr ex) { handle(std::move(ex)); });
    if (created) server = std::move(created).value();
  }
  int port() const { return server->local_endpoint().port; }

  void handle(ServerExchangePtr ex) {
    const RequestHead& h = ex->request();
    seen.push_back(h);
    std::string path(h.path());
    if (path.rfind("/echo", 0) == 0) {
      auto body = std::make_shared<std::string>();
      ex->read_body({[body](std::string_view d) { body->append(d); },
                     [this, ex, body](Status) {
                       bodies.push_back(*body);
                       const RequestHead& rh = ex->request();
                       std::string out = terminals::detail::JsonWriter().object()
                                             .field("method", rh.method).field("target", rh.target)
                                             .field("body", *body).end_object().take();
                       ex->respond(201, Headers{{"Content-Type", "application/json"},
                                                {"X-Upstream", "yes"},
                                                {"Set-Cookie", "a=1"},
                                                {"Set-Cookie", "b=2"}},
                                   out);
                     }});
    } else if (path == "/redirect") {
      ex->respond(302, Headers{{"Location", "/elsewhere?x=1"}}, "");
    } else if (path == "/missing") {
      ex->respond(404, Headers{{"Content-Type", "text/plain"}}, "no such thing");
    } else if (path == "/count") {
      ex->read_body({[this](std::string_view d) { received += d.size(); },
                     [this, ex](Status st) {
                       count_done = true;
                       ex->respond(st ? 200 : 500, Headers{}, std::to_string(received));
                     }});
    } else if (path == "/download" || path == "/endless") {
      const bool endless = path == "/endless";
      ResponseHead rh;
      if (!endless) rh.headers.add("Content-Length", std::to_string(download_size));
      ex->write_head(rh);
      // The drain handler below and `ex` hold each other: the end or the abort breaks that.
      ex->on_abort([this, raw = ex.get()] {
        aborted = true;
        raw->set_drain_handler(nullptr);
      });
      auto chunk = std::make_shared<std::string>(256 * 1024, 'd');
      auto pump = std::make_shared<std::function<void()>>();
      std::weak_ptr<std::function<void()>> weak_pump = pump;
      *pump = [this, ex, chunk, endless, weak_pump] {
        while (!ex->aborted()) {
          if (!endless && sent >= download_size) {
            ex->end();
            ex->set_drain_handler(nullptr);
            release = nullptr;
            return;
          }
          if (hold_after && sent >= hold_after) {
            hold_after = 0;
            release = [weak_pump] {
              if (auto p = weak_pump.lock()) (*p)();
            };
            return;
          }
          std::uint64_t n = chunk->size();
          if (!endless) n = std::min<std::uint64_t>(n, download_size - sent);
          sent += n;
          if (!ex->write(std::string_view(*chunk).substr(0, n))) return;  // on drain
        }
        ex->set_drain_handler(nullptr);
      };
      // The drain handler owns the pump; it is cleared when the response ends.
      ex->set_drain_handler([pump] {
        auto keep = pump;  // the pump may clear this very handler
        (*keep)();
      });
      (*pump)();
    } else {
      ex->respond(500, Headers{}, "unexpected path " + path);
    }
  }
};

// Streams a request through the agent with HttpClient::request, without buffering.
struct Streamed {
  ClientExchangePtr ex;
  std::optional<ResponseHead> head;
  std::optional<Error> error;
  std::uint64_t body_bytes = 0;
  std::string body;  ///< kept only up to 4 KiB
  bool ended = false;
  Status end_status;
};

std::shared_ptr<Streamed> stream_request(AgentFixture& f, RequestHead head, bool read = true) {
  auto s = std::make_shared<Streamed>();
  head.headers.add("Authorization", std::string("Bearer ") + kKey);
  std::weak_ptr<Streamed> weak = s;
  s->ex = f.client->request(f.agent->local_endpoint(), std::move(head),
                            [weak, read](Result<ResponseHead> r) {
                              auto t = weak.lock();
                              if (!t) return;
                              if (!r) {
                                t->error = r.error();
                                return;
                              }
                              t->head = std::move(r).value();
                              if (!read) return;
                              t->ex->read_body({[weak](std::string_view d) {
                                                  auto u = weak.lock();
                                                  if (!u) return;
                                                  u->body_bytes += d.size();
                                                  if (u->body.size() < 4096) u->body.append(d.substr(0, 4096));
                                                },
                                                [weak](Status st) {
                                                  auto u = weak.lock();
                                                  if (!u) return;
                                                  u->ended = true;
                                                  u->end_status = st;
                                                }});
                            });
  return s;
}

std::string proxy_path(const Upstream& up, const std::string& rest) {
  return "/proxy/" + std::to_string(up.port()) + rest;
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("agent ports: the proxy forwards method path query headers and body") {
  AgentFixture f;
  Upstream up(*f.loop);

  auto get = f.fetch("GET", proxy_path(up, "/echo/a%20b/c?x=1&y=two%20words&z=null"), {},
                     std::string(kKey), Headers{{"X-Custom", "kept"}, {"Cookie", "s=1"}});
  CHECK(get.head.status == 201);
  CHECK(get.head.headers.get("X-Upstream") == std::optional<std::string_view>("yes"));
  CHECK(get.head.headers.count("Set-Cookie") == 2);
  auto doc = parse(get.body);
  CHECK(str(doc["method"]) == "GET");
  // The path and query arrive exactly as sent (still encoded), "null" values included.
  CHECK(str(doc["target"]) == "/echo/a%20b/c?x=1&y=two%20words&z=null");
  REQUIRE(up.seen.size() == 1);
  const Headers& sent = up.seen[0].headers;
  CHECK(sent.get("X-Custom") == std::optional<std::string_view>("kept"));
  CHECK(sent.get("Cookie") == std::optional<std::string_view>("s=1"));
  CHECK_FALSE(sent.has("Authorization"));  // the agent's key stays with the agent
  CHECK(sent.get("Host") == std::optional<std::string_view>("localhost:" + std::to_string(up.port())));
  CHECK(sent.count("Host") == 1);

  // Hop-by-hop headers, and those Connection names, stay on this hop.
  auto hop = f.fetch("GET", proxy_path(up, "/echo"), {}, std::string(kKey),
                     Headers{{"Connection", "X-Secret-Hop"}, {"X-Secret-Hop", "1"},
                             {"Proxy-Authorization", "Basic eA=="}, {"TE", "trailers"}});
  CHECK(hop.head.status == 201);
  REQUIRE(up.seen.size() == 2);
  CHECK_FALSE(up.seen[1].headers.has("X-Secret-Hop"));
  CHECK_FALSE(up.seen[1].headers.has("Proxy-Authorization"));
  CHECK_FALSE(up.seen[1].headers.has("TE"));

  // A body with Content-Length, on each method that carries one.
  for (const char* method : {"POST", "PUT", "PATCH"}) {
    auto res = f.fetch(method, proxy_path(up, "/echo/post"), R"({"hello":"world"})");
    CHECK(res.head.status == 201);
    auto d = parse(res.body);
    CHECK(str(d["method"]) == method);
    CHECK(str(d["body"]) == R"({"hello":"world"})");
    CHECK(up.seen.back().headers.get("Content-Length") == std::optional<std::string_view>("17"));
  }
  auto empty_post = f.fetch("POST", proxy_path(up, "/echo/empty"));
  CHECK(empty_post.head.status == 201);
  CHECK(str(parse(empty_post.body)["body"]).empty());
  CHECK(f.fetch("DELETE", proxy_path(up, "/echo/x")).head.status == 201);
  CHECK(up.seen.back().method == "DELETE");
  CHECK(f.fetch("OPTIONS", proxy_path(up, "/echo/x")).head.status == 201);
  CHECK(up.seen.back().method == "OPTIONS");

  // HEAD: the upstream's head, Content-Length included, and no body.
  auto head = f.fetch("HEAD", proxy_path(up, "/echo/h"));
  CHECK(head.head.status == 201);
  CHECK(up.seen.back().method == "HEAD");
  CHECK(head.body.empty());
  CHECK(head.head.headers.has("Content-Length"));

  // Statuses and redirects pass through unchanged: nothing is followed.
  const std::size_t before = up.seen.size();
  auto redirect = f.fetch("GET", proxy_path(up, "/redirect"));
  CHECK(redirect.head.status == 302);
  CHECK(redirect.head.headers.get("Location") == std::optional<std::string_view>("/elsewhere?x=1"));
  CHECK(up.seen.size() == before + 1);
  auto missing = f.fetch("GET", proxy_path(up, "/missing"));
  CHECK(missing.head.status == 404);
  CHECK(missing.body == "no such thing");
  CHECK(missing.head.headers.get("Content-Type") == std::optional<std::string_view>("text/plain"));

  // The root of the upstream, with and without the trailing slash.
  CHECK(f.fetch("GET", "/proxy/" + std::to_string(up.port())).head.status == 500);
  CHECK(up.seen.back().target == "/");
  CHECK(f.fetch("GET", "/proxy/" + std::to_string(up.port()) + "/?q=1").head.status == 500);
  CHECK(up.seen.back().target == "/?q=1");

  // The key is required like everywhere else, and nothing reaches the upstream without it.
  const std::size_t count = up.seen.size();
  auto unauthorized = f.fetch("GET", proxy_path(up, "/echo"), {}, std::nullopt);
  CHECK(unauthorized.head.status == 401);
  CHECK(up.seen.size() == count);
  CHECK(f.fetch("TRACE", proxy_path(up, "/echo")).head.status == 405);

  up.server.reset();
  f.finish();
}

TEST_CASE("agent ports: the proxy reaches a server that listens on IPv6 loopback only") {
  AgentFixture f;
  Upstream up(*f.loop, "::1");
  if (!up.server) {
    WARN_MESSAGE(false, "SKIPPED: no IPv6 loopback on this machine");
    f.finish();
    return;
  }
  auto res = f.fetch("GET", proxy_path(up, "/echo/six?v=6"));
  CHECK(res.head.status == 201);
  CHECK(str(parse(res.body)["target"]) == "/echo/six?v=6");
  up.server.reset();
  f.finish();
}

TEST_CASE("agent ports: the proxy rejects bad ports and reports a closed one") {
  AgentFixture f;
  for (const char* bad : {"0", "70000", "-5", "99999999999999999999"}) {
    auto res = f.fetch("GET", std::string("/proxy/") + bad + "/x");
    CHECK(res.head.status == 422);
    CHECK(res.body == R"({"detail":"Port must be between 1 and 65535"})");
  }
  auto word = f.fetch("GET", "/proxy/abc/x");
  CHECK(word.head.status == 422);
  auto doc = parse(word.body);
  CHECK(str(doc["detail"][0]["type"]) == "int_parsing");
  CHECK(terminals::detail::to_json(doc["detail"][0]["loc"]) == R"(["path","port"])");

  // A port nobody listens on: bind one, then close it.
  int closed = 0;
  {
    ServerOptions o;
    o.listen = Endpoint::tcp("127.0.0.1", 0);
    auto s = Server::create(*f.loop, o, [](ServerExchangePtr) {}).value();
    closed = s->local_endpoint().port;
  }
  test::run_for(*f.loop, 20ms);
  auto refused = f.fetch("GET", "/proxy/" + std::to_string(closed) + "/x");
  CHECK(refused.head.status == 502);
  CHECK(refused.body == R"({"detail":"Connection refused: localhost:)" + std::to_string(closed) + "\"}");
  // With a body too: the refused upload is drained and the connection stays usable.
  auto refused_post = f.fetch("POST", "/proxy/" + std::to_string(closed) + "/x",
                              std::string(100000, 'x'));
  CHECK(refused_post.head.status == 502);
  CHECK(f.fetch("GET", "/health").head.status == 200);
  f.finish();
}

TEST_CASE("agent ports: the proxy answers 504 when the upstream does not accept in time") {
  AgentFixture f;
  // A listener that never accepts, with its accept queue filled: the kernel then drops new
  // SYNs, so a connect neither succeeds nor fails until the proxy's 5 s connect timeout.
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(listener, 0) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  const int port = ntohs(addr.sin_port);
  std::vector<int> fillers;
  for (int i = 0; i < 3; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    (void)::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);  // EINPROGRESS
    fillers.push_back(fd);
  }
  test::run_for(*f.loop, 100ms);

  const auto start = std::chrono::steady_clock::now();
  auto res = f.fetch("GET", "/proxy/" + std::to_string(port) + "/slow");
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(res.head.status == 504);
  CHECK(res.body == R"({"detail":"Timeout connecting to localhost:)" + std::to_string(port) + "\"}");
  CHECK(took >= 4500ms);
  for (int fd : fillers) ::close(fd);
  ::close(listener);
  f.finish();
}

TEST_CASE("agent ports: the proxy streams an 8 MiB upload and a 64 MiB download") {
  AgentFixture f;
  Upstream up(*f.loop);

  // Upload, chunked (no Content-Length): the upstream must see bytes before the client has
  // finished sending, which a buffering proxy could not do.
  {
    RequestHead h;
    h.method = "POST";
    h.target = proxy_path(up, "/count");
    auto s = stream_request(f, std::move(h));
    constexpr std::uint64_t kUpload = 8ull << 20;
    std::string chunk(64 * 1024, 'u');
    std::uint64_t written = 0;
    bool can_write = true;
    s->ex->set_drain_handler([&] { can_write = true; });
    bool seen_early = false;
    REQUIRE(test::run_until(*f.loop, [&] {
      while (can_write && written < kUpload) {
        written += chunk.size();
        can_write = s->ex->write(chunk);
        if (written == 1ull << 20) {
          // Pause at 1 MiB until the upstream has some of it.
          seen_early = test::run_until(*f.loop, [&] { return up.received > 0; }, 5s);
        }
      }
      return written >= kUpload;
    }, 30s));
    CHECK(seen_early);
    CHECK(up.received < kUpload);
    s->ex->end();
    REQUIRE(test::run_until(*f.loop, [&] { return s->ended || s->error; }, 30s));
    REQUIRE(s->head.has_value());
    CHECK(s->head->status == 200);
    CHECK(s->body == std::to_string(kUpload));
    CHECK(up.received == kUpload);
    REQUIRE(!up.seen.empty());
    CHECK(up.seen.back().headers.has_token("Transfer-Encoding", "chunked"));
    s->ex->set_drain_handler(nullptr);
  }

  // Download: the client gets bytes while the upstream holds back the rest, and memory stays
  // flat for 64 MiB.
  {
    constexpr std::uint64_t kDownload = 64ull << 20;
    up.download_size = kDownload;
    up.sent = 0;
    up.hold_after = 4ull << 20;
    const std::size_t rss_before = test::current_rss_bytes();
    std::size_t peak = rss_before;
    RequestHead h;
    h.target = proxy_path(up, "/download");
    auto s = stream_request(f, std::move(h));
    REQUIRE(test::run_until(*f.loop, [&] { return up.release != nullptr && s->body_bytes > 0; }, 10s));
    CHECK(up.sent < kDownload);
    auto release = std::move(up.release);
    release();
    REQUIRE(test::run_until(*f.loop, [&] {
      peak = std::max(peak, test::current_rss_bytes());
      return s->ended || s->error.has_value();
    }, 60s));
    REQUIRE(s->head.has_value());
    CHECK(s->head->status == 200);
    CHECK(s->head->headers.get("Content-Length") == std::optional<std::string_view>(std::to_string(kDownload)));
    CHECK(s->end_status.has_value());
    CHECK(s->body_bytes == kDownload);
    MESSAGE("RSS growth through a 64 MiB proxied download: " << (peak - rss_before) / 1024 << " KiB");
    CHECK(peak - rss_before < (24u << 20));
  }

  up.server.reset();
  f.finish();
}

TEST_CASE("agent ports: a client leaving mid-download cancels the upstream") {
  AgentFixture f;
  Upstream up(*f.loop);
  RequestHead h;
  h.target = proxy_path(up, "/endless");
  auto s = stream_request(f, std::move(h));
  REQUIRE(test::run_until(*f.loop, [&] { return s->body_bytes > (1u << 20); }, 10s));
  s->ex->cancel();
  s.reset();
  CHECK(test::run_until(*f.loop, [&] { return up.aborted; }, 10s));
  const std::uint64_t sent = up.sent;
  test::run_for(*f.loop, 100ms);
  CHECK(up.sent == sent);  // nothing more is produced for nobody
  CHECK(test::run_until(*f.loop, [&] { return up.server->connection_count() == 0; }, 10s));
  up.server.reset();
  f.finish();
}

}  // TEST_SUITE
