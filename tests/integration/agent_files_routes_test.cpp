// The agent's streaming and search file routes (view, serve, replace, grep, glob, upload,
// archive) over a real socket: contents, error statuses and bodies, and flat memory for large
// uploads and downloads.

#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "support/agent_fixture.hpp"
#include "terminals/agent.hpp"
#include "terminals/http_client.hpp"

using namespace terminals;
using namespace std::chrono_literals;

using test::AgentFixture;
using test::kKey;

namespace {

namespace fs = std::filesystem;

void write_bytes(const std::string& path, const std::string& data) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  REQUIRE(out.good());
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string all_byte_values() {
  std::string s;
  for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
  return s;
}

std::string url_encode(const std::string& s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

constexpr const char* kBoundary = "----terminalsBoundary7MA4YWxk";

std::string file_part_head(const std::string& filename) {
  return std::string("--") + kBoundary +
         "\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nnot the file\r\n--" +
         kBoundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filename +
         "\"\r\nContent-Type: application/octet-stream\r\n\r\n";
}

std::string closing() { return std::string("\r\n--") + kBoundary + "--\r\n"; }

std::string multipart(const std::string& filename, const std::string& data) {
  return file_part_head(filename) + data + closing();
}

FetchResponse upload(AgentFixture& f, const std::string& target, std::string body,
                     std::string content_type = std::string("multipart/form-data; boundary=") +
                                                kBoundary) {
  RequestHead head;
  head.method = "POST";
  head.target = target;
  head.headers.add("Authorization", std::string("Bearer ") + kKey);
  head.headers.add("Content-Type", std::move(content_type));
  std::optional<Result<FetchResponse>> got;
  f.client->fetch(f.agent->local_endpoint(), std::move(head), std::move(body),
                  [&](Result<FetchResponse> r) { got.emplace(std::move(r)); });
  REQUIRE(test::run_until(*f.loop, [&] { return got.has_value(); }));
  REQUIRE(got->has_value());
  return std::move(*got).value();
}

std::uint16_t u16(const std::string& b, std::size_t at) {
  return static_cast<std::uint16_t>(static_cast<unsigned char>(b[at]) |
                                    static_cast<unsigned char>(b[at + 1]) << 8);
}
std::uint32_t u32(const std::string& b, std::size_t at) {
  return static_cast<std::uint32_t>(u16(b, at)) | static_cast<std::uint32_t>(u16(b, at + 2)) << 16;
}

struct ZipEntry {
  std::string name;
  std::uint16_t method = 0;
  std::uint32_t size = 0;
  std::uint32_t local_offset = 0;
};

// Walks the central directory from the end-of-central-directory record.
std::vector<ZipEntry> zip_entries(const std::string& zip) {
  std::vector<ZipEntry> out;
  REQUIRE(zip.size() >= 22);
  std::size_t eocd = zip.size() - 22;  // no archive comment
  REQUIRE(u32(zip, eocd) == 0x06054b50u);
  const std::uint16_t count = u16(zip, eocd + 10);
  std::size_t at = u32(zip, eocd + 16);
  for (std::uint16_t i = 0; i < count; ++i) {
    REQUIRE(at + 46 <= zip.size());
    REQUIRE(u32(zip, at) == 0x02014b50u);
    ZipEntry e;
    e.method = u16(zip, at + 10);
    e.size = u32(zip, at + 24);
    const std::uint16_t name_len = u16(zip, at + 28);
    const std::uint16_t extra_len = u16(zip, at + 30);
    const std::uint16_t comment_len = u16(zip, at + 32);
    e.local_offset = u32(zip, at + 42);
    e.name = zip.substr(at + 46, name_len);
    out.push_back(e);
    at += 46u + name_len + extra_len + comment_len;
  }
  return out;
}

// The stored bytes of an entry (the archive uses method STORE, 0).
std::string zip_data(const std::string& zip, const ZipEntry& e) {
  std::size_t at = e.local_offset;
  REQUIRE(u32(zip, at) == 0x04034b50u);
  std::size_t data = at + 30 + u16(zip, at + 26) + u16(zip, at + 28);
  return zip.substr(data, e.size);
}

// Byte `i` of the large test file: varied enough that a misplaced chunk shows.
char pattern_byte(std::uint64_t i) { return static_cast<char>((i * 131u + (i >> 16)) & 0xFF); }

// Descriptors of this process open on `path`.
int open_fds_on(const std::string& path) {
  int n = 0;
  for (const auto& e : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (fs::read_symlink(e.path(), ec) == path) ++n;
  }
  return n;
}

}  // namespace

TEST_SUITE("integration") {

TEST_CASE("agent files: view returns raw bytes with a guessed content type") {
  AgentFixture f;
  const std::string home = f.home.path();
  const std::string bytes = all_byte_values();
  write_bytes(f.home.file("pic.png"), bytes);
  write_bytes(f.home.file("notes.txt"), "hello\n");
  write_bytes(f.home.file("blob.weird"), bytes);
  fs::create_directories(f.home.file("sub"));

  auto png = f.fetch("GET", "/files/view?path=pic.png");
  CHECK(png.head.status == 200);
  CHECK(png.head.headers.get("Content-Type") == "image/png");
  CHECK(png.body == bytes);

  auto text = f.fetch("GET", "/files/view?path=" + url_encode(home + "/notes.txt"));
  CHECK(text.head.status == 200);
  CHECK(text.head.headers.get("Content-Type") == "text/plain; charset=utf-8");
  CHECK(text.body == "hello\n");

  auto unknown = f.fetch("GET", "/files/view?path=blob.weird");
  CHECK(unknown.head.headers.get("Content-Type") == "application/octet-stream");
  CHECK(unknown.body == bytes);

  // view ignores the session cwd: relative paths are against home.
  Headers session{{"X-Session-Id", "s1"}};
  CHECK(f.fetch("POST", "/files/cwd", R"({"path":"sub"})", std::string(kKey), session)
            .head.status == 200);
  auto from_home = f.fetch("GET", "/files/view?path=notes.txt", {}, std::string(kKey), session);
  CHECK(from_home.head.status == 200);
  CHECK(from_home.body == "hello\n");

  auto head = f.fetch("HEAD", "/files/view?path=pic.png");
  CHECK(head.head.status == 200);
  CHECK(head.head.headers.get("Content-Length") == "256");
  CHECK(head.body.empty());

  auto missing = f.fetch("GET", "/files/view?path=nope.png");
  CHECK(missing.head.status == 404);
  CHECK(missing.body == R"({"detail":"File not found"})");
  CHECK(f.fetch("GET", "/files/view?path=sub").head.status == 404);
  auto no_path = f.fetch("GET", "/files/view");
  CHECK(no_path.head.status == 422);
  CHECK(no_path.body == R"({"detail":[{"type":"missing","loc":["query","path"],)"
                        R"("msg":"Field required","input":null}]})");
  CHECK(f.fetch("GET", "/files/view?path=pic.png", {}, std::nullopt).head.status == 401);
  f.finish();
}

TEST_CASE("agent files: serve takes the URL tail as an absolute path") {
  AgentFixture f;
  const std::string home = f.home.path();
  write_bytes(f.home.file("site/a/b/page.html"), "<p>nested</p>");
  write_bytes(f.home.file("site/a/b/style.css"), "p{}");

  auto page = f.fetch("GET", "/files/serve" + home + "/site/a/b/page.html");
  CHECK(page.head.status == 200);
  CHECK(page.head.headers.get("Content-Type") == "text/html; charset=utf-8");
  CHECK(page.body == "<p>nested</p>");
  // Percent-encoded segments are decoded before routing.
  auto css = f.fetch("GET", "/files/serve" + home + "/site/a/b/style%2Ecss");
  CHECK(css.head.status == 200);
  CHECK(css.body == "p{}");
  // Dot segments are normalised as an absolute path: they cannot leave "/" but do resolve.
  auto dotted = f.fetch("GET", "/files/serve" + home + "/site/a/x/../b/page.html");
  CHECK(dotted.head.status == 200);
  CHECK(dotted.body == "<p>nested</p>");

  auto missing = f.fetch("GET", "/files/serve" + home + "/site/a/b/none.html");
  CHECK(missing.head.status == 404);
  CHECK(missing.body == R"({"detail":"File not found"})");
  CHECK(f.fetch("GET", "/files/serve" + home + "/site").head.status == 404);
  CHECK(f.fetch("GET", "/files/serve/").head.status == 404);
  CHECK(f.fetch("POST", "/files/serve" + home + "/site/a/b/page.html", "{}").head.status == 405);
  f.finish();
}

TEST_CASE("agent files: read returns raw bytes for images and 415 for other binary types") {
  AgentFixture f;
  const std::string bytes = all_byte_values();
  write_bytes(f.home.file("photo.png"), bytes);
  write_bytes(f.home.file("lib.so"), bytes);
  write_bytes(f.home.file("data.bin"), bytes);

  auto image = f.fetch("GET", "/files/read?path=photo.png");
  CHECK(image.head.status == 200);
  CHECK(image.head.headers.get("Content-Type") == "image/png");
  CHECK(image.body == bytes);

  auto so = f.fetch("GET", "/files/read?path=lib.so");
  CHECK(so.head.status == 415);
  CHECK(so.body == R"j({"detail":"Unsupported binary file type: application/octet-stream (256 bytes)"})j");
  auto bin = f.fetch("GET", "/files/read?path=data.bin");
  CHECK(bin.head.status == 415);
  f.finish();
}

TEST_CASE("agent files: replace edits a file and validates its body") {
  AgentFixture f;
  const std::string home = f.home.path();
  write_bytes(f.home.file("code.txt"), "alpha\nbeta\nalpha\ngamma\n");

  auto one = f.fetch("POST", "/files/replace",
                     R"({"path":"code.txt","replacements":[{"target":"beta","replacement":"BETA"},)"
                     R"({"target":"alpha","replacement":"ALPHA","start_line":2,"end_line":3}]})");
  CHECK(one.head.status == 200);
  CHECK(one.body == R"({"path":")" + home + R"(/code.txt","size":23})");
  CHECK(read_bytes(f.home.file("code.txt")) == "alpha\nBETA\nALPHA\ngamma\n");

  auto ambiguous = f.fetch("POST", "/files/replace",
                           R"({"path":"code.txt","replacements":[{"target":"a\n","replacement":"-"}]})");
  CHECK(ambiguous.head.status == 400);
  CHECK(ambiguous.body ==
        R"({"detail":"Found 2 occurrences of target string but allow_multiple is false"})");
  CHECK(read_bytes(f.home.file("code.txt")) == "alpha\nBETA\nALPHA\ngamma\n");
  auto all = f.fetch("POST", "/files/replace",
                     R"({"path":"code.txt","replacements":[{"target":"a\n","replacement":"-",)"
                     R"("allow_multiple":true}]})");
  CHECK(all.head.status == 200);
  CHECK(read_bytes(f.home.file("code.txt")) == "alph-BETA\nALPHA\ngamm-");

  auto absent = f.fetch("POST", "/files/replace",
                        R"({"path":"code.txt","replacements":[{"target":"zeta","replacement":""}]})");
  CHECK(absent.head.status == 400);
  CHECK(absent.body == R"({"detail":"Target string not found: 'zeta'"})");
  auto no_file = f.fetch("POST", "/files/replace",
                         R"({"path":"none.txt","replacements":[{"target":"a","replacement":"b"}]})");
  CHECK(no_file.head.status == 404);
  CHECK(no_file.body == R"({"detail":"File not found"})");

  auto no_list = f.fetch("POST", "/files/replace", R"({"path":"code.txt"})");
  CHECK(no_list.head.status == 422);
  CHECK(no_list.body == R"({"detail":[{"type":"missing","loc":["body","replacements"],)"
                        R"("msg":"Field required","input":{"path":"code.txt"}}]})");
  auto not_list = f.fetch("POST", "/files/replace", R"({"path":"code.txt","replacements":"x"})");
  CHECK(not_list.head.status == 422);
  CHECK(not_list.body == R"({"detail":[{"type":"list_type","loc":["body","replacements"],)"
                         R"("msg":"Input should be a valid list","input":"x"}]})");
  auto not_object = f.fetch("POST", "/files/replace", R"({"path":"code.txt","replacements":[3]})");
  CHECK(not_object.head.status == 422);
  CHECK(not_object.body.find(R"("type":"model_type","loc":["body","replacements",0])") !=
        std::string::npos);
  auto no_target = f.fetch("POST", "/files/replace",
                           R"({"path":"code.txt","replacements":[{"target":"a","replacement":"b"},)"
                           R"({"replacement":"b"}]})");
  CHECK(no_target.head.status == 422);
  CHECK(no_target.body == R"({"detail":[{"type":"missing","loc":["body","replacements",1,"target"],)"
                          R"("msg":"Field required","input":{"replacement":"b"}}]})");
  auto below = f.fetch("POST", "/files/replace",
                       R"({"path":"code.txt","replacements":[{"target":"a","replacement":"b",)"
                       R"("start_line":0}]})");
  CHECK(below.head.status == 422);
  CHECK(below.body ==
        R"({"detail":[{"type":"greater_than_equal","loc":["body","replacements",0,"start_line"],)"
        R"("msg":"Input should be greater than or equal to 1","input":0,"ctx":{"ge":1}}]})");
  auto bad_bool = f.fetch("POST", "/files/replace",
                          R"({"path":"code.txt","replacements":[{"target":"a","replacement":"b",)"
                          R"("allow_multiple":"maybe"}]})");
  CHECK(bad_bool.head.status == 422);
  CHECK(bad_bool.body.find(R"("type":"bool_parsing","loc":["body","replacements",0,"allow_multiple"])") !=
        std::string::npos);
  auto bad_int = f.fetch("POST", "/files/replace",
                         R"({"path":"code.txt","replacements":[{"target":"a","replacement":"b",)"
                         R"("end_line":[1]}]})");
  CHECK(bad_int.head.status == 422);
  CHECK(bad_int.body.find(R"("type":"int_type","loc":["body","replacements",0,"end_line"])") !=
        std::string::npos);
  // Nothing above changed the file.
  CHECK(read_bytes(f.home.file("code.txt")) == "alph-BETA\nALPHA\ngamm-");
  f.finish();
}

TEST_CASE("agent files: grep finds matching lines and validates its query") {
  AgentFixture f;
  const std::string home = f.home.path();
  write_bytes(f.home.file("src/a.cpp"), "int main() {\n  return 42;\n}\n");
  write_bytes(f.home.file("src/b.hpp"), "// return type\nint f();\n");
  write_bytes(f.home.file("src/c.txt"), "RETURN to sender\n");
  write_bytes(f.home.file("src/bin.dat"), std::string("return\xff\xfe", 8));

  auto found = f.fetch("GET", "/files/grep?query=return&path=src");
  CHECK(found.head.status == 200);
  CHECK(found.body == R"({"query":"return","path":")" + home + R"(/src","matches":[)"
                      R"({"file":")" + home + R"(/src/a.cpp","line":2,"content":"  return 42;"},)"
                      R"({"file":")" + home + R"(/src/b.hpp","line":1,"content":"// return type"}],)"
                      R"("truncated":false})");

  auto regex = f.fetch("GET", "/files/grep?query=ret%5Bu%5Drn%5Cs%5Cd%2B&path=src");
  CHECK(regex.body.find(R"("line":2,"content":"  return 42;")") != std::string::npos);
  CHECK(regex.body.find("b.hpp") == std::string::npos);

  auto folded = f.fetch("GET", "/files/grep?query=return&path=src&case_insensitive=true"
                               "&include=*.txt&include=*.hpp&match_per_line=false");
  CHECK(folded.head.status == 200);
  CHECK(folded.body == R"({"query":"return","path":")" + home + R"(/src","matches":[)"
                       R"({"file":")" + home + R"(/src/b.hpp"},{"file":")" + home +
                       R"(/src/c.txt"}],"truncated":false})");

  auto literal = f.fetch("GET", "/files/grep?query=f%28%29&path=src&regex=false");
  CHECK(literal.body.find(R"("content":"int f();")") != std::string::npos);

  auto capped = f.fetch("GET", "/files/grep?query=return&path=src&max_results=1");
  CHECK(capped.head.status == 200);
  CHECK(capped.body.find(R"("truncated":true)") != std::string::npos);
  CHECK(capped.body.find("b.hpp") == std::string::npos);

  auto zero = f.fetch("GET", "/files/grep?query=x&max_results=0");
  CHECK(zero.head.status == 422);
  CHECK(zero.body.find(R"("type":"greater_than_equal","loc":["query","max_results"])") !=
        std::string::npos);
  auto big = f.fetch("GET", "/files/grep?query=x&max_results=501");
  CHECK(big.head.status == 422);
  CHECK(big.body.find(R"("type":"less_than_equal","loc":["query","max_results"])") !=
        std::string::npos);
  CHECK(f.fetch("GET", "/files/grep?query=x&regex=maybe").head.status == 422);
  auto no_query = f.fetch("GET", "/files/grep?path=src");
  CHECK(no_query.head.status == 422);
  CHECK(no_query.body.find(R"("loc":["query","query"])") != std::string::npos);
  auto missing = f.fetch("GET", "/files/grep?query=x&path=nowhere");
  CHECK(missing.head.status == 404);
  CHECK(missing.body == R"({"detail":"Search path not found"})");
  auto invalid = f.fetch("GET", "/files/grep?query=%28unclosed&path=src");
  CHECK(invalid.head.status == 400);
  CHECK(invalid.body.find(R"({"detail":"Invalid regex: )") == 0);
  f.finish();
}

