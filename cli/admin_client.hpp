#pragma once

// The admin commands' (policy, terminals) way to a running `terminals-cli serve`: the common
// flags (--url, --api-key, --data-dir, --json), where the URL and service key come from, one
// blocking request at a time over the library's HttpClient, and the error messages an operator
// can act on (server not running, wrong key, the server's own detail).

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <iosfwd>

#include <rapidjson/document.h>

#include <terminals/endpoint.hpp>
#include <terminals/http_client.hpp>
#include <terminals/loop.hpp>
#include <terminals/result.hpp>

#include "commands.hpp"

namespace terminals::cli {

/// The flags every admin command takes.
struct AdminOptions {
  std::optional<std::string> url;       ///< --url
  std::optional<std::string> api_key;   ///< --api-key
  std::optional<std::string> data_dir;  ///< --data-dir
  bool json = false;                    ///< --json
};

/// The help lines for those flags, shared by the commands' help texts.
inline constexpr std::string_view kAdminOptionsHelp =
    R"(      --url URL            The server (TERMINALS_URL; default http://127.0.0.1:PORT with
                           PORT from TERMINALS_PORT, else 3000). http:// only
      --api-key KEY        The service key (TERMINALS_API_KEY; else the key file the server
                           generated, DATA_DIR/service-key). Prefer the environment: a flag is
                           visible in the process list
      --data-dir DIR       Where to find that key file (TERMINALS_DATA_DIR; default
                           /var/lib/terminals as root, else ~/.local/share/terminals)
      --json               Print the server's JSON instead of a table
)";

/// If args[i] is one of the common flags, consumes it (and its value) and returns true. A flag
/// without its value sets `error` (a usage error).
bool parse_admin_flag(Args args, std::size_t& i, AdminOptions& options, std::string& error);

/// An answer from the server: its status and body, parsed when it is JSON.
struct AdminResponse {
  int status = 0;
  std::string body;
};

class AdminClient {
 public:
  /// Resolves the URL and the service key. InvalidArgument: a usage error (bad URL, no key to
  /// be found); anything else: a failure.
  static Result<std::unique_ptr<AdminClient>> create(const AdminOptions& options);
  ~AdminClient();

  /// Sends one request and waits for the whole answer. Errors are the network's, with a
  /// message that names the server and how to start it.
  Result<AdminResponse> call(std::string_view method, std::string_view path, std::string body = {});

  /// Sends a request and parses its JSON answer into `out`. On any failure (network, a non-2xx
  /// status, a body that is not JSON) prints "terminals-cli <command>: <why>" on io.err and
  /// returns the exit status; on success returns nullopt.
  std::optional<int> call_json(Io io, std::string_view command, std::string_view method,
                               std::string_view path, std::string body, rapidjson::Document& out);

  /// Why the server refused: its detail (each loc and msg for 422 lists), and for 401/403 which
  /// key was sent and how to fix it.
  std::string describe_refusal(const AdminResponse& response) const;

  const std::string& url() const { return url_; }

 private:
  AdminClient() = default;

  std::string url_;          // as given, without a trailing '/'
  std::string base_path_;    // a path prefix in the URL ("" or "/prefix")
  std::string host_header_;  // host[:port] as written in the URL
  Endpoint endpoint_;        // resolved address
  std::string key_;
  std::string key_source_;   // "--api-key", "TERMINALS_API_KEY" or "the key file PATH"
  std::unique_ptr<Loop> loop_;
  std::unique_ptr<HttpClient> http_;
};

/// Percent-encodes a path segment (policy ids are plain, but a typo must not change the route).
std::string encode_path_segment(std::string_view s);

/// JSON text of `v`, indented by two spaces (pretty) or on one line.
std::string json_text(const rapidjson::Value& v, bool pretty);

/// A string member of an object, or `fallback` when absent, null or not a string.
std::string json_str(const rapidjson::Value& v, const char* name, std::string fallback = "-");

/// Prints rows (the first is the header) in columns two spaces apart.
void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows);

}  // namespace terminals::cli
