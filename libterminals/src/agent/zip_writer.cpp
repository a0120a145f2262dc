// ZipWriter and CRC-32 (see zip_writer.hpp).

#include "agent/zip_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <ctime>
#include <utility>

#include "agent/files.hpp"
#include "agent/files_internal.hpp"

namespace terminals::detail::files {

namespace {

constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr auto kCrcTable = make_crc_table();

constexpr std::uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr std::uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr std::uint32_t kEndSignature = 0x06054b50;
constexpr std::size_t kLocalHeaderSize = 30;
constexpr std::size_t kCentralHeaderSize = 46;
constexpr std::size_t kEndRecordSize = 22;
constexpr std::uint16_t kVersion = 20;                        // 2.0: directories, STORE
constexpr std::uint16_t kVersionMadeBy = (3 << 8) | kVersion;  // 3 = Unix: external attrs are modes
constexpr std::uint16_t kFlagUtf8 = 1 << 11;
constexpr std::uint32_t kMaxZip32 = 0xFFFFFFFFu;

void put16(std::string& out, std::uint16_t v) {
  out += static_cast<char>(v & 0xFF);
  out += static_cast<char>(v >> 8);
}

void put32(std::string& out, std::uint32_t v) {
  for (int k = 0; k < 4; ++k) out += static_cast<char>((v >> (8 * k)) & 0xFF);
}

// MS-DOS date and time in local time, like Python's zipfile; before 1980 is clamped.
std::pair<std::uint16_t, std::uint16_t> dos_date_time(std::time_t t) {
  std::tm tm{};
  if (!::localtime_r(&t, &tm) || tm.tm_year < 80) return {0, (1 << 5) | 1};  // 1980-01-01
  if (tm.tm_year > 207) tm.tm_year = 207;  // the 7-bit year field ends in 2107
  auto time = static_cast<std::uint16_t>((tm.tm_hour << 11) | (tm.tm_min << 5) | (tm.tm_sec / 2));
  auto date = static_cast<std::uint16_t>(((tm.tm_year - 80) << 9) | ((tm.tm_mon + 1) << 5) |
                                         tm.tm_mday);
  return {time, date};
}

bool needs_utf8_flag(std::string_view name) {
  for (char c : name) {
    if (static_cast<unsigned char>(c) >= 0x80) return is_valid_utf8(name);
  }
  return false;
}

}  // namespace

std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < size; ++i) crc = kCrcTable[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

ZipWriter::ZipWriter(int fd, std::string path, std::uint64_t max_bytes)
    : fd_(fd), path_(std::move(path)), max_bytes_(std::min<std::uint64_t>(max_bytes, kMaxZip32)) {}

Error ZipWriter::too_large() const {
  return file_error(413, "Archive too large: more than " + std::to_string(max_bytes_) +
                             " bytes (ZIP64 is not supported)");
}

Error ZipWriter::io_error(int err) const { return os_error(500, err, path_); }

Status ZipWriter::check_room(std::uint64_t more) const {
  // Room for `more` bytes plus the end record, which every archive needs.
  if (offset_ + more + kEndRecordSize > max_bytes_) return too_large();
  return {};
}

Status ZipWriter::write(const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error(errno);
    }
    p += n;
    size -= static_cast<std::size_t>(n);
    offset_ += static_cast<std::uint64_t>(n);
  }
  return {};
}

Status ZipWriter::begin_entry(Entry& entry, std::string_view name, const struct stat& st,
                              bool directory) {
  if (entries_.size() >= 0xFFFF) {
    return file_error(413, "Archive too large: more than 65535 entries (ZIP64 is not supported)");
  }
  if (name.size() > 0xFFFF) return file_error(400, "Archive entry name too long");
  // Room for this header and name, plus its central directory record later.
  if (auto st2 = check_room(kLocalHeaderSize + kCentralHeaderSize + 2 * name.size()); !st2) {
    return st2;
  }
  entry.name = std::string(name);
  entry.flags = needs_utf8_flag(name) ? kFlagUtf8 : 0;
  auto [time, date] = dos_date_time(st.st_mtim.tv_sec);
  entry.dos_time = time;
  entry.dos_date = date;
  entry.external_attributes = (static_cast<std::uint32_t>(st.st_mode & 0xFFFF) << 16) |
                              (directory ? 0x10u : 0u);  // 0x10: the MS-DOS directory bit
  entry.offset = static_cast<std::uint32_t>(offset_);

  std::string header;
  put32(header, kLocalHeaderSignature);
  put16(header, kVersion);
  put16(header, entry.flags);
  put16(header, 0);  // STORE
  put16(header, entry.dos_time);
  put16(header, entry.dos_date);
  put32(header, 0);  // CRC-32, patched after the data
  put32(header, 0);  // compressed size, patched
  put32(header, 0);  // uncompressed size, patched
  put16(header, static_cast<std::uint16_t>(name.size()));
  put16(header, 0);  // extra field length
  header += name;
  return write(header.data(), header.size());
}

