#include "common/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace tx::crc32c {
namespace {

constexpr uint32_t kReflectedPolynomial = 0x82F63B78u;

// kTables[k][b] is the CRC of byte b followed by k zero bytes: the slicing-by-8 tables.
constexpr std::array<std::array<uint32_t, 256>, 8> MakeTables() {
  std::array<std::array<uint32_t, 256>, 8> tables{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? kReflectedPolynomial : 0u);
    tables[0][b] = crc;
  }
  for (uint32_t b = 0; b < 256; ++b) {
    for (size_t k = 1; k < 8; ++k) {
      uint32_t prev = tables[k - 1][b];
      tables[k][b] = (prev >> 8) ^ tables[0][prev & 0xffu];
    }
  }
  return tables;
}

constexpr auto kTables = MakeTables();
static_assert(kTables[0][1] == 0xF26B8303u, "CRC-32C table entry for byte 0x01");

inline uint64_t LoadLE64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the table code assumes little endian");
  return v;
}

bool DetectHardware() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("sse4.2");
#else
  return false;
#endif
}

}  // namespace

namespace internal {

uint32_t ExtendPortable(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t l = ~crc;
  while (n >= 8) {
    uint64_t word = LoadLE64(p) ^ l;
    l = kTables[7][word & 0xff] ^ kTables[6][(word >> 8) & 0xff] ^ kTables[5][(word >> 16) & 0xff] ^
        kTables[4][(word >> 24) & 0xff] ^ kTables[3][(word >> 32) & 0xff] ^
        kTables[2][(word >> 40) & 0xff] ^ kTables[1][(word >> 48) & 0xff] ^ kTables[0][word >> 56];
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    l = (l >> 8) ^ kTables[0][(l ^ *p) & 0xff];
    ++p;
    --n;
  }
  return ~l;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t ExtendHardware(uint32_t crc, const void* data,
                                                          size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t l = ~crc;
  while (n >= 8) {
    l = _mm_crc32_u64(l, LoadLE64(p));
    p += 8;
    n -= 8;
  }
  auto l32 = static_cast<uint32_t>(l);
  while (n > 0) {
    l32 = _mm_crc32_u8(l32, *p);
    ++p;
    --n;
  }
  return ~l32;
}
#else
uint32_t ExtendHardware(uint32_t crc, const void* data, size_t n) {
  return ExtendPortable(crc, data, n);
}
#endif

}  // namespace internal

bool HardwareAccelerated() {
  static const bool kHardware = DetectHardware();
  return kHardware;
}

uint32_t Extend(uint32_t crc, const void* data, size_t n) {
  return HardwareAccelerated() ? internal::ExtendHardware(crc, data, n)
                               : internal::ExtendPortable(crc, data, n);
}

}  // namespace tx::crc32c
