#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine: installs dependencies, then builds and
# tests twice, once as a Release build and once with AddressSanitizer + UndefinedBehaviorSanitizer.
#
#   scripts/test.sh                  both builds
#   scripts/test.sh --release-only   only the Release build (quicker, for development)
#   scripts/test.sh --sanitize-only  only the sanitizer build
# Extra arguments after -- go to ctest, e.g. scripts/test.sh --release-only -- -R Wal
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

builds=(release asan)
ctest_args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --release-only) builds=(release) ;;
    --sanitize-only) builds=(asan) ;;
    --) shift; ctest_args=("$@"); break ;;
    *) echo "usage: $0 [--release-only|--sanitize-only] [-- ctest-args...]" >&2; exit 2 ;;
  esac
  shift
done

"$root/scripts/install-deps.sh"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for b in "${builds[@]}"; do
  echo "=== [$b] build"
  start=$(date +%s)
  "$root/scripts/build.sh" "$b"
  echo "=== [$b] built in $(( $(date +%s) - start )) s; testing"
  start=$(date +%s)
  if ! (cd "$root/build/$b" && ctest --output-on-failure -j "${TX_BUILD_JOBS:-2}" "${ctest_args[@]}"); then
    status=1
  fi
  echo "=== [$b] tests took $(( $(date +%s) - start )) s"
done
exit $status
