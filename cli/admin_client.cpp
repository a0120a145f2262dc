// AdminClient: see admin_client.hpp.

#include "admin_client.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <ostream>
#include <set>
#include <sstream>
#include <vector>

#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <terminals/http.hpp>
#include <terminals/settings.hpp>

namespace terminals::cli {

namespace {

// How long one admin request may take: a refresh stops every matching terminal first.
constexpr std::chrono::seconds kReadTimeout{300};
constexpr std::chrono::seconds kConnectTimeout{10};

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string trim(std::string_view s) {
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  return std::string(s);
}

// The serve settings the admin commands share with the server (its port, data directory and
// key), read as `serve` reads them: ./.env, then the environment, then our --data-dir. Only these
// names are taken, so a setting the server cares about and we do not cannot stop us.
Result<Settings> server_settings(const AdminOptions& options) {
  static const std::set<std::string> kNames = {"TERMINALS_PORT", "TERMINALS_DATA_DIR",
                                               "TERMINALS_DOCKER_DATA_DIR", "TERMINALS_API_KEY"};
  std::vector<std::string> environment;
  if (std::ifstream in(".env", std::ios::binary); in) {
    std::string text(std::istreambuf_iterator<char>(in), {});
    auto parsed = parse_dotenv(text);
    if (!parsed) return Error(Errc::InvalidArgument, ".env: " + parsed.error().message);
    for (const auto& [name, value] : *parsed) {
      if (kNames.count(upper(name))) environment.push_back(name + "=" + value);
    }
  }
  for (char** e = environ; e && *e; ++e) {
    std::string_view entry = *e;
    auto eq = entry.find('=');
    if (eq != std::string_view::npos && kNames.count(upper(entry.substr(0, eq)))) {
      environment.emplace_back(entry);
    }
  }
  SettingsInput input;
  input.environment = std::move(environment);
  input.read_dotenv = false;
  if (options.data_dir) input.flags["TERMINALS_DATA_DIR"] = *options.data_dir;
  return load_settings(input);
}

struct ParsedUrl {
  std::string host;  // without brackets
  std::uint16_t port = 80;
  std::string authority;
  std::string base_path;
};

Result<ParsedUrl> parse_url(std::string url, std::string_view source) {
  auto bad = [&](const std::string& why) {
    return Error(Errc::InvalidArgument, std::string(source) + ": '" + url + "' " + why);
  };
  if (url.rfind("https://", 0) == 0) {
    return bad("is https://; terminals-cli speaks plain http:// only (run it on the server's "
               "machine, or reach the server through an SSH tunnel)");
  }
  if (url.rfind("http://", 0) != 0) return bad("is not an http:// URL");
  std::string rest = url.substr(7);
  ParsedUrl out;
  auto slash = rest.find('/');
  out.authority = rest.substr(0, slash);
  if (slash != std::string::npos) out.base_path = rest.substr(slash);
  while (!out.base_path.empty() && out.base_path.back() == '/') out.base_path.pop_back();
  if (out.base_path.find_first_of("?#") != std::string::npos) return bad("has a query or fragment");
  std::string port;
  if (out.authority.starts_with('[')) {
    auto close = out.authority.find(']');
    if (close == std::string::npos) return bad("has an unclosed '['");
    out.host = out.authority.substr(1, close - 1);
    std::string after = out.authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return bad("has junk after ']'");
      port = after.substr(1);
    }
  } else {
    auto colon = out.authority.rfind(':');
    out.host = out.authority.substr(0, colon);
    if (colon != std::string::npos) port = out.authority.substr(colon + 1);
  }
  if (out.host.empty()) return bad("has no host");
  if (out.authority.find('@') != std::string::npos) return bad("has user info (pass the key with --api-key)");
  if (!port.empty()) {
    char* end = nullptr;
    long n = std::strtol(port.c_str(), &end, 10);
    if (*end != '\0' || n < 1 || n > 65535) return bad("has a bad port");
    out.port = static_cast<std::uint16_t>(n);
  }
  return out;
}

// The host as an address literal: the client connects to literals only.
Result<std::string> resolve(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  if (::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1) {
    return host;
  }
  struct addrinfo hints {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* found = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || !found) {
    return Error(Errc::Io, "cannot resolve the host '" + host + "': " + ::gai_strerror(rc));
  }
  char text[INET6_ADDRSTRLEN] = {};
  const void* addr = found->ai_family == AF_INET6
                         ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(found->ai_addr)->sin6_addr)
                         : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr);
  ::inet_ntop(found->ai_family, addr, text, sizeof text);
  ::freeaddrinfo(found);
  return std::string(text);
}

