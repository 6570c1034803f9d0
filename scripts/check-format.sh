#!/usr/bin/env bash
# Fails (exit 1) if any tracked C++ file differs from what clang-format (.clang-format) makes of it.
# With --fix, reformats them in place instead.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
mapfile -t files < <(git ls-files '*.h' '*.cc' '*.cpp' '*.hpp')
[[ ${#files[@]} -gt 0 ]] || exit 0
if [[ ${1:-} == --fix ]]; then
  clang-format -i "${files[@]}"
  exit 0
fi
if ! clang-format --dry-run --Werror "${files[@]}"; then
  echo "check-format: files above are not formatted; run scripts/check-format.sh --fix" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files formatted"
