// The node's durable state: byte formats (raft/node/format.h) and Storage (raft/node/storage.h):
// recovery of hard state + WAL + snapshot, the persist order, and crashes simulated with
// FaultInjectionFileSystem::DropUnsyncedData.

#include "raft/node/storage.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "common/fault_injection_fs.h"
#include "raft/node/format.h"
#include "tests/support/temp_dir.h"

namespace tx::raft {
namespace {

using Op = FaultInjectionFileSystem::Op;

std::vector<Entry> MakeEntries(Index first, Index last, Term term, const std::string& tag = "e") {
  std::vector<Entry> out;
  for (Index i = first; i <= last; ++i) {
    out.push_back(Entry{term, i, EntryType::kNormal, tag + std::to_string(i)});
  }
  return out;
}

// --- formats ---------------------------------------------------------------------------------

TEST(RaftNodeFormat, HardStateRoundTripsAndDetectsDamage) {
  HardState hs{9, 2, 77};
  std::string bytes = node_format::EncodeHardState(hs);
  StatusOr<HardState> back = node_format::DecodeHardState(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(hs, *back);
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string damaged = bytes;
    damaged[i] ^= 0x10;
    EXPECT_TRUE(node_format::DecodeHardState(damaged).status().IsCorruption()) << "byte " << i;
  }
  EXPECT_TRUE(node_format::DecodeHardState(bytes.substr(0, 39)).status().IsCorruption());
}

TEST(RaftNodeFormat, SnapshotFileRoundTripsAndRejectsEveryTruncation) {
  SnapshotMetadata meta{120, 4, Configuration{{1, 2, 3}, {5}}};
  std::string data = "snapshot-bytes";
  std::string bytes = node_format::EncodeSnapshotFile(meta, data);
  StatusOr<node_format::SnapshotFile> back = node_format::DecodeSnapshotFile(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(meta, back->metadata);
  EXPECT_EQ(data, back->data);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(node_format::DecodeSnapshotFile(bytes.substr(0, n)).ok()) << "length " << n;
  }
}

TEST(RaftNodeFormat, EntryRecordRoundTripsAndRejectsBadTypes) {
  Entry e{3, 17, EntryType::kConfChange, "cc"};
  std::string payload = node_format::EncodeEntryRecord(e);
  StatusOr<Entry> back = node_format::DecodeEntryRecord(17, node_format::kEntryRecordType, payload);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(e, *back);
  EXPECT_TRUE(node_format::DecodeEntryRecord(17, 2, payload).status().IsCorruption());
  EXPECT_TRUE(
      node_format::DecodeEntryRecord(17, node_format::kEntryRecordType, payload.substr(0, 8))
          .status()
          .IsCorruption());
  payload[8] = 7;
  EXPECT_TRUE(node_format::DecodeEntryRecord(17, node_format::kEntryRecordType, payload)
                  .status()
                  .IsCorruption());
}

TEST(RaftNodeFormat, PayloadsAndEnvelopeRoundTrip) {
  std::string user_bytes = node_format::EncodeUserPayload(std::string("app\0data", 8));
  StatusOr<node_format::Payload> user = node_format::DecodePayload(user_bytes);
  ASSERT_TRUE(user.ok());
  EXPECT_EQ(node_format::PayloadTag::kUser, user->tag);
  EXPECT_EQ(std::string("app\0data", 8), user->user_data);

  std::string peer_bytes = node_format::EncodePeerAddressPayload(4, {"10.0.0.4", 7004});
  StatusOr<node_format::Payload> peer = node_format::DecodePayload(peer_bytes);
  ASSERT_TRUE(peer.ok());
  EXPECT_EQ(4u, peer->peer_id);
  EXPECT_EQ((HostPort{"10.0.0.4", 7004}), peer->peer_address);
  for (size_t n = 0; n < peer_bytes.size(); ++n) {
    EXPECT_FALSE(node_format::DecodePayload(peer_bytes.substr(0, n)).ok()) << "length " << n;
  }
  EXPECT_FALSE(node_format::DecodePayload("\x09zzz").ok());

  node_format::AddressBook book{{1, {"a", 1}}, {2, {"b", 2}}};
  std::string env_bytes = node_format::EncodeEnvelope(book, "app-state");
  StatusOr<node_format::Envelope> env = node_format::DecodeEnvelope(env_bytes);
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(book, env->addresses);
  EXPECT_EQ("app-state", env->app_snapshot);
  EXPECT_FALSE(node_format::DecodeEnvelope("TXSE\xff\xff\xff\xff").ok());
  EXPECT_FALSE(node_format::DecodeEnvelope("nope").ok());
}

TEST(RaftNodeFormat, RandomBytesNeverCrashTheDecoders) {
  std::mt19937_64 rng(42);
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 80, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    if (i % 3 == 0 && junk.size() >= 4) junk.replace(0, 4, "TXSE");
    (void)node_format::DecodeHardState(junk);
    (void)node_format::DecodeSnapshotFile(junk);
    (void)node_format::DecodePayload(junk);
    (void)node_format::DecodeEnvelope(junk);
    (void)node_format::DecodeEntryRecord(1, 1, junk);
  }
}

// --- Storage ---------------------------------------------------------------------------------

class RaftStorageTest : public ::testing::Test {
 protected:
  std::unique_ptr<Storage> Open(InitialState* state, uint64_t segment_bytes = 64 << 20) {
    StorageOptions options;
    options.dir = dir_.path();
    options.fs = &fs_;
    options.wal_segment_bytes = segment_bytes;
    StatusOr<std::unique_ptr<Storage>> s = Storage::Open(options, state);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  // Recovers and checks that the core accepts what was recovered.
  InitialState Reopen(std::unique_ptr<Storage>* storage) {
    storage->reset();
    InitialState state;
    *storage = Open(&state);
    Config c;
    c.id = 1;
    c.voters = {1, 2, 3};
    InitialState copy = state;
    StatusOr<std::unique_ptr<Raft>> raft = Raft::Create(c, std::move(copy));
    EXPECT_TRUE(raft.ok()) << "core refused the recovered state: " << raft.status().ToString();
    return state;
  }

  static Ready WithEntries(std::vector<Entry> entries, std::optional<HardState> hs = {}) {
    Ready rd;
    rd.entries = std::move(entries);
    rd.hard_state = hs;
    return rd;
  }

  testing::TempDir dir_;
  FaultInjectionFileSystem fs_;
};

TEST_F(RaftStorageTest, FreshDirectoryRecoversEmptyState) {
  InitialState state;
  auto storage = Open(&state);
  ASSERT_NE(nullptr, storage);
  EXPECT_EQ(HardState{}, state.hard_state);
  EXPECT_EQ(0u, state.snapshot.index);
  EXPECT_TRUE(state.entries.empty());
}

TEST_F(RaftStorageTest, PersistedEntriesAndHardStateSurviveReopen) {
  InitialState state;
  auto storage = Open(&state);
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(1, 3, 2), HardState{2, 1, 0})).ok());
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(4, 5, 2))).ok());
  state = Reopen(&storage);
  EXPECT_EQ((HardState{2, 1, 0}), state.hard_state);
  std::vector<Entry> want = MakeEntries(1, 5, 2);
  EXPECT_EQ(want, state.entries);
}