// The key file as the server wrote it (one line, 0600).
Result<std::string> read_key_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(Errc::InvalidArgument, "cannot read " + path + ": " + std::strerror(errno));
  std::string key = trim(std::string(std::istreambuf_iterator<char>(in), {}));
  if (key.empty()) return Error(Errc::InvalidArgument, path + " is empty");
  return key;
}

// A 422 detail list: "loc.joined: msg" per entry.
std::string describe_detail(const rapidjson::Value& detail) {
  if (detail.IsString()) return std::string(detail.GetString(), detail.GetStringLength());
  if (!detail.IsArray()) return json_text(detail, false);
  std::string out;
  for (const auto& item : detail.GetArray()) {
    if (!out.empty()) out += "; ";
    std::string loc;
    if (item.IsObject()) {
      if (auto l = item.FindMember("loc"); l != item.MemberEnd() && l->value.IsArray()) {
        for (const auto& part : l->value.GetArray()) {
          std::string p = part.IsString() ? std::string(part.GetString()) : json_text(part, false);
          if (loc.empty() && p == "body") continue;  // every body error starts there
          loc += (loc.empty() ? "" : ".") + p;
        }
      }
      std::string msg = json_str(item, "msg", "");
      out += loc.empty() || msg.starts_with(loc) ? msg : loc + ": " + msg;
    } else {
      out += json_text(item, false);
    }
  }
  return out;
}

}  // namespace

bool parse_admin_flag(Args args, std::size_t& i, AdminOptions& options, std::string& error) {
  std::string_view a = args[i];
  std::string_view name = a;
  std::optional<std::string> inline_value;
  if (auto eq = a.find('='); a.starts_with("--") && eq != std::string_view::npos) {
    name = a.substr(0, eq);
    inline_value = std::string(a.substr(eq + 1));
  }
  if (name == "--json" && !inline_value) {
    options.json = true;
    return true;
  }
  std::optional<std::string>* target = name == "--url"        ? &options.url
                                       : name == "--api-key"  ? &options.api_key
                                       : name == "--data-dir" ? &options.data_dir
                                                              : nullptr;
  if (!target) return false;
  if (inline_value) {
    *target = *inline_value;
  } else if (i + 1 < args.size()) {
    *target = std::string(args[++i]);
  } else {
    error = std::string(name) + " needs a value";
  }
  return true;
}

Result<std::unique_ptr<AdminClient>> AdminClient::create(const AdminOptions& options) {
  auto settings = server_settings(options);
  if (!settings) return Error(Errc::InvalidArgument, settings.error().message);

  std::unique_ptr<AdminClient> c(new AdminClient());
  std::string source = "--url";
  std::optional<std::string> url = options.url;
  if (!url) {
    if (const char* env = std::getenv("TERMINALS_URL"); env && *env) {
      url = env;
      source = "TERMINALS_URL";
    }
  }
  if (!url) url = "http://127.0.0.1:" + std::to_string(settings->port);
  while (url->size() > 1 && url->back() == '/') url->pop_back();
  auto parsed = parse_url(*url, source);
  if (!parsed) return std::move(parsed).error();
  c->url_ = *url;
  c->base_path_ = parsed->base_path;
  c->host_header_ = parsed->authority;

  if (options.api_key && !options.api_key->empty()) {
    c->key_ = *options.api_key;
    c->key_source_ = "--api-key";
  } else if (!settings->api_key.empty()) {
    c->key_ = settings->api_key;
    c->key_source_ = settings->sources["TERMINALS_API_KEY"] == ".env" ? "TERMINALS_API_KEY in ./.env"
                                                                       : "TERMINALS_API_KEY";
  } else {
    std::string dir = settings->data_dir;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    std::string path = dir + "/service-key";
    auto key = read_key_file(path);
    if (!key) {
      return Error(Errc::InvalidArgument,
                   "no service key: pass --api-key, set TERMINALS_API_KEY, or point --data-dir (or "
                   "TERMINALS_DATA_DIR) at the server's data directory (" + key.error().message + ")");
    }
    c->key_ = std::move(*key);
    c->key_source_ = "the key file " + path;
  }

  auto address = resolve(parsed->host);
  if (!address) {
    return Error(Errc::Io, "cannot reach the terminals server at " + c->url_ + ": " + address.error().message);
  }
  c->endpoint_ = Endpoint::tcp(*address, parsed->port);

  auto loop = Loop::create();
  if (!loop) return std::move(loop).error();
  c->loop_ = std::move(*loop);
  ClientOptions client_options;
  client_options.connect_timeout = kConnectTimeout;
  client_options.read_timeout = kReadTimeout;
  c->http_ = HttpClient::create(*c->loop_, client_options);
  return c;
}

