#pragma once

// Small wrappers for keys, tokens and digests. The kernel supplies randomness and OpenSSL the
// cryptography; these only adapt them to std::string.

#include <cstddef>
#include <string>
#include <string_view>

#include "terminals/result.hpp"

namespace terminals::detail {

/// `bytes` random bytes from the kernel's CSPRNG (getrandom), hex-encoded (2*bytes characters).
Result<std::string> random_hex(std::size_t bytes);
/// `bytes` random bytes, base64url-encoded without padding (for API keys).
Result<std::string> random_token(std::size_t bytes = 32);

/// Compares secrets in time independent of where they differ (the length may leak).
bool constant_time_equals(std::string_view a, std::string_view b) noexcept;

std::string sha256_hex(std::string_view data);
/// The 32-byte digest into `out`, without allocating (for per-request checks).
void sha256_raw(std::string_view data, unsigned char out[32]);
std::string sha1_raw(std::string_view data);
std::string hmac_sha256_raw(std::string_view key, std::string_view data);

std::string base64_encode(std::string_view data);
std::string base64url_encode(std::string_view data);  // no padding
/// Decodes base64url (padding optional; also accepts + and /). Strict: one spelling per result
/// (no stray '=', zero trailing bits), InvalidArgument otherwise.
Result<std::string> base64url_decode(std::string_view data);

}  // namespace terminals::detail
