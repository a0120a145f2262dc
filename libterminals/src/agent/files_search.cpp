// grep_search, glob_search and fnmatch (see files.hpp for the behaviour and its differences
// from the reference).

#include <string.h>  // memmem
#include <sys/stat.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "agent/files.hpp"
#include "agent/files_internal.hpp"

namespace terminals::detail {

using namespace files;

namespace {

using Clock = std::chrono::steady_clock;

// now + budget, saturating so that a huge budget means "no limit" instead of overflowing.
Clock::time_point deadline_after(std::chrono::milliseconds budget) {
  auto now = Clock::now();
  auto room = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::time_point::max() - now);
  if (budget > room) return Clock::time_point::max();
  return now + budget;
}

Status check_max_results(int max_results) {
  if (max_results < 1) {
    return file_error(422, "max_results: Input should be greater than or equal to 1");
  }
  if (max_results > 500) {
    return file_error(422, "max_results: Input should be less than or equal to 500");
  }
  return {};
}

std::vector<char32_t> decode(std::string_view s) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < s.size();) out.push_back(next_code_point(s, i));
  return out;
}

// fnmatch's "[...]" at pat[i] (pointing at '['): the index after ']' and whether `c` is in the
// set, or nullopt when there is no closing ']' (then '[' is a literal, as in Python).
std::optional<std::pair<std::size_t, bool>> match_set(const std::vector<char32_t>& pat,
                                                      std::size_t i, char32_t c) {
  std::size_t j = i + 1;
  bool negate = false;
  if (j < pat.size() && pat[j] == '!') {
    negate = true;
    ++j;
  }
  std::size_t body = j;
  if (j < pat.size() && pat[j] == ']') ++j;  // a leading ']' is a member
  while (j < pat.size() && pat[j] != ']') ++j;
  if (j >= pat.size()) return std::nullopt;
  bool in = false;
  for (std::size_t k = body; k < j;) {
    if (k + 2 < j && pat[k + 1] == '-') {
      if (c >= pat[k] && c <= pat[k + 2]) in = true;
      k += 3;
    } else {
      if (c == pat[k]) in = true;
      ++k;
    }
  }
  return std::make_pair(j + 1, in != negate);
}

// PCRE2 bounds on one line's match (pcre2_set_match_limit / pcre2_set_depth_limit): with the
// 64 KiB line limit they keep a catastrophic pattern such as "(a*)*b" to a few milliseconds per
// line (measured on a 64 KiB line: under 1 ms with the JIT, under 20 ms interpreted). A line
// that hits a limit counts as not matching (the search goes on with the next
// line); the time budget is checked between lines.
constexpr std::uint32_t kMatchLimit = 200000;
constexpr std::uint32_t kDepthLimit = 10000;

// Code points in the first `bytes` bytes of `s` (PCRE2 reports byte offsets; Python's `re`
// reports positions in characters).
std::size_t code_points(std::string_view s, std::size_t bytes) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < bytes && i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) ++n;
  }
  return n;
}

// A compiled PCRE2 pattern with its match context and match data.
class Pcre2Regex {
 public:
  static Result<Pcre2Regex> compile(std::string_view pattern, bool literal, bool caseless) {
    // PCRE2_LITERAL allows no PCRE2_UCP; UTF mode alone still folds case beyond ASCII.
    std::uint32_t flags = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    if (caseless) flags |= PCRE2_CASELESS;
    int code = 0;
    PCRE2_SIZE offset = 0;
    Pcre2Regex re;
    re.code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                 flags, &code, &offset, nullptr));
    if (!re.code_) {
      PCRE2_UCHAR buf[256];
      if (pcre2_get_error_message(code, buf, sizeof buf) < 0) buf[0] = 0;
      return file_error(400, "Invalid regex: " + std::string(reinterpret_cast<char*>(buf)) +
                                 " at position " + std::to_string(code_points(pattern, offset)));
    }
    // JIT when the platform has it (it honours the match limit; the depth limit only applies to
    // the interpreter, and the JIT's own stack is bounded by PCRE2's default 32 KiB).
    pcre2_jit_compile(re.code_.get(), PCRE2_JIT_COMPLETE);
    re.context_.reset(pcre2_match_context_create(nullptr));
    re.data_.reset(pcre2_match_data_create_from_pattern(re.code_.get(), nullptr));
    if (!re.context_ || !re.data_) return file_error(500, "Out of memory compiling the regex");
    pcre2_set_match_limit(re.context_.get(), kMatchLimit);
    pcre2_set_depth_limit(re.context_.get(), kDepthLimit);
    return re;
  }

  /// Whether the pattern matches anywhere in `line` (valid UTF-8). PCRE2_ERROR_MATCHLIMIT,
  /// PCRE2_ERROR_DEPTHLIMIT, PCRE2_ERROR_JIT_STACKLIMIT (and any other match error) mean "no
  /// match on this line": the line is given up on, the search continues.
  bool search(std::string_view line) const {
    int rc = pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(line.data()), line.size(), 0,
                         0, data_.get(), context_.get());
    return rc >= 0;
  }

 private:
  struct FreeCode {
    void operator()(pcre2_code* p) const { pcre2_code_free(p); }
  };
  struct FreeContext {
    void operator()(pcre2_match_context* p) const { pcre2_match_context_free(p); }
  };
  struct FreeData {
    void operator()(pcre2_match_data* p) const { pcre2_match_data_free(p); }
  };
  std::unique_ptr<pcre2_code, FreeCode> code_;
  std::unique_ptr<pcre2_match_context, FreeContext> context_;
  std::unique_ptr<pcre2_match_data, FreeData> data_;  // scratch: one search at a time
};