TEST_CASE("agent files: glob matches names and validates its query") {
  AgentFixture f;
  const std::string home = f.home.path();
  write_bytes(f.home.file("proj/main.py"), "print(1)\n");
  write_bytes(f.home.file("proj/lib/util.py"), "x = 1\n");
  write_bytes(f.home.file("proj/lib/data.json"), "{}");
  write_bytes(f.home.file("proj/build/gen.py"), "");

  auto py = f.fetch("GET", "/files/glob?pattern=*.py&path=proj&exclude=build&exclude=build/*");
  CHECK(py.head.status == 200);
  CHECK(py.body.find(R"({"pattern":"*.py","path":")" + home + R"(/proj","matches":[)") == 0);
  CHECK(py.body.find(R"({"path":"main.py","type":"file","size":9,"modified":)") != std::string::npos);
  CHECK(py.body.find(R"({"path":"lib/util.py","type":"file","size":6,)") != std::string::npos);
  CHECK(py.body.find("gen.py") == std::string::npos);
  CHECK(py.body.find("data.json") == std::string::npos);
  CHECK(py.body.find(R"("truncated":false})") != std::string::npos);

  auto dirs = f.fetch("GET", "/files/glob?pattern=*&path=proj&type=directory");
  CHECK(dirs.head.status == 200);
  CHECK(dirs.body.find(R"("path":"lib","type":"directory")") != std::string::npos);
  CHECK(dirs.body.find(R"("path":"build","type":"directory")") != std::string::npos);
  CHECK(dirs.body.find(R"("type":"file")") == std::string::npos);

  auto files_only = f.fetch("GET", "/files/glob?pattern=*&path=proj&type=file&max_results=2");
  CHECK(files_only.body.find(R"("type":"directory")") == std::string::npos);
  CHECK(files_only.body.find(R"("truncated":true)") != std::string::npos);

  auto bad_type = f.fetch("GET", "/files/glob?pattern=*&type=link");
  CHECK(bad_type.head.status == 422);
  CHECK(bad_type.body == R"({"detail":[{"type":"literal_error","loc":["query","type"],)"
                         R"("msg":"Input should be 'any', 'file' or 'directory'","input":"link",)"
                         R"("ctx":{"expected":"'any', 'file' or 'directory'"}}]})");
  CHECK(f.fetch("GET", "/files/glob?pattern=*&max_results=501").head.status == 422);
  CHECK(f.fetch("GET", "/files/glob?pattern=*&max_results=abc").head.status == 422);
  CHECK(f.fetch("GET", "/files/glob").head.status == 422);
  auto missing = f.fetch("GET", "/files/glob?pattern=*&path=nowhere");
  CHECK(missing.head.status == 404);
  CHECK(missing.body == R"({"detail":"Search directory not found"})");
  f.finish();
}

