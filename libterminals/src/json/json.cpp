#include "json/json.hpp"

#include <rapidjson/error/en.h>

#include <cmath>
#include <vector>

namespace terminals::detail {

Result<rapidjson::Document> parse_json(std::string_view text) {
  rapidjson::Document doc;
  // Without kParseStopWhenDoneFlag, anything but whitespace after the value is an error.
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(text.data(), text.size());
  if (doc.HasParseError()) {
    return Error(Errc::InvalidArgument,
                 std::string("invalid JSON at offset ") + std::to_string(doc.GetErrorOffset()) +
                     ": " + rapidjson::GetParseError_En(doc.GetParseError()));
  }
  // RapidJSON 1.1.0 reads some numbers just above DBL_MAX ("5.9e308") as infinity instead of
  // refusing them, and its Writer then stops at that value: a document written back (a stored
  // policy) would be cut short. Refuse them here, walking without recursion.
  std::vector<const rapidjson::Value*> pending{&doc};
  while (!pending.empty()) {
    const rapidjson::Value* v = pending.back();
    pending.pop_back();
    if (v->IsDouble() && !std::isfinite(v->GetDouble())) {
      return Error(Errc::InvalidArgument, "invalid JSON: a number is too large for a double");
    }
    if (v->IsArray()) {
      for (const auto& item : v->GetArray()) pending.push_back(&item);
    } else if (v->IsObject()) {
      for (const auto& member : v->GetObject()) pending.push_back(&member.value);
    }
  }
  return doc;
}

std::optional<std::string_view> json_string(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return std::nullopt;
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsString()) return std::nullopt;
  return std::string_view(it->value.GetString(), it->value.GetStringLength());
}

std::optional<std::int64_t> json_int(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return std::nullopt;
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsInt64()) return std::nullopt;
  return it->value.GetInt64();
}

std::optional<double> json_number(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return std::nullopt;
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsNumber()) return std::nullopt;
  return it->value.GetDouble();
}

std::optional<bool> json_bool(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return std::nullopt;
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsBool()) return std::nullopt;
  return it->value.GetBool();
}

std::string to_json(const rapidjson::Value& value) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  value.Accept(w);
  return std::string(buf.GetString(), buf.GetSize());
}

std::string detail_json(std::string_view message) {
  return JsonWriter().object().field("detail", message).end_object().take();
}

}  // namespace terminals::detail
