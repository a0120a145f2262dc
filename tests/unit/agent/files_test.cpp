#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/files.hpp"
#include "agent/files_internal.hpp"
#include "agent/zip_writer.hpp"
#include "support/loop_runner.hpp"

using namespace terminals;
using namespace terminals::detail;
namespace fs = std::filesystem;

namespace {

void put(const std::string& path, std::string_view data) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  REQUIRE(out.good());
}

std::string get(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

FileContext context_for(const test::TempDir& dir, std::string cwd = {}) {
  FileContext ctx;
  ctx.home = dir.path();
  ctx.cwd = std::move(cwd);
  return ctx;
}

template <class T>
void check_error(const Result<T>& r, int status, const std::string& detail) {
  REQUIRE_FALSE(r);
  CHECK(file_error_status(r.error()) == status);
  CHECK(r.error().message == detail);
}

template <class T>
int status_of(const Result<T>& r) {
  return r ? 200 : file_error_status(r.error());
}

// Names in a directory other than the ones listed (temporary files left behind, for example).
std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("files: paths resolve against cwd or home and normalise lexically") {
  FileContext ctx;
  ctx.home = "/home/u";
  ctx.cwd = "/home/u/proj";
  CHECK(resolve_path(ctx, "a/b", PathBase::Cwd).value() == "/home/u/proj/a/b");
  CHECK(resolve_path(ctx, "a/b", PathBase::Home).value() == "/home/u/a/b");
  CHECK(resolve_path(ctx, "../x", PathBase::Cwd).value() == "/home/u/x");
  CHECK(resolve_path(ctx, "", PathBase::Cwd).value() == "/home/u/proj");
  CHECK(resolve_path(ctx, ".", PathBase::Home).value() == "/home/u");
  CHECK(resolve_path(ctx, "/etc/../var//log/./x/", PathBase::Cwd).value() == "/var/log/x");
  CHECK(resolve_path(ctx, "/../../..", PathBase::Cwd).value() == "/");
  CHECK(resolve_path(ctx, "../../../../..", PathBase::Home).value() == "/");
  ctx.cwd.clear();
  CHECK(resolve_path(ctx, "a", PathBase::Cwd).value() == "/home/u/a");
  check_error(resolve_path(ctx, std::string("a\0b", 3), PathBase::Cwd), 400,
              "Path contains a NUL byte");
  CHECK(normalize_path("a/./b/../../..") == "..");
  ctx.cwd = "/home/u/proj";
  CHECK(resolve_exec_cwd(ctx, std::nullopt).value() == "/home/u/proj");
  CHECK(resolve_exec_cwd(ctx, "sub").value() == "/home/u/proj/sub");
  CHECK(resolve_exec_cwd(ctx, "/tmp/").value() == "/tmp");
  ctx.cwd.clear();
  CHECK(resolve_exec_cwd(ctx, std::nullopt).value() == "/home/u");
  CHECK(normalize_path("") == ".");
}

TEST_CASE("files: error texts follow Python's formats") {
  using files::os_error_text;
  using files::py_repr;
  CHECK(py_repr("abc") == "'abc'");
  CHECK(py_repr("it's") == "\"it's\"");
  CHECK(py_repr("a'b\"c") == "'a\\'b\"c'");
  CHECK(py_repr("tab\there\nnl\\") == "'tab\\there\\nnl\\\\'");
  CHECK(py_repr("\x01\x7f") == "'\\x01\\x7f'");
  CHECK(py_repr("caf\xC3\xA9 \xE2\x80\xA8") == "'caf\xC3\xA9 \\u2028'");
  CHECK(os_error_text(ENOENT, "/x") == "[Errno 2] No such file or directory: '/x'");
  CHECK(os_error_text(EXDEV, "/a", "/b") == "[Errno 18] Invalid cross-device link: '/a' -> '/b'");
  CHECK(file_error_status(file_error(422, "x")) == 422);
  CHECK(file_error(404, "x").code == Errc::NotFound);
  CHECK(file_error(409, "x").code == Errc::AlreadyExists);
  CHECK(file_error(413, "x").code == Errc::LimitExceeded);
  CHECK(file_error_status(Error(Errc::NotFound, "plain")) == 404);
  CHECK(guess_mime_type("/a/B.PNG") == "image/png");
  CHECK(guess_mime_type("x.tar.gz") == "application/gzip");
  CHECK(guess_mime_type(".bashrc") == "application/octet-stream");
  CHECK(guess_mime_type("noext") == "application/octet-stream");
  CHECK(guess_mime_type("a.svg") == "image/svg+xml");
}

TEST_CASE("files: UTF-8 validation and splitlines match Python") {
  using files::is_valid_utf8;
  CHECK(is_valid_utf8("plain ascii"));
  CHECK(is_valid_utf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"));
  CHECK_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong
  CHECK_FALSE(is_valid_utf8("\xE0\x80\xAF"));      // overlong
  CHECK_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate
  CHECK_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(is_valid_utf8("\xE2\x82"));          // truncated
  CHECK_FALSE(is_valid_utf8("\x80"));
  CHECK_FALSE(is_valid_utf8("\xFF"));

  std::string text = "a\nb\r\nc\rd\ve\ff\x1cg\x1dh\x1ei\xC2\x85j\xE2\x80\xA8k\xE2\x80\xA9l";
  auto lines = files::split_lines_keepends(text);
  std::vector<std::string> got(lines.begin(), lines.end());
  std::vector<std::string> want = {"a\n", "b\r\n", "c\r", "d\v", "e\f", "f\x1c", "g\x1d",
                                   "h\x1e", "i\xC2\x85", "j\xE2\x80\xA8", "k\xE2\x80\xA9", "l"};
  CHECK(got == want);
  CHECK(files::split_lines_keepends("").empty());
  CHECK(files::split_lines_keepends("x\n").size() == 1);
  CHECK(files::split_lines_keepends("\n\n").size() == 2);
  CHECK(files::utf8_prefix("\xC3\xA9t\xC3\xA9", 2) == "\xC3\xA9t");
}

TEST_CASE("files: list_files sorts / types / sizes and skips what stat refuses") {
  test::TempDir dir;
  auto ctx = context_for(dir);
  put(dir.file("b.txt"), "12345");
  put(dir.file("a/inner"), "");
  fs::create_directory(dir.file("c"));
  fs::create_symlink(dir.file("nowhere"), dir.file("dangling"));
  fs::create_directory_symlink(dir.file("c"), dir.file("linkdir"));

  auto r = list_files(ctx, ".");
  REQUIRE(r);
  CHECK(r->dir == dir.path());
  REQUIRE(r->entries.size() == 4);
  CHECK(r->entries[0].name == "a");
  CHECK(r->entries[0].type == "directory");
  CHECK(r->entries[1].name == "b.txt");
  CHECK(r->entries[1].type == "file");
  CHECK(r->entries[1].size == 5);
  CHECK(r->entries[1].modified > 1e9);
  CHECK(r->entries[2].name == "c");
  CHECK(r->entries[3].name == "linkdir");
  CHECK(r->entries[3].type == "directory");

  // Relative to the session cwd.
  auto sub = context_for(dir, dir.file("a"));
  auto r2 = list_files(sub, "");
  REQUIRE(r2);
  CHECK(r2->dir == dir.file("a"));
  CHECK(r2->entries.size() == 1);

  check_error(list_files(ctx, "missing"), 404, "Directory not found");
  check_error(list_files(ctx, "b.txt"), 404, "Directory not found");
}

TEST_CASE("files: read_file text with UTF-8 line ranges") {
  test::TempDir dir;
  auto ctx = context_for(dir);
  put(dir.file("t.txt"), "one\ntw\xC3\xB6\r\nthree\rfour\xE2\x80\xA8" "five");

  auto all = read_file(ctx, "t.txt");
  REQUIRE(all);
  CHECK(all->kind == ReadResult::Kind::Text);
  CHECK(all->path == dir.file("t.txt"));
  CHECK(all->total_lines == 5);
  CHECK(all->content == get(dir.file("t.txt")));  // CRLF and CR kept verbatim

  auto mid = read_file(ctx, "t.txt", 2, 3);
  REQUIRE(mid);
  CHECK(mid->content == "tw\xC3\xB6\r\nthree\r");
  CHECK(mid->total_lines == 5);
  CHECK(read_file(ctx, "t.txt", 4).value().content == "four\xE2\x80\xA8" "five");
  CHECK(read_file(ctx, "t.txt", std::nullopt, 1).value().content == "one\n");
  CHECK(read_file(ctx, "t.txt", 9).value().content.empty());
  CHECK(read_file(ctx, "t.txt", 3, 2).value().content.empty());
  CHECK(read_file(ctx, "t.txt", 5, 99).value().content == "five");

  check_error(read_file(ctx, "t.txt", 0), 422, "start_line: Input should be greater than or equal to 1");
  check_error(read_file(ctx, "t.txt", 1, -3), 422, "end_line: Input should be greater than or equal to 1");
  check_error(read_file(ctx, "nope.txt"), 404, "File not found");
  check_error(read_file(ctx, "."), 404, "File not found");

  put(dir.file("empty"), "");
  auto empty = read_file(ctx, "empty");
  REQUIRE(empty);
  CHECK(empty->total_lines == 0);
  CHECK(empty->content.empty());

  // A FIFO must not block the reader.
  REQUIRE(::mkfifo(dir.file("fifo").c_str(), 0600) == 0);
  check_error(read_file(ctx, "fifo"), 404, "File not found");

  // Relative to the session cwd.
  put(dir.file("sub/x.md"), "# hi\n");
  auto sub = context_for(dir, dir.file("sub"));
  CHECK(read_file(sub, "x.md").value().content == "# hi\n");
}

TEST_CASE("files: read_file binary: images as bytes / other types 415 / size cap 413") {
  test::TempDir dir;
  auto ctx = context_for(dir);
  std::string png = "\x89PNG\r\n\x1a\n" + random_bytes(3 << 20, 1);
  put(dir.file("pic.png"), png);
  auto img = read_file(ctx, "pic.png");
  REQUIRE(img);
  CHECK(img->kind == ReadResult::Kind::Binary);
  CHECK(img->content_type == "image/png");
  CHECK(img->content == png);

  std::string blob = random_bytes(1000, 2);
  blob[0] = '\xFF';
  put(dir.file("data.bin"), blob);
  check_error(read_file(ctx, "data.bin"), 415,
              "Unsupported binary file type: application/octet-stream (1000 bytes)");
  put(dir.file("doc.pdf"), "%PDF-1.4\n\xE2\xE3\xCF\xD3\n");
  check_error(read_file(ctx, "doc.pdf"), 415, "Unsupported binary file type: application/pdf (14 bytes)");
  put(dir.file("latin1.txt"), "caf\xE9");
  check_error(read_file(ctx, "latin1.txt"), 415, "Unsupported binary file type: text/plain (4 bytes)");
  // A valid-UTF-8 PNG name is still text: decoding decides first, like the reference.
  put(dir.file("fake.png"), "not really");
  CHECK(read_file(ctx, "fake.png").value().kind == ReadResult::Kind::Text);

  ctx.options.binary_mime_prefixes = {"image", "application/pdf"};
  CHECK(read_file(ctx, "doc.pdf").value().content_type == "application/pdf");

  ctx.options.max_read_bytes = 1024;
  check_error(read_file(ctx, "pic.png"), 413,
              "File too large: " + std::to_string(png.size()) + " bytes (limit 1024 bytes)");
}

TEST_CASE("files: display / view and serve") {
  test::TempDir dir;
  auto ctx = context_for(dir, dir.file("sub"));
  put(dir.file("sub/a.html"), "<p>");
  put(dir.file("top.css"), "p{}");

  auto d = display_file(ctx, "a.html");  // relative to the session cwd
  REQUIRE(d);
  CHECK(d->path == dir.file("sub/a.html"));
  CHECK(d->exists);
  auto missing = display_file(ctx, "zzz");
  REQUIRE(missing);
  CHECK_FALSE(missing->exists);

  auto v = view_file(ctx, "top.css");  // relative to home, not the session cwd
  REQUIRE(v);
  CHECK(v->path == dir.file("top.css"));
  CHECK(v->size == 3);
  CHECK(v->content_type == "text/css");
  check_error(view_file(ctx, "a.html"), 404, "File not found");
  check_error(view_file(ctx, "sub"), 404, "File not found");

  auto s = serve_file(ctx, dir.file("sub/a.html").substr(1));
  REQUIRE(s);
  CHECK(s->path == dir.file("sub/a.html"));
  CHECK(s->content_type == "text/html");
  check_error(serve_file(ctx, "no/such/file"), 404, "File not found");
}

TEST_CASE("files: write_file creates parents / keeps modes / writes through links") {
  test::TempDir dir;
  auto ctx = context_for(dir, dir.file("cwd"));
  fs::create_directory(dir.file("cwd"));

  auto w = write_file(ctx, "deep/er/new.txt", "h\xC3\xA9llo");
  REQUIRE(w);
  CHECK(w->path == dir.file("cwd/deep/er/new.txt"));
  CHECK(w->size == 6);
  CHECK(get(w->path) == "h\xC3\xA9llo");

  // Overwrite keeps the permission bits; no temporary file is left behind.
  put(dir.file("cwd/run.sh"), "old");
  ::chmod(dir.file("cwd/run.sh").c_str(), 0751);
  REQUIRE(write_file(ctx, "run.sh", "echo new"));
  CHECK(get(dir.file("cwd/run.sh")) == "echo new");
  struct stat st {};
  REQUIRE(::stat(dir.file("cwd/run.sh").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0751);
  CHECK(names_in(dir.file("cwd")) == std::vector<std::string>{"deep", "run.sh"});

  // A symlink is written through, and stays a symlink.
  put(dir.file("real.txt"), "before");
  fs::create_symlink(dir.file("real.txt"), dir.file("cwd/link.txt"));
  REQUIRE(write_file(ctx, "link.txt", "after"));
  CHECK(fs::is_symlink(dir.file("cwd/link.txt")));
  CHECK(get(dir.file("real.txt")) == "after");

  check_error(write_file(ctx, "deep", "x"), 400,
              "[Errno 21] Is a directory: '" + dir.file("cwd/deep") + "'");
  check_error(write_file(ctx, "run.sh/child", "x"), 400,
              "[Errno 17] File exists: '" + dir.file("cwd/run.sh") + "'");
  if (::geteuid() != 0) {
    ::chmod(dir.file("cwd/run.sh").c_str(), 0444);
    check_error(write_file(ctx, "run.sh", "x"), 400,
                "[Errno 13] Permission denied: '" + dir.file("cwd/run.sh") + "'");
    CHECK(get(dir.file("cwd/run.sh")) == "echo new");
  } else {
    MESSAGE("running as root: the read-only-file case is skipped");
  }
}

TEST_CASE("files: replace_file_content edge cases") {
  test::TempDir dir;
  auto ctx = context_for(dir);
  const std::string path = dir.file("code.py");
  const std::string original = "x = 1\ny = 1\nz = 1\nx = 1\n";
  put(path, original);
  ::chmod(path.c_str(), 0640);

  // One occurrence, replaced.
  auto r = replace_file_content(ctx, "code.py", {{"y = 1", "y = 2"}});
  REQUIRE(r);
  CHECK(r->path == path);
  CHECK(get(path) == "x = 1\ny = 2\nz = 1\nx = 1\n");
  CHECK(r->size == get(path).size());
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);

  // Several occurrences without allow_multiple: refused, nothing written.
  put(path, original);
  check_error(replace_file_content(ctx, "code.py", {{"= 1", "= 9"}}), 400,
              "Found 4 occurrences of target string but allow_multiple is false");
  CHECK(get(path) == original);

  Replacement all{"= 1", "= 9"};
  all.allow_multiple = true;
  REQUIRE(replace_file_content(ctx, "code.py", {all}));
  CHECK(get(path) == "x = 9\ny = 9\nz = 9\nx = 9\n");

  // A line range limits the search region (the second "x = 1" only).
  put(path, original);
  Replacement ranged{"x = 1", "x = 3"};
  ranged.start_line = 2;
  REQUIRE(replace_file_content(ctx, "code.py", {ranged}));
  CHECK(get(path) == "x = 1\ny = 1\nz = 1\nx = 3\n");
  Replacement head{"= 1", "= 0"};
  head.end_line = 1;
  REQUIRE(replace_file_content(ctx, "code.py", {head}));
  CHECK(get(path) == "x = 0\ny = 1\nz = 1\nx = 3\n");
  Replacement outside{"y = 1", "nope"};
  outside.start_line = 3;
  outside.end_line = 4;
  check_error(replace_file_content(ctx, "code.py", {outside}), 400,
              "Target string not found: 'y = 1'");
  Replacement past{"x", "y"};
  past.start_line = 50;
  check_error(replace_file_content(ctx, "code.py", {past}), 400, "Target string not found: 'x'");

  // Replacements run in order; a later failure discards the earlier ones.
  put(path, original);
  check_error(replace_file_content(ctx, "code.py", {{"y = 1", "y = 5"}, {"y = 1", "again"}}), 400,
              "Target string not found: 'y = 1'");
  CHECK(get(path) == original);
  REQUIRE(replace_file_content(ctx, "code.py", {{"y = 1", "w = 1"}, {"w = 1", "w = 2"}}));
  CHECK(get(path) == "x = 1\nw = 2\nz = 1\nx = 1\n");
  CHECK(names_in(dir.path()) == std::vector<std::string>{"code.py"});

  // The message quotes the first 100 characters, Python-repr style.
  std::string long_target(150, 'q');
  check_error(replace_file_content(ctx, "code.py", {{long_target, ""}}), 400,
              "Target string not found: '" + std::string(100, 'q') + "'");
  check_error(replace_file_content(ctx, "code.py", {{"it's\n", ""}}), 400,
              "Target string not found: \"it's\\n\"");

  check_error(replace_file_content(ctx, "code.py", {{"", "x"}}), 400,
              "Target string must not be empty");
  Replacement zero{"x", "y"};
  zero.start_line = 0;
  check_error(replace_file_content(ctx, "code.py", {{"x", "y"}, zero}), 422,
              "replacements.1.start_line: Input should be greater than or equal to 1");
  check_error(replace_file_content(ctx, "missing.py", {{"a", "b"}}), 404, "File not found");
  put(dir.file("bin.dat"), "\xFF\xFE");
  check_error(replace_file_content(ctx, "bin.dat", {{"a", "b"}}), 400,
              "File is not valid UTF-8 text");

  // Multi-byte text and CRLF survive untouched around the edit.
  put(path, "\xC3\xA9t\xC3\xA9\r\nsecond\r\n");
  REQUIRE(replace_file_content(ctx, "code.py", {{"t\xC3\xA9", "T"}}));
  CHECK(get(path) == "\xC3\xA9T\r\nsecond\r\n");
}

TEST_CASE("files: mkdir_p and delete_path") {
  test::TempDir dir;
  auto ctx = context_for(dir, dir.file("elsewhere"));
  auto m = mkdir_p(ctx, "a/b/c");  // relative to home
  REQUIRE(m);
  CHECK(m->path == dir.file("a/b/c"));
  CHECK(fs::is_directory(dir.file("a/b/c")));
  CHECK(mkdir_p(ctx, "a/b/c"));  // exists: fine
  put(dir.file("f"), "x");
  check_error(mkdir_p(ctx, "f"), 400, "[Errno 17] File exists: '" + dir.file("f") + "'");
  check_error(mkdir_p(ctx, "f/g"), 400, "[Errno 20] Not a directory: '" + dir.file("f/g") + "'");

  put(dir.file("a/b/c/file.txt"), "1");
  fs::create_symlink(dir.file("f"), dir.file("a/b/link"));
  // A symlink to a directory is removed itself; the target survives.
  fs::create_directory(dir.file("keep"));
  put(dir.file("keep/precious"), "p");
  fs::create_directory_symlink(dir.file("keep"), dir.file("keeplink"));
  auto dl = delete_path(ctx, "keeplink");
  REQUIRE(dl);
  CHECK(dl->type == "file");
  CHECK(fs::exists(dir.file("keep/precious")));

  auto dd = delete_path(ctx, "a");
  REQUIRE(dd);
  CHECK(dd->path == dir.file("a"));
  CHECK(dd->type == "directory");
  CHECK_FALSE(fs::exists(dir.file("a")));
  CHECK(fs::exists(dir.file("f")));  // the link inside was not followed

  auto df = delete_path(ctx, "f");
  REQUIRE(df);
  CHECK(df->type == "file");
  fs::create_symlink(dir.file("gone"), dir.file("dangling"));
  CHECK(delete_path(ctx, "dangling"));
  check_error(delete_path(ctx, "f"), 404, "Path not found");
  check_error(delete_path(ctx, "/"), 400, "Refusing to delete /");
}

TEST_CASE("files: move_path conflicts and errors") {
  test::TempDir dir;
  auto ctx = context_for(dir);
  put(dir.file("src.txt"), "s");
  put(dir.file("other.txt"), "o");
  fs::create_directory(dir.file("d"));
  put(dir.file("tree/x/y"), "deep");

  auto m = move_path(ctx, "src.txt", "d/moved.txt");
  REQUIRE(m);
  CHECK(m->source == dir.file("src.txt"));
  CHECK(m->destination == dir.file("d/moved.txt"));
  CHECK(get(dir.file("d/moved.txt")) == "s");
  CHECK_FALSE(fs::exists(dir.file("src.txt")));

  REQUIRE(move_path(ctx, "tree", "d/tree2"));
  CHECK(get(dir.file("d/tree2/x/y")) == "deep");

  check_error(move_path(ctx, "src.txt", "x"), 404, "Source path not found");
  check_error(move_path(ctx, "other.txt", "nodir/x"), 400, "Destination parent directory not found");
  check_error(move_path(ctx, "other.txt", "d/moved.txt"), 409, "Destination already exists");
  check_error(move_path(ctx, "other.txt", "other.txt"), 409, "Destination already exists");
  CHECK(get(dir.file("d/moved.txt")) == "s");
  CHECK(status_of(move_path(ctx, "d", "d/inside")) == 400);  // into itself
}

TEST_CASE("files: session cwd store has a sliding TTL / a cap and is thread-safe") {
  auto now = SessionCwdStore::Clock::time_point{};
  SessionCwdStore::Limits limits;
  limits.ttl = std::chrono::seconds(100);
  limits.max_entries = 3;
  SessionCwdStore store(limits, [&] { return now; });

  CHECK_FALSE(store.get("a"));
  store.set("", "/ignored");
  CHECK(store.size() == 0);
  store.set("a", "/a");
  now += std::chrono::seconds(80);
  CHECK(store.get("a").value() == "/a");  // refreshes
  now += std::chrono::seconds(80);
  CHECK(store.get("a").value() == "/a");  // 160 s after set, but only 80 s idle
  now += std::chrono::seconds(101);
  CHECK_FALSE(store.get("a"));
  CHECK(store.size() == 0);

  store.set("1", "/1");
  store.set("2", "/2");
  store.set("3", "/3");
  CHECK(store.get("1"));  // 1 becomes most recent; 2 is now the oldest
  store.set("4", "/4");
  CHECK(store.size() == 3);
  CHECK_FALSE(store.get("2"));
  CHECK(store.get("1"));
  store.set("1", "/one");
  CHECK(store.get("1").value() == "/one");

  SessionCwdStore shared;
  std::vector<std::thread> threads;
  std::atomic<int> hits{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        std::string id = "s" + std::to_string((i + t) % 50);
        shared.set(id, "/" + id);
        if (auto v = shared.get(id); v && *v == "/" + id) ++hits;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(hits.load() == 8000);
  CHECK(shared.size() == 50);
}

TEST_CASE("files: get_cwd and set_cwd") {
  test::TempDir dir;
  fs::create_directory(dir.file("proj"));
  SessionCwdStore store;

  auto ctx = make_file_context(store, dir.path(), "chat-1");
  auto info = get_cwd(ctx);
  CHECK(info.cwd == dir.path());
  CHECK(info.home == dir.path());
  REQUIRE(info.root);
  CHECK(info.root->path == dir.path());
  CHECK(info.root->label == "Home");

  auto set = set_cwd(store, ctx, "chat-1", "proj");
  REQUIRE(set);
  CHECK(set->path == dir.file("proj"));
  auto ctx2 = make_file_context(store, dir.path(), "chat-1");
  CHECK(ctx2.cwd == dir.file("proj"));
  CHECK(get_cwd(ctx2).cwd == dir.file("proj"));
  // Relative paths now resolve in the session cwd; POST /files/cwd still resolves from home.
  CHECK(resolve_path(ctx2, "x", PathBase::Cwd).value() == dir.file("proj/x"));
  check_error(set_cwd(store, ctx2, "chat-1", "missing"), 404, "Directory not found");
  CHECK(make_file_context(store, dir.path(), "chat-2").cwd.empty());
  // Without a session id the path is checked but not stored.
  CHECK(set_cwd(store, ctx2, "", "proj"));
  CHECK(store.size() == 1);

  ctx.options.file_browser_root = "filesystem";
  CHECK_FALSE(get_cwd(ctx).root);
  ctx.options.file_browser_root = " ~/proj ";
  CHECK(get_cwd(ctx).root->path == dir.file("proj"));
  CHECK(get_cwd(ctx).root->label == "proj");
  ctx.options.file_browser_root = "{{home}}";
  CHECK(get_cwd(ctx).root->label == "Home");
  ctx.options.file_browser_root = "/";
  CHECK(get_cwd(ctx).root->label == "/");
}

}  // TEST_SUITE

namespace {

std::vector<std::string> grep_lines(const GrepResult& r, const std::string& root) {
  std::vector<std::string> out;
  for (auto& m : r.matches) {
    out.push_back(m.file.substr(root.size() + 1) + ":" + std::to_string(m.line) + ":" + m.content);
  }
  return out;
}

std::vector<std::string> glob_paths(const GlobResult& r) {
  std::vector<std::string> out;
  for (auto& m : r.matches) out.push_back(m.path + (m.type == "directory" ? "/" : ""));
  return out;
}

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("files: grep_search regex dialect is PCRE2 (close to Python re)") {
  test::TempDir dir;
  auto ctx = context_for(dir);
  // Whether `pattern` matches the one-line file `line`.
  auto matches = [&](std::string_view pattern, std::string_view line, bool icase = false) {
    put(dir.file("one.txt"), std::string(line) + "\n");
    GrepRequest req;
    req.query = std::string(pattern);
    req.path = "one.txt";
    req.case_insensitive = icase;
    auto r = grep_search(ctx, req);
    REQUIRE_MESSAGE(r, std::string(pattern));
    return r->matches.size() == 1;
  };
  auto error = [&](std::string_view pattern) {
    put(dir.file("one.txt"), "x\n");
    GrepRequest req;
    req.query = std::string(pattern);
    req.path = "one.txt";
    auto r = grep_search(ctx, req);
    if (r) return std::string("(compiled)");
    CHECK(file_error_status(r.error()) == 400);
    return r.error().message;
  };

  CHECK(matches("^foo", "foo bar"));
  CHECK_FALSE(matches("^bar", "foo bar"));
  CHECK(matches("bar$", "foo bar"));
  CHECK(matches("\\bword\\b", "a word here"));
  CHECK_FALSE(matches("\\bword\\b", "swordfish"));
  CHECK(matches("\\d{3}-\\d{4}", "call 555-1234 now"));
  CHECK(matches("(cat|dog)s?\\b", "hot dogs"));
  CHECK(matches("def .*?\\(", "def foo(x):"));
  CHECK(matches("(?P<name>\\w+)@", "me@example"));
  CHECK(matches("^.$", "\xC3\xA9"));  // one code point, two bytes (UTF)
  CHECK(matches("^\\w+$", "caf\xC3\xA9_42"));  // Unicode \w (UCP)
  CHECK_FALSE(matches("^\\w+$", "a\xE2\x80\x94" "b"));  // em dash
  CHECK(matches("(?i)caf\xC3\xA9", "CAF\xC3\x89"));
  CHECK(matches("\xD0\xBF\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82",
                "\xD0\x9F\xD0\xA0\xD0\x98\xD0\x92\xD0\x95\xD0\xA2", true));
  CHECK(matches("(?i:h)ello", "Hello"));
  CHECK_FALSE(matches("(?i:h)ello", "HELLO"));
  // Look-around and back-references, which the hand-written engine refused, now work.
  CHECK(matches("a(?=b)", "ab"));
  CHECK_FALSE(matches("a(?=b)", "ac"));
  CHECK(matches("(?<!x)a", "ba"));
  CHECK(matches("(\\w)\\1", "hello"));
  CHECK_FALSE(matches("(\\w)\\1", "helo"));
  CHECK(matches("(?P<q>['\"]).*(?P=q)", "say 'hi'"));

  // Errors carry PCRE2's message and the position in characters.
  CHECK(error("foo(") == "Invalid regex: missing closing parenthesis at position 4");
  CHECK(error("a)").find("Invalid regex: ") == 0);
  CHECK(error("*a").find("Invalid regex: quantifier does not follow a repeatable item") == 0);
  CHECK(error("[abc").find("Invalid regex: missing terminating ] for character class") == 0);
  CHECK(error("\xC3\xA9(") == "Invalid regex: missing closing parenthesis at position 2");
}

TEST_CASE("files: grep_search bounds catastrophic patterns with the PCRE2 match limit") {
  test::TempDir dir;
  auto ctx = context_for(dir);
  // 64 KiB of "a" (the default line limit), then a line the patterns do match.
  put(dir.file("long.txt"), std::string(64 * 1024, 'a') + "\nab aac x=1;\n");
  auto start = std::chrono::steady_clock::now();
  for (const char* pattern : {"(a*)*b", "(a*)*[bc]", "(a|aa)*[bc]", "(?:a+)+(?:b|c)", ".*foo",
                              "\\w+\\s*=\\s*\\d+;", "(a?){20}a{20}$x"}) {
    GrepRequest req;
    req.query = pattern;
    req.path = "long.txt";
    auto r = grep_search(ctx, req);
    REQUIRE(r);
    CHECK_FALSE(r->timed_out);
    // The long line hits the limit or does not match; it never counts as a match.
    for (auto& m : r->matches) CHECK_MESSAGE(m.line == 2, pattern);
  }
  auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(elapsed < std::chrono::seconds(2));
  MESSAGE("7 hostile patterns over a 64 KiB line: "
          << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << " ms");
}

TEST_CASE("files: fnmatch follows Python's fnmatchcase") {
  CHECK(fnmatch_match("*.py", "a.py"));
  CHECK_FALSE(fnmatch_match("*.py", "a.PY"));
  CHECK(fnmatch_match("*", "a/b/c"));
  CHECK(fnmatch_match("sub/*.py", "sub/deep/x.py"));
  CHECK(fnmatch_match("?", "\xC3\xA9"));
  CHECK(fnmatch_match("[abc]x", "bx"));
  CHECK_FALSE(fnmatch_match("[!abc]x", "bx"));
  CHECK(fnmatch_match("[!abc]x", "dx"));
  CHECK(fnmatch_match("[]]", "]"));
  CHECK(fnmatch_match("[a-c]*", "cat"));
  CHECK(fnmatch_match("a[", "a["));
  CHECK(fnmatch_match("a\\b", "a\\b"));
  CHECK(fnmatch_match("*a*b*c", "xxaxxbxxc"));
  CHECK_FALSE(fnmatch_match("*a*b*c", "xxaxxcxxb"));
  CHECK(fnmatch_match("", ""));
  CHECK_FALSE(fnmatch_match("", "a"));
}

TEST_CASE("files: grep_search regex / literal / case / include / limits and errors") {
  test::TempDir dir;
  const std::string root = dir.path();
  put(dir.file("a.py"), "def foo():\n    return 1\n");
  put(dir.file("b.txt"), "Foo bar\nfoo\n");
  put(dir.file("sub/c.py"), "x = foo\r\ny\rfoo again");
  put(dir.file("bin.dat"), "foo \xFF\xFE binary\n");
  REQUIRE(::mkfifo(dir.file("sub/pipe").c_str(), 0600) == 0);
  fs::create_directory_symlink(root, dir.file("sub/loop"));  // must not be followed
  fs::create_symlink(dir.file("b.txt"), dir.file("sub/z-link.txt"));  // a symlinked file is read
  auto ctx = context_for(dir);

  GrepRequest req;
  req.query = "foo";
  auto r = grep_search(ctx, req);
  REQUIRE(r);
  CHECK(r->path == root);
  CHECK(r->query == "foo");
  CHECK_FALSE(r->truncated);
  CHECK(grep_lines(*r, root) == std::vector<std::string>{
                                    "a.py:1:def foo():", "b.txt:2:foo", "sub/c.py:1:x = foo",
                                    "sub/c.py:3:foo again", "sub/z-link.txt:2:foo"});

  req.case_insensitive = true;
  CHECK(grep_search(ctx, req)->matches.size() == 7);

  req.case_insensitive = false;
  req.query = "foo()";
  req.regex = false;  // literal: only the line that has the parentheses
  CHECK(grep_lines(*grep_search(ctx, req), root) == std::vector<std::string>{"a.py:1:def foo():"});
  req.regex = true;  // regex: an empty group
  CHECK(grep_search(ctx, req)->matches.size() == 5);
  req.query = "^foo$|^y$";
  CHECK(grep_lines(*grep_search(ctx, req), root) ==
        std::vector<std::string>{"b.txt:2:foo", "sub/c.py:2:y", "sub/z-link.txt:2:foo"});

  req.query = "foo";
  req.include = {"*.py"};
  CHECK(grep_search(ctx, req)->matches.size() == 3);
  req.include = {"*.txt", "nomatch"};
  CHECK(grep_search(ctx, req)->matches.size() == 2);
  req.include.clear();

  req.match_per_line = false;
  auto files_only = grep_search(ctx, req);
  REQUIRE(files_only);
  CHECK_FALSE(files_only->match_per_line);
  REQUIRE(files_only->matches.size() == 4);
  CHECK(files_only->matches[2].file == dir.file("sub/c.py"));
  CHECK(files_only->matches[2].line == 0);
  CHECK(files_only->matches[2].content.empty());
  req.match_per_line = true;

  req.max_results = 2;
  auto limited = grep_search(ctx, req);
  CHECK(limited->matches.size() == 2);
  CHECK(limited->truncated);
  req.max_results = 5;  // exactly as many as exist: not truncated
  CHECK_FALSE(grep_search(ctx, req)->truncated);
  req.max_results = 0;
  check_error(grep_search(ctx, req), 422, "max_results: Input should be greater than or equal to 1");
  req.max_results = 501;
  check_error(grep_search(ctx, req), 422, "max_results: Input should be less than or equal to 500");
  req.max_results = 50;

  req.query = "foo(";
  check_error(grep_search(ctx, req), 400, "Invalid regex: missing closing parenthesis at position 4");
  req.query = "foo";
  req.path = "nowhere";
  check_error(grep_search(ctx, req), 404, "Search path not found");

  // A file path searches that file only; a relative path resolves in the session cwd.
  auto sub = context_for(dir, dir.file("sub"));
  req.path = "c.py";
  req.include = {"*.txt"};  // ignored for a file named directly
  CHECK(grep_search(sub, req)->matches.size() == 2);
  req.include.clear();
  req.path = ".";
  CHECK(grep_search(sub, req)->path == dir.file("sub"));

  // A line over the regex line limit is skipped by regexes, still found by literal search.
  put(dir.file("long/min.js"), std::string(100, 'x') + "needle" + "\n");
  ctx.options.grep_max_line_bytes = 50;
  req.path = "long";
  req.query = "need.e";
  CHECK(grep_search(ctx, req)->matches.empty());
  req.query = "needle";
  CHECK(grep_search(ctx, req)->matches.size() == 1);

  // Files over the size limit are skipped.
  ctx.options.grep_max_file_bytes = 10;
  CHECK(grep_search(ctx, req)->matches.empty());

  // No limit: a huge budget must not overflow into an immediate timeout.
  ctx.options = FileOptions{};
  ctx.options.search_time_budget = std::chrono::milliseconds::max();
  req.path = ".";
  CHECK_FALSE(grep_search(ctx, req)->timed_out);
  CHECK_FALSE(glob_search(ctx, GlobRequest{"*", ".", {}, "any", 50})->timed_out);

  // An exhausted time budget returns what was found, marked truncated and timed out.
  ctx.options = FileOptions{};
  ctx.options.search_time_budget = std::chrono::milliseconds(-1);
  req.path = ".";
  auto timed = grep_search(ctx, req);
  REQUIRE(timed);
  CHECK(timed->timed_out);
  CHECK(timed->truncated);
}

TEST_CASE("files: glob_search patterns / types / excludes and symlinks") {
  test::TempDir dir;
  put(dir.file("a.py"), "12");
  put(dir.file("b.txt"), "");
  put(dir.file("sub/c.py"), "");
  put(dir.file("sub/deep/d.py"), "");
  fs::create_directory_symlink(dir.file("sub"), dir.file("link"));
  fs::create_directory_symlink(dir.path(), dir.file("sub/loop"));
  fs::create_symlink(dir.file("gone"), dir.file("dangling.py"));
  auto ctx = context_for(dir);

  GlobRequest req;
  req.pattern = "*.py";
  auto r = glob_search(ctx, req);
  REQUIRE(r);
  CHECK(r->path == dir.path());
  CHECK(r->pattern == "*.py");
  CHECK(glob_paths(*r) == std::vector<std::string>{"a.py", "sub/c.py", "sub/deep/d.py"});
  CHECK(r->matches[0].size == 2);
  CHECK(r->matches[0].type == "file");
  CHECK(r->matches[0].modified > 1e9);
  CHECK_FALSE(r->truncated);

  req.pattern = "*";
  req.type = "directory";
  CHECK(glob_paths(*glob_search(ctx, req)) ==
        std::vector<std::string>{"link/", "sub/", "sub/deep/", "sub/loop/"});
  req.type = "file";
  CHECK(glob_paths(*glob_search(ctx, req)) ==
        std::vector<std::string>{"a.py", "b.txt", "sub/c.py", "sub/deep/d.py"});
  req.type = "any";
  req.exclude = {"deep", "*.txt", "loop"};
  CHECK(glob_paths(*glob_search(ctx, req)) ==
        std::vector<std::string>{"a.py", "link/", "sub/", "sub/c.py", "sub/deep/d.py"});
  req.exclude.clear();

  req.pattern = "sub/*.py";  // against the relative path; * crosses "/"
  CHECK(glob_paths(*glob_search(ctx, req)) == std::vector<std::string>{"sub/c.py", "sub/deep/d.py"});

  req.pattern = "*";
  req.max_results = 2;
  auto limited = glob_search(ctx, req);
  CHECK(limited->matches.size() == 2);
  CHECK(limited->truncated);
  req.max_results = 50;

  auto sub = context_for(dir, dir.file("sub"));
  req.pattern = "*.py";
  CHECK(glob_paths(*glob_search(sub, req)) == std::vector<std::string>{"c.py", "deep/d.py"});

  req.type = "bogus";
  CHECK(status_of(glob_search(ctx, req)) == 422);
  req.type = "any";
  req.max_results = 0;
  CHECK(status_of(glob_search(ctx, req)) == 422);
  req.max_results = 50;
  req.path = "a.py";
  check_error(glob_search(ctx, req), 404, "Search directory not found");
  req.path = "missing";
  check_error(glob_search(ctx, req), 404, "Search directory not found");
}

}  // TEST_SUITE

namespace {

constexpr const char* kBoundary = "----WebKitFormBoundaryQz9T4xY";

std::string multipart_body(const std::string& filename_param, const std::string& content,
                           const std::string& boundary = kBoundary) {
  std::string b = "--" + boundary;
  std::string body;
  body += "preamble to ignore\r\n";
  body += b + "\r\n";
  body += "Content-Disposition: form-data; name=\"note\"\r\n\r\n";
  body += "not the file\r\n--" + boundary.substr(0, boundary.size() - 1) + "\r\n";
  body += b + "  \r\n";  // transport padding after a boundary is allowed
  body += "content-disposition: form-data; name=\"file\"; " + filename_param + "\r\n";
  body += "Content-Type: application/octet-stream\r\n\r\n";
  body += content;
  body += "\r\n" + b + "\r\n";
  body += "Content-Disposition: form-data; name=\"file\"; filename=\"second.txt\"\r\n\r\n";
  body += "a second file part is ignored";
  body += "\r\n" + b + "--\r\nepilogue";
  return body;
}

std::string content_type(const std::string& boundary = kBoundary) {
  return "multipart/form-data; boundary=" + boundary;
}

Result<UploadResult> upload_in_chunks(const FileContext& ctx, const std::string& directory,
                                      const std::string& body, std::vector<std::size_t> cuts) {
  auto up = MultipartUpload::start(ctx, directory, content_type());
  if (!up) return std::move(up).error();
  std::size_t from = 0;
  cuts.push_back(body.size());
  for (std::size_t cut : cuts) {
    if (auto st = up->feed(std::string_view(body).substr(from, cut - from)); !st) {
      return std::move(st).error();
    }
    from = cut;
  }
  return up->finish();
}

// A file payload full of near-boundaries: CRLF-dash runs and a delimiter missing its last byte.
std::string tricky_payload(std::size_t n, unsigned seed) {
  std::string s = random_bytes(n, seed);
  std::string near = std::string("\r\n--") + kBoundary;
  near.pop_back();
  for (std::size_t at = 1000; at + near.size() < s.size(); at += 100000) s.replace(at, near.size(), near);
  s.replace(10, 4, "\r\n--");
  return s;
}

// Bitwise CRC-32, independent of the table-driven one under test.
std::uint32_t reference_crc(std::string_view data) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : data) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
  }
  return ~crc;
}