TEST_CASE("agent files: upload round-trips every byte value and keeps the name in its directory") {
  AgentFixture f;
  const std::string home = f.home.path();
  const std::string bytes = all_byte_values();

  auto up = upload(f, "/files/upload?directory=inbox/new", multipart("bytes.bin", bytes));
  CHECK(up.head.status == 200);
  CHECK(up.body == R"({"path":")" + home + R"(/inbox/new/bytes.bin","size":256})");
  auto back = f.fetch("GET", "/files/view?path=inbox/new/bytes.bin");
  CHECK(back.head.status == 200);
  CHECK(back.body == bytes);

  // A traversal in the file name is reduced to its last component.
  auto sneaky = upload(f, "/files/upload?directory=inbox", multipart("../../escaped.txt", "x"));
  CHECK(sneaky.head.status == 200);
  CHECK(sneaky.body == R"({"path":")" + home + R"(/inbox/escaped.txt","size":1})");
  CHECK(fs::exists(f.home.file("inbox/escaped.txt")));
  CHECK_FALSE(fs::exists(f.home.file("escaped.txt")));
  CHECK_FALSE(fs::exists(fs::path(home).parent_path() / "escaped.txt"));

  auto dots = upload(f, "/files/upload?directory=inbox", multipart("..", "x"));
  CHECK(dots.head.status == 400);
  CHECK(dots.body == R"({"detail":"Invalid file name"})");

  std::string no_file = std::string("--") + kBoundary +
                        "\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nv\r\n--" +
                        kBoundary + "--\r\n";
  auto missing_field = upload(f, "/files/upload?directory=inbox", no_file);
  CHECK(missing_field.head.status == 422);
  CHECK(missing_field.body == R"({"detail":[{"type":"missing","loc":["body","file"],)"
                              R"("msg":"Field required","input":null}]})");

  auto not_multipart = upload(f, "/files/upload?directory=inbox", "{}", "application/json");
  CHECK(not_multipart.head.status == 400);
  auto truncated = upload(f, "/files/upload?directory=inbox", file_part_head("cut.txt") + "abc");
  CHECK(truncated.head.status == 400);
  CHECK_FALSE(fs::exists(f.home.file("inbox/cut.txt")));
  auto no_dir = upload(f, "/files/upload", multipart("a.txt", "a"));
  CHECK(no_dir.head.status == 422);
  CHECK(no_dir.body.find(R"("loc":["query","directory"])") != std::string::npos);

  // Only the renamed files are left: no temporaries from the failed uploads.
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(f.home.file("inbox"))) {
    names.insert(e.path().filename().string());
  }
  CHECK(names == std::set<std::string>{"escaped.txt", "new"});
  f.finish();
}

