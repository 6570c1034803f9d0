#!/usr/bin/env bash
# The demo, on a fresh Debian 12 machine: installs dependencies, builds, and shows a coordinator
# failover under load on a local cluster.
#
#   scripts/run.sh [--seconds N] [--keep] [--bin DIR]
#
#   --seconds N   how long the bank example runs (default 20; the leader dies at 40% of it)
#   --keep        keep the temporary directory (data, logs) even when everything went well
#   --bin DIR     use the programs already built in DIR (e.g. build/asan/bin) instead of
#                 installing dependencies and building build/release
#
# What happens, each step a command you could type yourself (docs/operations.md explains them):
#   1. three txcoord replicas and two txpart agents on 127.0.0.1, data and logs in a temporary
#      directory;
#   2. a leader is awaited, and the two participants register themselves with it;
#   3. examples/bank runs concurrent transfers between accounts on the two participants,
#      printing its progress every second;
#   4. partway through, the leader is killed with SIGKILL; the new leader takes over (txctl
#      status);
#   5. the killed replica is restarted and rejoins (txctl wait-replica, txctl status);
#   6. the bank ends with its invariant check (the total of all balances, read through the
#      library), and the script checks the SQLite files directly as well;
#   7. a summary: transactions committed and aborted, failover times.
# Every process is killed on exit, also on Ctrl-C or failure. The write-ahead log benchmark that
# this script used to run is now a command of its own (README.md, "Benchmarks").
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

seconds=20
keep=0
bin=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) seconds=${2:?--seconds needs a value}; shift ;;
    --keep) keep=1 ;;
    --bin) bin=$(cd "${2:?--bin needs a directory}" && pwd); shift ;;
    *) echo "usage: $0 [--seconds N] [--keep] [--bin DIR]" >&2; exit 2 ;;
  esac
  shift
done
if ! [[ $seconds =~ ^[0-9]+$ ]] || (( seconds < 10 )); then
  echo "run.sh: --seconds wants a whole number of at least 10" >&2
  exit 2
fi

if [[ -z $bin ]]; then
  "$root/scripts/install-deps.sh"
  "$root/scripts/build.sh" release txcoord txpart txctl bank
  bin="$root/build/release/bin"
fi
for program in txcoord txpart txctl bank; do
  [[ -x $bin/$program ]] || { echo "run.sh: $bin/$program is missing" >&2; exit 2; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/txdemo.XXXXXX")
declare -A coord_pid=() coord_port=()
part_pids=()
bank_pid=""
tail_pid=""
ok=0

cleanup() {
  trap - EXIT INT TERM
  local pids=("${coord_pid[@]}" "${part_pids[@]}")
  [[ -n $bank_pid ]] && pids+=("$bank_pid")
  [[ -n $tail_pid ]] && pids+=("$tail_pid")
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ $ok -eq 1 && $keep -eq 0 ]]; then
    rm -rf "$work"
  else
    echo "demo: data and logs are in $work"
  fi
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM

