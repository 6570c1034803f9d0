// Named fault-injection points.
//
// Code marks places where a crash or an error is interesting to test:
//
//   TX_FAILPOINT("participant.after_prepare_durable");          // crash / sleep here
//   TX_FAILPOINT_RETURN_IF_ERROR("wal.before_fsync");           // ... or return an error
//   Status s = TX_FAILPOINT_STATUS("raft.send");                // ... or hand it to the caller
//
// and a test, a chaos run or an operator arms them by name:
//
//   TX_FAILPOINTS="participant.after_prepare_durable=crash;wal.before_fsync=error(NoSpace)"
//   ArmFailPoint("raft.send", "sleep(50),prob=0.1");
//
// Unarmed, a site costs one relaxed atomic load (a process-wide count of armed failpoints) and a
// predictable branch, so failpoints may sit on hot paths in release builds.
//
// Spec grammar (one failpoint):
//   spec     := action [ "(" arg ")" ] { "," modifier }
//   action   := "off"                 disarm
//             | "crash"               _exit(kFailPointCrashExitCode) at once: no destructors, no
//                                     atexit, no stdio or spdlog flush, so the files on disk are
//                                     exactly what a kill -9 at that point would leave
//             | "error" [ "(" code ")" ]  the site returns Status <code> (a Status code name
//                                     such as NoSpace or Unavailable; default IOError). At a
//                                     TX_FAILPOINT site, which cannot return, "error" is ignored
//                                     (with one warning) and does not count as fired.
//             | "sleep(" ms ")"       the calling thread sleeps, 0 <= ms <= kMaxFailPointSleepMs
//   modifier := "nth=" N              fire on the Nth hit after arming only (N >= 1)
//             | "skip=" N             let the first N hits pass, then fire
//             | "times=" N            fire at most N times (N >= 1), then disarm
//             | "prob=" P             fire with probability P, 0 < P <= 1 (seeded, see below)
//   "nth" cannot be combined with "skip" or "times". A hit is one evaluation of an armed site.
// List (environment, admin RPC): "name=spec;name=spec". Names: [a-z0-9_.]+ (at most 128 bytes);
// at a site the name must be a string literal.
//
// Probabilities come from a PRNG per failpoint seeded from SetFailPointSeed() (or
// TX_FAILPOINTS_SEED, else random) mixed with its name, so a chaos run is replayable.
//
// Thread-safe: sites may be hit from any thread while others arm and disarm. Arming is not
// synchronised with a concurrent hit: a site being evaluated while its failpoint is re-armed sees
// either the old or the new spec.

#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace tx {

// The exit status of a process ended by a "crash" failpoint: distinct from a signal (128+n) and
// from ordinary failures, so a harness can tell an injected crash from a real one.
inline constexpr int kFailPointCrashExitCode = 86;

// Longer sleeps are surely a typo; a chaos "pause" uses SIGSTOP instead.
inline constexpr uint32_t kMaxFailPointSleepMs = 600'000;

// Bounds the registry when names come from outside (environment, admin RPC): arming a new name
// past this many known failpoints fails with ResourceExhausted.
inline constexpr size_t kMaxFailPoints = 4096;

// Arms `name` with `spec` (grammar above), replacing any earlier spec and restarting its hit and
// fire counts. "off" disarms. InvalidArgument on a bad name or spec. Arming a name that no code
// has hit yet is allowed (the code may not have run yet); FailPointFireCount() tells whether it
// fired.
Status ArmFailPoint(std::string_view name, std::string_view spec);

// Arms every "name=spec" of a ';'-separated list. Validates the whole list first: on error
// nothing is armed.
Status ArmFailPoints(std::string_view list);

// Reads TX_FAILPOINTS_SEED (if set) and arms TX_FAILPOINTS (if set). Programs call this at
// start-up; an error should stop them.
Status ArmFailPointsFromEnv();

// Tests only: the site runs `callback` (on the hitting thread, no lock held) every time it is
// hit, e.g. to block a thread at an exact point or to observe that it was reached. Replaces any
// spec; DisarmFailPoint() removes it.
void ArmFailPointCallback(std::string_view name, std::function<void()> callback);

void DisarmFailPoint(std::string_view name);
void DisarmAllFailPoints();

// Times `name` fired since it was last armed (0 if unknown).
uint64_t FailPointFireCount(std::string_view name);

struct FailPointInfo {
  std::string name;
  std::string spec;    // as armed; "off" once disarmed or exhausted
  uint64_t hits = 0;   // evaluations since last armed
  uint64_t fires = 0;  // of which fired
};
// Every failpoint that was ever armed, by name.
std::vector<FailPointInfo> ListFailPoints();

// Seeds the probability PRNGs of failpoints armed from now on.
void SetFailPointSeed(uint64_t seed);

// Arms a failpoint for the lifetime of a test scope. CHECK-fails on a bad spec.
class ScopedFailPoint {
 public:
  ScopedFailPoint(std::string_view name, std::string_view spec);
  ScopedFailPoint(std::string_view name, std::function<void()> callback);
  ~ScopedFailPoint();
  ScopedFailPoint(const ScopedFailPoint&) = delete;
  ScopedFailPoint& operator=(const ScopedFailPoint&) = delete;

 private:
  std::string name_;
};

namespace failpoint_internal {

// Number of armed failpoints in the process: the fast path's only load.
extern std::atomic<uint32_t> g_armed_count;

struct Site;

// Finds or creates the site for a compile-time name. CHECK-fails on an invalid name.
Site* RegisterSite(const char* name);

// Evaluates an armed-somewhere site: may crash, sleep or run a callback. Returns the injected
// error if an "error" action fired and `can_return_error`; otherwise OK.
Status Evaluate(Site* site, bool can_return_error);

}  // namespace failpoint_internal
}  // namespace tx

// Expression of type tx::Status: OK unless an "error" action fired here.
#define TX_FAILPOINT_STATUS(name) TX_FAILPOINT_EVAL_INTERNAL_(name, true)

// Statement: crash, sleep or run a callback here when armed; "error" specs are ignored.
#define TX_FAILPOINT(name) ((void)TX_FAILPOINT_EVAL_INTERNAL_(name, false))

// Statement: returns the injected Status from the enclosing function (which returns Status or
// StatusOr<T>) when an "error" action fires; crashes or sleeps like TX_FAILPOINT.
#define TX_FAILPOINT_RETURN_IF_ERROR(name)                                       \
  do {                                                                           \
    ::tx::Status tx_failpoint_status_ = TX_FAILPOINT_EVAL_INTERNAL_(name, true); \
    if (!tx_failpoint_status_.ok()) [[unlikely]]                                 \
      return tx_failpoint_status_;                                               \
  } while (false)

// The fast path is one relaxed load. The slow path is a cold, never-inlined lambda, so that the
// function holding the site pays nothing else (no frame set-up, no code in its hot body); the
// lambda also gives each site its own function-local static, so the name is looked up once per
// site, and only after some failpoint has been armed.
#define TX_FAILPOINT_EVAL_INTERNAL_(name, can_return_error)                                 \
  (::tx::failpoint_internal::g_armed_count.load(std::memory_order_relaxed) == 0             \
       ? ::tx::Status()                                                                     \
       : []() __attribute__((noinline, cold))->::tx::Status {                               \
           static ::tx::failpoint_internal::Site* const tx_failpoint_site_ =                \
               ::tx::failpoint_internal::RegisterSite("" name);                             \
           return ::tx::failpoint_internal::Evaluate(tx_failpoint_site_, can_return_error); \
         }())
