// The file-backed PolicyStore (see terminals/policy_store.hpp): one small JSON file per item,
// written with write_durable_file, everything mirrored in memory.

#include "terminals/policy_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <tuple>
#include <utility>

#include "json/json.hpp"
#include "policy/store_time.hpp"
#include "util/crypto.hpp"
#include "util/files.hpp"

namespace terminals {
namespace {

using TimePoint = std::chrono::system_clock::time_point;

constexpr std::size_t kMaxIdBytes = 256;
// A policy with a pod template is a few KiB; anything near this is not ours.
constexpr std::size_t kMaxFileBytes = 16u << 20;

constexpr const char* kPolicies = "policies";
constexpr const char* kLifecycle = "lifecycle";
constexpr const char* kStates = "lifecycle-state";

Status check_id(std::string_view what, std::string_view id, bool may_be_empty = false) {
  if (id.empty() && !may_be_empty) return Error(Errc::InvalidArgument, std::string(what) + " must not be empty");
  if (id.size() > kMaxIdBytes) {
    return Error(Errc::InvalidArgument,
                 std::string(what) + " is longer than " + std::to_string(kMaxIdBytes) + " bytes");
  }
  return {};
}

// Parses `data` and returns it compact, so what get() answers right after a write is byte for byte
// what it answers after a restart (the file holds the parsed value, not the caller's spacing).
Result<std::string> normalise_object(std::string_view what, std::string_view data) {
  auto doc = detail::parse_json(data);
  if (!doc) return Error(Errc::InvalidArgument, std::string(what) + ": " + doc.error().message);
  if (!doc->IsObject()) return Error(Errc::InvalidArgument, std::string(what) + " must be a JSON object");
  return detail::to_json(*doc);
}

std::string quoted(std::string_view id) { return "'" + std::string(id) + "'"; }

// A failed write says what was not saved before the OS's reason ("No space left on device"), so
// an admin reading the API's 500 knows the store is unchanged.
Error not_saved(const std::string& what, Error e) {
  e.message = what + " was not saved: " + e.message;
  return e;
}

// Timestamps are kept at the precision the files store, so memory and disk never disagree.
TimePoint now_us() {
  return std::chrono::floor<std::chrono::microseconds>(std::chrono::system_clock::now());
}

// The key of a lifecycle state, serialised unambiguously (ids may contain any byte).
std::string state_key_text(std::string_view user, std::string_view policy, std::string_view context) {
  return detail::JsonWriter().array().value(user).value(policy).value(context).end_array().take();
}

using StateKey = std::tuple<std::string, std::string, std::string>;

Result<std::string> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return Error(Errc::Io, "cannot open " + path + ": " + std::strerror(errno), ErrorSource::System, errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<std::size_t>(st.st_size) > kMaxFileBytes) {
    ::close(fd);
    return Error(Errc::InvalidArgument, path + " is not a regular file of at most 16 MiB");
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return Error(Errc::Io, "cannot read " + path + ": " + std::strerror(err), ErrorSource::System, err);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > kMaxFileBytes) break;
  }
  ::close(fd);
  return out;
}

// An existing directory is used as it is; a missing one is created 0700.
Status ensure_dir(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return Error(Errc::Io, path + " exists and is not a directory");
    return {};
  }
  if (errno != ENOENT) return Error(Errc::Io, "cannot use " + path + ": " + std::strerror(errno), ErrorSource::System, errno);
  return detail::make_private_dir(path, 0700, std::nullopt, 0);
}

// The names of the *.json files in `dir`; *.tmp files (an interrupted write) are deleted on the way.
Result<std::vector<std::string>> scan(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return Error(Errc::Io, "cannot list " + dir + ": " + std::strerror(errno), ErrorSource::System, errno);
  std::vector<std::string> files;
  bool removed = false;
  while (dirent* e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name.size() > 4 && name.substr(name.size() - 4) == ".tmp") {
      std::string path = dir + "/" + std::string(name);
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        int err = errno;
        ::closedir(d);
        return Error(Errc::Io, "cannot delete " + path + ": " + std::strerror(err), ErrorSource::System, err);
      }
      removed = true;
    } else if (name.size() > 5 && name.substr(name.size() - 5) == ".json") {
      files.emplace_back(name);
    }
  }
  ::closedir(d);
  if (removed) {
    if (auto st = detail::sync_directory(dir); !st) return st.error();
  }
  std::sort(files.begin(), files.end());
  return files;
}

Error corrupt(const std::string& path, std::string_view why) {
  return Error(Errc::InvalidArgument, "corrupt policy store file " + path + ": " + std::string(why));
}