// How a line is tested: substring search for case-sensitive literals, PCRE2 otherwise.
class LineTester {
 public:
  static Result<LineTester> create(const GrepRequest& request) {
    LineTester t;
    bool plain = !request.regex ||
                 request.query.find_first_of("\\^$.|?*+()[]{}") == std::string::npos;
    if (plain && !request.case_insensitive) {
      t.literal_ = request.query;
      return t;
    }
    auto re = Pcre2Regex::compile(request.query, plain, request.case_insensitive);
    if (!re) return std::move(re).error();
    t.regex_.emplace(std::move(*re));
    return t;
  }

  bool uses_regex() const { return regex_.has_value(); }

  bool test(std::string_view line) const {
    if (!regex_) {
      return literal_.empty() ||
             ::memmem(line.data(), line.size(), literal_.data(), literal_.size()) != nullptr;
    }
    return regex_->search(line);
  }

 private:
  std::string literal_;
  std::optional<Pcre2Regex> regex_;
};

class Grep {
 public:
  Grep(const FileContext& ctx, const GrepRequest& request, const LineTester& tester,
       GrepResult& result)
      : options_(ctx.options),
        request_(request),
        tester_(tester),
        result_(result),
        deadline_(deadline_after(ctx.options.search_time_budget)) {}

  bool done() const { return done_; }

  void time_out() {
    result_.timed_out = result_.truncated = true;
    done_ = true;
  }

  void search_file(const std::string& path) {
    if (done_) return;
    if (Clock::now() > deadline_) return time_out();
    auto st = stat_path(path);
    if (!st || !S_ISREG(st->st_mode)) return;  // FIFOs, devices, dangling links
    if (static_cast<std::uint64_t>(st->st_size) > options_.grep_max_file_bytes) return;
    auto data = read_regular_file(path, options_.grep_max_file_bytes);
    if (!data || !is_valid_utf8(*data)) return;  // unreadable or binary: skipped

    std::string_view text = *data;
    std::uint64_t line_no = 0;
    std::size_t pos = 0;
    while (pos < text.size()) {
      // Universal newlines, like iterating a Python text file: \n, \r\n, \r.
      std::size_t eol = text.find_first_of("\r\n", pos);
      std::size_t next;
      if (eol == std::string_view::npos) {
        eol = next = text.size();
      } else if (text[eol] == '\r' && eol + 1 < text.size() && text[eol + 1] == '\n') {
        next = eol + 2;
      } else {
        next = eol + 1;
      }
      ++line_no;
      std::string_view line = text.substr(pos, eol - pos);
      pos = next;
      if (tester_.uses_regex() && line.size() > options_.grep_max_line_bytes) continue;
      if (!tester_.test(line)) {
        // A regex line can cost up to the match limit, so the clock is read after each one;
        // literal lines are cheap and read it every 1024 lines.
        if ((tester_.uses_regex() || (line_no & 1023) == 0) && Clock::now() > deadline_) {
          return time_out();
        }
        continue;
      }
      if (!add(path, line_no, line)) return;
      if (!request_.match_per_line) return;  // one entry per file is enough
    }
  }

  void walk(const std::string& root) {
    // Depth-first, each directory's files (sorted) before its subdirectories (sorted), like
    // os.walk; an explicit stack so deep trees cannot exhaust the thread's stack.
    std::vector<std::string> stack{root};
    while (!stack.empty() && !done_) {
      std::string dir = std::move(stack.back());
      stack.pop_back();
      auto entries = read_directory(dir);
      for (const WalkEntry& e : entries) {
        if (done_) return;
        if (e.is_dir) continue;
        if (!request_.include.empty() &&
            std::none_of(request_.include.begin(), request_.include.end(),
                         [&](const std::string& g) { return fnmatch_match(g, e.name); })) {
          continue;
        }
        search_file(join_path(dir, e.name));
      }
      for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
        if (it->descend) stack.push_back(join_path(dir, it->name));
      }
    }
  }

 private:
  // Records a match; false when the search is over.
  bool add(const std::string& file, std::uint64_t line_no, std::string_view line) {
    if (result_.matches.size() >= static_cast<std::size_t>(request_.max_results)) {
      result_.truncated = true;  // a match beyond the limit: there really is more
      done_ = true;
      return false;
    }
    GrepMatch m;
    m.file = file;
    if (request_.match_per_line) {
      m.line = line_no;
      m.content = std::string(line);
    }
    result_.matches.push_back(std::move(m));
    return true;
  }

  const FileOptions& options_;
  const GrepRequest& request_;
  const LineTester& tester_;
  GrepResult& result_;
  Clock::time_point deadline_;
  bool done_ = false;
};

}  // namespace

