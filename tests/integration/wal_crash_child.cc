// Child process for wal_crash_test: appends records from several threads for ever and prints
// "<index>" on stdout once a record is durable, so that the parent knows what must survive a
// SIGKILL. Before compacting it prints "drop <index>" so the parent stops expecting records
// below that index.
//
// Usage: wal_crash_child DIR SEED
// Each payload starts with an 8-byte seed from which the rest is generated: any record can be
// checked for integrity without knowing which thread wrote it.

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/wal_crash_payload.h"
#include "wal/wal.h"

namespace {

std::mutex stdout_mu;

void Emit(const std::string& line) {
  std::lock_guard lock(stdout_mu);
  std::string text = line + "\n";
  // One write per line: the parent may read a line only if the child wrote it whole.
  if (::write(STDOUT_FILENO, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    std::_Exit(3);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR SEED\n", argv[0]);
    return 2;
  }
  tx::wal::Options options;
  options.segment_bytes = 16 << 10;  // small, so that kills also land during rotations
  auto wal = tx::wal::Wal::Open(argv[1], options);
  if (!wal.ok()) {
    std::fprintf(stderr, "open: %s\n", wal.status().ToString().c_str());
    return 1;
  }
  const uint64_t seed = std::strtoull(argv[2], nullptr, 10);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(seed * 131 + t);
      for (uint64_t n = 0;; ++n) {
        std::string payload = tx::testing::MakeCrashPayload(rng(), rng() % 300);
        auto index = (*wal)->Append(tx::wal::RecordView{1, payload});
        if (!index.ok()) {
          std::fprintf(stderr, "append: %s\n", index.status().ToString().c_str());
          std::_Exit(1);
        }
        tx::Status s = (*wal)->WaitDurable(*index);
        if (!s.ok()) {
          std::fprintf(stderr, "wait: %s\n", s.ToString().c_str());
          std::_Exit(1);
        }
        Emit(std::to_string(*index));
        // Thread 0 compacts now and then, so that kills also land inside DropPrefix.
        if (t == 0 && n % 200 == 199 && *index > 500) {
          uint64_t before = *index - 300;
          Emit("drop " + std::to_string(before));
          s = (*wal)->DropPrefix(before);
          if (!s.ok()) {
            std::fprintf(stderr, "drop: %s\n", s.ToString().c_str());
            std::_Exit(1);
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
}
