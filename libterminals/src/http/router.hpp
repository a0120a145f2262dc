#pragma once

// Router: maps (method, path) to a handler. Patterns are literal segments, `{name}` for one
// segment and a final `{name...}` for the rest of the path. Routes are tried in the order
// they were added, like the reference (first match wins).

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "terminals/http.hpp"

namespace terminals::detail {

struct RouteParams {
  std::vector<std::pair<std::string, std::string>> values;
  std::string_view get(std::string_view name) const {
    for (const auto& [k, v] : values) {
      if (k == name) return v;
    }
    return {};
  }
};

template <class Handler>
class Router {
 public:
  /// `method` "*" matches any method.
  void add(std::string method, std::string_view pattern, Handler handler) {
    Route r;
    r.method = std::move(method);
    std::string_view p = pattern;
    while (!p.empty()) {
      if (p.front() == '/') {
        p.remove_prefix(1);
        continue;
      }
      auto slash = p.find('/');
      r.segments.emplace_back(p.substr(0, slash));
      p = slash == std::string_view::npos ? std::string_view() : p.substr(slash);
    }
    r.handler = std::move(handler);
    routes_.push_back(std::move(r));
  }

  enum class Outcome { Matched, NotFound, MethodNotAllowed };
  struct Match {
    Outcome outcome = Outcome::NotFound;
    Handler* handler = nullptr;
    RouteParams params;
    std::vector<std::string> allowed;  ///< with MethodNotAllowed: the methods the path takes
  };

  /// Matches a decoded path (no query).
  Match match(std::string_view method, std::string_view path) {
    Match result;
    std::vector<std::string_view> parts = split(path);
    for (auto& r : routes_) {
      RouteParams params;
      if (!matches(r, parts, params)) continue;
      if (r.method != "*" && r.method != method && !(method == "HEAD" && r.method == "GET")) {
        result.outcome = Outcome::MethodNotAllowed;
        if (std::find(result.allowed.begin(), result.allowed.end(), r.method) ==
            result.allowed.end()) {
          result.allowed.push_back(r.method);
        }
        continue;
      }
      result.outcome = Outcome::Matched;
      result.handler = &r.handler;
      result.params = std::move(params);
      return result;
    }
    return result;
  }

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    Handler handler;
  };

  static std::vector<std::string_view> split(std::string_view path) {
    std::vector<std::string_view> parts;
    std::size_t i = 0;
    while (i < path.size()) {
      if (path[i] == '/') {
        ++i;
        continue;
      }
      auto slash = path.find('/', i);
      if (slash == std::string_view::npos) slash = path.size();
      parts.push_back(path.substr(i, slash - i));
      i = slash;
    }
    return parts;
  }

  // Finds where the rest of the path (for a `{name...}` segment) starts in the original path:
  // parts are views into it, so the rest keeps its inner slashes.
  static bool matches(const Route& r, const std::vector<std::string_view>& parts, RouteParams& params) {
    std::size_t i = 0;
    for (std::size_t s = 0; s < r.segments.size(); ++s) {
      const std::string& seg = r.segments[s];
      const bool is_param = seg.size() > 2 && seg.front() == '{' && seg.back() == '}';
      if (is_param && seg.ends_with("...}")) {
        std::string name = seg.substr(1, seg.size() - 5);
        std::string rest;
        for (std::size_t k = i; k < parts.size(); ++k) {
          if (!rest.empty()) rest.push_back('/');
          rest.append(parts[k]);
        }
        params.values.emplace_back(std::move(name), std::move(rest));
        return true;
      }
      if (i >= parts.size()) return false;
      if (is_param) {
        if (parts[i].empty()) return false;
        params.values.emplace_back(seg.substr(1, seg.size() - 2), std::string(parts[i]));
      } else if (seg != parts[i]) {
        return false;
      }
      ++i;
    }
    return i == parts.size();
  }

  std::vector<Route> routes_;
};

}  // namespace terminals::detail