// Reads one file as a JSON object whose file name must be the hash of `key_of(doc)`.
Result<rapidjson::Document> load_object(const std::string& path) {
  auto text = read_file(path);
  if (!text) return text.error();
  auto doc = detail::parse_json(*text);
  if (!doc) return corrupt(path, doc.error().message);
  if (!doc->IsObject()) return corrupt(path, "not a JSON object");
  return std::move(doc).value();
}

Result<std::string> member_string(const rapidjson::Value& obj, const char* name, const std::string& path) {
  auto v = detail::json_string(obj, name);
  if (!v) return corrupt(path, std::string("\"") + name + "\" is missing or not a string");
  return std::string(*v);
}

Result<TimePoint> member_time(const rapidjson::Value& obj, const char* name, const std::string& path) {
  auto v = detail::json_string(obj, name);
  auto t = v ? detail::parse_store_time(*v) : std::nullopt;
  if (!t) return corrupt(path, std::string("\"") + name + "\" is missing or not an ISO-8601 UTC time");
  return *t;
}

Result<std::string> member_object(const rapidjson::Value& obj, const char* name, const std::string& path) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsObject()) {
    return corrupt(path, std::string("\"") + name + "\" is missing or not an object");
  }
  return detail::to_json(it->value);
}

class FilePolicyStore final : public PolicyStore {
 public:
  FilePolicyStore(std::string dir, int lock_fd) : dir_(std::move(dir)), lock_fd_(lock_fd) {}
  ~FilePolicyStore() override { ::close(lock_fd_); }

  Status load() {
    for (const char* sub : {kPolicies, kLifecycle, kStates}) {
      if (auto st = ensure_dir(dir_ + "/" + sub); !st) return st;
    }
    // The subdirectories' entries must be durable before the first file in them is.
    if (auto st = detail::sync_directory(dir_); !st) return st;
    if (auto st = load_policies(); !st) return st;
    if (auto st = load_lifecycles(); !st) return st;
    return load_states();
  }

  std::vector<StoredPolicy> list() const override {
    std::vector<StoredPolicy> out;
    {
      std::shared_lock lock(mu_);
      out.reserve(policies_.size());
      for (const auto& [id, p] : policies_) out.push_back(p);
    }
    std::sort(out.begin(), out.end(), [](const StoredPolicy& a, const StoredPolicy& b) {
      return std::tie(a.created_at, a.id) < std::tie(b.created_at, b.id);
    });
    return out;
  }

  Result<StoredPolicy> get(std::string_view id) const override {
    std::shared_lock lock(mu_);
    auto it = policies_.find(id);
    if (it == policies_.end()) return Error(Errc::NotFound, "Policy " + quoted(id) + " not found");
    return it->second;
  }

  Result<StoredPolicy> create(std::string_view id, std::string data) override {
    return write_policy(id, std::move(data), std::nullopt, true);
  }

  Result<StoredPolicy> put(std::string_view id, std::string data,
                           std::optional<std::uint64_t> expected_revision) override {
    return write_policy(id, std::move(data), expected_revision, false);
  }

  Status remove(std::string_view id) override {
    std::lock_guard write(write_mu_);
    if (policies_.find(id) == policies_.end()) return Error(Errc::NotFound, "Policy " + quoted(id) + " not found");
    if (auto st = detail::remove_durable_file(item_path(kPolicies, id)); !st) return st;
    std::unique_lock lock(mu_);
    policies_.erase(policies_.find(id));
    return {};
  }

  std::string lifecycle(std::string_view policy_id) const override {
    std::shared_lock lock(mu_);
    auto it = lifecycles_.find(policy_id);
    return it == lifecycles_.end() ? std::string("{}") : it->second;
  }

  Status put_lifecycle(std::string_view policy_id, std::string data) override {
    if (auto st = check_id("policy id", policy_id); !st) return st;
    auto norm = normalise_object("lifecycle configuration", data);
    if (!norm) return norm.error();
    std::lock_guard write(write_mu_);
    std::string path = item_path(kLifecycle, policy_id);
    if (*norm == "{}") {
      if (lifecycles_.find(policy_id) == lifecycles_.end()) return {};
      if (auto st = detail::remove_durable_file(path); !st) return st;
      std::unique_lock lock(mu_);
      lifecycles_.erase(lifecycles_.find(policy_id));
      return {};
    }
    std::string file =
        detail::JsonWriter().object().field("policy_id", policy_id).key("data").raw(*norm).end_object().take();
    if (auto st = detail::write_durable_file(path, file); !st) {
      return not_saved("The lifecycle of policy " + quoted(policy_id), st.error());
    }
    std::unique_lock lock(mu_);
    lifecycles_.insert_or_assign(std::string(policy_id), std::move(norm).value());
    return {};
  }

