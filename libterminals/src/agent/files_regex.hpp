#pragma once

// LineRegex: a small regular-expression engine for grep_search. It takes the part of Python's
// `re` syntax that models actually send and decides "does this line match anywhere" by
// simulating the NFA over all start positions at once (Thompson's construction), so the cost is
// O(line length x pattern size) whatever the pattern: no backtracking blow-up, no recursion while
// matching, and a deadline is checked as it runs.
//
// Supported: literals and escapes (\t \n \r \f \v \a \0 \xhh \uhhhh \Uhhhhhhhh, escaped
// punctuation), . [] [^] with ranges and \d \w \s inside, \d \w \s \D \W \S, \b \B, ^ $ \A \Z,
// groups ( ) (?: ) (?P<name> ), (?#comment), |, * + ? {n} {n,} {,m} {n,m} and their lazy (?) and
// possessive (+) forms (which cannot change whether a line matches), and inline flags (?aimsu)
// at the start or scoped as (?i:...) / (?-i:...). Refused with a reason: back-references,
// look-ahead and look-behind, conditionals, (?x), \N{...}, and patterns that expand to more than
// a fixed number of instructions.
//
// Matching works on code points of valid UTF-8. Case-insensitive matching folds ASCII,
// Latin-1, Latin Extended-A, Greek, Cyrillic, Armenian and fullwidth Latin (plus a few special
// cases like the Kelvin sign); \d is ASCII digits plus a few common Unicode digit blocks; \s is
// Python's str.isspace() set; \w is ASCII word characters plus non-ASCII code points outside
// the common punctuation, symbol, space and combining-mark blocks (close to Python's
// isalnum()-based \w, not exact). The (?a) flag makes \d \w \s ASCII-only.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/result.hpp"

namespace terminals::detail::files {

class LineRegex {
 public:
  /// Compiles `pattern`. Errors are InvalidArgument with a Python-like reason ("missing ),
  /// unterminated subpattern at position 0").
  static Result<LineRegex> compile(std::string_view pattern, bool case_insensitive);
  /// A pattern matching `text` literally.
  static LineRegex literal(std::string_view text, bool case_insensitive);

  LineRegex(LineRegex&&) noexcept;
  LineRegex& operator=(LineRegex&&) noexcept;
  ~LineRegex();

  struct Program;

  /// Per-thread scratch space for searching; one per search loop. Not thread-safe itself, but
  /// any number of Matchers may share one LineRegex.
  class Matcher {
   public:
    explicit Matcher(const LineRegex& regex);
    ~Matcher();
    enum class Outcome { NoMatch, Match, Timeout };
    /// Whether the pattern matches anywhere in `line` (valid UTF-8 without its terminator).
    Outcome search(std::string_view line, std::chrono::steady_clock::time_point deadline);

   private:
    struct State;
    std::unique_ptr<State> state_;
  };

 private:
  explicit LineRegex(std::unique_ptr<Program> program);
  std::unique_ptr<Program> program_;
};

}  // namespace terminals::detail::files
