// Crash test with a real process: a child appends from several threads and reports each
// durable index; the parent kills it with SIGKILL at random moments, reopens the log and checks
// that every index reported durable is present and intact. The log carries over from round to
// round, so later rounds also recover logs that earlier kills left behind.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "tests/integration/wal_crash_payload.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"
#include "wal/wal.h"

namespace tx::wal {
namespace {

using std::chrono::milliseconds;

TEST(WalCrash, EveryRecordReportedDurableSurvivesSigkill) {
  constexpr int kRounds = 50;
  tx::testing::TempDir dir;
  const std::string child = tx::testing::BinaryDir() + "/wal_crash_child";
  std::mt19937 rng(20261127);
  uint64_t compacted_below = 0;  // the child announced DropPrefix(compacted_below)
  uint64_t max_reported = 0;
  uint64_t total_reported = 0;
  const auto test_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);

  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_LT(std::chrono::steady_clock::now(), test_deadline) << "crash test ran out of time";
    auto proc = tx::testing::Subprocess::Start({child, dir.path(), std::to_string(round + 1)});
    ASSERT_TRUE(proc.ok()) << proc.status().ToString();

    // Let it run a random while (measured from its first durable record), then kill it.
    std::set<uint64_t> reported;
    auto first = proc->ReadLine(milliseconds(20000));
    ASSERT_TRUE(first.has_value()) << "child produced no durable record";
    const auto kill_at = std::chrono::steady_clock::now() + milliseconds(rng() % 60);
    std::vector<std::string> lines = {*first};
    while (std::chrono::steady_clock::now() < kill_at) {
      auto line = proc->ReadLine(milliseconds(1));
      if (line) lines.push_back(*line);
    }
    proc->Signal(SIGKILL);
    // Lines written before the kill were reported durable too: drain the pipe to EOF.
    while (auto line = proc->ReadLine(milliseconds(5000))) lines.push_back(*line);
    ASSERT_FALSE(proc->timed_out());
    proc->Kill();

    for (const std::string& line : lines) {
      if (line.rfind("drop ", 0) == 0) {
        compacted_below = std::max<uint64_t>(compacted_below, std::stoull(line.substr(5)));
      } else {
        reported.insert(std::stoull(line));
      }
    }
    total_reported += reported.size();

    auto wal = Wal::Open(dir.path(), Options());
    ASSERT_TRUE(wal.ok()) << wal.status().ToString();
    for (uint64_t index : reported) {
      max_reported = std::max(max_reported, index);
      if (index < compacted_below) continue;
      ASSERT_GE(index, (*wal)->first_index()) << "durable record " << index << " was lost";
      ASSERT_LE(index, (*wal)->last_index()) << "durable record " << index << " was lost";
    }
    ASSERT_GE((*wal)->last_index(), max_reported) << "the log lost its durable tail";
    // Every record in the log, reported or not, must be intact.
    auto records = (*wal)->Read((*wal)->first_index(), (*wal)->last_index() + 1);
    ASSERT_TRUE(records.ok()) << records.status().ToString();
    for (const Record& r : *records) {
      ASSERT_TRUE(tx::testing::CrashPayloadIsIntact(r.payload)) << "record " << r.index;
    }
  }
  EXPECT_GT(total_reported, uint64_t{kRounds});
  std::printf("%d rounds, %llu records reported durable, last index %llu\n", kRounds,
              static_cast<unsigned long long>(total_reported),
              static_cast<unsigned long long>(max_reported));
}

}  // namespace
}  // namespace tx::wal