  std::optional<LifecycleState> state(std::string_view user_id, std::string_view policy_id,
                                      std::string_view context_id) const override {
    std::shared_lock lock(mu_);
    auto it = states_.find(StateKey(user_id, policy_id, context_id));
    if (it == states_.end()) return std::nullopt;
    return it->second;
  }

  Status put_state(const LifecycleState& state) override {
    if (auto st = check_id("user id", state.user_id); !st) return st;
    // "" is the caller's "default" policy or default context; stored as given.
    if (auto st = check_id("policy id", state.policy_id, true); !st) return st;
    if (auto st = check_id("context id", state.context_id, true); !st) return st;
    LifecycleState s = state;
    s.first_seen = std::chrono::floor<std::chrono::microseconds>(s.first_seen);
    if (s.last_applied) s.last_applied = std::chrono::floor<std::chrono::microseconds>(*s.last_applied);
    detail::JsonWriter w;
    w.object()
        .field("user_id", s.user_id)
        .field("policy_id", s.policy_id)
        .field("context_id", s.context_id)
        .field("first_seen", detail::format_store_time(s.first_seen));
    w.key("last_applied");
    if (s.last_applied) {
      w.value(detail::format_store_time(*s.last_applied));
    } else {
      w.null();
    }
    w.field("schedule", s.schedule).field("timezone", s.timezone).end_object();
    std::string key = state_key_text(s.user_id, s.policy_id, s.context_id);
    std::lock_guard write(write_mu_);
    if (auto st = detail::write_durable_file(item_path(kStates, key), w.take()); !st) return st;
    std::unique_lock lock(mu_);
    StateKey k(s.user_id, s.policy_id, s.context_id);
    states_.insert_or_assign(std::move(k), std::move(s));
    return {};
  }

  std::vector<LifecycleState> states() const override {
    std::shared_lock lock(mu_);
    std::vector<LifecycleState> out;
    out.reserve(states_.size());
    for (const auto& [key, s] : states_) out.push_back(s);
    return out;
  }

 private:
  std::string item_path(const char* sub, std::string_view id) const {
    return dir_ + "/" + sub + "/" + detail::sha256_hex(id) + ".json";
  }

  // create: AlreadyExists when present. put: replace, guarded by expected_revision when given.
  Result<StoredPolicy> write_policy(std::string_view id, std::string data,
                                    std::optional<std::uint64_t> expected_revision, bool create) {
    if (auto st = check_id("policy id", id); !st) return st.error();
    auto norm = normalise_object("policy", data);
    if (!norm) return norm.error();
    // One writer at a time: the check of the current revision and the file write must not
    // interleave with another write of the same policy. Readers only wait for the map update.
    std::lock_guard write(write_mu_);
    auto it = policies_.find(id);
    const StoredPolicy* old = it == policies_.end() ? nullptr : &it->second;
    if (create && old) return Error(Errc::AlreadyExists, "Policy " + quoted(id) + " already exists");
    if (expected_revision) {
      std::uint64_t current = old ? old->revision : 0;
      if (current != *expected_revision) {
        if (*expected_revision == 0) return Error(Errc::AlreadyExists, "Policy " + quoted(id) + " already exists");
        return Error(Errc::AlreadyExists,
                     "Policy " + quoted(id) + (old ? " is at revision " + std::to_string(current) : " does not exist") +
                         ", not revision " + std::to_string(*expected_revision) + " (changed since it was read)");
      }
    }
    StoredPolicy p;
    p.id = std::string(id);
    p.data = std::move(norm).value();
    p.updated_at = now_us();
    p.created_at = old ? old->created_at : p.updated_at;
    p.revision = old ? old->revision + 1 : 1;
    std::string file = detail::JsonWriter()
                           .object()
                           .field("id", p.id)
                           .field("revision", p.revision)
                           .field("created_at", detail::format_store_time(p.created_at))
                           .field("updated_at", detail::format_store_time(p.updated_at))
                           .key("data")
                           .raw(p.data)
                           .end_object()
                           .take();
    if (auto st = detail::write_durable_file(item_path(kPolicies, id), file); !st) {
      return not_saved("Policy " + quoted(id), st.error());
    }
    std::unique_lock lock(mu_);
    policies_.insert_or_assign(p.id, p);
    return p;
  }

  // A file must sit under the name its id hashes to; anything else was copied or edited by hand
  // and would shadow or duplicate another item.
  Status check_name(const std::string& path, const std::string& name, std::string_view key) const {
    if (name != detail::sha256_hex(key) + ".json") {
      return corrupt(path, "its id does not match its file name (expected " + detail::sha256_hex(key) + ".json)");
    }
    return {};
  }

