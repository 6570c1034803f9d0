// wal_bench: measures the write-ahead log's durable append rate against raw fdatasync.
//
//   wal_bench [--dir DIR] [--seconds S] [--runs N] [--appenders 1,8,64] [--record-bytes 128,4096]
//             [--async-appenders 64] [--simulated-fsync-us US]
//
// Prints, for this machine and DIR's file system:
//   - raw: one thread appending a record to a file and calling fdatasync, over and over (and
//     the same into a preallocated file, which is how the log writes its segments);
//   - wal: 1, 8 and 64 threads each appending one record and waiting until it is durable,
//     for 128-byte and 4 KiB records;
//   - wal async: 64 asynchronous appenders, each with one record in flight, served by one
//     thread as a server's event loop would serve its clients: the log's OnDurable callbacks
//     hand it the appenders whose record became durable, and it appends their next records.
// Each case runs --runs times for --seconds; the median run is reported, with p50/p99 latency
// of one durable append, the number of records each fdatasync covered and the CPU time (user +
// system, all threads) the process spent per durable record. --appenders, --async-appenders and
// --record-bytes narrow the log cases (for A/B runs of one case); the target lines are printed
// only when the cases they compare were run.
//
// --simulated-fsync-us replaces the log's fdatasyncs by a sleep of that length (the writes still
// go to the page cache). Not a measurement of the disk: it takes the other engineers' fsyncs out
// of the picture so that A/B runs of the log's own CPU and scheduling costs can be compared on a
// shared machine, where the disk's latency swings by 10x from one second to the next.

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/check.h"
#include "common/fault_injection_fs.h"
#include "wal/wal.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Result {
  double ops_per_sec = 0;
  double p50_us = 0;
  double p99_us = 0;
  double records_per_sync = 0;
  double cpu_us_per_record = 0;  // user + system CPU of the whole process
};

double Percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(q * (v.size() - 1));
  std::nth_element(v.begin(), v.begin() + k, v.end());
  return v[k];
}

// User + system CPU time of the whole process so far.
double ProcessCpuMicros() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto micros = [](const timeval& tv) { return tv.tv_sec * 1e6 + tv.tv_usec; };
  return micros(usage.ru_utime) + micros(usage.ru_stime);
}

Result Summarize(std::vector<double> latencies_us, double seconds, double syncs, double cpu_us) {
  Result r;
  r.cpu_us_per_record = latencies_us.empty() ? 0 : cpu_us / latencies_us.size();
  r.ops_per_sec = latencies_us.size() / seconds;
  r.records_per_sync = syncs > 0 ? latencies_us.size() / syncs : 1;
  r.p50_us = Percentile(latencies_us, 0.50);
  r.p99_us = Percentile(latencies_us, 0.99);
  return r;
}

// How the file of a raw case is prepared.
enum class RawFile {
  kAppended,      // empty: every write extends the file
  kPreallocated,  // fallocate'd, as the log's segments are: writes land in unwritten extents
  kZeroFilled,    // written with zeros and synced first: writes overwrite written blocks
};
constexpr off_t kRawFileBytes = 64 << 20;