TEST_CASE("agent files: an upload over the size limit is 413 and leaves nothing behind") {
  AgentFixture f([](AgentOptions& o) { o.max_upload_bytes = 4096; });
  auto small = upload(f, "/files/upload?directory=up", multipart("ok.bin", std::string(4096, 'a')));
  CHECK(small.head.status == 200);
  // One byte over the limit is refused by the upload parser as the bytes arrive.
  auto big = upload(f, "/files/upload?directory=up", multipart("big.bin", std::string(4097, 'b')));
  CHECK(big.head.status == 413);
  CHECK(big.body.find("Upload too large") != std::string::npos);
  // Refused early on: the answer comes while the body is still arriving (the rest is drained).
  auto huge = upload(f, "/files/upload?directory=up",
                     multipart("huge.bin", std::string(2u << 20, 'c')));
  CHECK(huge.head.status == 413);
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(f.home.file("up"))) {
    names.insert(e.path().filename().string());
  }
  CHECK(names == std::set<std::string>{"ok.bin"});
  // The agent still answers on a fresh connection.
  CHECK(f.fetch("GET", "/files/view?path=up/ok.bin").body == std::string(4096, 'a'));
  f.finish();
}

TEST_CASE("agent files: a JSON body over its cap is 413 while an upload may be larger") {
  AgentFixture f([](AgentOptions& o) { o.max_json_body_bytes = 1024; });
  std::string content(2000, 'x');
  auto big = f.fetch("POST", "/files/write", R"({"path":"a.txt","content":")" + content + R"("})");
  CHECK(big.head.status == 413);
  CHECK(big.body == R"({"detail":"Request body larger than the limit of 1024 bytes"})");
  CHECK_FALSE(fs::exists(f.home.file("a.txt")));
  auto up = upload(f, "/files/upload?directory=.", multipart("a.txt", content));
  CHECK(up.head.status == 200);
  CHECK(read_bytes(f.home.file("a.txt")) == content);
  f.finish();
}

