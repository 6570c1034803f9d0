// BadInputSender's verdicts (tools/txchaos/bad_input.h) against fake servers: a server that
// closes or answers errors passes; one that hangs, or that answers an absurd request with a
// success, is a violation. (Against the real processes: the bad-input chaos scenario.)

#include "tools/txchaos/bad_input.h"

#include <gtest/gtest.h>

#include <chrono>

#include "tests/chaos/frame_server.h"

namespace tx::chaos {
namespace {

using namespace std::chrono_literals;
using testing::FrameServer;

// Every attack a coordinator target can get (calls and frame-level ones), by index.
std::vector<AttackResult> AllAttacks(const HostPort& at, BadInputTarget::Kind kind,
                                     std::chrono::milliseconds timeout) {
  BadInputTarget target{"c1", kind, at, 1};
  std::mt19937_64 rng(1);
  std::vector<AttackResult> out;
  for (uint64_t i = 0; i < 48; ++i) out.push_back(BadInputSender::Attack(target, i, rng, timeout));
  return out;
}

TEST(BadInput, AServerThatClosesOnBadInputPasses) {
  FrameServer server(FrameServer::Mode::kClose);
  for (const AttackResult& r :
       AllAttacks(server.address(), BadInputTarget::Kind::kCoordinator, 2s)) {
    EXPECT_FALSE(r.violation) << r.attack << ": " << r.outcome;
    EXPECT_EQ("closed", r.outcome) << r.attack;
  }
}

TEST(BadInput, AServerThatAnswersErrorsPasses) {
  FrameServer server(FrameServer::Mode::kDeclaredError);
  bool saw_error = false;
  for (const AttackResult& r :
       AllAttacks(server.address(), BadInputTarget::Kind::kParticipant, 2s)) {
    EXPECT_FALSE(r.violation) << r.attack << ": " << r.outcome;
    saw_error |= r.outcome == "error";
  }
  EXPECT_TRUE(saw_error);
}

TEST(BadInput, ASuccessToAnAbsurdRequestIsAViolation) {
  FrameServer server(FrameServer::Mode::kSuccessValue);
  int accepted = 0;
  for (const AttackResult& r :
       AllAttacks(server.address(), BadInputTarget::Kind::kCoordinator, 2s)) {
    if (r.outcome == "accepted") {
      EXPECT_TRUE(r.violation) << r.attack;
      ++accepted;
    }
  }
  EXPECT_GT(accepted, 0);
}

TEST(BadInput, AServerThatNeitherAnswersNorClosesIsAHang) {
  FrameServer server(FrameServer::Mode::kSilent);
  BadInputTarget target{"c1", BadInputTarget::Kind::kCoordinator, server.address(), 1};
  std::mt19937_64 rng(3);
  AttackResult r = BadInputSender::Attack(target, 0, rng, 300ms);  // index 0: an absurd call
  EXPECT_EQ("hang", r.outcome) << r.attack;
  EXPECT_TRUE(r.violation);
}

TEST(BadInput, AnHttpServerThatClosesPassesAndAClosedPortIsRefused) {
  FrameServer server(FrameServer::Mode::kClose);
  BadInputTarget target{"c1", BadInputTarget::Kind::kMetrics, server.address(), 0};
  std::mt19937_64 rng(4);
  for (uint64_t i = 0; i < 5; ++i) {
    AttackResult r = BadInputSender::Attack(target, i, rng, 2s);
    EXPECT_FALSE(r.violation) << r.attack << ": " << r.outcome;
  }
  BadInputTarget nowhere{"c1", BadInputTarget::Kind::kMetrics, HostPort{"127.0.0.1", 1}, 0};
  EXPECT_EQ("refused", BadInputSender::Attack(nowhere, 0, rng, 1s).outcome);
}

}  // namespace
}  // namespace tx::chaos
