#pragma once

// DockerClient: the Docker Engine API over libcurl (CurlMulti), on the loop thread. It
// negotiates the API version on first use (GET /version), queues calls meanwhile, and turns
// engine errors into Errors that carry the engine's own message. A failed negotiation is not
// remembered: the next call tries again, so a restarted engine is picked up by itself.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "curl/multi.hpp"
#include "terminals/function.hpp"
#include "terminals/result.hpp"

namespace terminals::detail {

struct DockerAddress {
  std::string unix_path;  ///< set for unix sockets
  std::string base_url;   ///< "http://docker" (unix) or "http://HOST:PORT"
  std::string display;    ///< "unix:/var/run/docker.sock", "tcp://127.0.0.1:2375"
};

/// "unix:///path", "unix:/path", "tcp://HOST:PORT" (or "http://"); "" means $DOCKER_HOST, else
/// unix:///var/run/docker.sock. TLS (DOCKER_TLS_VERIFY, "https://") is refused with a clear
/// message for now.
Result<DockerAddress> parse_docker_host(std::string_view host);

struct DockerReply {
  long status = 0;
  std::string body;
};

class DockerClient {
 public:
  /// The oldest Engine API we speak (Docker 20.10) and the newest we ask for.
  static constexpr std::string_view kMinApi = "1.41";
  static constexpr std::string_view kMaxApi = "1.45";

  DockerClient(CurlMulti& multi, DockerAddress address);
  ~DockerClient();
  DockerClient(const DockerClient&) = delete;
  DockerClient& operator=(const DockerClient&) = delete;

  /// `method` `path` (unversioned: "/containers/json?all=1") with a JSON `body` (may be empty).
  /// `done` runs once, never inside this call: a 1xx-3xx reply, or an Error whose code follows
  /// the status (404 NotFound, 409 AlreadyExists, 5xx BackendUnavailable, ...; native = the
  /// status) and whose message is the engine's; BackendUnavailable when the engine does not
  /// answer at all.
  void call(std::string method, std::string path, std::string body, Callback<DockerReply> done,
            std::chrono::milliseconds timeout = std::chrono::seconds(30));
  /// A streamed reply of JSON lines (image pulls): `on_line` per complete line.
  void stream(std::string method, std::string path, MoveOnlyFunction<void(std::string_view)> on_line,
              Callback<DockerReply> done, std::chrono::milliseconds timeout);

  /// "Docker 20.10.24, API 1.41 via unix:/var/run/docker.sock", or just the address.
  std::string description() const;
  const DockerAddress& address() const noexcept { return address_; }

 private:
  void with_version(MoveOnlyFunction<void(Status)> then);
  void negotiated(Status status);
  CurlRequest request(std::string method, const std::string& path, std::string body,
                      std::chrono::milliseconds timeout) const;
  Result<DockerReply> reply_of(Result<CurlResponse> response, const std::string& what);

  CurlMulti& multi_;
  DockerAddress address_;
  std::string api_;             // negotiated version, "" until then
  std::string engine_version_;  // "20.10.24"
  bool negotiating_ = false;
  std::vector<MoveOnlyFunction<void(Status)>> waiting_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

/// Compares dotted API versions numerically ("1.9" < "1.41"): <0, 0, >0.
int compare_api_versions(std::string_view a, std::string_view b);

/// Docker's multiplexed log stream (8-byte frame headers) to plain text; text that is not
/// multiplexed (a TTY container) is returned as is.
std::string demux_docker_logs(std::string_view raw);

}  // namespace terminals::detail
