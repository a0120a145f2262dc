// Request parsing shared by the agent's routes: typed query parameters and JSON bodies, and
// 422 answers in the shape FastAPI/Pydantic v2 gives them, so a client that reads Open
// Terminal's validation errors reads ours.

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

#include "agent/agent_internal.hpp"

namespace terminals::detail {

namespace {

std::string number_json(double v) {
  if (std::floor(v) == v && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
  JsonWriter w;
  w.value(v);
  return w.take();
}

std::string string_json(std::string_view s) {
  JsonWriter w;
  w.value(s);
  return w.take();
}

// Checks `value` against `bounds`; sends the 422 and returns false when outside.
bool check_bounds(AgentRequest& r, std::string_view name, std::string_view raw, double value,
                  const Bounds& bounds) {
  if (bounds.ge && !(value >= *bounds.ge)) {
    send_validation_error(*r.exchange,
                          {"greater_than_equal", {"query", std::string(name)},
                           "Input should be greater than or equal to " + number_json(*bounds.ge),
                           string_json(raw), "{\"ge\":" + number_json(*bounds.ge) + "}"});
    return false;
  }
  if (bounds.le && !(value <= *bounds.le)) {
    send_validation_error(*r.exchange,
                          {"less_than_equal", {"query", std::string(name)},
                           "Input should be less than or equal to " + number_json(*bounds.le),
                           string_json(raw), "{\"le\":" + number_json(*bounds.le) + "}"});
    return false;
  }
  return true;
}

bool iequals_any(std::string_view v, std::initializer_list<std::string_view> words) {
  for (auto w : words) {
    if (iequals(v, w)) return true;
  }
  return false;
}

}  // namespace

void send_validation_error(ServerExchange& ex, const ValidationIssue& issue) {
  JsonWriter w;
  w.object().key("detail").array().object().field("type", issue.type).key("loc").array();
  for (const LocPart& part : issue.loc) {
    if (const auto* s = std::get_if<std::string>(&part)) {
      w.value(*s);
    } else {
      w.value(std::get<std::int64_t>(part));
    }
  }
  w.end_array().field("msg", issue.msg).key("input").raw(issue.input_json);
  if (!issue.ctx_json.empty()) w.key("ctx").raw(issue.ctx_json);
  w.end_object().end_array().end_object();
  send_json(ex, 422, w.take());
}

std::string_view session_id(const AgentRequest& r) {
  return r.exchange->request().headers.get("X-Session-Id").value_or(std::string_view());
}

bool required_query(AgentRequest& r, std::string_view name, std::string_view& out) {
  auto v = r.query.get(name);
  if (!v) {
    send_validation_error(*r.exchange, {"missing", {"query", std::string(name)}, "Field required"});
    return false;
  }
  out = *v;
  return true;
}

bool int_query(AgentRequest& r, std::string_view name, std::optional<std::int64_t>& out,
               Bounds bounds) {
  auto v = r.query.get(name);
  if (!v) return true;
  std::string_view s = *v;
  // Pydantic strips surrounding whitespace and accepts a leading '+'.
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  std::int64_t n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) {
    send_validation_error(*r.exchange,
                          {"int_parsing", {"query", std::string(name)},
                           "Input should be a valid integer, unable to parse string as an integer",
                           string_json(*v)});
    return false;
  }
  if (!check_bounds(r, name, *v, static_cast<double>(n), bounds)) return false;
  out = n;
  return true;
}

bool float_query(AgentRequest& r, std::string_view name, std::optional<double>& out,
                 Bounds bounds) {
  auto v = r.query.get(name);
  if (!v) return true;
  std::string text(*v);
  char* end = nullptr;
  errno = 0;
  double d = text.empty() ? 0 : std::strtod(text.c_str(), &end);
  // strtod also takes hex floats and "inf"/"nan"; Pydantic takes inf/nan too, but a bound
  // check then rejects them, which is what a caller would want.
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE) {
    send_validation_error(*r.exchange,
                          {"float_parsing", {"query", std::string(name)},
                           "Input should be a valid number, unable to parse string as a number",
                           string_json(*v)});
    return false;
  }
  if (!check_bounds(r, name, *v, d, bounds)) return false;
  out = d;
  return true;
}

bool bool_query(AgentRequest& r, std::string_view name, bool& out) {
  auto v = r.query.get(name);
  if (!v) return true;
  if (iequals_any(*v, {"true", "1", "yes", "on", "t", "y"})) {
    out = true;
    return true;
  }
  if (iequals_any(*v, {"false", "0", "no", "off", "f", "n"})) {
    out = false;
    return true;
  }
  send_validation_error(*r.exchange,
                        {"bool_parsing", {"query", std::string(name)},
                         "Input should be a valid boolean, unable to interpret input",
                         string_json(*v)});
  return false;
}

std::optional<rapidjson::Document> json_body(AgentRequest& r) {
  if (r.body.empty()) {
    send_validation_error(*r.exchange, {"missing", {"body"}, "Field required"});
    return std::nullopt;
  }
  auto doc = parse_json(r.body);
  if (!doc) {
    send_validation_error(*r.exchange, {"json_invalid", {"body", std::int64_t{0}},
                                        "JSON decode error", "{}",
                                        "{\"error\":" + string_json(doc.error().message) + "}"});
    return std::nullopt;
  }
  if (!doc->IsObject()) {
    send_validation_error(*r.exchange,
                          {"model_attributes_type", {"body"},
                           "Input should be a valid dictionary or object to extract fields from",
                           to_json(*doc)});
    return std::nullopt;
  }
  return std::move(doc).value();
}

namespace {

std::vector<LocPart> with(std::vector<LocPart> loc, const char* name) {
  loc.emplace_back(std::string(name));
  return loc;
}

}  // namespace

bool required_string(AgentRequest& r, const rapidjson::Value& obj, const char* name,
                     std::string_view& out, std::vector<LocPart> loc) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd()) {
    send_validation_error(*r.exchange,
                          {"missing", with(std::move(loc), name), "Field required", to_json(obj)});
    return false;
  }
  if (!it->value.IsString()) {
    send_validation_error(*r.exchange, {"string_type", with(std::move(loc), name),
                                        "Input should be a valid string", to_json(it->value)});
    return false;
  }
  out = std::string_view(it->value.GetString(), it->value.GetStringLength());
  return true;
}

bool optional_string(AgentRequest& r, const rapidjson::Value& obj, const char* name,
                     std::optional<std::string_view>& out, std::vector<LocPart> loc) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || it->value.IsNull()) return true;
  if (!it->value.IsString()) {
    send_validation_error(*r.exchange, {"string_type", with(std::move(loc), name),
                                        "Input should be a valid string", to_json(it->value)});
    return false;
  }
  out = std::string_view(it->value.GetString(), it->value.GetStringLength());
  return true;
}

}  // namespace terminals::detail