TEST_F(RaftStorageTest, TruncateFromReplacesTheSuffix) {
  InitialState state;
  auto storage = Open(&state);
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(1, 5, 1), HardState{1, 0, 0})).ok());
  Ready rd = WithEntries(MakeEntries(3, 4, 2, "new"), HardState{2, 0, 0});
  rd.truncate_from = 3;
  ASSERT_TRUE(storage->Persist(rd).ok());
  state = Reopen(&storage);
  std::vector<Entry> want = MakeEntries(1, 2, 1);
  for (Entry& e : MakeEntries(3, 4, 2, "new")) want.push_back(e);
  EXPECT_EQ(want, state.entries);
  EXPECT_EQ(2u, state.hard_state.term);
}

TEST_F(RaftStorageTest, ReceivedSnapshotDiscardsTheWholeLog) {
  InitialState state;
  auto storage = Open(&state);
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(1, 5, 1), HardState{1, 0, 3})).ok());
  Ready rd;
  rd.snapshot = Snapshot{SnapshotMetadata{10, 3, Configuration{{1, 2, 3}, {}}},
                         std::make_shared<const std::string>("state@10")};
  rd.hard_state = HardState{3, 0, 10};
  rd.entries = MakeEntries(11, 12, 3);  // appended after the snapshot in the same batch
  ASSERT_TRUE(storage->Persist(rd).ok());
  state = Reopen(&storage);
  EXPECT_EQ(10u, state.snapshot.index);
  EXPECT_EQ(3u, state.snapshot.term);
  EXPECT_EQ("state@10", *state.snapshot_data);
  EXPECT_EQ(MakeEntries(11, 12, 3), state.entries);
  EXPECT_EQ(10u, state.hard_state.commit);
}

