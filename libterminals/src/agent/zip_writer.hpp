#pragma once

// ZipWriter: writes a ZIP archive (PKWARE APPNOTE 6.3) to a seekable file descriptor, one entry
// at a time, streaming file contents so memory does not grow with their size. Method STORE only
// (no zlib dependency); CRC-32 is computed while copying and patched into the local header
// afterwards, so no data descriptors are needed. No ZIP64: the archive, every offset and every
// entry must stay below 4 GiB and there can be at most 65535 entries.

#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "terminals/result.hpp"

namespace terminals::detail::files {

/// CRC-32 (IEEE 802.3, as in ZIP and gzip). Start with 0 and feed the running value back.
std::uint32_t crc32_update(std::uint32_t crc, const void* data, std::size_t size);

class ZipWriter {
 public:
  /// `fd` is open for writing at offset 0 and stays owned by the caller; `path` names it in
  /// error messages. Archives above `max_bytes` (at most 0xFFFFFFFF) are refused with 413.
  ZipWriter(int fd, std::string path, std::uint64_t max_bytes);

  /// A directory entry; `name` ends with '/'.
  Status add_directory(std::string_view name, const struct stat& st);
  /// A file entry with the bytes of `source` (a regular file, symlinks followed). A file that
  /// vanished meanwhile is an error with 404; unreadable ones 403.
  Status add_file(std::string_view name, const std::string& source);
  /// Writes the central directory and the end record.
  Status finish();

  std::uint64_t bytes() const { return offset_; }
  std::size_t entries() const { return entries_.size(); }

 private:
  struct Entry {
    std::string name;
    std::uint32_t crc = 0;
    std::uint32_t size = 0;
    std::uint16_t flags = 0;
    std::uint16_t dos_time = 0;
    std::uint16_t dos_date = 0;
    std::uint32_t external_attributes = 0;
    std::uint32_t offset = 0;
  };

  Status check_room(std::uint64_t more) const;
  Status begin_entry(Entry& entry, std::string_view name, const struct stat& st, bool directory);
  Status write(const void* data, std::size_t size);
  Error too_large() const;
  Error io_error(int err) const;

  int fd_;
  std::string path_;
  std::uint64_t max_bytes_;
  std::uint64_t offset_ = 0;
  std::vector<Entry> entries_;
};

}  // namespace terminals::detail::files
