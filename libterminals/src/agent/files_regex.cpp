// LineRegex: parser (Python `re` subset) -> Thompson NFA program -> set-of-states simulation.
// See files_regex.hpp for the dialect.

#include "agent/files_regex.hpp"

#include "agent/files_internal.hpp"

#include <algorithm>
#include <utility>

namespace terminals::detail::files {

namespace {

// Hard caps that keep compile time, memory and the per-character cost bounded.
constexpr std::size_t kMaxPatternBytes = 64 * 1024;
constexpr std::size_t kMaxInstructions = 20000;
constexpr int kMaxNesting = 200;
constexpr int kMaxRepeat = 65535;

// ---- character properties ----

char32_t to_lower(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c >= 0x100 && c <= 0x137) return c | 1;
  if (c >= 0x139 && c <= 0x148) return (c & 1) ? c + 1 : c;
  if (c >= 0x14A && c <= 0x177) return c | 1;
  if (c == 0x178) return 0xFF;
  if (c >= 0x179 && c <= 0x17E) return (c & 1) ? c + 1 : c;
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (c >= 0x531 && c <= 0x556) return c + 48;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
  return c;
}

char32_t to_upper(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  if (c >= 0xE0 && c <= 0xFE && c != 0xF7) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c >= 0x100 && c <= 0x137) return c & ~char32_t{1};
  if (c >= 0x139 && c <= 0x148) return (c & 1) ? c : c - 1;
  if (c >= 0x14A && c <= 0x177) return c & ~char32_t{1};
  if (c >= 0x179 && c <= 0x17E) return (c & 1) ? c : c - 1;
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  if (c >= 0x561 && c <= 0x586) return c - 48;
  if (c >= 0xFF41 && c <= 0xFF5A) return c - 32;
  return c;
}

// The canonical form two characters share when they match case-insensitively.
char32_t fold(char32_t c) {
  switch (c) {
    case 0x17F: return 's';    // long s
    case 0x212A: return 'k';   // Kelvin sign
    case 0x212B: return 0xE5;  // Angstrom sign
    case 0x3C2: return 0x3C3;  // final sigma
    default: return to_lower(c);
  }
}

bool is_space(char32_t c, bool ascii) {
  if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F)) return true;
  if (ascii) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_digit(char32_t c, bool ascii) {
  if (c >= '0' && c <= '9') return true;
  if (ascii || c < 0x660) return false;
  return (c >= 0x660 && c <= 0x669) || (c >= 0x6F0 && c <= 0x6F9) || (c >= 0x966 && c <= 0x96F) ||
         (c >= 0x9E6 && c <= 0x9EF) || (c >= 0xFF10 && c <= 0xFF19);
}

bool is_word(char32_t c, bool ascii) {
  if (c < 0x80) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  }
  if (ascii) return false;
  if (c < 0xC0) {  // Latin-1 punctuation and symbols, except the letter-like ones
    return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA ||
           (c >= 0xBC && c <= 0xBE);
  }
  if (c == 0xD7 || c == 0xF7) return false;
  if (is_space(c, false)) return false;
  struct Range {
    char32_t lo, hi;
  };
  // Punctuation, symbols, combining marks and emoji: not \w in Python.
  static constexpr Range kNotWord[] = {
      {0x2B9, 0x2FF},   {0x300, 0x36F},   {0x374, 0x375},   {0x37E, 0x37E},   {0x387, 0x387},
      {0x483, 0x489},   {0x55A, 0x55F},   {0x589, 0x58A},   {0x591, 0x5C7},   {0x5F3, 0x5F4},
      {0x600, 0x61F},   {0x64B, 0x65F},   {0x66A, 0x66D},   {0x6D4, 0x6D4},   {0x964, 0x965},
      {0x1AB0, 0x1AFF}, {0x1DC0, 0x1DFF}, {0x2000, 0x206F}, {0x20A0, 0x20FF}, {0x2100, 0x2101},
      {0x2190, 0x245F}, {0x2500, 0x2775}, {0x2794, 0x2BFF}, {0x2E00, 0x2E7F}, {0x3000, 0x3004},
      {0x3008, 0x3020}, {0x3030, 0x3030}, {0xFE00, 0xFE0F}, {0xFE20, 0xFE6F}, {0xFF00, 0xFF0F},
      {0xFF1A, 0xFF20}, {0xFF3B, 0xFF40}, {0xFF5B, 0xFF65}, {0xFFF0, 0xFFFF}, {0x1F000, 0x1FBFF},
      {0xE0000, 0x10FFFF},
  };
  for (const Range& r : kNotWord) {
    if (c < r.lo) return true;  // sorted: nothing further can contain c
    if (c <= r.hi) return false;
  }
  return true;
}

