#pragma once

// Process checks the tests share: whether a pid is gone, and pids a command printed.

#include <signal.h>
#include <sys/types.h>

#include <cctype>
#include <cerrno>
#include <fstream>
#include <string>
#include <vector>

namespace test {

/// Gone = no such process, or a zombie nobody reaped yet (orphans are reaped by pid 1, which
/// in some containers never does it).
inline bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

/// Every number that follows `tag` in `text` (e.g. "pid=123 ... pid=456").
inline std::vector<pid_t> pids_after(const std::string& text, const std::string& tag) {
  std::vector<pid_t> out;
  std::size_t pos = 0;
  while ((pos = text.find(tag, pos)) != std::string::npos) {
    pos += tag.size();
    pid_t v = 0;
    bool any = false;
    while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
      v = v * 10 + (text[pos++] - '0');
      any = true;
    }
    if (any) out.push_back(v);
  }
  return out;
}

}  // namespace test
