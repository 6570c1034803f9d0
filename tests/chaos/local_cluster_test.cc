// LocalCluster's summary of a hung process's thread stacks (the clue txchaos leaves in a CI log
// when a process ignores SIGTERM; docs/reliability.md, finding 3).

#include "tools/txchaos/local_cluster.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>

namespace tx::chaos {
namespace {

// What `gdb -p PID -batch -ex 'thread apply all bt'` prints (the first thread copied from a run
// against `sleep`; the second shaped like a blocked participant handler).
constexpr const char* kGdbOutput =
    "[Thread debugging using libthread_db enabled]\n"
    "71\t../sysdeps/unix/sysv/linux/clock_nanosleep.c: No such file or directory.\n"
    "\n"
    "Thread 2 (Thread 0x7f2a1c3fe6c0 (LWP 4242) \"txpart\"):\n"
    "#0  __futex_abstimed_wait_common64 (private=0, cancel=true) at ./nptl/futex-internal.c:57\n"
    "#1  0x00007f2a1d09ed9b in __pthread_cond_wait_common (cond=0x55) at "
    "./nptl/pthread_cond_wait.c:503\n"
    "#2  0x000055d5e1a2b3c4 in tx::participant::Writer::Submit (this=0x55, job=0x7f) at "
    "participant/writer.cc:242\n"
    "#3  0x000055d5e1a2c000 in ?? ()\n"
    "\n"
    "Thread 1 (Thread 0x7fe3a55fa740 (LWP 11332) \"sleep\"):\n"
    "#0  __GI___clock_nanosleep (clock_id=clock_id@entry=0, flags=flags@entry=0, "
    "req=0x7ffdfbe048c0, rem=0x7ffdfbe04900) at ../sysdeps/unix/sysv/linux/clock_nanosleep.c:71\n"
    "#1  0x00007fe3a56d0e53 in __GI___nanosleep (req=<optimized out>, rem=<optimized out>) at "
    "../sysdeps/unix/sysv/linux/nanosleep.c:25\n"
    "[Inferior 1 (process 11332) detached]\n";

TEST(SummarizeThreadStacks, OneLinePerThreadWithFunctionNamesInnermostFirst) {
  std::istringstream in(kGdbOutput);
  EXPECT_EQ(
      "Thread 2 (LWP 4242): __futex_abstimed_wait_common64 < __pthread_cond_wait_common < "
      "tx::participant::Writer::Submit < ??\n"
      "Thread 1 (LWP 11332): __GI___clock_nanosleep < __GI___nanosleep\n",
      SummarizeThreadStacks(in));
}

TEST(SummarizeThreadStacks, CutsDeepStacksAndIgnoresOtherOutput) {
  std::string deep = "Thread 7 (Thread 0x1 (LWP 9) \"t\"):\n";
  for (int i = 0; i < 40; ++i)
    deep += "#" + std::to_string(i) + "  0x1 in f" + std::to_string(i) + " ()\n";
  std::istringstream in("gdb: warning: something\n" + deep);
  const std::string summary = SummarizeThreadStacks(in);
  EXPECT_TRUE(summary.starts_with("Thread 7 (LWP 9): f0 < f1 < ")) << summary;
  EXPECT_TRUE(summary.ends_with(" < f11 < ...\n")) << summary;
  std::istringstream nothing("ptrace: Operation not permitted.\n");
  EXPECT_EQ("", SummarizeThreadStacks(nothing));
}

}  // namespace
}  // namespace tx::chaos
