#include "common/rpc/backoff.h"

#include <gtest/gtest.h>

#include <vector>

namespace tx::rpc {
namespace {

using std::chrono::milliseconds;

TEST(Backoff, DelaysDoubleWithJitterThenCap) {
  Backoff backoff({milliseconds(10), milliseconds(80), /*seed=*/1});
  const int64_t ceilings[] = {10, 20, 40, 80, 80, 80};
  for (int64_t ceiling : ceilings) {
    milliseconds d = backoff.NextDelay();
    EXPECT_GE(d.count(), ceiling / 2) << "ceiling " << ceiling;
    EXPECT_LE(d.count(), ceiling) << "ceiling " << ceiling;
  }
  EXPECT_EQ(6u, backoff.failures());
}

TEST(Backoff, ResetStartsFromInitialAgain) {
  Backoff backoff({milliseconds(10), milliseconds(1000), /*seed=*/1});
  for (int i = 0; i < 8; ++i) (void)backoff.NextDelay();
  backoff.Reset();
  EXPECT_EQ(0u, backoff.failures());
  EXPECT_LE(backoff.NextDelay().count(), 10);
}

TEST(Backoff, JitterIsSeededAndVaries) {
  auto sequence = [](uint64_t seed) {
    Backoff backoff({milliseconds(1000), milliseconds(1000), seed});
    std::vector<int64_t> delays;
    for (int i = 0; i < 20; ++i) delays.push_back(backoff.NextDelay().count());
    return delays;
  };
  EXPECT_EQ(sequence(7), sequence(7));
  EXPECT_NE(sequence(7), sequence(8));
  std::vector<int64_t> s = sequence(7);
  EXPECT_NE(*std::min_element(s.begin(), s.end()), *std::max_element(s.begin(), s.end()));
}

TEST(Backoff, ManyFailuresDoNotOverflow) {
  Backoff backoff({milliseconds(1), milliseconds(5000), /*seed=*/3});
  milliseconds d{0};
  for (int i = 0; i < 1000; ++i) d = backoff.NextDelay();
  EXPECT_GE(d.count(), 2500);
  EXPECT_LE(d.count(), 5000);
}

TEST(Backoff, InvalidOptionsAreAProgrammerError) {
  EXPECT_DEATH(Backoff({milliseconds(0), milliseconds(10), 1}), "bad back-off");
  EXPECT_DEATH(Backoff({milliseconds(20), milliseconds(10), 1}), "bad back-off");
}

}  // namespace
}  // namespace tx::rpc
