#!/usr/bin/env bash
# Configures and builds one build tree. Used by run.sh and test.sh; handy on its own too.
#   scripts/build.sh release [targets...]   Release build in build/release
#   scripts/build.sh asan [targets...]      ASan+UBSan build in build/asan
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kind=${1:?usage: build.sh release|asan [targets...]}
shift
case $kind in
  release) flags=(-DCMAKE_BUILD_TYPE=Release -DTX_SANITIZE=OFF) ;;
  # -O1 with line tables only: compiles markedly faster than -O2 -g and still gives the
  # sanitizers' reports file:line stack traces. Benchmarks are not built.
  asan) flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1"
               -DTX_SANITIZE=ON -DTX_BUILD_BENCHMARKS=OFF) ;;
  *) echo "build.sh: unknown build kind '$kind' (want release or asan)" >&2; exit 2 ;;
esac
dir="$root/build/$kind"
cmake -S "$root" -B "$dir" "${flags[@]}" >/dev/null
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$dir" -j "${TX_BUILD_JOBS:-2}" "${targets[@]}"