// ---- program ----

enum class Op : std::uint8_t {
  Char,      // c (already folded when `fold`)
  Any,       // any code point except \n (or any at all with `dotall`)
  Class,     // classes[x]
  Split,     // x, y
  Jmp,       // x
  Match,
  Begin,     // ^, \A
  End,       // $, \Z
  WordB,     // \b
  NotWordB,  // \B
};

struct Inst {
  explicit Inst(Op o = Op::Match) : op(o) {}

  Op op = Op::Match;
  bool fold = false;
  bool flag = false;  // Any: dotall; WordB/NotWordB: ASCII word characters only
  char32_t c = 0;
  int x = 0;
  int y = 0;
};

enum Builtin : std::uint8_t {
  kDigit = 1,
  kNotDigit = 2,
  kSpace = 4,
  kNotSpace = 8,
  kWord = 16,
  kNotWord = 32,
};

struct CharClass {
  std::vector<std::pair<char32_t, char32_t>> ranges;
  std::uint8_t builtins = 0;
  bool negated = false;
  bool fold = false;
  bool ascii = false;

  bool contains_raw(char32_t c) const {
    for (auto& [lo, hi] : ranges) {
      if (c >= lo && c <= hi) return true;
    }
    if ((builtins & kDigit) && is_digit(c, ascii)) return true;
    if ((builtins & kNotDigit) && !is_digit(c, ascii)) return true;
    if ((builtins & kSpace) && is_space(c, ascii)) return true;
    if ((builtins & kNotSpace) && !is_space(c, ascii)) return true;
    if ((builtins & kWord) && is_word(c, ascii)) return true;
    if ((builtins & kNotWord) && !is_word(c, ascii)) return true;
    return false;
  }
  bool matches(char32_t c) const {
    bool in = contains_raw(c);
    if (!in && fold) {
      char32_t f = files::fold(c);
      in = contains_raw(f) || contains_raw(to_upper(f)) || contains_raw(to_upper(c));
    }
    return in != negated;
  }
};

}  // namespace

struct LineRegex::Program {
  std::vector<Inst> insts;
  std::vector<CharClass> classes;
};

namespace {

// ---- parser: pattern -> AST ----

struct Node {
  enum Kind { Empty, Char, Any, Class, Cat, Alt, Repeat, Assert } kind = Empty;
  char32_t c = 0;
  bool fold = false;
  bool flag = false;
  int cls = 0;
  Op assert_op = Op::Begin;
  int min = 0;
  int max = 0;  // -1: unbounded
  std::vector<Node> kids;
};

struct Flags {
  bool icase = false;
  bool dotall = false;
  bool ascii = false;
};

class Parser {
 public:
  Parser(std::string_view pattern, bool icase, LineRegex::Program& program)
      : program_(program) {
    // Positions in messages count code points, as Python's do.
    for (std::size_t i = 0; i < pattern.size();) cps_.push_back(next_code_point(pattern, i));
    flags_.icase = icase;
  }

