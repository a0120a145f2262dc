#pragma once

/// @file agent.hpp
/// `Agent`: the HTTP server behind `terminals-cli agent`, compatible with Open Terminal's API.
/// It runs inside the user's sandbox, as that user, and serves Open Terminal's routes on one
/// `Server`: service (/health, /api/config, /system, /info, /openapi.json), files (/files/*),
/// commands (/execute), ports and their proxy, and interactive terminals with their WebSocket.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "terminals/endpoint.hpp"
#include "terminals/export.hpp"
#include "terminals/function.hpp"
#include "terminals/result.hpp"

namespace terminals {

class Loop;

/// How the agent listens and whom it lets in.
struct AgentOptions {
  /// Where to listen (TCP port 0 picks a free port; see `Agent::local_endpoint`).
  Endpoint listen;
  /// The bearer key every route except /health and /api/config requires. Compared in
  /// constant time. Must be non-empty unless `no_auth` is set.
  std::string api_key;
  /// Serve every route without a key. Only for a socket nobody else can reach.
  bool no_auth = false;
  /// The directory relative paths resolve against (Open Terminal's start directory). Empty
  /// means the process's current directory.
  std::string home;
  /// The largest JSON request body accepted; a larger one gets 413.
  std::uint64_t max_json_body_bytes = 64ull << 20;
  /// The largest file POST /files/upload accepts (it streams to disk, so this bounds disk
  /// use, not memory); a larger one gets 413. 0 means no limit.
  std::uint64_t max_upload_bytes = 1ull << 30;
  /// Operator text (OPEN_TERMINAL_INFO): when set, GET /info returns it, the `get_info`
  /// operation appears in /openapi.json and the system prompt ends with it.
  std::string info;
  /// Finished commands are forgotten this long after they ended (then 404).
  std::chrono::milliseconds process_expire_after{300'000};
  /// Output kept per command; past it the oldest entries are dropped (offsets stay true).
  std::size_t max_process_output_bytes = 4u << 20;
  /// Origins a browser page may call the agent from (Open WebUI's "direct" connections), as
  /// OPEN_TERMINAL_CORS_ALLOWED_ORIGINS: "*" for any, else exact origins such as
  /// "https://chat.example.com". Empty: no CORS headers at all. Credentials (cookies) are
  /// never allowed: clients authenticate with an Authorization header, which preflights permit.
  std::vector<std::string> cors_allowed_origins{"*"};
  /// Interactive terminals alive at once; one more gets 429.
  std::size_t max_terminals = 16;
};

class TERMINALS_API Agent {
 public:
  /// Binds and starts serving on `loop`. `InvalidArgument` for an empty key without `no_auth`
  /// or a home that is not a directory; otherwise the errors of `Server::create`.
  static Result<std::unique_ptr<Agent>> create(Loop& loop, AgentOptions options);

  /// Closes the listener and every connection at once.
  virtual ~Agent() = default;

  /// The bound endpoint, with the real port when 0 was asked for.
  virtual Endpoint local_endpoint() const = 0;
  /// Stops accepting, lets requests in flight finish for up to `grace`, then calls `done`
  /// (never synchronously).
  virtual void shutdown(std::chrono::milliseconds grace, Callback<void> done) = 0;
};

using AgentPtr = std::unique_ptr<Agent>;

}  // namespace terminals