TEST_CASE("agent files: a 64 MiB upload and view stream with bounded memory") {
  AgentFixture f;
  constexpr std::uint64_t kSize = 64ull << 20;
  constexpr std::size_t kChunk = 64 * 1024;
  const std::string head_part = file_part_head("large.bin");
  const std::string tail_part = closing();
  const std::uint64_t total = head_part.size() + kSize + tail_part.size();

  // Warm up the client, the server and the thread pool so their one-time allocations are in
  // the baseline.
  CHECK(upload(f, "/files/upload?directory=big", multipart("warm.bin", std::string(300000, 'w')))
            .head.status == 200);
  CHECK(f.fetch("GET", "/files/view?path=big/warm.bin").body.size() == 300000);
  const std::size_t baseline = test::current_rss_bytes();
  std::size_t peak = baseline;
  auto sample = [&] { peak = std::max(peak, test::current_rss_bytes()); };

  // Upload: the body is generated chunk by chunk and written with backpressure.
  RequestHead head;
  head.method = "POST";
  head.target = "/files/upload?directory=big";
  head.headers.add("Authorization", std::string("Bearer ") + kKey);
  head.headers.add("Content-Type", std::string("multipart/form-data; boundary=") + kBoundary);
  head.headers.add("Content-Length", std::to_string(total));
  std::optional<int> status;
  std::string response;
  bool response_done = false;
  ClientExchangePtr ex;
  ex = f.client->request(f.agent->local_endpoint(), std::move(head),
                         [&](Result<ResponseHead> r) {
                           REQUIRE(r.has_value());
                           status = r->status;
                           ex->read_body(BodyHandlers{
                               [&](std::string_view d) { response.append(d); },
                               [&](Status) { response_done = true; }});
                         });
  std::uint64_t offset = 0;  // of the file part
  bool head_sent = false;
  bool finished_writing = false;
  std::string chunk;
  std::function<void()> pump = [&] {
    for (;;) {
      if (!head_sent) {
        head_sent = true;
        if (!ex->write(head_part)) break;
        continue;
      }
      if (offset == kSize) {
        ex->end(tail_part);
        finished_writing = true;
        return;
      }
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, kSize - offset));
      chunk.resize(n);
      for (std::size_t i = 0; i < n; ++i) chunk[i] = pattern_byte(offset + i);
      offset += n;
      if (offset % (4u << 20) == 0) sample();
      if (!ex->write(chunk)) break;
    }
    ex->set_drain_handler([&] { pump(); });
  };
  pump();
  REQUIRE(test::run_until(*f.loop, [&] { return response_done; }, 120s));
  CHECK(finished_writing);
  CHECK(status == 200);
  CHECK(response == R"({"path":")" + f.home.path() + R"(/big/large.bin","size":67108864})");
  sample();
  ex.reset();
  CHECK(fs::file_size(f.home.file("big/large.bin")) == kSize);
  const std::size_t upload_growth = peak - baseline;

  // View: streamed back and checked byte by byte without keeping it.
  RequestHead get;
  get.target = "/files/view?path=big/large.bin";
  get.headers.add("Authorization", std::string("Bearer ") + kKey);
  std::optional<int> view_status;
  std::optional<std::string> length;
  std::uint64_t received = 0;
  std::uint64_t mismatches = 0;
  bool view_done = false;
  Status view_end;
  ClientExchangePtr vx;
  vx = f.client->request(f.agent->local_endpoint(), std::move(get), [&](Result<ResponseHead> r) {
    REQUIRE(r.has_value());
    view_status = r->status;
    if (auto l = r->headers.get("Content-Length")) length = std::string(*l);
    vx->read_body(BodyHandlers{[&](std::string_view d) {
                                 for (std::size_t i = 0; i < d.size(); ++i) {
                                   if (d[i] != pattern_byte(received + i)) ++mismatches;
                                 }
                                 received += d.size();
                                 if (received % (4u << 20) < d.size()) sample();
                               },
                               [&](Status s) {
                                 view_end = std::move(s);
                                 view_done = true;
                               }});
  });
  REQUIRE(test::run_until(*f.loop, [&] { return view_done; }, 120s));
  sample();
  vx.reset();
  CHECK(view_status == 200);
  CHECK(view_end.has_value());
  CHECK(length == std::to_string(kSize));
  CHECK(received == kSize);
  CHECK(mismatches == 0);
  const std::size_t total_growth = peak - baseline;
  MESSAGE("RSS growth: upload " << upload_growth / 1024 << " KiB, upload+view "
                                << total_growth / 1024 << " KiB");
  // Holding either body would cost 64 MiB; streaming costs a few chunks and watermarks.