// One thread: write a record, fdatasync, repeat (until `seconds` pass or, for a prepared file,
// its kRawFileBytes are used up).
Result RunRaw(const std::string& dir, size_t record_bytes, double seconds, RawFile kind) {
  std::string path = dir + "/raw.dat";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  bool ok = fd >= 0;
  if (ok && kind == RawFile::kPreallocated) ok = ::fallocate(fd, 0, 0, kRawFileBytes) == 0;
  if (ok && kind == RawFile::kZeroFilled) {
    std::string zeros(1 << 20, '\0');
    for (off_t offset = 0; ok && offset < kRawFileBytes; offset += zeros.size()) {
      ok = ::write(fd, zeros.data(), zeros.size()) == static_cast<ssize_t>(zeros.size());
    }
    ok = ok && ::fsync(fd) == 0 && ::lseek(fd, 0, SEEK_SET) == 0;
  }
  if (!ok) {
    std::perror(path.c_str());
    std::exit(1);
  }
  const off_t limit = kind == RawFile::kAppended ? std::numeric_limits<off_t>::max()
                                                 : kRawFileBytes - static_cast<off_t>(record_bytes);
  off_t written = 0;
  std::string record(record_bytes, 'r');
  std::vector<double> latencies;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  const double cpu_before = ProcessCpuMicros();
  auto start = Clock::now();
  while (Clock::now() < end && written <= limit) {
    written += static_cast<off_t>(record_bytes);
    auto t0 = Clock::now();
    if (::write(fd, record.data(), record.size()) != static_cast<ssize_t>(record.size()) ||
        ::fdatasync(fd) != 0) {
      std::perror("raw write/fdatasync");
      std::exit(1);
    }
    latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu_us = ProcessCpuMicros() - cpu_before;
  ::close(fd);
  std::filesystem::remove(path);
  return Summarize(std::move(latencies), elapsed, static_cast<double>(latencies.size()), cpu_us);
}

// A fresh log in dir/wal over a pass-through file layer that counts fdatasyncs (and replaces
// them by sleeps when simulated_fsync_us > 0). Exits the process if the log cannot be opened.
// wal() is valid until Close() (or destruction), which syncs and closes the log; the directory
// is removed on destruction. Not thread-safe itself: Close() must not race with other calls.
class BenchLog {
 public:
  BenchLog(const std::string& dir, int simulated_fsync_us) : dir_(dir + "/wal") {
    std::filesystem::remove_all(dir_);
    if (simulated_fsync_us > 0) {
      counting_fs_.SetSyncsReachDisk(false);
      counting_fs_.SetSyncHook([simulated_fsync_us] {
        std::this_thread::sleep_for(std::chrono::microseconds(simulated_fsync_us));
      });
    }
    tx::wal::Options options;
    options.fs = &counting_fs_;
    auto wal = tx::wal::Wal::Open(dir_, options);
    if (!wal.ok()) {
      std::fprintf(stderr, "open: %s\n", wal.status().ToString().c_str());
      std::exit(1);
    }
    wal_ = std::move(wal).value();
  }
  ~BenchLog() {
    Close();
    std::filesystem::remove_all(dir_);
  }
  tx::wal::Wal& wal() {
    TX_CHECK(wal_ != nullptr, "BenchLog::wal() after Close()");
    return *wal_;
  }
  uint64_t sync_count() const { return counting_fs_.sync_count(); }
  void Close() { wal_.reset(); }

 private:
  const std::string dir_;
  tx::FaultInjectionFileSystem counting_fs_;
  std::unique_ptr<tx::wal::Wal> wal_;
};

Result RunWal(const std::string& dir, size_t record_bytes, int appenders, double seconds,
              int simulated_fsync_us) {
  BenchLog log(dir, simulated_fsync_us);
  tx::wal::Wal* wal = &log.wal();
  const uint64_t syncs_before = log.sync_count();
  std::mutex mu;
  std::vector<double> latencies;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  const double cpu_before = ProcessCpuMicros();
  const auto start = Clock::now();
  for (int t = 0; t < appenders; ++t) {
    threads.emplace_back([&] {
      std::string record(record_bytes, 'w');
      std::vector<double> mine;
      while (!stop.load(std::memory_order_relaxed)) {
        auto t0 = Clock::now();
        auto index = wal->Append(tx::wal::RecordView{1, record});
        tx::Status s = index.ok() ? wal->WaitDurable(*index) : index.status();
        if (!s.ok()) {
          std::fprintf(stderr, "append: %s\n", s.ToString().c_str());
          std::exit(1);
        }
        mine.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
      std::lock_guard lock(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu_us = ProcessCpuMicros() - cpu_before;
  double syncs = static_cast<double>(log.sync_count() - syncs_before);
  return Summarize(std::move(latencies), elapsed, syncs, cpu_us);
}

// `appenders` asynchronous appenders, each with one record in flight, served by one thread.
// A durable callback (on the log's sync thread) queues its appender for the serving thread,
// which takes what is queued at once and, for each appender in it, appends the next record
// (an Append of its own) and registers a callback of its own. So records are not batched, but
// the completions of a round reach the serving thread together and it replays them in one go.
Result RunWalAsync(const std::string& dir, size_t record_bytes, int appenders, double seconds,
                   int simulated_fsync_us) {
  // Declared before the log, so that they outlive every callback it runs (Close and the
  // destructor run the last ones).
  std::mutex mu;
  std::condition_variable ready_cv;
  std::vector<int> ready;  // guarded by mu: appenders whose record is durable
  bool failed = false;     // guarded by mu: a callback reported an error
  std::atomic<bool> stopping{false};
  const std::string record(record_bytes, 'a');
  std::vector<Clock::time_point> appended_at(appenders);  // serving thread only
  std::vector<double> latencies;                          // serving thread only
  BenchLog log(dir, simulated_fsync_us);

  auto append_next = [&](int appender) {
    appended_at[appender] = Clock::now();
    auto index = log.wal().Append(tx::wal::RecordView{1, record});
    if (!index.ok()) {
      std::fprintf(stderr, "append: %s\n", index.status().ToString().c_str());
      std::exit(1);
    }
    log.wal().OnDurable(*index, [&, appender](tx::Status s) {
      std::lock_guard lock(mu);
      if (!s.ok()) {
        // Close syncs what is in flight first; Cancelled is for what that sync did not cover.
        // Any other error is a failure, during the run or in that last sync.
        if (!stopping.load() || s.code() != tx::Status::Code::kCancelled) {
          std::fprintf(stderr, "durable: %s\n", s.ToString().c_str());
          failed = true;
          ready_cv.notify_one();
        }
        return;
      }
      ready.push_back(appender);
      if (ready.size() == 1) ready_cv.notify_one();
    });
  };

  const uint64_t syncs_before = log.sync_count();
  const double cpu_before = ProcessCpuMicros();
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  for (int a = 0; a < appenders; ++a) append_next(a);
  std::vector<int> batch;
  for (;;) {
    {
      std::unique_lock lock(mu);
      ready_cv.wait_until(lock, end, [&] { return !ready.empty() || failed; });
      if (failed) std::exit(1);
      batch.swap(ready);
    }
    const auto now = Clock::now();
    if (now >= end) break;
    for (int appender : batch) {
      latencies.push_back(
          std::chrono::duration<double, std::micro>(now - appended_at[appender]).count());
      append_next(appender);
    }
    batch.clear();
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu_us = ProcessCpuMicros() - cpu_before;
  const double syncs = static_cast<double>(log.sync_count() - syncs_before);
  stopping = true;
  log.Close();  // syncs the records still in flight and runs their callbacks
  {
    std::lock_guard lock(mu);
    if (failed) std::exit(1);
  }
  return Summarize(std::move(latencies), elapsed, syncs, cpu_us);
}

void Print(const std::string& name, const Result& r) {
  std::printf("%-28s %12.0f %10.1f %10.1f %12.1f %10.2f\n", name.c_str(), r.ops_per_sec, r.p50_us,
              r.p99_us, r.records_per_sync, r.cpu_us_per_record);
  std::fflush(stdout);
}

// Runs a case `runs` times, prints its median run and returns it. A run that made no record
// durable means the log or the disk made no progress: the benchmark stops with exit status 2.
template <typename F>
Result RunCase(const std::string& name, int runs, F run) {
  std::vector<Result> results;
  for (int i = 0; i < runs; ++i) {
    results.push_back(run());
    if (results.back().ops_per_sec <= 0) {
      std::fprintf(stderr, "%s: no record was made durable in a run\n", name.c_str());
      std::exit(2);
    }
  }
  std::sort(results.begin(), results.end(),
            [](const Result& a, const Result& b) { return a.ops_per_sec < b.ops_per_sec; });
  Print(name, results[results.size() / 2]);
  return results[results.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Measures durable appends to the write-ahead log against raw fdatasync."};
  std::string dir = "wal_bench_data";
  double seconds = 2;
  int runs = 3;
  app.add_option("--dir", dir, "directory on the disk to measure (created, then removed)");
  app.add_option("--seconds", seconds, "duration of each run")->check(CLI::PositiveNumber);
  app.add_option("--runs", runs, "runs per case; the median is reported")->check(CLI::Range(1, 99));
  int simulated_fsync_us = 0;
  app.add_option("--simulated-fsync-us", simulated_fsync_us,
                 "replace the log's fdatasyncs by a sleep this long (0: real fdatasync)")
      ->check(CLI::Range(0, 1000000));
  bool extent_cases = false;
  app.add_flag("--extent-cases", extent_cases,
               "also time raw fdatasyncs of 9,472-byte writes (a 64 x 128 B round) into a "
               "preallocated and into a zero-filled file");
  std::vector<int> appender_counts = {1, 8, 64};
  std::vector<size_t> record_sizes = {128, 4096};
  app.add_option("--appenders", appender_counts, "appender thread counts of the log cases")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024));
  app.add_option("--record-bytes", record_sizes, "record sizes of the log cases")
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 20));
  std::vector<int> async_appender_counts = {64};
  app.add_option("--async-appenders", async_appender_counts,
                 "appender counts of the asynchronous log cases (served by one thread; 0: none)")
      ->delimiter(',')
      // One thread serves them all; past a few thousand the case measures that thread.
      ->check(CLI::Range(0, 4096));
  CLI11_PARSE(app, argc, argv);

  std::filesystem::create_directories(dir);
  std::printf("wal_bench: %d run(s) of %.1f s per case in %s; median run shown\n", runs, seconds,
              std::filesystem::absolute(dir).c_str());
  std::printf("%-28s %12s %10s %10s %12s %10s\n", "case", "records/s", "p50 us", "p99 us",
              "recs/fsync", "cpu us/rec");

  Result raw128, raw128_prealloc;
  if (simulated_fsync_us == 0) {
    raw128 = RunCase("raw write+fdatasync 128 B", runs,
                     [&] { return RunRaw(dir, 128, seconds, RawFile::kAppended); });
    if (std::find(record_sizes.begin(), record_sizes.end(), 4096) != record_sizes.end()) {
      RunCase("raw write+fdatasync 4 KiB", runs,
              [&] { return RunRaw(dir, 4096, seconds, RawFile::kAppended); });
    }
    raw128_prealloc = RunCase("raw, preallocated file, 128 B", runs,
                              [&] { return RunRaw(dir, 128, seconds, RawFile::kPreallocated); });
    if (extent_cases) {
      // What one group-commit round of 64 x 128 B writes (64 frames of 148 bytes).
      constexpr size_t kRoundBytes = 64 * 148;
      RunCase("raw, preallocated, 9,472 B", runs,
              [&] { return RunRaw(dir, kRoundBytes, seconds, RawFile::kPreallocated); });
      RunCase("raw, zero-filled, 9,472 B", runs,
              [&] { return RunRaw(dir, kRoundBytes, seconds, RawFile::kZeroFilled); });
    }
  }

  // Per record size, the thread cases and then the asynchronous ones, so that the two kinds of
  // 64 x 128 B run close together in time (the disk's rate drifts over a session).
  std::optional<Result> wal_128_1, wal_128_64, async_128_64;
  for (size_t bytes : record_sizes) {
    for (int appenders : appender_counts) {
      Result r = RunCase(fmt::format("wal {} B x {} appenders", bytes, appenders), runs, [&] {
        return RunWal(dir, bytes, appenders, seconds, simulated_fsync_us);
      });
      if (bytes == 128 && appenders == 1) wal_128_1 = r;
      if (bytes == 128 && appenders == 64) wal_128_64 = r;
    }
    for (int appenders : async_appender_counts) {
      if (appenders == 0) continue;
      Result r = RunCase(fmt::format("wal {} B x {} async", bytes, appenders), runs, [&] {
        return RunWalAsync(dir, bytes, appenders, seconds, simulated_fsync_us);
      });
      if (bytes == 128 && appenders == 64) async_128_64 = r;
    }
  }
  std::filesystem::remove_all(dir);

  std::printf("\n");
  if (simulated_fsync_us > 0) {
    std::printf("fdatasyncs of the log simulated by %d us sleeps: no target applies\n",
                simulated_fsync_us);
    return 0;
  }
  // The throughput target, for either kind of 64 appenders, against both raw baselines.
  auto print_throughput_target = [&](const char* appenders, const std::optional<Result>& r) {
    if (!r) return;
    const double ratio = r->ops_per_sec / raw128.ops_per_sec;
    std::printf("64 %s, 128 B: %.1fx the raw fdatasync rate (target >= 30x): %s\n", appenders,
                ratio, ratio >= 30 ? "met" : "NOT MET");
    std::printf(
        "  against raw fdatasync of a preallocated file, as the log's segments are: %.1fx\n",
        r->ops_per_sec / raw128_prealloc.ops_per_sec);
  };
  print_throughput_target("appender threads", wal_128_64);
  print_throughput_target("async appenders", async_128_64);
  if (wal_128_1) {
    double latency_ratio = wal_128_1->p50_us / raw128.p50_us;
    std::printf("1 appender, 128 B: p50 latency %.2fx raw fdatasync p50 (target <= 1.5x): %s\n",
                latency_ratio, latency_ratio <= 1.5 ? "met" : "NOT MET");
    std::printf("  against raw fdatasync of a preallocated file: %.2fx\n",
                wal_128_1->p50_us / raw128_prealloc.p50_us);
  }
  return 0;
}
