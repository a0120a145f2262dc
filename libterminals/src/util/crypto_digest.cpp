// SHA-256 and HMAC through OpenSSL's EVP layer (orchestrator side: hashed names, signed
// tokens). Separate from crypto.cpp so the agent binary does not link this in.

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <memory>
#include <string>

#include "util/crypto.hpp"

namespace terminals::detail {

namespace {
constexpr char kHex[] = "0123456789abcdef";
}  // namespace

void sha256_raw(std::string_view data, unsigned char out[32]) {
  // Every request's key is hashed before it is compared, and this showed in serve's profile:
  // SHA256() looks the algorithm up under a lock on each call and EVP_Digest() allocates a
  // context. So the algorithm is fetched once and each thread reuses one context.
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local const std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(),
                                                                              EVP_MD_CTX_free);
  if (md && ctx && EVP_DigestInit_ex2(ctx.get(), md, nullptr) == 1 &&
      EVP_DigestUpdate(ctx.get(), data.data(), data.size()) == 1 &&
      EVP_DigestFinal_ex(ctx.get(), out, nullptr) == 1) {
    return;
  }
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out);
}

std::string sha256_hex(std::string_view data) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  sha256_raw(data, d);
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