if [[ -t 1 ]]; then bold=$'\033[1m'; plain=$'\033[0m'; else bold=""; plain=""; fi
say() { printf '\n%s=== %s%s\n' "$bold" "$*" "$plain"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
fail() { echo "demo: $*" >&2; exit 1; }

# Shows a txctl command as an operator would type it, then runs it.
txctl() {
  echo "\$ txctl $*"
  "$bin/txctl" "$@"
}

# A port on 127.0.0.1 that nothing listens on. Below the kernel's ephemeral range (32768+), so
# no outgoing connection holds it either.
used_ports=" "
free_port() {
  local port
  for _ in $(seq 1 500); do
    port=$(( 20000 + RANDOM % 12000 ))
    [[ $used_ports == *" $port "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      used_ports+="$port "
      echo "$port"
      return 0
    fi
  done
  fail "no free port found"
}

# Waits until file $1 has a line starting with "listening on " (what txcoord and txpart print
# once they serve), while process $2 lives; at most $3 seconds. Prints the address.
await_listening() {
  local file=$1 pid=$2 deadline=$(( $(date +%s) + $3 ))
  while (( $(date +%s) < deadline )); do
    if grep -q '^listening on ' "$file" 2>/dev/null; then
      sed -n 's/^listening on //p' "$file" | head -1
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || fail "$(basename "$file" .out) exited; see ${file%.out}.log"
    sleep 0.1
  done
  fail "$(basename "$file" .out) did not start within $3 s; see ${file%.out}.log"
}

for id in 1 2 3; do coord_port[$id]=$(free_port); done
peers="1=127.0.0.1:${coord_port[1]},2=127.0.0.1:${coord_port[2]},3=127.0.0.1:${coord_port[3]}"
export TX_COORDINATORS="127.0.0.1:${coord_port[1]},127.0.0.1:${coord_port[2]},127.0.0.1:${coord_port[3]}"

start_coordinator() {
  local id=$1
  : > "$work/coord$id.out"
  "$bin/txcoord" --id "$id" --listen "127.0.0.1:${coord_port[$id]}" --peers "$peers" \
    --data-dir "$work/coord$id" >"$work/coord$id.out" 2>>"$work/coord$id.log" &
  coord_pid[$id]=$!
  await_listening "$work/coord$id.out" "${coord_pid[$id]}" 30 >/dev/null
}

say "1. starting three txcoord replicas and two txpart agents (data and logs in $work)"
for id in 1 2 3; do
  start_coordinator "$id"
  echo "txcoord $id: 127.0.0.1:${coord_port[$id]} (pid ${coord_pid[$id]})"
done
declare -A part_address=()
for name in accounts-even accounts-odd; do
  "$bin/txpart" --name "$name" --db "$work/$name.db" --listen 127.0.0.1:0 \
    --coordinators "$TX_COORDINATORS" --init-sql "$root/examples/bank/schema.sql" \
    --resolve-after-ms 2000 >"$work/$name.out" 2>>"$work/$name.log" &
  part_pids+=($!)
  part_address[$name]=$(await_listening "$work/$name.out" $! 30)
  echo "txpart $name: ${part_address[$name]} (pid $!), database $work/$name.db"
done

say "2. waiting for a leader and for the participants to register themselves"
txctl leader --wait 30
# Each txpart registers its name and address with the coordinators as it starts (clients then
# need only the coordinators' addresses); wait, bounded, until the directory lists both.
registered=0
for _ in $(seq 300); do
  listed=$("$bin/txctl" participants 2>/dev/null || true)
  if grep -q "accounts-even *${part_address[accounts-even]}" <<<"$listed" &&
     grep -q "accounts-odd *${part_address[accounts-odd]}" <<<"$listed"; then
    registered=1
    break
  fi
  sleep 0.1
done
(( registered )) || fail "the participants did not register within 30 s (see $work/*.log)"
txctl status

accounts=200
initial_balance=1000
say "3. examples/bank: $accounts accounts (even ids on accounts-even, odd on accounts-odd), 8 threads, ${seconds} s"
"$bin/bank" --coordinators "$TX_COORDINATORS" --accounts "$accounts" \
  --initial-balance "$initial_balance" --threads 8 --seconds "$seconds" --print-check \
  >"$work/bank.out" 2>&1 &
bank_pid=$!
# Shows the bank's output as it comes; ends (having printed everything) once the bank exits.
tail -n +1 -s 0.1 -f --pid="$bank_pid" "$work/bank.out" &
tail_pid=$!

sleep $(( seconds * 2 / 5 ))
kill -0 "$bank_pid" 2>/dev/null || fail "the bank example exited early; see $work/bank.out"
old=$("$bin/txctl" leader --wait 10)
old_id=${old%% *}
say "4. killing the leader, replica $old_id (pid ${coord_pid[$old_id]}), with SIGKILL"
kill_ms=$(now_ms)
kill -9 "${coord_pid[$old_id]}"
kill -USR1 "$bank_pid"  # the bank measures its first commit after this moment
wait "${coord_pid[$old_id]}" 2>/dev/null || true
unset "coord_pid[$old_id]"
new=$("$bin/txctl" leader --wait 30 --not "$old_id") || fail "no new leader was elected"
elected_ms=$(( $(now_ms) - kill_ms ))
echo "new leader: replica ${new%% *} at ${new#* }, seen leading ${elected_ms} ms after the kill"
txctl status

sleep 3
say "5. restarting replica $old_id; it rejoins as a follower and catches up"
restart_ms=$(now_ms)
start_coordinator "$old_id"
txctl wait-replica "$old_id" --timeout 60
rejoin_ms=$(( $(now_ms) - restart_ms ))
txctl status

say "6. waiting for the bank to finish"
bank_rc=0
wait "$bank_pid" || bank_rc=$?
bank_pid=""
wait "$tail_pid" || true
tail_pid=""
txctl txns

# Directly from the SQLite files: once no transaction is prepared at either participant (every
# outcome applied), the balances must add up to what the accounts were created with.
deadline=$(( $(date +%s) + 60 ))
while :; do
  prepared=0
  for name in accounts-even accounts-odd; do
    n=$(sqlite3 -readonly "$work/$name.db" "SELECT count(*) FROM _txpart_prepared")
    prepared=$(( prepared + n ))
  done
  (( prepared == 0 )) && break
  (( $(date +%s) < deadline )) || fail "$prepared transaction(s) still prepared after 60 s"
  sleep 0.2
done
file_total=0
for name in accounts-even accounts-odd; do
  sum=$(sqlite3 -readonly "$work/$name.db" "SELECT COALESCE(SUM(balance), 0) FROM accounts")
  echo "$name.db: SELECT SUM(balance) FROM accounts -> $sum"
  file_total=$(( file_total + sum ))
done
expected=$(( accounts * initial_balance ))

field() { sed -n "s/$1/\\1/p" "$work/bank.out" | head -1; }
committed=$(field '^bank: done in .*: \([0-9]*\) committed.*')
rate=$(field '^bank: done in .* committed (\([0-9]*\)\/s).*')
aborted=$(field '^bank: done in .*, \([0-9]*\) aborted and retried.*')
unknown=$(field '^bank: done in .*, \([0-9]*\) unknown outcomes.*')
first_commit=$(field '^bank: first commit \([0-9]*\) ms after the mark')
longest_pause=$(field '^bank: longest pause between two commits: \([0-9]*\) ms')
resolved=$(field '^bank: client: .*, \([0-9]*\) commits whose answer was lost.*')

say "7. summary"
printf '%-36s %s\n' "transactions committed:" "${committed:-?} (${rate:-?}/s)"
printf '%-36s %s\n' "transactions aborted (and retried):" "${aborted:-?}"
printf '%-36s %s\n' "outcomes unknown to the client:" "${unknown:-?}"
printf '%-36s %s\n' "commits whose answer was lost:" "${resolved:-?}, each resolved by asking the coordinators"
printf '%-36s %s\n' "leader killed:" "replica $old_id; txctl saw replica ${new%% *} lead ${elected_ms} ms later"
printf '%-36s %s\n' "failover seen by the client:" "first commit ${first_commit:-?} ms after the kill (longest pause between commits: ${longest_pause:-?} ms)"
printf '%-36s %s\n' "killed replica restarted:" "caught up ${rejoin_ms} ms after its restart"
printf '%-36s %s\n' "invariant, through the library:" "$(sed -n 's/^bank: check: //p' "$work/bank.out")"
printf '%-36s %s\n' "invariant, in the SQLite files:" "total $file_total, expected $expected"

[[ $bank_rc -eq 0 ]] || fail "the bank example failed (exit status $bank_rc)"
[[ $file_total -eq $expected ]] || fail "the SQLite files hold $file_total, not $expected"
ok=1
echo
echo "demo: done; every transfer was atomic across the two databases, through a leader failover."