bool fnmatch_match(std::string_view pattern, std::string_view name) {
  const auto pat = decode(pattern);
  const auto str = decode(name);
  // Greedy matching with backtracking to the last '*': O(len(pattern) x len(name)).
  std::size_t p = 0, n = 0;
  std::size_t star_p = std::string::npos, star_n = 0;
  while (n < str.size()) {
    if (p < pat.size()) {
      char32_t c = pat[p];
      if (c == '*') {
        star_p = p++;
        star_n = n;
        continue;
      }
      if (c == '?') {
        ++p;
        ++n;
        continue;
      }
      if (c == '[') {
        if (auto set = match_set(pat, p, str[n])) {
          if (set->second) {
            p = set->first;
            ++n;
            continue;
          }
        } else if (str[n] == '[') {  // no closing ']': a literal '['
          ++p;
          ++n;
          continue;
        }
      } else if (c == str[n]) {
        ++p;
        ++n;
        continue;
      }
    }
    if (star_p == std::string::npos) return false;
    p = star_p + 1;
    n = ++star_n;
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

Result<GrepResult> grep_search(const FileContext& ctx, const GrepRequest& request) {
  if (auto st = check_max_results(request.max_results); !st) return std::move(st).error();
  auto target = resolve_path(ctx, request.path, PathBase::Cwd);
  if (!target) return std::move(target).error();
  auto st = stat_path(*target);
  if (!st) return file_error(404, "Search path not found");
  auto tester = LineTester::create(request);
  if (!tester) return std::move(tester).error();

  GrepResult result;
  result.query = request.query;
  result.path = *target;
  result.match_per_line = request.match_per_line;
  Grep grep(ctx, request, *tester, result);
  if (S_ISDIR(st->st_mode)) {
    grep.walk(*target);
  } else {
    grep.search_file(*target);  // `include` does not apply to a file named directly
  }
  return result;
}

Result<GlobResult> glob_search(const FileContext& ctx, const GlobRequest& request) {
  if (request.type != "any" && request.type != "file" && request.type != "directory") {
    return file_error(422, "type: String should match pattern '^(file|directory|any)$'");
  }
  if (auto st = check_max_results(request.max_results); !st) return std::move(st).error();
  auto target = resolve_path(ctx, request.path, PathBase::Cwd);
  if (!target) return std::move(target).error();
  if (!is_directory(*target)) return file_error(404, "Search directory not found");

  GlobResult result;
  result.pattern = request.pattern;
  result.path = *target;
  const bool want_files = request.type != "directory";
  const bool want_dirs = request.type != "file";
  const auto deadline = deadline_after(ctx.options.search_time_budget);
  auto matches = [](const std::string& pattern, const std::string& name, const std::string& rel) {
    return fnmatch_match(pattern, name) || fnmatch_match(pattern, rel);
  };

  struct Pending {
    std::string dir;
    std::string rel;  // relative to the root, "" for the root
  };
  std::vector<Pending> stack{{*target, ""}};
  while (!stack.empty()) {
    if (Clock::now() > deadline) {
      result.timed_out = result.truncated = true;
      return result;
    }
    Pending current = std::move(stack.back());
    stack.pop_back();
    auto entries = read_directory(current.dir);
    for (const WalkEntry& e : entries) {
      if (e.is_dir ? !want_dirs : !want_files) continue;
      std::string rel = current.rel.empty() ? e.name : current.rel + "/" + e.name;
      if (!matches(request.pattern, e.name, rel)) continue;
      if (std::any_of(request.exclude.begin(), request.exclude.end(),
                      [&](const std::string& x) { return matches(x, e.name, rel); })) {
        continue;
      }
      auto st = stat_path(join_path(current.dir, e.name));
      if (!st) continue;  // dangling link or raced away
      if (result.matches.size() >= static_cast<std::size_t>(request.max_results)) {
        result.truncated = true;  // one more match exists
        return result;
      }
      result.matches.push_back(GlobMatch{std::move(rel), e.is_dir ? "directory" : "file",
                                         static_cast<std::uint64_t>(st->st_size),
                                         mtime_seconds(*st)});
    }
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
      if (it->descend) {
        stack.push_back({join_path(current.dir, it->name),
                         current.rel.empty() ? it->name : current.rel + "/" + it->name});
      }
    }
  }
  return result;
}

}  // namespace terminals::detail
