#pragma once

/// @file export.hpp
/// Symbol visibility. libterminals is built with hidden visibility; only what is marked
/// TERMINALS_API is part of the ABI.

#if defined(_WIN32)
#define TERMINALS_API
#elif defined(__GNUC__) || defined(__clang__)
#define TERMINALS_API __attribute__((visibility("default")))
#else
#define TERMINALS_API
#endif