TEST_F(RaftStorageTest, LocalSnapshotCompactsTheWalPrefix) {
  InitialState state;
  auto storage = Open(&state, /*segment_bytes=*/4096);
  ASSERT_TRUE(storage->Persist(WithEntries({}, HardState{1, 1, 0})).ok());
  for (Index i = 1; i <= 400; i += 20) {
    ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(i, i + 19, 1))).ok());
  }
  size_t segments_before = storage->wal_segment_count();
  ASSERT_TRUE(
      storage->SaveSnapshot(SnapshotMetadata{350, 1, Configuration{{1, 2, 3}, {}}}, "state@350")
          .ok());
  EXPECT_LT(storage->wal_segment_count(), segments_before);
  EXPECT_EQ(351u, storage->wal_first_index());
  // An older snapshot never replaces a newer one.
  ASSERT_TRUE(
      storage->SaveSnapshot(SnapshotMetadata{300, 1, Configuration{{1, 2, 3}, {}}}, "state@300")
          .ok());
  state = Reopen(&storage);
  EXPECT_EQ(350u, state.snapshot.index);
  EXPECT_EQ("state@350", *state.snapshot_data);
  EXPECT_EQ(MakeEntries(351, 400, 1), state.entries);
}

TEST_F(RaftStorageTest, CrashAfterPersistBeforeAcknowledgeLosesNothing) {
  InitialState state;
  auto storage = Open(&state);
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(1, 4, 3), HardState{3, 2, 0})).ok());
  // Persist returned: the Ready loop would now send acknowledgements and call Advance. A power
  // loss at this point must keep everything the acknowledgements promise.
  storage.reset();
  ASSERT_TRUE(fs_.DropUnsyncedData().ok());
  state = Reopen(&storage);
  EXPECT_EQ((HardState{3, 2, 0}), state.hard_state);
  EXPECT_EQ(MakeEntries(1, 4, 3), state.entries);
}

TEST_F(RaftStorageTest, CrashDuringPersistLeavesAConsistentPrefix) {
  InitialState state;
  auto storage = Open(&state);
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(1, 3, 1), HardState{1, 1, 0})).ok());
  // The next batch (new term, new vote, more entries) fails at its fdatasync.
  fs_.FailOperation(Op::kSync, Status::IOError("injected fdatasync failure"));
  Status s = storage->Persist(WithEntries(MakeEntries(4, 6, 2), HardState{2, 2, 0}));
  EXPECT_FALSE(s.ok());
  fs_.ClearFailure(Op::kSync);
  storage.reset();
  ASSERT_TRUE(fs_.DropUnsyncedData().ok());
  state = Reopen(&storage);
  // Nothing of the failed batch is durable, in particular not its vote.
  EXPECT_EQ((HardState{1, 1, 0}), state.hard_state);
  EXPECT_EQ(MakeEntries(1, 3, 1), state.entries);
}

TEST_F(RaftStorageTest, HardStateIsWrittenOnlyWhenTermOrVoteChange) {
  InitialState state;
  auto storage = Open(&state);
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(1, 3, 1), HardState{1, 1, 0})).ok());
  uint64_t syncs = fs_.sync_count();
  Ready commit_only;
  commit_only.hard_state = HardState{1, 1, 3};
  ASSERT_TRUE(storage->Persist(commit_only).ok());
  EXPECT_EQ(syncs, fs_.sync_count()) << "a commit-only change must not cost an fsync";
  Ready vote;
  vote.hard_state = HardState{2, 3, 3};
  ASSERT_TRUE(storage->Persist(vote).ok());
  EXPECT_GT(fs_.sync_count(), syncs);
  state = Reopen(&storage);
  EXPECT_EQ((HardState{2, 3, 3}), state.hard_state);
}

