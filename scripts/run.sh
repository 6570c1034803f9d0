#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine: installs dependencies, builds, and runs.
# For now it measures the write-ahead log (wal_bench) on this machine's disk; once the
# coordinator lands it becomes the local-cluster demo.
#   scripts/run.sh [wal_bench options, e.g. --seconds 2 --runs 3]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" release wal_bench
data=$(mktemp -d "${TMPDIR:-/tmp}/wal_bench.XXXXXX")
trap 'rm -rf "$data"' EXIT
"$root/build/release/bin/wal_bench" --dir "$data/wal" "$@"