  // Each item file of `sub`, parsed as a JSON object, to `load` (which checks and keeps it).
  template <class F>
  Status load_each(std::string_view sub, F load) {
    std::string dir = dir_ + "/" + std::string(sub);
    auto names = scan(dir);
    if (!names) return names.error();
    for (const auto& name : *names) {
      std::string path = dir + "/" + name;
      auto doc = load_object(path);
      if (!doc) return doc.error();
      if (Status st = load(path, name, *doc); !st) return st;
    }
    return {};
  }

  Status load_policies() {
    return load_each(kPolicies, [this](const std::string& path, const std::string& name, auto& doc_ref) -> Status {
      auto* doc = &doc_ref;
      StoredPolicy p;
      auto id = member_string(*doc, "id", path);
      if (!id) return id.error();
      p.id = std::move(id).value();
      auto rev = doc->FindMember("revision");
      if (rev == doc->MemberEnd() || !rev->value.IsUint64() || rev->value.GetUint64() == 0) {
        return corrupt(path, "\"revision\" is missing or not a positive integer");
      }
      p.revision = rev->value.GetUint64();
      auto created = member_time(*doc, "created_at", path);
      if (!created) return created.error();
      auto updated = member_time(*doc, "updated_at", path);
      if (!updated) return updated.error();
      auto data = member_object(*doc, "data", path);
      if (!data) return data.error();
      p.created_at = *created;
      p.updated_at = *updated;
      p.data = std::move(data).value();
      if (auto st = check_name(path, name, p.id); !st) return st;
      policies_.emplace(p.id, std::move(p));
      return {};
    });
  }

  Status load_lifecycles() {
    return load_each(kLifecycle, [this](const std::string& path, const std::string& name, auto& doc_ref) -> Status {
      auto* doc = &doc_ref;
      auto id = member_string(*doc, "policy_id", path);
      if (!id) return id.error();
      auto data = member_object(*doc, "data", path);
      if (!data) return data.error();
      if (auto st = check_name(path, name, *id); !st) return st;
      lifecycles_.emplace(std::move(id).value(), std::move(data).value());
      return {};
    });
  }

  Status load_states() {
    return load_each(kStates, [this](const std::string& path, const std::string& name, auto& doc_ref) -> Status {
      auto* doc = &doc_ref;
      LifecycleState s;
      for (auto [field, out] : {std::pair{"user_id", &s.user_id}, std::pair{"policy_id", &s.policy_id},
                                std::pair{"context_id", &s.context_id}, std::pair{"schedule", &s.schedule},
                                std::pair{"timezone", &s.timezone}}) {
        auto v = member_string(*doc, field, path);
        if (!v) return v.error();
        *out = std::move(v).value();
      }
      auto first = member_time(*doc, "first_seen", path);
      if (!first) return first.error();
      s.first_seen = *first;
      auto last = doc->FindMember("last_applied");
      if (last != doc->MemberEnd() && !last->value.IsNull()) {
        auto t = member_time(*doc, "last_applied", path);
        if (!t) return t.error();
        s.last_applied = *t;
      }
      if (auto st = check_name(path, name, state_key_text(s.user_id, s.policy_id, s.context_id)); !st) return st;
      StateKey k(s.user_id, s.policy_id, s.context_id);
      states_.emplace(std::move(k), std::move(s));
      return {};
    });
  }

  const std::string dir_;
  const int lock_fd_;
  std::mutex write_mu_;          // held by a writer for its whole check + file write + update
  mutable std::shared_mutex mu_;  // guards the maps; writers take it only to update them
  std::map<std::string, StoredPolicy, std::less<>> policies_;
  std::map<std::string, std::string, std::less<>> lifecycles_;
  std::map<StateKey, LifecycleState> states_;
};

}  // namespace

Result<PolicyStorePtr> open_file_policy_store(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) return Error(Errc::InvalidArgument, "the policy store directory must not be empty");
  if (auto st = ensure_dir(dir); !st) return st.error();
  // Two stores on one directory would each delete the other's temporary files and answer from
  // stale memory; the lock makes a second open fail instead. The kernel drops it when the holder
  // dies, so a crashed server never blocks its successor.
  std::string lock_path = dir + "/.lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Error(Errc::Io, "cannot open " + lock_path + ": " + std::strerror(errno), ErrorSource::System, errno);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    return Error(Errc::Io, "the policy store " + dir + " is in use by another process or store (" + lock_path + " is locked)",
                 ErrorSource::System, err);
  }
  auto store = std::make_unique<FilePolicyStore>(dir, fd);
  if (auto st = store->load(); !st) return st.error();
  return PolicyStorePtr(std::move(store));
}

}  // namespace terminals
