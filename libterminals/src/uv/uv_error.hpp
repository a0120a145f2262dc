#pragma once

// Maps libuv's negative error numbers onto Errc and a readable message.

#include <string>
#include <string_view>

#include "terminals/result.hpp"

namespace terminals::detail {

/// An Error for libuv code `status`, with `what` saying what was being done
/// ("connect to 127.0.0.1:80").
Error uv_error(int status, std::string_view what);

}  // namespace terminals::detail