  Result<Node> parse() {
    // Leading global flags: (?i) (?s) ... only before anything else, as Python 3.11 requires.
    while (peek_str(U"(?") && pos_ + 2 < cps_.size() && is_flag_char(cps_[pos_ + 2])) {
      std::size_t save = pos_;
      pos_ += 2;
      Flags f = flags_;
      bool negative = false;
      if (!parse_flag_letters(f, negative)) return error_;
      if (at(')') && !negative) {
        ++pos_;
        flags_ = f;
        continue;
      }
      pos_ = save;  // a scoped group: parsed as an atom
      break;
    }
    auto node = parse_alt(0);
    if (!node) return node;
    if (pos_ < cps_.size()) {
      if (cps_[pos_] == ')') return fail("unbalanced parenthesis", pos_);
      return fail("unexpected character", pos_);
    }
    return node;
  }

 private:
  bool at(char32_t c) const { return pos_ < cps_.size() && cps_[pos_] == c; }
  bool peek_str(std::u32string_view s) const {
    return cps_.size() - pos_ >= s.size() &&
           std::equal(s.begin(), s.end(), cps_.begin() + static_cast<std::ptrdiff_t>(pos_));
  }
  static bool is_flag_char(char32_t c) {
    return c == 'a' || c == 'i' || c == 'm' || c == 's' || c == 'u' || c == 'x' || c == 'L' ||
           c == '-';
  }

  Error fail(const std::string& what, std::size_t at) {
    error_ = Error(Errc::InvalidArgument, what + " at position " + std::to_string(at));
    return error_;
  }
  bool fail_false(const std::string& what, std::size_t at) {
    fail(what, at);
    return false;
  }

  // Parses [aiLmsux]* ( '-' [imsx]+ )? into `f`; stops before ')' or ':'.
  bool parse_flag_letters(Flags& f, bool& negative) {
    std::size_t start = pos_;
    bool on = true;
    while (pos_ < cps_.size() && cps_[pos_] != ')' && cps_[pos_] != ':') {
      char32_t c = cps_[pos_];
      if (c == '-') {
        if (!on) return fail_false("bad inline flags: multiple '-'", pos_);
        on = false;
        negative = true;
      } else if (c == 'i') {
        f.icase = on;
      } else if (c == 's') {
        f.dotall = on;
      } else if (c == 'a') {
        if (!on) return fail_false("bad inline flags: cannot turn off 'a'", pos_);
        f.ascii = true;
      } else if (c == 'm' || c == 'u') {
        // multiline: lines are searched one at a time, so ^ and $ already mean line bounds.
      } else if (c == 'x') {
        return fail_false("verbose mode (?x) is not supported", pos_);
      } else if (c == 'L') {
        return fail_false("bad inline flags: cannot use 'L' flag with a str pattern", pos_);
      } else {
        return fail_false("unknown flag", pos_);
      }
      ++pos_;
    }
    if (pos_ >= cps_.size()) return fail_false("missing -, : or )", pos_);
    if (pos_ == start) return fail_false("missing flag", pos_);
    return true;
  }

  Result<Node> parse_alt(int depth) {
    if (depth > kMaxNesting) return fail("too many nested groups", pos_);
    auto first = parse_cat(depth);
    if (!first) return first;
    if (!at('|')) return first;
    Node alt;
    alt.kind = Node::Alt;
    alt.kids.push_back(std::move(*first));
    while (at('|')) {
      ++pos_;
      auto next = parse_cat(depth);
      if (!next) return next;
      alt.kids.push_back(std::move(*next));
    }
    return alt;
  }

  Result<Node> parse_cat(int depth) {
    Node cat;
    cat.kind = Node::Cat;
    while (pos_ < cps_.size() && !at('|') && !at(')')) {
      auto item = parse_repeat(depth);
      if (!item) return item;
      cat.kids.push_back(std::move(*item));
    }
    if (cat.kids.size() == 1) return std::move(cat.kids.front());
    if (cat.kids.empty()) return Node{};
    return cat;
  }