Status ZipWriter::add_directory(std::string_view name, const struct stat& st) {
  Entry entry;
  if (auto s = begin_entry(entry, name, st, true); !s) return s;
  entries_.push_back(std::move(entry));
  return {};
}

Status ZipWriter::add_file(std::string_view name, const std::string& source) {
  int in = ::open(source.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (in < 0) {
    int err = errno;
    if (err == ENOENT) return file_error(404, "Path not found: " + source);
    return os_error(400, err, source, {}, 403);
  }
  struct CloseGuard {
    int fd;
    ~CloseGuard() { ::close(fd); }
  } guard{in};
  struct stat st {};
  if (::fstat(in, &st) != 0) return os_error(400, errno, source, {}, 403);
  if (!S_ISREG(st.st_mode)) return file_error(400, "Not a regular file: " + source);
  // Fail before copying when the size already says it cannot fit.
  if (auto s = check_room(kLocalHeaderSize + kCentralHeaderSize + 2 * name.size() +
                          static_cast<std::uint64_t>(st.st_size));
      !s) {
    return s;
  }
  Entry entry;
  if (auto s = begin_entry(entry, name, st, false); !s) return s;

  std::vector<char> buf(256 * 1024);
  std::uint32_t crc = 0;
  std::uint64_t size = 0;
  for (;;) {
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error(400, errno, source, {}, 403);
    }
    if (n == 0) break;
    auto un = static_cast<std::size_t>(n);
    size += un;
    // The file may grow while it is copied: keep checking against the real byte count.
    if (auto s = check_room(kCentralHeaderSize + name.size() + un); !s) return s;
    crc = crc32_update(crc, buf.data(), un);
    if (auto s = write(buf.data(), un); !s) return s;
  }
  entry.crc = crc;
  entry.size = static_cast<std::uint32_t>(size);

  std::string patch;
  put32(patch, entry.crc);
  put32(patch, entry.size);
  put32(patch, entry.size);
  off_t at = static_cast<off_t>(entry.offset) + 14;
  if (::pwrite(fd_, patch.data(), patch.size(), at) != static_cast<ssize_t>(patch.size())) {
    return io_error(errno ? errno : EIO);
  }
  entries_.push_back(std::move(entry));
  return {};
}

Status ZipWriter::finish() {
  const std::uint64_t cd_offset = offset_;
  std::string cd;
  for (const Entry& e : entries_) {
    put32(cd, kCentralHeaderSignature);
    put16(cd, kVersionMadeBy);
    put16(cd, kVersion);
    put16(cd, e.flags);
    put16(cd, 0);  // STORE
    put16(cd, e.dos_time);
    put16(cd, e.dos_date);
    put32(cd, e.crc);
    put32(cd, e.size);
    put32(cd, e.size);
    put16(cd, static_cast<std::uint16_t>(e.name.size()));
    put16(cd, 0);  // extra
    put16(cd, 0);  // comment
    put16(cd, 0);  // disk number
    put16(cd, 0);  // internal attributes
    put32(cd, e.external_attributes);
    put32(cd, e.offset);
    cd += e.name;
    if (cd.size() >= 1 << 20) {  // flush in pieces: many entries make a big directory
      if (auto s = check_room(cd.size()); !s) return s;
      if (auto s = write(cd.data(), cd.size()); !s) return s;
      cd.clear();
    }
  }
  if (auto s = check_room(cd.size()); !s) return s;
  if (auto s = write(cd.data(), cd.size()); !s) return s;
  const std::uint64_t cd_size = offset_ - cd_offset;

  std::string end;
  put32(end, kEndSignature);
  put16(end, 0);  // this disk
  put16(end, 0);  // disk with the central directory
  put16(end, static_cast<std::uint16_t>(entries_.size()));
  put16(end, static_cast<std::uint16_t>(entries_.size()));
  put32(end, static_cast<std::uint32_t>(cd_size));
  put32(end, static_cast<std::uint32_t>(cd_offset));
  put16(end, 0);  // comment length
  return write(end.data(), end.size());
}

}  // namespace terminals::detail::files