AdminClient::~AdminClient() {
  http_.reset();
  // Let the closed connections' handles finish closing before the loop goes.
  if (loop_) (void)loop_->run_nowait();
}

Result<AdminResponse> AdminClient::call(std::string_view method, std::string_view path, std::string body) {
  RequestHead head;
  head.method = std::string(method);
  head.target = base_path_ + std::string(path);
  head.headers.set("Host", host_header_);
  head.headers.set("Authorization", "Bearer " + key_);
  head.headers.set("Accept", "application/json");
  if (!body.empty()) head.headers.set("Content-Type", "application/json");
  std::optional<Result<FetchResponse>> answer;
  Loop& loop = *loop_;
  http_->fetch(endpoint_, std::move(head), std::move(body), [&answer, &loop](Result<FetchResponse> r) {
    answer = std::move(r);
    loop.stop();
  });
  Status ran = loop.run();
  if (!ran) return std::move(ran).error();
  if (!answer) return Error(Errc::Internal, "the request to " + url_ + " never completed");
  if (!*answer) {
    const Error& e = answer->error();
    if (e.code == Errc::Io || e.code == Errc::Timeout || e.code == Errc::Eof) {
      return Error(e.code, "cannot reach the terminals server at " + url_ +
                               " (is `terminals-cli serve` running?): " + e.message);
    }
    return Error(e.code, "the request to " + url_ + " failed: " + e.message);
  }
  return AdminResponse{(*answer)->head.status, std::move((*answer)->body)};
}

std::string AdminClient::describe_refusal(const AdminResponse& response) const {
  std::string detail;
  rapidjson::Document doc;
  doc.Parse(response.body.data(), response.body.size());
  if (!doc.HasParseError() && doc.IsObject()) {
    if (auto d = doc.FindMember("detail"); d != doc.MemberEnd()) detail = describe_detail(d->value);
    else if (auto e = doc.FindMember("error"); e != doc.MemberEnd()) detail = describe_detail(e->value);
  }
  if (detail.empty()) detail = trim(response.body.substr(0, 200));
  std::string out = detail.empty() ? std::string(status_reason(response.status)) : detail;
  out += " (HTTP " + std::to_string(response.status) + ")";
  if (response.status == 401 || response.status == 403) {
    // Never the key itself: only where it came from.
    out += "\nThe server refused the service key from " + key_source_ +
           ".\nUse the key `terminals-cli serve` runs with (its TERMINALS_API_KEY, or DATA_DIR/service-key\n"
           "on its machine): pass --api-key, set TERMINALS_API_KEY, or point --data-dir at the\n"
           "server's data directory.";
  }
  return out;
}

std::optional<int> AdminClient::call_json(Io io, std::string_view command, std::string_view method,
                                          std::string_view path, std::string body, rapidjson::Document& out) {
  auto fail = [&](const std::string& why) {
    io.err << kProgram << ' ' << command << ": " << why << '\n';
    return kExitFailure;
  };
  auto response = call(method, path, std::move(body));
  if (!response) return fail(response.error().message);
  if (response->status < 200 || response->status >= 300) return fail(describe_refusal(*response));
  out.Parse(response->body.data(), response->body.size());
  if (out.HasParseError()) {
    return fail("unexpected answer from " + url_ + " (HTTP " + std::to_string(response->status) +
                ", not JSON): is this a terminals server?");
  }
  return std::nullopt;
}

std::string encode_path_segment(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string json_text(const rapidjson::Value& v, bool pretty) {
  rapidjson::StringBuffer buffer;
  if (pretty) {
    rapidjson::PrettyWriter<rapidjson::StringBuffer> writer(buffer);
    writer.SetIndent(' ', 2);
    v.Accept(writer);
  } else {
    rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
    v.Accept(writer);
  }
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string json_str(const rapidjson::Value& v, const char* name, std::string fallback) {
  if (!v.IsObject()) return fallback;
  auto it = v.FindMember(name);
  if (it == v.MemberEnd() || !it->value.IsString()) return fallback;
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

void print_table(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    out << line << '\n';
  }
}

}  // namespace terminals::cli
