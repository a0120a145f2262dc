#pragma once

// Process-wide libcurl initialisation.

#include "terminals/result.hpp"

namespace terminals::detail {

/// Calls curl_global_init once per process (thread-safe: curl_global_init itself is not).
/// Every later call returns the first call's outcome. curl_global_cleanup is never called:
/// other threads' multis may still be alive at exit, and the OS reclaims the rest.
Status curl_global_init_once();

}  // namespace terminals::detail