  // {n}, {n,}, {,m}, {n,m} at pos_ (which is '{'): true with the bounds and pos_ past '}'.
  bool try_braces(int& min, int& max) {
    std::size_t p = pos_ + 1;
    auto number = [&](long& out) {
      std::size_t start = p;
      out = 0;
      while (p < cps_.size() && cps_[p] >= '0' && cps_[p] <= '9') {
        out = std::min<long>(out * 10 + static_cast<long>(cps_[p] - '0'), 1L << 30);
        ++p;
      }
      return p > start;
    };
    long lo = 0, hi = -1;
    bool has_lo = number(lo);
    if (p < cps_.size() && cps_[p] == '}') {
      if (!has_lo) return false;
      hi = lo;
    } else if (p < cps_.size() && cps_[p] == ',') {
      ++p;
      long v = 0;
      if (number(v)) hi = v;
      if (p >= cps_.size() || cps_[p] != '}') return false;
    } else {
      return false;
    }
    min = static_cast<int>(std::min<long>(lo, kMaxRepeat + 1L));
    max = hi < 0 ? -1 : static_cast<int>(std::min<long>(hi, kMaxRepeat + 1L));
    pos_ = p + 1;
    return true;
  }

  bool at_quantifier() {
    if (at('*') || at('+') || at('?')) return true;
    if (at('{')) {
      std::size_t save = pos_;
      int a = 0, b = 0;
      bool ok = try_braces(a, b);
      pos_ = save;
      return ok;
    }
    return false;
  }

  Result<Node> parse_repeat(int depth) {
    std::size_t atom_pos = pos_;
    if (at_quantifier()) return fail("nothing to repeat", pos_);
    auto atom = parse_atom(depth);
    if (!atom) return atom;
    Node node = std::move(*atom);
    bool repeated = false;
    while (at_quantifier()) {
      std::size_t qpos = pos_;
      if (repeated) return fail("multiple repeat", qpos);
      if (node.kind == Node::Assert || node.kind == Node::Empty) {
        return fail("nothing to repeat", atom_pos);
      }
      int min = 0, max = -1;
      if (at('*')) {
        ++pos_;
      } else if (at('+')) {
        ++pos_;
        min = 1;
      } else if (at('?')) {
        ++pos_;
        max = 1;
      } else {
        try_braces(min, max);
        if (min > kMaxRepeat || max > kMaxRepeat) {
          return fail("the repetition number is too large", qpos);
        }
        if (max >= 0 && max < min) return fail("min repeat greater than max repeat", qpos);
      }
      if (at('?') || at('+')) ++pos_;  // lazy / possessive: same lines match
      Node rep;
      rep.kind = Node::Repeat;
      rep.min = min;
      rep.max = max;
      rep.kids.push_back(std::move(node));
      node = std::move(rep);
      repeated = true;
    }
    return node;
  }

  Node char_node(char32_t c) const {
    Node n;
    n.kind = Node::Char;
    n.fold = flags_.icase;
    n.c = flags_.icase ? fold(c) : c;
    return n;
  }

  Node class_node(CharClass cls) {
    cls.fold = flags_.icase;
    cls.ascii = flags_.ascii;
    program_.classes.push_back(std::move(cls));
    Node n;
    n.kind = Node::Class;
    n.cls = static_cast<int>(program_.classes.size() - 1);
    return n;
  }

  Node builtin_node(std::uint8_t b) {
    CharClass cls;
    cls.builtins = b;
    return class_node(std::move(cls));
  }

  Node assert_node(Op op) const {
    Node n;
    n.kind = Node::Assert;
    n.assert_op = op;
    n.flag = flags_.ascii;
    return n;
  }

  // Reads `digits` hex digits after pos_ (which points at them).
  bool read_hex(int digits, char32_t& out) {
    out = 0;
    for (int k = 0; k < digits; ++k) {
      if (pos_ >= cps_.size()) return false;
      char32_t c = cps_[pos_];
      int v = (c >= '0' && c <= '9') ? static_cast<int>(c - '0')
              : (c >= 'a' && c <= 'f') ? static_cast<int>(c - 'a' + 10)
              : (c >= 'A' && c <= 'F') ? static_cast<int>(c - 'A' + 10)
                                       : -1;
      if (v < 0) return false;
      out = out * 16 + static_cast<char32_t>(v);
      ++pos_;
    }
    return true;
  }

