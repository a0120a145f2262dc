// Keys, tokens, SHA-1 and base64: what the agent needs. Kept apart from crypto_digest.cpp so a
// binary that needs only these does not pull OpenSSL's EVP layer in (see sha1_raw).

// SHA1_Init & co. are deprecated in OpenSSL 3 but kept; see sha1_raw for why we use them.
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "util/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace terminals::detail {

namespace {
constexpr char kHex[] = "0123456789abcdef";

std::string to_hex(const unsigned char* p, std::size_t n) {
  std::string out(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[p[i] >> 4];
    out[2 * i + 1] = kHex[p[i] & 15];
  }
  return out;
}

// The kernel's CSPRNG (getrandom): no user-space generator state to reseed after fork (the
// agent and the orchestrator fork children), and no need to load OpenSSL's DRBG.
Result<std::string> random_bytes(std::size_t n) {
  std::string buf(n, '\0');
  std::size_t done = 0;
  while (done < n) {
    ssize_t got = ::getrandom(buf.data() + done, n - done, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return Error(Errc::Internal, std::string("getrandom failed: ") + std::strerror(errno));
    }
    done += static_cast<std::size_t>(got);
  }
  return buf;
}
}  // namespace

Result<std::string> random_hex(std::size_t bytes) {
  auto raw = random_bytes(bytes);
  if (!raw) return std::move(raw).error();
  return to_hex(reinterpret_cast<const unsigned char*>(raw->data()), raw->size());
}

Result<std::string> random_token(std::size_t bytes) {
  auto raw = random_bytes(bytes);
  if (!raw) return std::move(raw).error();
  return base64url_encode(*raw);
}

bool constant_time_equals(std::string_view a, std::string_view b) noexcept {
  // CRYPTO_memcmp's time does not depend on where the bytes differ. On a length mismatch we
  // still compare `b` (the secret, by convention) against itself so the work tracks the
  // secret's length only, never the attacker's prefix; only the length can leak.
  if (a.size() != b.size()) {
    (void)CRYPTO_memcmp(b.data(), b.data(), b.size());
    return false;
  }
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string sha1_raw(std::string_view data) {
  // The low-level SHA-1 calls, not SHA1()/EVP: in OpenSSL 3 those go through the provider
  // machinery, which a statically linked agent would then carry (about 2 MB of touched pages;
  // see cli/CMakeLists.txt). SHA-1 here only computes the WebSocket accept key.
  SHA_CTX ctx;
  unsigned char d[SHA_DIGEST_LENGTH];
  SHA1_Init(&ctx);
  SHA1_Update(&ctx, data.data(), data.size());
  SHA1_Final(d, &ctx);
  return std::string(reinterpret_cast<char*>(d), sizeof(d));
}

std::string base64_encode(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()),
                          static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string base64url_encode(std::string_view data) {
  std::string out = base64_encode(data);
  for (char& c : out) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  while (!out.empty() && out.back() == '=') out.pop_back();
  return out;
}

Result<std::string> base64url_decode(std::string_view data) {
  // Strict (RFC 4648 section 3.5): one spelling per byte string. The unused low bits of the last
  // character must be zero and '=' may only pad the end, else two tokens that differ in their
  // text would decode (and verify) alike; a length of 4n+1 is never valid.
  if (data.size() % 4 == 0 && data.ends_with("==")) {
    data.remove_suffix(2);  // "xx==": any other '=' left is refused below
  } else if (data.size() % 4 == 0 && data.ends_with('=')) {
    data.remove_suffix(1);  // "xxx="
  }
  if (data.size() % 4 == 1) return Error(Errc::InvalidArgument, "invalid base64url length");
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-' || c == '+') return 62;
    if (c == '_' || c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(data.size() / 4 * 3 + 2);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : data) {
    const int v = value(c);
    if (v < 0) return Error(Errc::InvalidArgument, "invalid base64url character");
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return Error(Errc::InvalidArgument, "invalid base64url data (non-zero trailing bits)");
  }
  return out;
}

}  // namespace terminals::detail
