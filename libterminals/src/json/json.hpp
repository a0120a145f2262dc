#pragma once

// JSON helpers over RapidJSON (internal only: RapidJSON never appears in public headers).

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "terminals/result.hpp"

namespace terminals::detail {

/// Parses `text` (UTF-8 validated). InvalidArgument names the offset and RapidJSON's reason.
Result<rapidjson::Document> parse_json(std::string_view text);

/// Member lookups that tolerate missing or wrongly typed members.
std::optional<std::string_view> json_string(const rapidjson::Value& obj, const char* name);
std::optional<std::int64_t> json_int(const rapidjson::Value& obj, const char* name);
std::optional<double> json_number(const rapidjson::Value& obj, const char* name);
std::optional<bool> json_bool(const rapidjson::Value& obj, const char* name);

/// Serialises a value to compact JSON.
std::string to_json(const rapidjson::Value& value);

/// A small builder for response bodies: JsonWriter().object().key("a").value(1).end().take().
class JsonWriter {
 public:
  JsonWriter() : writer_(buffer_) {}
  JsonWriter& object() { writer_.StartObject(); return *this; }
  JsonWriter& array() { writer_.StartArray(); return *this; }
  JsonWriter& end_object() { writer_.EndObject(); return *this; }
  JsonWriter& end_array() { writer_.EndArray(); return *this; }
  JsonWriter& key(std::string_view k) {
    writer_.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
    return *this;
  }
  JsonWriter& value(std::string_view v) {
    writer_.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
    return *this;
  }
  JsonWriter& value(const char* v) { return value(std::string_view(v)); }
  JsonWriter& value(const std::string& v) { return value(std::string_view(v)); }
  JsonWriter& value(bool v) { writer_.Bool(v); return *this; }
  JsonWriter& value(int v) { writer_.Int(v); return *this; }
  JsonWriter& value(std::int64_t v) { writer_.Int64(v); return *this; }
  JsonWriter& value(std::uint64_t v) { writer_.Uint64(v); return *this; }
  JsonWriter& value(double v) { writer_.Double(v); return *this; }
  JsonWriter& null() { writer_.Null(); return *this; }
  /// Inserts already-serialised JSON as the next value.
  JsonWriter& raw(std::string_view json) {
    writer_.RawValue(json.data(), json.size(), rapidjson::kObjectType);
    return *this;
  }
  template <class T>
  JsonWriter& field(std::string_view k, const T& v) {
    key(k);
    return value(v);
  }
  std::string take() { return std::string(buffer_.GetString(), buffer_.GetSize()); }

 private:
  rapidjson::StringBuffer buffer_;
  rapidjson::Writer<rapidjson::StringBuffer> writer_;
};

/// `{"detail": message}`, the error body Open Terminal and the reference orchestrator use.
std::string detail_json(std::string_view message);

}  // namespace terminals::detail
