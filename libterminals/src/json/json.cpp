#include "json/json.hpp"

#include <rapidjson/error/en.h>

#include <cmath>
#include <cstring>
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
  // RapidJSON 1.1.0 lets two things through that its Writer then turns into a document that
  // does not parse again (a stored policy would be lost at the next start), so they are refused
  // here, walking without recursion:
  //  - numbers just above DBL_MAX ("5.9e308"), read as infinity: the Writer stops at them;
  //  - a lone low surrogate escape ("\uDC00"), decoded to the bytes of a surrogate, which are
  //    not UTF-8. Raw input bytes are validated, so such bytes (0xED then 0xA0..0xBF) can only
  //    come from an escape.
  auto surrogate = [](const rapidjson::Value& s) {
    const char* p = s.GetString();
    const char* end = p + s.GetStringLength();
    while ((p = static_cast<const char*>(std::memchr(p, 0xED, static_cast<std::size_t>(end - p))))) {
      if (++p < end && static_cast<unsigned char>(*p) >= 0xA0) return true;
    }
    return false;
  };
  auto bad_escape = [] {
    return Error(Errc::InvalidArgument, "invalid JSON: a \\u escape names a lone surrogate");
  };
  std::vector<const rapidjson::Value*> pending{&doc};
  while (!pending.empty()) {
    const rapidjson::Value* v = pending.back();
    pending.pop_back();
    if (v->IsDouble() && !std::isfinite(v->GetDouble())) {
      return Error(Errc::InvalidArgument, "invalid JSON: a number is too large for a double");
    }
    if (v->IsString() && surrogate(*v)) return bad_escape();
    if (v->IsArray()) {
      for (const auto& item : v->GetArray()) pending.push_back(&item);
    } else if (v->IsObject()) {
      for (const auto& member : v->GetObject()) {
        if (surrogate(member.name)) return bad_escape();
        pending.push_back(&member.value);
      }
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