  // An escape whose value is one character (shared by atoms and classes). pos_ is just past
  // the backslash. Returns false (with error_ set) for an unknown ASCII-letter escape.
  bool simple_escape(char32_t& out, bool in_class) {
    std::size_t esc = pos_ - 1;
    if (pos_ >= cps_.size()) return fail_false("bad escape (end of pattern)", esc);
    char32_t c = cps_[pos_++];
    switch (c) {
      case 'a': out = 7; return true;
      case 'f': out = 12; return true;
      case 'n': out = 10; return true;
      case 'r': out = 13; return true;
      case 't': out = 9; return true;
      case 'v': out = 11; return true;
      case 'b':
        if (in_class) {
          out = 8;
          return true;
        }
        break;
      case 'x':
        if (!read_hex(2, out)) return fail_false("incomplete escape \\x", esc);
        return true;
      case 'u':
        if (!read_hex(4, out)) return fail_false("incomplete escape \\u", esc);
        return true;
      case 'U':
        if (!read_hex(8, out) || out > 0x10FFFF) return fail_false("bad escape \\U", esc);
        return true;
      case '0': {
        // Octal: \0, \01, \012.
        out = 0;
        for (int k = 0; k < 2 && pos_ < cps_.size(); ++k) {
          if (cps_[pos_] < '0' || cps_[pos_] > '7') break;
          out = out * 8 + (cps_[pos_++] - '0');
        }
        return true;
      }
      default: break;
    }
    if (c >= '1' && c <= '9') {
      return fail_false(in_class ? "bad escape \\" + std::string(1, static_cast<char>(c))
                                 : "back-references are not supported",
                        esc);
    }
    if (c == 'N') return fail_false("named Unicode escapes \\N{...} are not supported", esc);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      return fail_false("bad escape \\" + std::string(1, static_cast<char>(c)), esc);
    }
    out = c;  // escaped punctuation, or any non-ASCII character
    return true;
  }

  static std::uint8_t builtin_for(char32_t c) {
    switch (c) {
      case 'd': return kDigit;
      case 'D': return kNotDigit;
      case 's': return kSpace;
      case 'S': return kNotSpace;
      case 'w': return kWord;
      case 'W': return kNotWord;
      default: return 0;
    }
  }

  Result<Node> parse_class() {
    std::size_t open = pos_;
    ++pos_;  // '['
    CharClass cls;
    if (at('^')) {
      cls.negated = true;
      ++pos_;
    }
    bool first = true;
    for (;;) {
      if (pos_ >= cps_.size()) return fail("unterminated character set", open);
      if (at(']') && !first) {
        ++pos_;
        break;
      }
      first = false;
      // One item: a character or a builtin class.
      std::size_t item_pos = pos_;
      char32_t lo = 0;
      if (at('\\')) {
        ++pos_;
        if (pos_ < cps_.size() && builtin_for(cps_[pos_])) {
          cls.builtins |= builtin_for(cps_[pos_++]);
          continue;
        }
        if (!simple_escape(lo, true)) return error_;
      } else {
        lo = cps_[pos_++];
      }
      // A range lo-hi (a '-' right before ']' is literal).
      if (at('-') && pos_ + 1 < cps_.size() && cps_[pos_ + 1] != ']') {
        ++pos_;
        char32_t hi = 0;
        if (at('\\')) {
          ++pos_;
          if (pos_ < cps_.size() && builtin_for(cps_[pos_])) {
            return fail("bad character range", item_pos);
          }
          if (!simple_escape(hi, true)) return error_;
        } else {
          hi = cps_[pos_++];
        }
        if (hi < lo) return fail("bad character range", item_pos);
        cls.ranges.emplace_back(lo, hi);
      } else {
        cls.ranges.emplace_back(lo, lo);
      }
    }
    return class_node(std::move(cls));
  }

