// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78), as used by iSCSI (RFC 3720)
// and by our on-disk formats.
//
// Uses the SSE4.2 CRC32 instruction when the CPU has it (checked once at run time) and a
// portable slicing-by-8 table otherwise. Both give identical results. Thread-safe.

#pragma once

#include <cstddef>
#include <cstdint>

namespace tx::crc32c {

// Returns the CRC-32C of concat(A, data[0, n)) where `crc` is the CRC-32C of A.
uint32_t Extend(uint32_t crc, const void* data, size_t n);

// Returns the CRC-32C of data[0, n).
inline uint32_t Value(const void* data, size_t n) { return Extend(0, data, n); }

// A CRC stored next to the data it covers is masked, so that computing the CRC of a buffer
// that itself contains CRCs does not degenerate (same scheme as LevelDB).
constexpr uint32_t kMaskDelta = 0xa282ead8u;
inline uint32_t Mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kMaskDelta; }
inline uint32_t Unmask(uint32_t masked) {
  uint32_t rot = masked - kMaskDelta;
  return (rot >> 17) | (rot << 15);
}

// True when Extend uses the hardware instruction on this CPU.
bool HardwareAccelerated();

namespace internal {
// Exposed so that tests can check both implementations on any machine.
uint32_t ExtendPortable(uint32_t crc, const void* data, size_t n);
// Only call when HardwareAccelerated() is true.
uint32_t ExtendHardware(uint32_t crc, const void* data, size_t n);
}  // namespace internal

}  // namespace tx::crc32c
