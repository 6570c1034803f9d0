// Self-checking payloads for the WAL crash test: 8 bytes of seed, then bytes derived from it.

#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <string_view>

namespace tx::testing {

inline std::string MakeCrashPayload(uint64_t seed, size_t extra_bytes) {
  std::string p(8 + extra_bytes, '\0');
  std::memcpy(p.data(), &seed, 8);
  std::mt19937_64 rng(seed);
  for (size_t i = 8; i < p.size(); ++i) p[i] = static_cast<char>(rng());
  return p;
}

// True if the payload is one MakeCrashPayload produced.
inline bool CrashPayloadIsIntact(std::string_view p) {
  if (p.size() < 8) return false;
  uint64_t seed;
  std::memcpy(&seed, p.data(), 8);
  return MakeCrashPayload(seed, p.size() - 8) == p;
}

}  // namespace tx::testing