  Result<Node> parse_group(int depth) {
    std::size_t open = pos_;
    ++pos_;  // '('
    Flags saved = flags_;
    if (at('?')) {
      ++pos_;
      if (at(':')) {
        ++pos_;
      } else if (at('P')) {
        ++pos_;
        if (at('<')) {
          ++pos_;
          std::size_t name_start = pos_;
          while (pos_ < cps_.size() && cps_[pos_] != '>') {
            char32_t c = cps_[pos_];
            bool ok = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80 ||
                      (pos_ > name_start && c >= '0' && c <= '9');
            if (!ok) return fail("bad character in group name", pos_);
            ++pos_;
          }
          if (pos_ >= cps_.size()) return fail("missing >, unterminated name", name_start);
          if (pos_ == name_start) return fail("missing group name", name_start);
          ++pos_;
        } else if (at('=')) {
          return fail("back-references are not supported", open);
        } else {
          return fail("unknown extension ?P", open);
        }
      } else if (at('=') || at('!')) {
        return fail("look-ahead is not supported", open);
      } else if (at('<')) {
        if (pos_ + 1 < cps_.size() && (cps_[pos_ + 1] == '=' || cps_[pos_ + 1] == '!')) {
          return fail("look-behind is not supported", open);
        }
        return fail("unknown extension ?<", open);
      } else if (at('#')) {
        while (pos_ < cps_.size() && cps_[pos_] != ')') ++pos_;
        if (pos_ >= cps_.size()) return fail("missing ), unterminated comment", open);
        ++pos_;
        return Node{};
      } else if (at('(')) {
        return fail("conditional groups are not supported", open);
      } else if (pos_ < cps_.size() && is_flag_char(cps_[pos_])) {
        Flags f = flags_;
        bool negative = false;
        if (!parse_flag_letters(f, negative)) return error_;
        if (at(')')) return fail("global flags not at the start of the expression", open);
        ++pos_;  // ':'
        flags_ = f;
      } else {
        return fail("unknown extension ?" + (pos_ < cps_.size() && cps_[pos_] < 0x80
                                                 ? std::string(1, static_cast<char>(cps_[pos_]))
                                                 : std::string()),
                    open);
      }
    }
    auto inner = parse_alt(depth + 1);
    flags_ = saved;
    if (!inner) return inner;
    if (!at(')')) return fail("missing ), unterminated subpattern", open);
    ++pos_;
    return inner;
  }

  Result<Node> parse_atom(int depth) {
    char32_t c = cps_[pos_];
    switch (c) {
      case '(': return parse_group(depth);
      case '[': return parse_class();
      case '.': {
        ++pos_;
        Node n;
        n.kind = Node::Any;
        n.flag = flags_.dotall;
        return n;
      }
      case '^': ++pos_; return assert_node(Op::Begin);
      case '$': ++pos_; return assert_node(Op::End);
      case '\\': {
        ++pos_;
        if (pos_ < cps_.size()) {
          char32_t e = cps_[pos_];
          if (std::uint8_t b = builtin_for(e)) {
            ++pos_;
            return builtin_node(b);
          }
          if (e == 'b' || e == 'B' || e == 'A' || e == 'Z') {
            ++pos_;
            return assert_node(e == 'b'   ? Op::WordB
                               : e == 'B' ? Op::NotWordB
                               : e == 'A' ? Op::Begin
                                          : Op::End);
          }
        }
        char32_t value = 0;
        if (!simple_escape(value, false)) return error_;
        return char_node(value);
      }
      default: ++pos_; return char_node(c);
    }
  }

  LineRegex::Program& program_;
  std::vector<char32_t> cps_;
  std::size_t pos_ = 0;
  Flags flags_;
  Error error_;
};

// ---- compiler: AST -> instructions ----

class Compiler {
 public:
  explicit Compiler(LineRegex::Program& program) : insts_(program.insts) {}

  bool compile(const Node& root) {
    emit(root);
    if (!overflow_) push(Inst(Op::Match));
    return !overflow_;
  }

