// TERMINALS_DOCKER_MOUNTS: extra bind mounts for every Docker terminal, with the reference's
// validation (terminals/utils/docker_mounts.py): a mount may not shadow the system or the home.

#include <cstdlib>
#include <string>
#include <vector>

#include "json/json.hpp"
#include "terminals/docker_backend.hpp"

namespace terminals {

namespace {

// POSIX normpath for absolute paths: "//a/./b/../c/" -> "/a/c".
std::string normalise(std::string_view path) {
  std::vector<std::string> parts;
  std::size_t i = 0;
  while (i <= path.size()) {
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.emplace_back(part);
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

bool equal_or_under(std::string_view path, std::string_view base) {
  if (base == "/") return true;
  return path == base || (path.size() > base.size() && path.starts_with(base) && path[base.size()] == '/');
}

constexpr std::string_view kBlocked[] = {"/app", "/bin", "/dev",  "/etc", "/home", "/proc", "/root",
                                         "/run", "/sbin", "/sys", "/usr", "/var"};

}  // namespace

Result<std::vector<DockerMount>> parse_docker_mounts(std::string_view json) {
  std::vector<DockerMount> mounts;
  if (json.find_first_not_of(" \t\r\n") == std::string_view::npos) return mounts;
  auto fail = [](std::string why) {
    return Error(Errc::InvalidArgument, "TERMINALS_DOCKER_MOUNTS: " + std::move(why));
  };
  auto doc = detail::parse_json(json);
  if (!doc) return fail("not valid JSON (" + doc.error().message + ")");
  if (!doc->IsArray()) return fail("must be a JSON array of {\"source\", \"target\", \"readOnly\"} objects");
  for (rapidjson::SizeType n = 0; n < doc->Size(); ++n) {
    const auto& item = (*doc)[n];
    std::string where = "item " + std::to_string(n);
    if (!item.IsObject()) return fail(where + " is not an object");
    DockerMount m;
    for (const char* field : {"source", "target"}) {
      auto it = item.FindMember(field);
      if (it == item.MemberEnd() || !it->value.IsString() || it->value.GetStringLength() == 0) {
        return fail(where + ": \"" + field + "\" must be a non-empty string");
      }
      (field[0] == 's' ? m.source : m.target) = std::string(it->value.GetString(), it->value.GetStringLength());
    }
    if (auto ro = item.FindMember("readOnly"); ro != item.MemberEnd()) {
      if (!ro->value.IsBool()) return fail(where + ": \"readOnly\" must be true or false");
      m.read_only = ro->value.GetBool();
    }
    if (m.source == "~" || m.source.starts_with("~/")) {
      const char* home = std::getenv("HOME");
      if (!home || !*home) return fail(where + ": cannot expand '~' in source: HOME is not set");
      m.source = std::string(home) + m.source.substr(1);
    }
    if (m.source.front() != '/') return fail(where + ": source '" + m.source + "' must be an absolute path");
    if (m.target.front() != '/') return fail(where + ": target '" + m.target + "' must be an absolute path");
    m.source = normalise(m.source);
    m.target = normalise(m.target);
    if (m.target == "/") return fail(where + ": target '/' would replace the whole file system");
    for (std::string_view b : kBlocked) {
      if (equal_or_under(m.target, b)) {
        return fail(where + ": target '" + m.target + "' is " + (m.target == b ? "" : "under ") + std::string(b) +
                    ", which terminals need intact (use a path such as /mnt/data)");
      }
    }
    for (std::size_t k = 0; k < mounts.size(); ++k) {
      if (equal_or_under(m.target, mounts[k].target) || equal_or_under(mounts[k].target, m.target)) {
        return fail(where + ": target '" + m.target + "' overlaps item " + std::to_string(k) + "'s target '" +
                    mounts[k].target + "'");
      }
    }
    mounts.push_back(std::move(m));
  }
  return mounts;
}

}  // namespace terminals