struct ZipEntry {
  std::string name;
  std::string data;
  std::uint32_t mode = 0;
};

std::uint32_t le(const std::string& s, std::size_t at, int bytes) {
  std::uint32_t v = 0;
  for (int k = bytes - 1; k >= 0; --k) v = (v << 8) | static_cast<unsigned char>(s[at + static_cast<std::size_t>(k)]);
  return v;
}

// A tiny ZIP reader: walks the central directory, checks every local header against it,
// checks STORE data against its CRC, returns the entries.
std::vector<ZipEntry> read_zip(const std::string& zip) {
  std::vector<ZipEntry> out;
  REQUIRE(zip.size() >= 22);
  std::size_t eocd = zip.size() - 22;
  REQUIRE(le(zip, eocd, 4) == 0x06054b50);
  std::size_t count = le(zip, eocd + 10, 2);
  std::size_t cd = le(zip, eocd + 16, 4);
  REQUIRE(cd + le(zip, eocd + 12, 4) == eocd);
  for (std::size_t i = 0; i < count; ++i) {
    REQUIRE(le(zip, cd, 4) == 0x02014b50);
    std::uint32_t crc = le(zip, cd + 16, 4);
    std::uint32_t csize = le(zip, cd + 20, 4);
    std::uint32_t usize = le(zip, cd + 24, 4);
    std::size_t name_len = le(zip, cd + 28, 2);
    std::size_t extra_len = le(zip, cd + 30, 2);
    std::size_t comment_len = le(zip, cd + 32, 2);
    std::uint32_t attrs = le(zip, cd + 38, 4);
    std::size_t local = le(zip, cd + 42, 4);
    ZipEntry e;
    e.name = zip.substr(cd + 46, name_len);
    e.mode = attrs >> 16;
    CHECK(le(zip, cd + 10, 2) == 0);  // STORE
    CHECK(csize == usize);
    REQUIRE(le(zip, local, 4) == 0x04034b50);
    CHECK(le(zip, local + 14, 4) == crc);
    CHECK(le(zip, local + 18, 4) == csize);
    CHECK(le(zip, local + 22, 4) == usize);
    std::size_t lname = le(zip, local + 26, 2);
    CHECK(zip.substr(local + 30, lname) == e.name);
    std::size_t data_at = local + 30 + lname + le(zip, local + 28, 2);
    REQUIRE(data_at + csize <= cd);
    e.data = zip.substr(data_at, csize);
    CHECK_MESSAGE(reference_crc(e.data) == crc, e.name);
    out.push_back(std::move(e));
    cd += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

bool have_unzip() { return std::system("command -v unzip >/dev/null 2>&1") == 0; }

}  // namespace

TEST_SUITE("unit") {

TEST_CASE("files: multipart upload / fed whole / byte by byte and split at every awkward place") {
  test::TempDir dir;
  auto ctx = context_for(dir, dir.file("not-used-for-upload"));
  const std::string payload = tricky_payload(300 * 1024, 7);
  const std::string body = multipart_body("filename=\"../../etc/passwd\"", payload);
  const std::string stored = dir.file("up/loads/passwd");

  auto whole = upload_in_chunks(ctx, "up/loads", body, {});
  REQUIRE(whole);
  CHECK(whole->path == stored);
  CHECK(whole->size == payload.size());
  CHECK(get(stored) == payload);
  CHECK(names_in(dir.file("up/loads")) == std::vector<std::string>{"passwd"});
  CHECK_FALSE(fs::exists(dir.file("etc")));

  // Byte by byte.
  fs::remove(stored);
  {
    auto up = MultipartUpload::start(ctx, "up/loads", content_type());
    REQUIRE(up);
    bool ok = true;
    for (char c : body) ok = ok && up->feed(std::string_view(&c, 1));
    REQUIRE(ok);
    auto r = up->finish();
    REQUIRE(r);
    CHECK(r->size == payload.size());
    CHECK(get(stored) == payload);
  }

  // Every cut point within the first delimiter after the file data, and at the closing one.
  std::size_t delim_at = body.find(std::string("\r\n--") + kBoundary, body.find("octet-stream"));
  std::size_t close_at = body.rfind(std::string("--") + kBoundary + "--");
  for (std::size_t k = 0; k <= 4 + std::string(kBoundary).size() + 2; ++k) {
    auto r = upload_in_chunks(ctx, "up/loads", body, {delim_at + k - 1, close_at + k % 7});
    REQUIRE_MESSAGE(r, k);
    CHECK(get(stored) == payload);
  }
  // Big chunks, and a prime-sized stride.
  CHECK(upload_in_chunks(ctx, "up/loads", body, {65536, 131072, 262144}));
  std::vector<std::size_t> stride;
  for (std::size_t at = 4099; at < body.size(); at += 4099) stride.push_back(at);
  CHECK(upload_in_chunks(ctx, "up/loads", body, stride).value().size == payload.size());
  CHECK(get(stored) == payload);
  CHECK(names_in(dir.file("up/loads")) == std::vector<std::string>{"passwd"});
}

TEST_CASE("files: multipart upload of several MiB keeps memory bounded and replaces in place") {
  test::TempDir dir;
  auto ctx = context_for(dir);
  const std::string payload = random_bytes(8 << 20, 11);
  const std::string body = multipart_body("filename=\"big.bin\"", payload);
  put(dir.file("in/big.bin"), "old");
  ::chmod(dir.file("in/big.bin").c_str(), 0640);
  auto r = upload_in_chunks(ctx, "in", body, {1, 100, 70000, 3 << 20, 6 << 20});
  REQUIRE(r);
  CHECK(r->size == payload.size());
  CHECK(get(dir.file("in/big.bin")) == payload);
  struct stat st {};
  REQUIRE(::stat(dir.file("in/big.bin").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
}

TEST_CASE("files: a 48 MiB upload streamed in 64 KiB chunks does not grow memory") {
  test::TempDir dir;
  auto ctx = context_for(dir);
  auto up = MultipartUpload::start(ctx, "stream", content_type());
  REQUIRE(up);
  std::string b = std::string("--") + kBoundary;
  REQUIRE(up->feed(b + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.bin\"\r\n\r\n"));
  const std::string block = random_bytes(64 * 1024, 13);
  const std::size_t before = test::current_rss_bytes();
  std::uint32_t crc = 0;
  for (int i = 0; i < 48 * 16; ++i) {
    REQUIRE(up->feed(block));
    crc = files::crc32_update(crc, block.data(), block.size());
  }
  REQUIRE(up->feed("\r\n" + b + "--\r\n"));
  const std::size_t after = test::current_rss_bytes();
  auto r = up->finish();
  REQUIRE(r);
  CHECK(r->size == 48u << 20);
  std::string stored = get(dir.file("stream/s.bin"));
  CHECK(files::crc32_update(0, stored.data(), stored.size()) == crc);
  MESSAGE("RSS growth while streaming 48 MiB: " << (after > before ? (after - before) >> 10 : 0) << " KiB");
  CHECK(after < before + (8u << 20));
}

TEST_CASE("files: multipart upload names and errors") {
  test::TempDir dir;
  auto ctx = context_for(dir);

  // RFC 5987 filename* wins over filename; quoted boundaries work.
  {
    std::string boundary = "b o u n d";
    std::string body = multipart_body("filename=\"fallback.txt\"; filename*=UTF-8''na%C3%AFve%20file.txt",
                                      "data", boundary);
    auto up = MultipartUpload::start(ctx, "u", "Multipart/Form-Data; charset=utf-8; boundary=\"" + boundary + "\"");
    REQUIRE(up);
    REQUIRE(up->feed(body));
    auto r = up->finish();
    REQUIRE(r);
    CHECK(r->path == dir.file("u/na\xC3\xAFve file.txt"));
  }

  for (const char* bad : {"filename=\"..\"", "filename=\".\"", "filename=\"\"", "filename=\"a/\"",
                          "nofilename=\"x\""}) {
    auto r = upload_in_chunks(ctx, "u2", multipart_body(bad, "x"), {});
    CAPTURE(bad);
    check_error(r, 400, "Invalid file name");
  }
  CHECK_FALSE(fs::exists(dir.file("u2")));  // refused before the directory was made

  check_error(MultipartUpload::start(ctx, "u", "text/plain"), 400,
              "Content-Type must be multipart/form-data with a boundary");
  check_error(MultipartUpload::start(ctx, "u", "multipart/form-data"), 400,
              "Content-Type must be multipart/form-data with a boundary");

  // No closing boundary: the partial file is not stored and the temporary is gone.
  {
    std::string body = multipart_body("filename=\"cut.bin\"", random_bytes(100000, 3));
    auto up = MultipartUpload::start(ctx, "cut", content_type());
    REQUIRE(up);
    REQUIRE(up->feed(std::string_view(body).substr(0, body.size() / 2)));
    check_error(up->finish(), 400, "Malformed multipart body: missing closing boundary");
    check_error(up->finish(), 400, "Malformed multipart body: missing closing boundary");
    CHECK(names_in(dir.file("cut")).empty());
  }
  // Abandoned mid-way: destroying the upload removes its temporary file.
  {
    std::string body = multipart_body("filename=\"gone.bin\"", random_bytes(100000, 4));
    auto up = MultipartUpload::start(ctx, "gone", content_type());
    REQUIRE(up);
    REQUIRE(up->feed(std::string_view(body).substr(0, body.size() / 2)));
    CHECK(names_in(dir.file("gone")).size() == 1);
  }
  CHECK(names_in(dir.file("gone")).empty());

  // No `file` field.
  {
    std::string b = std::string("--") + kBoundary;
    std::string body = b + "\r\nContent-Disposition: form-data; name=\"other\"; filename=\"x\"\r\n\r\nx\r\n" + b + "--\r\n";
    auto up = MultipartUpload::start(ctx, "nofile", content_type());
    REQUIRE(up);
    REQUIRE(up->feed(body));
    check_error(up->finish(), 422, "Missing form field 'file'");
  }
  // Garbage after a boundary.
  {
    std::string body = std::string("--") + kBoundary + "XYZ\r\n\r\n";
    auto up = MultipartUpload::start(ctx, "bad", content_type());
    REQUIRE(up);
    check_error(up->feed(body), 400, "Malformed multipart body: bad boundary line");
    check_error(up->feed("more"), 400, "Malformed multipart body: bad boundary line");
  }
  // Size limit.
  {
    ctx.options.upload_max_bytes = 1000;
    auto r = upload_in_chunks(ctx, "limited", multipart_body("filename=\"l.bin\"", random_bytes(5000, 5)), {2000});
    check_error(r, 413, "Upload too large: more than 1000 bytes");
    CHECK(names_in(dir.file("limited")).empty());
    ctx.options.upload_max_bytes = 0;
  }
  // The target is a directory.
  fs::create_directories(dir.file("d/dir.bin"));
  check_error(upload_in_chunks(ctx, "d", multipart_body("filename=\"dir.bin\"", "x"), {}), 400,
              "[Errno 21] Is a directory: '" + dir.file("d/dir.bin") + "'");
  // The directory cannot be created.
  put(dir.file("plain"), "x");
  check_error(upload_in_chunks(ctx, "plain/sub", multipart_body("filename=\"a\"", "x"), {}), 400,
              "[Errno 20] Not a directory: '" + dir.file("plain/sub") + "'");
}

TEST_CASE("files: CRC-32 matches the standard check value") {
  CHECK(files::crc32_update(0, "123456789", 9) == 0xCBF43926u);
  std::string data = random_bytes(100000, 9);
  std::uint32_t split = files::crc32_update(files::crc32_update(0, data.data(), 777), data.data() + 777, data.size() - 777);
  CHECK(split == reference_crc(data));
}

TEST_CASE("files: archive a tree with binary files / readable by our reader and unzip") {
  test::TempDir dir;
  test::TempDir tmp;
  auto ctx = context_for(dir, dir.file("elsewhere"));
  ctx.options.temp_dir = tmp.path();
  const std::string big = random_bytes(3 << 20, 21);
  put(dir.file("proj/a.txt"), "alpha\n");
  put(dir.file("proj/big.bin"), big);
  put(dir.file("proj/sub/c.txt"), "gamma");
  fs::create_directory(dir.file("proj/empty"));
  fs::create_symlink(dir.file("proj/a.txt"), dir.file("proj/lnk"));
  fs::create_directory_symlink(dir.file("proj/sub"), dir.file("proj/dlink"));
  fs::create_directory_symlink(dir.file("proj"), dir.file("proj/sub/loop"));
  fs::create_symlink(dir.file("nowhere"), dir.file("proj/dangling"));
  REQUIRE(::mkfifo(dir.file("proj/fifo").c_str(), 0600) == 0);
  ::chmod(dir.file("proj/a.txt").c_str(), 0754);
  put(dir.file("single.png"), "\x89PNG");

  std::string zip_path;
  {
    auto r = archive_paths(ctx, {"proj"});  // relative to home
    REQUIRE(r);
    CHECK(r->filename == "proj.zip");
    CHECK(r->content_type == "application/zip");
    CHECK(r->entries == 7);
    zip_path = r->file.path();
    CHECK(zip_path.rfind(tmp.path(), 0) == 0);
    std::string zip = get(zip_path);
    CHECK(zip.size() == r->size);
    auto entries = read_zip(zip);
    std::vector<std::string> names;
    for (auto& e : entries) names.push_back(e.name);
    CHECK(names == std::vector<std::string>{"proj/", "proj/a.txt", "proj/big.bin", "proj/lnk",
                                            "proj/empty/", "proj/sub/", "proj/sub/c.txt"});
    CHECK(entries[1].data == "alpha\n");
    CHECK((entries[1].mode & 07777) == 0754);
    CHECK(entries[2].data == big);
    CHECK(entries[3].data == "alpha\n");  // a symlinked file is stored with its target's bytes
    CHECK((entries[4].mode & S_IFMT) == S_IFDIR);
    CHECK(entries[6].data == "gamma");

    if (have_unzip()) {
      CHECK(std::system(("unzip -tq '" + zip_path + "' >/dev/null").c_str()) == 0);
      std::string out = tmp.file("extracted");
      REQUIRE(std::system(("unzip -q '" + zip_path + "' -d '" + out + "'").c_str()) == 0);
      CHECK(get(out + "/proj/big.bin") == big);
      CHECK(get(out + "/proj/sub/c.txt") == "gamma");
      CHECK(fs::is_directory(out + "/proj/empty"));
    } else {
      MESSAGE("unzip is not installed (apt-get install unzip): checked with the built-in reader only");
    }
  }
  CHECK_FALSE(fs::exists(zip_path));  // the TempFile went with the result

  auto several = archive_paths(ctx, {dir.file("single.png"), "proj/sub"});
  REQUIRE(several);
  CHECK(several->filename == "download.zip");
  auto entries = read_zip(get(several->file.path()));
  REQUIRE(entries.size() == 3);
  CHECK(entries[0].name == "single.png");
  CHECK(entries[0].data == "\x89PNG");
  CHECK(entries[1].name == "sub/");
  CHECK(entries[2].name == "sub/c.txt");
  CHECK(archive_paths(ctx, {"single.png"}).value().filename == "single.png.zip");

  // Non-ASCII names are flagged UTF-8.
  put(dir.file("caf\xC3\xA9.txt"), "x");
  auto utf = archive_paths(ctx, {"caf\xC3\xA9.txt"});
  REQUIRE(utf);
  std::string utf_zip = get(utf->file.path());
  CHECK((le(utf_zip, 6, 2) & 0x800) != 0);
  CHECK(read_zip(utf_zip)[0].name == "caf\xC3\xA9.txt");
  if (have_unzip()) CHECK(std::system(("unzip -tq '" + utf->file.path() + "' >/dev/null").c_str()) == 0);
}

TEST_CASE("files: archive errors and the size limit") {
  test::TempDir dir;
  test::TempDir tmp;
  auto ctx = context_for(dir);
  ctx.options.temp_dir = tmp.path();
  put(dir.file("big.bin"), random_bytes(200000, 5));
  put(dir.file("small.txt"), "s");

  check_error(archive_paths(ctx, {}), 400, "No paths provided");
  check_error(archive_paths(ctx, {"small.txt", "nope/x"}), 404, "Path not found: nope/x");

  ctx.options.archive_max_bytes = 100000;
  check_error(archive_paths(ctx, {"small.txt", "big.bin"}), 413,
              "Archive too large: more than 100000 bytes (ZIP64 is not supported)");
  CHECK(names_in(tmp.path()).empty());  // the partial archive was removed
  CHECK(archive_paths(ctx, {"small.txt"}));

  auto released = archive_paths(ctx, {"small.txt"}).value();
  std::string kept = released.file.release();
  CHECK(fs::exists(kept));
  fs::remove(kept);
}

}  // TEST_SUITE

TEST_SUITE("unit") {

TEST_CASE("files: permission errors map to 403 or 400 like the reference (non-root only)") {
  if (::geteuid() == 0) {
    MESSAGE("running as root: permission cases skipped (run the suite as another user to cover them)");
    return;
  }
  test::TempDir dir;
  test::TempDir tmp;
  auto ctx = context_for(dir);
  ctx.options.temp_dir = tmp.path();
  put(dir.file("secret.txt"), "s");
  ::chmod(dir.file("secret.txt").c_str(), 0);
  fs::create_directory(dir.file("locked"));
  put(dir.file("tree/ok.txt"), "needle");
  put(dir.file("tree/no.txt"), "needle");
  ::chmod(dir.file("tree/no.txt").c_str(), 0);
  fs::create_directory(dir.file("ro"));
  ::chmod(dir.file("ro").c_str(), 0555);

  const std::string denied = "[Errno 13] Permission denied: '";
  check_error(read_file(ctx, "secret.txt"), 403, denied + dir.file("secret.txt") + "'");
  check_error(replace_file_content(ctx, "secret.txt", {{"s", "t"}}), 400,
              denied + dir.file("secret.txt") + "'");
  ::chmod(dir.file("locked").c_str(), 0);
  check_error(list_files(ctx, "locked"), 403, denied + dir.file("locked") + "'");
  ::chmod(dir.file("locked").c_str(), 0755);
  check_error(write_file(ctx, "ro/new.txt", "x"), 400, denied + dir.file("ro/new.txt") + "'");
  check_error(mkdir_p(ctx, "ro/sub"), 400, denied + dir.file("ro/sub") + "'");
  check_error(upload_in_chunks(ctx, "ro", multipart_body("filename=\"u.bin\"", "x"), {}), 403,
              denied + dir.file("ro/u.bin") + "'");
  check_error(archive_paths(ctx, {"tree"}), 403, denied + dir.file("tree/no.txt") + "'");
  CHECK(names_in(tmp.path()).empty());

  GrepRequest req;
  req.query = "needle";
  req.path = "tree";
  auto r = grep_search(ctx, req);
  REQUIRE(r);
  REQUIRE(r->matches.size() == 1);  // the unreadable file is skipped
  CHECK(r->matches[0].file == dir.file("tree/ok.txt"));

  ::chmod(dir.file("ro").c_str(), 0755);
  ::chmod(dir.file("tree/no.txt").c_str(), 0644);
}

}  // TEST_SUITE

TEST_SUITE("unit") {

TEST_CASE("files: operations run concurrently on thread-pool threads without shared state") {
  test::TempDir dir;
  test::TempDir tmp;
  SessionCwdStore store;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::string session = "s" + std::to_string(t);
      FileOptions options;
      options.temp_dir = tmp.path();
      auto ctx = make_file_context(store, dir.path(), session, options);
      if (!mkdir_p(ctx, session) || !set_cwd(store, ctx, session, session)) ++failures;
      ctx = make_file_context(store, dir.path(), session, options);
      for (int i = 0; i < 20; ++i) {
        std::string name = "f" + std::to_string(i) + ".txt";
        if (!write_file(ctx, name, "line one\nneedle " + std::to_string(i) + "\n")) ++failures;
        if (!replace_file_content(ctx, name, {{"one", "1"}})) ++failures;
        auto r = read_file(ctx, name, 1, 1);
        if (!r || r->content != "line 1\n") ++failures;
      }
      GrepRequest g;
      g.query = "needle \\d+";
      auto found = grep_search(ctx, g);
      if (!found || found->matches.size() != 20) ++failures;
      auto zip = archive_paths(ctx, {session});
      if (!zip || zip->entries != 21) ++failures;
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures.load() == 0);
  CHECK(store.size() == 4);
}

}  // TEST_SUITE