 private:
  int push(Inst inst) {
    if (insts_.size() >= kMaxInstructions) {
      overflow_ = true;
      return static_cast<int>(insts_.size());
    }
    insts_.push_back(inst);
    return static_cast<int>(insts_.size() - 1);
  }
  int here() const { return static_cast<int>(insts_.size()); }
  void patch_x(int at, int target) {
    if (!overflow_) insts_[static_cast<std::size_t>(at)].x = target;
  }
  void patch_y(int at, int target) {
    if (!overflow_) insts_[static_cast<std::size_t>(at)].y = target;
  }

  void emit(const Node& n) {
    if (overflow_) return;
    switch (n.kind) {
      case Node::Empty: return;
      case Node::Char: {
        Inst i{Op::Char};
        i.c = n.c;
        i.fold = n.fold;
        push(i);
        return;
      }
      case Node::Any: {
        Inst i{Op::Any};
        i.flag = n.flag;
        push(i);
        return;
      }
      case Node::Class: {
        Inst i{Op::Class};
        i.x = n.cls;
        push(i);
        return;
      }
      case Node::Assert: {
        Inst i{n.assert_op};
        i.flag = n.flag;
        push(i);
        return;
      }
      case Node::Cat:
        for (const Node& k : n.kids) emit(k);
        return;
      case Node::Alt: {
        // split L1, next; L1: a; jmp end; next: split L2, next2 ...
        std::vector<int> jumps;
        for (std::size_t k = 0; k < n.kids.size(); ++k) {
          if (k + 1 < n.kids.size()) {
            int split = push(Inst(Op::Split));
            patch_x(split, here());
            emit(n.kids[k]);
            jumps.push_back(push(Inst(Op::Jmp)));
            patch_y(split, here());
          } else {
            emit(n.kids[k]);
          }
        }
        for (int j : jumps) patch_x(j, here());
        return;
      }
      case Node::Repeat: {
        const Node& body = n.kids.front();
        for (int k = 0; k < n.min && !overflow_; ++k) emit(body);
        if (n.max < 0) {
          // loop: split body, out; body; jmp loop
          int loop = push(Inst(Op::Split));
          patch_x(loop, here());
          emit(body);
          int back = push(Inst(Op::Jmp));
          patch_x(back, loop);
          patch_y(loop, here());
        } else {
          // (max - min) optional copies, each able to skip to the end.
          std::vector<int> splits;
          for (int k = n.min; k < n.max && !overflow_; ++k) {
            int split = push(Inst(Op::Split));
            patch_x(split, here());
            splits.push_back(split);
            emit(body);
          }
          for (int s : splits) patch_y(s, here());
        }
        return;
      }
    }
  }

  std::vector<Inst>& insts_;
  bool overflow_ = false;
};

}  // namespace

// ---- LineRegex ----

LineRegex::LineRegex(std::unique_ptr<Program> program) : program_(std::move(program)) {}
LineRegex::LineRegex(LineRegex&&) noexcept = default;
LineRegex& LineRegex::operator=(LineRegex&&) noexcept = default;
LineRegex::~LineRegex() = default;

Result<LineRegex> LineRegex::compile(std::string_view pattern, bool case_insensitive) {
  if (pattern.size() > kMaxPatternBytes) {
    return Error(Errc::InvalidArgument, "pattern longer than " +
                                            std::to_string(kMaxPatternBytes) + " bytes");
  }
  auto program = std::make_unique<Program>();
  Parser parser(pattern, case_insensitive, *program);
  auto root = parser.parse();
  if (!root) return std::move(root).error();
  Compiler compiler(*program);
  if (!compiler.compile(*root)) {
    return Error(Errc::InvalidArgument, "pattern too large (more than " +
                                            std::to_string(kMaxInstructions) +
                                            " instructions after expanding repeats)");
  }
  return LineRegex(std::move(program));
}