#if !defined(__SANITIZE_ADDRESS__)  // ASan's quarantine keeps freed buffers resident
  CHECK(total_growth < (24u << 20));
#endif
  f.finish();
}

TEST_CASE("agent files: a client that goes away mid-transfer leaves no open file or temporary") {
  AgentFixture f;
  const std::string big = f.home.file("big.bin");
  write_bytes(big, std::string(32u << 20, 'z'));

  // View: the client reads one chunk and hangs up; the agent's descriptor must close.
  RequestHead get;
  get.target = "/files/view?path=big.bin";
  get.headers.add("Authorization", std::string("Bearer ") + kKey);
  std::uint64_t received = 0;
  ClientExchangePtr vx;
  vx = f.client->request(f.agent->local_endpoint(), std::move(get), [&](Result<ResponseHead> r) {
    REQUIRE(r.has_value());
    vx->read_body(BodyHandlers{[&](std::string_view d) { received += d.size(); },
                               [](Status) {}});
  });
  REQUIRE(test::run_until(*f.loop, [&] { return received > 0; }));
  CHECK(open_fds_on(big) == 1);
  vx->cancel();
  vx.reset();
  CHECK(test::run_until(*f.loop, [&] { return open_fds_on(big) == 0; }));
  CHECK(received < (32u << 20));

  // Upload: half a body, then the client hangs up; the temporary file must go.
  RequestHead post;
  post.method = "POST";
  post.target = "/files/upload?directory=drop";
  post.headers.add("Authorization", std::string("Bearer ") + kKey);
  post.headers.add("Content-Type", std::string("multipart/form-data; boundary=") + kBoundary);
  post.headers.add("Content-Length", std::to_string(10u << 20));
  ClientExchangePtr ux = f.client->request(f.agent->local_endpoint(), std::move(post),
                                           [](Result<ResponseHead>) {});
  ux->write(file_part_head("partial.bin"));
  ux->write(std::string(2u << 20, 'p'));
  auto temporaries = [&] {
    int n = 0;
    if (!fs::exists(f.home.file("drop"))) return 0;
    for (const auto& e : fs::directory_iterator(f.home.file("drop"))) {
      (void)e;
      ++n;
    }
    return n;
  };
  // The part started: its temporary file exists.
  REQUIRE(test::run_until(*f.loop, [&] { return temporaries() == 1; }));
  ux->cancel();
  ux.reset();
  CHECK(test::run_until(*f.loop, [&] { return temporaries() == 0; }));
  CHECK_FALSE(fs::exists(f.home.file("drop/partial.bin")));
  // Still serving.
  CHECK(f.fetch("GET", "/health").head.status == 200);
  f.finish();
}

