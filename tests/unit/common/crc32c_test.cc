#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace tx::crc32c {
namespace {

using ExtendFn = uint32_t (*)(uint32_t, const void*, size_t);

// The five test vectors of RFC 3720, appendix B.4.
void ExpectRfc3720Vectors(ExtendFn extend) {
  unsigned char buf[32];

  std::memset(buf, 0, sizeof(buf));
  EXPECT_EQ(0x8A9136AAu, extend(0, buf, sizeof(buf))) << "32 bytes of zeros";

  std::memset(buf, 0xff, sizeof(buf));
  EXPECT_EQ(0x62A8AB43u, extend(0, buf, sizeof(buf))) << "32 bytes of ones";

  for (int i = 0; i < 32; ++i) buf[i] = static_cast<unsigned char>(i);
  EXPECT_EQ(0x46DD794Eu, extend(0, buf, sizeof(buf))) << "32 incrementing bytes";

  for (int i = 0; i < 32; ++i) buf[i] = static_cast<unsigned char>(31 - i);
  EXPECT_EQ(0x113FDB5Cu, extend(0, buf, sizeof(buf))) << "32 decrementing bytes";

  // An iSCSI SCSI Read (10) command PDU.
  const unsigned char iscsi_read[48] = {
      0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
      0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
  };
  EXPECT_EQ(0xD9963A56u, extend(0, iscsi_read, sizeof(iscsi_read))) << "iSCSI read PDU";
}

TEST(Crc32c, PortableMatchesRfc3720Vectors) { ExpectRfc3720Vectors(internal::ExtendPortable); }

TEST(Crc32c, HardwareMatchesRfc3720Vectors) {
  if (!HardwareAccelerated()) GTEST_SKIP() << "this CPU has no CRC32 instruction";
  ExpectRfc3720Vectors(internal::ExtendHardware);
}

TEST(Crc32c, DispatchedMatchesRfc3720Vectors) { ExpectRfc3720Vectors(Extend); }

TEST(Crc32c, StandardCheckValue) {
  // The "check" value of the CRC catalogue: CRC-32C("123456789").
  EXPECT_EQ(0xE3069283u, Value("123456789", 9));
}

TEST(Crc32c, ExtendEqualsValueOfConcatenation) {
  std::string a = "hello ", b = "world, with enough bytes to use the 8-byte loop";
  EXPECT_EQ(Value((a + b).data(), a.size() + b.size()),
            Extend(Value(a.data(), a.size()), b.data(), b.size()));
}

TEST(Crc32c, HardwareAndPortableAgreeOnRandomBuffersAndAlignments) {
  if (!HardwareAccelerated()) GTEST_SKIP() << "this CPU has no CRC32 instruction";
  std::mt19937 rng(42);
  std::vector<unsigned char> buf(4096 + 16);
  for (auto& c : buf) c = static_cast<unsigned char>(rng());
  for (size_t offset = 0; offset < 16; ++offset) {
    for (size_t len : {0u, 1u, 7u, 8u, 9u, 63u, 64u, 65u, 1000u, 4096u}) {
      uint32_t seed = static_cast<uint32_t>(rng());
      EXPECT_EQ(internal::ExtendPortable(seed, buf.data() + offset, len),
                internal::ExtendHardware(seed, buf.data() + offset, len))
          << "offset " << offset << " length " << len;
    }
  }
}

TEST(Crc32c, MaskRoundTripsAndChangesTheValue) {
  uint32_t crc = Value("foo", 3);
  EXPECT_NE(crc, Mask(crc));
  EXPECT_NE(crc, Mask(Mask(crc)));
  EXPECT_EQ(crc, Unmask(Mask(crc)));
  EXPECT_EQ(crc, Unmask(Unmask(Mask(Mask(crc)))));
}

}  // namespace
}  // namespace tx::crc32c
