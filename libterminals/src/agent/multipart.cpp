// MultipartUpload: a streaming multipart/form-data parser (RFC 7578 / RFC 2046) that writes
// the `file` field to disk as it arrives. Memory stays bounded by one fed chunk plus the
// delimiter, the part headers (capped) and a small write buffer.

#include <algorithm>
#include <cctype>
#include <optional>
#include <utility>

#include "agent/files.hpp"
#include "agent/files_internal.hpp"

namespace terminals::detail {

using namespace files;

namespace {

constexpr std::size_t kMaxPartHeaderBytes = 16 * 1024;
constexpr std::size_t kWriteBufferBytes = 64 * 1024;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Parses `; name=value; name="quoted \" value"` parameters (after the first `;`-separated
// token) into lower-cased names and unquoted values.
std::vector<std::pair<std::string, std::string>> parse_params(std::string_view s) {
  std::vector<std::pair<std::string, std::string>> out;
  std::size_t i = s.find(';');
  while (i != std::string_view::npos && i < s.size()) {
    ++i;  // past ';'
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    std::size_t eq = s.find_first_of("=;", i);
    if (eq == std::string_view::npos || s[eq] == ';') {
      i = eq;  // a bare token: skip it
      continue;
    }
    std::string name = lower(trim(s.substr(i, eq - i)));
    i = eq + 1;
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    std::string value;
    if (i < s.size() && s[i] == '"') {
      ++i;
      while (i < s.size() && s[i] != '"') {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value += s[i++];
      }
      if (i < s.size()) ++i;  // closing quote
      i = s.find(';', i);
    } else {
      std::size_t end = s.find(';', i);
      value = std::string(trim(s.substr(i, end == std::string_view::npos ? s.npos : end - i)));
      i = end;
    }
    out.emplace_back(std::move(name), std::move(value));
  }
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// RFC 5987 ext-value ("UTF-8''na%C3%AFve.txt"): the decoded name, or nullopt.
std::optional<std::string> decode_ext_value(std::string_view v) {
  std::size_t q1 = v.find('\'');
  std::size_t q2 = q1 == std::string_view::npos ? q1 : v.find('\'', q1 + 1);
  if (q2 == std::string_view::npos) return std::nullopt;
  std::string charset = lower(v.substr(0, q1));
  if (charset != "utf-8" && charset != "us-ascii") return std::nullopt;
  std::string out;
  for (std::size_t i = q2 + 1; i < v.size(); ++i) {
    int hi = i + 2 < v.size() ? hex_value(v[i + 1]) : -1;
    int lo = i + 2 < v.size() ? hex_value(v[i + 2]) : -1;
    if (v[i] == '%' && hi >= 0 && lo >= 0) {
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += v[i];
    }
  }
  return out;
}

}  // namespace

struct MultipartUpload::Impl {
  enum class State { Preamble, AfterDelimiter, Headers, Body, Epilogue, Failed, Finished };

  std::string directory;
  std::uint64_t max_bytes = 0;
  std::string delimiter;  // "\r\n--" + boundary
  State state = State::Preamble;
  std::string buf;  // bytes received but not yet consumed
  bool file_started = false;
  bool file_complete = false;
  bool in_file_part = false;
  std::optional<AtomicWriter> writer;
  std::string path;
  std::uint64_t size = 0;
  std::string pending;  // coalesces small body pieces into fewer write() calls
  Error error;

  // Every error is sticky: later calls return it again.
  Error fail(Error e) {
    error = std::move(e);
    state = State::Failed;
    writer.reset();  // removes the temporary file
    pending.clear();
    buf.clear();
    return error;
  }

  Status flush() {
    if (pending.empty() || !writer) return {};
    auto st = writer->write(pending);
    pending.clear();
    if (!st) return fail(std::move(st).error());
    return {};
  }

  Status emit(std::string_view data) {
    if (!in_file_part || data.empty()) return {};
    size += data.size();
    if (max_bytes && size > max_bytes) {
      return fail(file_error(413, "Upload too large: more than " + std::to_string(max_bytes) +
                                      " bytes"));
    }
    if (pending.empty() && data.size() >= kWriteBufferBytes) {
      auto st = writer->write(data);
      if (!st) return fail(std::move(st).error());
      return {};
    }
    pending.append(data);
    if (pending.size() >= kWriteBufferBytes) return flush();
    return {};
  }

  Status begin_part(std::string_view headers) {
    in_file_part = false;
    std::optional<std::string> field, filename, filename_ext;
    std::size_t pos = 0;
    while (pos <= headers.size()) {
      std::size_t end = headers.find("\r\n", pos);
      if (end == std::string_view::npos) end = headers.size();
      std::string_view line = headers.substr(pos, end - pos);
      pos = end + 2;
      std::size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      if (lower(trim(line.substr(0, colon))) != "content-disposition") continue;
      for (auto& [name, value] : parse_params(line.substr(colon + 1))) {
        if (name == "name") field = value;
        if (name == "filename") filename = value;
        if (name == "filename*") filename_ext = decode_ext_value(value);
      }
    }
    if (field != "file" || file_started) return {};  // other fields and a second file: skipped
    file_started = true;

    std::string name = filename_ext ? *filename_ext : filename.value_or("");
    // Only the last path component counts, so "../../etc/passwd" becomes "passwd".
    std::string base(base_name(name));
    if (base.empty() || base == "." || base == ".." || base.find('\0') != std::string::npos) {
      return fail(file_error(400, "Invalid file name"));
    }
    std::string failed_at;
    if (int err = make_directories(directory, &failed_at)) {
      return fail(os_error(400, err, failed_at, {}, 403));
    }
    path = join_path(directory, base);
    auto w = AtomicWriter::open(path, 400, 403);
    if (!w) return fail(std::move(w).error());
    writer.emplace(std::move(*w));
    in_file_part = true;
    return {};
  }

  Status end_part() {
    if (!in_file_part) return {};
    in_file_part = false;
    file_complete = true;
    return flush();
  }

  // Runs the state machine over `buf` until it needs more input.
  Status process() {
    for (;;) {
      switch (state) {
        case State::Preamble:
        case State::Body: {
          std::size_t at = buf.find(delimiter);
          if (at == std::string::npos) {
            // Keep a tail that could be the start of a delimiter split across chunks.
            std::size_t keep = std::min(buf.size(), delimiter.size() - 1);
            std::size_t safe = buf.size() - keep;
            if (state == State::Body) {
              if (auto st = emit(std::string_view(buf).substr(0, safe)); !st) return st;
            }
            buf.erase(0, safe);
            return {};
          }
          if (state == State::Body) {
            if (auto st = emit(std::string_view(buf).substr(0, at)); !st) return st;
            if (auto st = end_part(); !st) return st;
          }
          buf.erase(0, at + delimiter.size());
          state = State::AfterDelimiter;
          break;
        }
        case State::AfterDelimiter: {
          if (buf.size() < 2) return {};
          if (buf.compare(0, 2, "--") == 0) {
            state = State::Epilogue;  // the close delimiter; what follows is ignored
            buf.clear();
            return {};
          }
          // After the boundary: optional transport padding (spaces, tabs), then CRLF. A lone
          // '\r' at the end may be the first half of a CRLF split across chunks.
          std::size_t crlf = buf.find("\r\n");
          std::size_t other = buf.find_first_not_of(" \t");
          bool partial_cr =
              crlf == std::string::npos && other == buf.size() - 1 && buf.back() == '\r';
          if (other != std::string::npos && other != crlf && !partial_cr) {
            return fail(file_error(400, "Malformed multipart body: bad boundary line"));
          }
          if (crlf == std::string::npos) {
            if (buf.size() > 1024) {
              return fail(file_error(400, "Malformed multipart body: bad boundary line"));
            }
            return {};
          }
          buf.erase(0, crlf + 2);
          state = State::Headers;
          break;
        }
        case State::Headers: {
          std::size_t end = buf.compare(0, 2, "\r\n") == 0 ? 0 : buf.find("\r\n\r\n");
          if (end == std::string::npos) {
            if (buf.size() > kMaxPartHeaderBytes) {
              return fail(file_error(400, "Malformed multipart body: part headers too large"));
            }
            return {};
          }
          std::string headers = buf.substr(0, end);
          buf.erase(0, end == 0 ? 2 : end + 4);
          state = State::Body;
          if (auto st = begin_part(headers); !st) return st;
          break;
        }
        case State::Epilogue:
          buf.clear();
          return {};
        case State::Failed: return error;
        case State::Finished: return file_error(500, "upload already finished");
      }
    }
  }
};

MultipartUpload::MultipartUpload(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MultipartUpload::MultipartUpload(MultipartUpload&&) noexcept = default;
MultipartUpload& MultipartUpload::operator=(MultipartUpload&&) noexcept = default;
MultipartUpload::~MultipartUpload() = default;

Result<MultipartUpload> MultipartUpload::start(const FileContext& ctx, std::string_view directory,
                                               std::string_view content_type) {
  auto bad_type = [] {
    return file_error(400, "Content-Type must be multipart/form-data with a boundary");
  };
  std::size_t semi = content_type.find(';');
  if (lower(trim(content_type.substr(0, semi))) != "multipart/form-data") return bad_type();
  std::string boundary;
  for (auto& [name, value] : parse_params(content_type)) {
    if (name == "boundary") boundary = value;
  }
  if (boundary.empty() || boundary.size() > 70) return bad_type();

  auto dir = resolve_path(ctx, directory, PathBase::Home);
  if (!dir) return std::move(dir).error();
  auto impl = std::make_unique<Impl>();
  impl->directory = std::move(*dir);
  impl->max_bytes = ctx.options.upload_max_bytes;
  impl->delimiter = "\r\n--" + boundary;
  impl->buf = "\r\n";  // so a delimiter at the very start of the body is found like any other
  return MultipartUpload(std::move(impl));
}

Status MultipartUpload::feed(std::string_view chunk) {
  Impl& s = *impl_;
  if (s.state == Impl::State::Failed) return s.error;
  if (s.state == Impl::State::Finished) return file_error(500, "upload already finished");
  if (s.state == Impl::State::Epilogue) return {};
  s.buf.append(chunk);
  return s.process();
}

Result<UploadResult> MultipartUpload::finish() {
  Impl& s = *impl_;
  if (s.state == Impl::State::Failed) return s.error;
  if (s.state == Impl::State::Finished) return file_error(500, "upload already finished");
  if (s.state != Impl::State::Epilogue) {
    return s.fail(file_error(400, "Malformed multipart body: missing closing boundary"));
  }
  if (!s.file_complete) return s.fail(file_error(422, "Missing form field 'file'"));
  if (auto st = s.writer->commit(); !st) return s.fail(std::move(st).error());
  s.writer.reset();
  s.state = Impl::State::Finished;
  return UploadResult{s.path, s.size};
}

}  // namespace terminals::detail