TEST_CASE("agent files: archive streams a ZIP of the given paths") {
  AgentFixture f;
  const std::string bytes = all_byte_values();
  write_bytes(f.home.file("project/readme.md"), "# hi\n");
  write_bytes(f.home.file("project/src/main.c"), "int main(void) { return 0; }\n");
  fs::create_directories(f.home.file("project/empty"));
  write_bytes(f.home.file("bytes.bin"), bytes);

  auto both = f.fetch("POST", "/files/archive", R"({"paths":["project","bytes.bin"]})");
  CHECK(both.head.status == 200);
  CHECK(both.head.headers.get("Content-Type") == "application/zip");
  CHECK(both.head.headers.get("Content-Disposition") == R"(attachment; filename="download.zip")");
  std::vector<ZipEntry> entries = zip_entries(both.body);
  std::set<std::string> names;
  for (const ZipEntry& e : entries) names.insert(e.name);
  CHECK(names == std::set<std::string>{"project/", "project/empty/", "project/readme.md",
                                       "project/src/", "project/src/main.c", "bytes.bin"});
  for (const ZipEntry& e : entries) {
    CHECK(e.method == 0);
    if (e.name == "bytes.bin") CHECK(zip_data(both.body, e) == bytes);
    if (e.name == "project/src/main.c") {
      CHECK(zip_data(both.body, e) == "int main(void) { return 0; }\n");
    }
  }

  auto one = f.fetch("POST", "/files/archive", R"({"paths":["project/src"]})");
  CHECK(one.head.status == 200);
  CHECK(one.head.headers.get("Content-Disposition") == R"(attachment; filename="src.zip")");
  CHECK(zip_entries(one.body).size() == 2);

  if (fs::exists("/usr/bin/unzip")) {
    // A second opinion on the format, where the tool exists.
    write_bytes(f.home.file("out.zip"), both.body);
    std::string cmd = "/usr/bin/unzip -tqq '" + f.home.file("out.zip") + "' >/dev/null 2>&1";
    CHECK(std::system(cmd.c_str()) == 0);
  }

  auto none = f.fetch("POST", "/files/archive", R"({"paths":[]})");
  CHECK(none.head.status == 400);
  CHECK(none.body == R"({"detail":"No paths provided"})");
  auto missing = f.fetch("POST", "/files/archive", R"({"paths":["project","ghost"]})");
  CHECK(missing.head.status == 404);
  CHECK(missing.body == R"({"detail":"Path not found: ghost"})");
  auto no_paths = f.fetch("POST", "/files/archive", R"({})");
  CHECK(no_paths.head.status == 422);
  CHECK(no_paths.body == R"({"detail":[{"type":"missing","loc":["body","paths"],)"
                         R"("msg":"Field required","input":{}}]})");
  auto bad_item = f.fetch("POST", "/files/archive", R"({"paths":["project",5]})");
  CHECK(bad_item.head.status == 422);
  CHECK(bad_item.body == R"({"detail":[{"type":"string_type","loc":["body","paths",1],)"
                         R"("msg":"Input should be a valid string","input":5}]})");

  f.finish();
}

}  // TEST_SUITE