TEST_F(RaftStorageTest, RecordedCommitNeverExceedsTheDurableLog) {
  InitialState state;
  auto storage = Open(&state);
  // A follower may learn a commit index beyond what it holds durably at that moment.
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(1, 2, 1), HardState{1, 0, 9})).ok());
  state = Reopen(&storage);
  EXPECT_LE(state.hard_state.commit, 2u);
}

TEST_F(RaftStorageTest, SnapshotThatReplacedADivergentLogIsRepairedAtRecovery) {
  InitialState state;
  auto storage = Open(&state);
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(1, 8, 1), HardState{1, 0, 2})).ok());
  storage.reset();
  // A crash right after writing a snapshot received from a leader of term 2, before the old
  // log was discarded: the WAL still holds entries 1..8 of term 1, and entry 5 differs.
  ASSERT_TRUE(WriteFileAtomically(&fs_, Storage::SnapshotPath(dir_.path()),
                                  node_format::EncodeSnapshotFile(
                                      SnapshotMetadata{5, 2, Configuration{{1, 2, 3}, {}}}, "s5"))
                  .ok());
  state = Reopen(&storage);
  EXPECT_EQ(5u, state.snapshot.index);
  EXPECT_TRUE(state.entries.empty()) << "entries 6..8 belong to the log the snapshot replaced";
  // And the log continues after the snapshot.
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(6, 6, 2))).ok());
  state = Reopen(&storage);
  EXPECT_EQ(MakeEntries(6, 6, 2), state.entries);
}

TEST_F(RaftStorageTest, SnapshotMatchingTheLogKeepsTheEntriesAfterIt) {
  InitialState state;
  auto storage = Open(&state);
  ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(1, 8, 1), HardState{1, 0, 2})).ok());
  storage.reset();
  ASSERT_TRUE(WriteFileAtomically(&fs_, Storage::SnapshotPath(dir_.path()),
                                  node_format::EncodeSnapshotFile(
                                      SnapshotMetadata{5, 1, Configuration{{1, 2, 3}, {}}}, "s5"))
                  .ok());
  state = Reopen(&storage);
  EXPECT_EQ(MakeEntries(6, 8, 1), state.entries);
}

TEST_F(RaftStorageTest, DamagedHardStateStopsRecoveryNamingTheFile) {
  InitialState state;
  auto storage = Open(&state);
  ASSERT_TRUE(storage->Persist(WithEntries({}, HardState{4, 1, 0})).ok());
  storage.reset();
  std::string path = Storage::HardStatePath(dir_.path());
  StatusOr<std::string> bytes = ReadFileToString(&fs_, path);
  ASSERT_TRUE(bytes.ok());
  (*bytes)[12] ^= 1;
  ASSERT_TRUE(WriteFileAtomically(&fs_, path, *bytes).ok());
  StorageOptions options;
  options.dir = dir_.path();
  options.fs = &fs_;
  StatusOr<std::unique_ptr<Storage>> s = Storage::Open(options, &state);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.status().IsCorruption());
  EXPECT_NE(s.status().message().find("hardstate"), std::string::npos) << s.status().ToString();
}

TEST_F(RaftStorageTest, WalWithoutItsSnapshotIsCorruption) {
  InitialState state;
  auto storage = Open(&state, /*segment_bytes=*/4096);
  for (Index i = 1; i <= 200; i += 20) {
    ASSERT_TRUE(storage->Persist(WithEntries(MakeEntries(i, i + 19, 1), HardState{1, 0, 0})).ok());
  }
  ASSERT_TRUE(storage->SaveSnapshot(SnapshotMetadata{150, 1, Configuration{{1}, {}}}, "s").ok());
  storage.reset();
  ASSERT_TRUE(fs_.RemoveFile(Storage::SnapshotPath(dir_.path())).ok());
  StorageOptions options;
  options.dir = dir_.path();
  options.fs = &fs_;
  StatusOr<std::unique_ptr<Storage>> s = Storage::Open(options, &state);
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.status().IsCorruption()) << s.status().ToString();
}

}  // namespace
}  // namespace tx::raft