LineRegex LineRegex::literal(std::string_view text, bool case_insensitive) {
  auto program = std::make_unique<Program>();
  for (std::size_t i = 0; i < text.size();) {
    char32_t cp = next_code_point(text, i);
    Inst inst{Op::Char};
    inst.fold = case_insensitive;
    inst.c = case_insensitive ? fold(cp) : cp;
    program->insts.push_back(inst);
  }
  program->insts.push_back(Inst(Op::Match));
  return LineRegex(std::move(program));
}

// ---- Matcher: set-of-states simulation ----

struct LineRegex::Matcher::State {
  const Program* program = nullptr;
  std::vector<int> current, next;
  std::vector<std::uint32_t> mark;  // generation in which an instruction was added
  std::uint32_t generation = 0;
  std::vector<int> stack;
  std::vector<char32_t> text;
  bool matched = false;

  // Adds `pc` and everything reachable from it without consuming input at position `i`.
  void add(std::vector<int>& list, int start, std::size_t i) {
    const auto& insts = program->insts;
    stack.push_back(start);
    while (!stack.empty()) {
      int pc = stack.back();
      stack.pop_back();
      auto upc = static_cast<std::size_t>(pc);
      if (mark[upc] == generation) continue;
      mark[upc] = generation;
      const Inst& in = insts[upc];
      switch (in.op) {
        case Op::Jmp: stack.push_back(in.x); break;
        case Op::Split:
          stack.push_back(in.y);
          stack.push_back(in.x);
          break;
        case Op::Match: matched = true; break;
        case Op::Begin:
          if (i == 0) stack.push_back(pc + 1);
          break;
        case Op::End:
          if (i == text.size()) stack.push_back(pc + 1);
          break;
        case Op::WordB:
        case Op::NotWordB: {
          bool before = i > 0 && is_word(text[i - 1], in.flag);
          bool after = i < text.size() && is_word(text[i], in.flag);
          if ((before != after) == (in.op == Op::WordB)) stack.push_back(pc + 1);
          break;
        }
        default: list.push_back(pc); break;
      }
    }
  }

  bool consumes(const Inst& in, char32_t c) const {
    switch (in.op) {
      case Op::Char: return in.fold ? fold(c) == in.c : c == in.c;
      case Op::Any: return in.flag || c != '\n';
      case Op::Class: return program->classes[static_cast<std::size_t>(in.x)].matches(c);
      default: return false;
    }
  }
};

LineRegex::Matcher::Matcher(const LineRegex& regex) : state_(std::make_unique<State>()) {
  state_->program = regex.program_.get();
  std::size_t n = state_->program->insts.size();
  state_->mark.assign(n, 0);
  state_->current.reserve(n);
  state_->next.reserve(n);
}

LineRegex::Matcher::~Matcher() = default;

LineRegex::Matcher::Outcome LineRegex::Matcher::search(
    std::string_view line, std::chrono::steady_clock::time_point deadline) {
  State& s = *state_;
  s.text.clear();
  for (std::size_t i = 0; i < line.size();) s.text.push_back(next_code_point(line, i));
  auto bump = [&] {
    if (++s.generation == 0) {  // wrapped: old marks could alias the new generation
      std::fill(s.mark.begin(), s.mark.end(), 0);
      s.generation = 1;
    }
  };
  s.matched = false;
  s.current.clear();
  bump();
  s.add(s.current, 0, 0);
  if (s.matched) return Outcome::Match;
  std::uint64_t work = 0;
  const auto& insts = s.program->insts;
  for (std::size_t i = 0; i < s.text.size(); ++i) {
    char32_t c = s.text[i];
    bump();
    s.next.clear();
    for (int pc : s.current) {
      if (s.consumes(insts[static_cast<std::size_t>(pc)], c)) s.add(s.next, pc + 1, i + 1);
    }
    s.add(s.next, 0, i + 1);  // a match may also start at the next position
    if (s.matched) return Outcome::Match;
    std::swap(s.current, s.next);
    work += s.current.size() + 1;
    if (work > (1u << 16)) {
      work = 0;
      if (std::chrono::steady_clock::now() > deadline) return Outcome::Timeout;
    }
  }
  return Outcome::NoMatch;
}

}  // namespace terminals::detail::files
