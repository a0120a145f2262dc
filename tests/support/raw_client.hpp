#pragma once

// Raw HTTP clients for server tests, so that tests check exact bytes on the wire:
// - RawClient: a Stream on the test's own loop (driven by run_until, no threads);
// - BlockingSocket: plain POSIX sockets for a client thread (bulk transfers with real
//   backpressure from the kernel).
// And parse_responses(), a deliberately small and strict HTTP/1.1 response reader.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "support/loop_runner.hpp"
#include "terminals/endpoint.hpp"
#include "terminals/http.hpp"
#include "terminals/stream.hpp"

namespace test {

class RawClient {
 public:
  /// Connects (running the loop until done). With `start_reading` false, nothing is read until
  /// read() is called: the server sees a client that does not read.
  RawClient(terminals::Loop& loop, const terminals::Endpoint& endpoint, bool start_reading = true)
      : loop_(loop) {
    bool done = false;
    terminals::Stream::connect(loop, endpoint, std::chrono::seconds(5),
                               [this, &done](terminals::Result<terminals::StreamPtr> r) {
                                 done = true;
                                 if (r) stream = std::move(r).value();
                                 else connect_error = r.error().to_string();
                               });
    run_until(loop, [&] { return done; });
    if (stream && start_reading) read();
  }

  void read() {
    stream->read_start([this](terminals::Result<std::string_view> r) {
      if (r) {
        received.append(*r);
      } else {
        // Like a real client: once the server is done, close our side too.
        closed = true;
        close_code = r.error().code;
        stream->close();
      }
    });
  }

  bool connected() const { return stream != nullptr; }
  void send(std::string_view data) { stream->write(data); }

  bool wait(const std::function<bool()>& pred,
            std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return run_until(loop_, pred, timeout);
  }
  bool wait_closed(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return wait([&] { return closed; }, timeout);
  }
  bool wait_contains(std::string_view s, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return wait([&] { return received.find(s) != std::string::npos; }, timeout);
  }

  terminals::StreamPtr stream;
  std::string connect_error;
  std::string received;
  bool closed = false;
  terminals::Errc close_code = terminals::Errc::Internal;

 private:
  terminals::Loop& loop_;
};

struct ParsedResponse {
  int status = 0;
  std::string reason;
  terminals::Headers headers;
  std::string body;
  bool chunked = false;
};

/// Parses the complete responses at the start of `data` (an incomplete one at the end is left
/// out). A response without Content-Length or chunking runs to the end: it counts only when
/// `eof` is set. `no_body` is for replies to HEAD. `consumed`, if given, gets the bytes used.
/// Malformed data yields what was parsed before it, and sets `*malformed`.
inline std::vector<ParsedResponse> parse_responses(std::string_view data, bool eof = false,
                                                   bool no_body = false,
                                                   std::size_t* consumed = nullptr,
                                                   bool* malformed = nullptr) {
  std::vector<ParsedResponse> out;
  std::size_t pos = 0;
  auto bad = [&] {
    if (malformed) *malformed = true;
    if (consumed) *consumed = pos;
    return out;
  };
  if (malformed) *malformed = false;
  while (pos < data.size()) {
    auto end = data.find("\r\n\r\n", pos);
    if (end == std::string_view::npos) break;
    std::string_view head = data.substr(pos, end - pos);
    std::size_t p = end + 4;
    ParsedResponse r;
    auto line_end = head.find("\r\n");
    std::string_view status_line = head.substr(0, line_end);
    if (status_line.substr(0, 9) != "HTTP/1.1 " || status_line.size() < 12) return bad();
    r.status = std::stoi(std::string(status_line.substr(9, 3)));
    if (status_line.size() > 13) r.reason = std::string(status_line.substr(13));
    std::string_view rest = line_end == std::string_view::npos ? std::string_view() : head.substr(line_end + 2);
    while (!rest.empty()) {
      auto le = rest.find("\r\n");
      std::string_view line = rest.substr(0, le);
      auto colon = line.find(": ");
      if (colon == std::string_view::npos) return bad();
      r.headers.add(std::string(line.substr(0, colon)), std::string(line.substr(colon + 2)));
      rest = le == std::string_view::npos ? std::string_view() : rest.substr(le + 2);
    }
    const bool bodyless = no_body || r.status < 200 || r.status == 204 || r.status == 304;
    if (bodyless) {
      // nothing
    } else if (auto cl = r.headers.get("content-length")) {
      std::size_t n = std::stoull(std::string(*cl));
      if (data.size() - p < n) break;
      r.body = std::string(data.substr(p, n));
      p += n;
    } else if (r.headers.has_token("transfer-encoding", "chunked")) {
      r.chunked = true;
      bool complete = false;
      for (;;) {
        auto le = data.find("\r\n", p);
        if (le == std::string_view::npos) break;
        std::size_t n = std::stoull(std::string(data.substr(p, le - p)), nullptr, 16);
        if (n == 0) {
          if (data.size() < le + 4) break;
          if (data.substr(le + 2, 2) != "\r\n") return bad();
          p = le + 4;
          complete = true;
          break;
        }
        if (data.size() < le + 2 + n + 2) break;
        r.body.append(data.substr(le + 2, n));
        if (data.substr(le + 2 + n, 2) != "\r\n") return bad();
        p = le + 2 + n + 2;
      }
      if (!complete) break;
    } else {
      if (!eof) break;
      r.body = std::string(data.substr(p));
      p = data.size();
    }
    out.push_back(std::move(r));
    pos = p;
  }
  if (consumed) *consumed = pos;
  return out;
}

/// A blocking POSIX socket for client threads. Timeouts keep a broken server from hanging a
/// test forever.
class BlockingSocket {
 public:
  explicit BlockingSocket(const terminals::Endpoint& endpoint) {
    if (endpoint.kind == terminals::Endpoint::Kind::Unix) {
      fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::strncpy(sa.sun_path, endpoint.path.c_str(), sizeof(sa.sun_path) - 1);
      if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) close();
    } else {
      fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(endpoint.port);
      ::inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
      if (::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) close();
    }
    if (fd_ >= 0) {
      timeval tv{30, 0};
      ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
  }
  ~BlockingSocket() { close(); }
  BlockingSocket(const BlockingSocket&) = delete;
  BlockingSocket& operator=(const BlockingSocket&) = delete;

  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  bool send_all(std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  /// Reads until the peer closes (or a timeout/error); returns everything read.
  std::string read_to_end() {
    std::string all;
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      all.append(buf, static_cast<std::size_t>(n));
    }
    return all;
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

}  // namespace test
