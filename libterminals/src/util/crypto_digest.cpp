// SHA-256 and HMAC through OpenSSL's EVP layer (orchestrator side: hashed names, signed
// tokens). Separate from crypto.cpp so the agent binary does not link this in.

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <string>

#include "util/crypto.hpp"

namespace terminals::detail {

namespace {
constexpr char kHex[] = "0123456789abcdef";
}  // namespace

std::string sha256_hex(std::string_view data) {
  // Fetched once: SHA256() looks the algorithm up (under a lock) on every call, which showed in
  // serve's profile since every request's service key is hashed before the comparison.
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  unsigned char d[SHA256_DIGEST_LENGTH];
  if (!md || EVP_Digest(data.data(), data.size(), d, nullptr, md, nullptr) != 1) {
    SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d);
  }
  std::string out(sizeof(d) * 2, '0');
  for (std::size_t i = 0; i < sizeof(d); ++i) {
    out[2 * i] = kHex[d[i] >> 4];
    out[2 * i + 1] = kHex[d[i] & 15];
  }
  return out;
}

std::string hmac_sha256_raw(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

}  // namespace terminals::detail
