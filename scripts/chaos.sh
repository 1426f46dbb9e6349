#!/usr/bin/env bash
# `make chaos`: the fault matrix (docs/reliability.md) on the simulated fleet — every fault
# CHAOS_RUNS times, the moments of run N of fault F drawn from CHAOS_SEED, F and N — then a
# table of faults × runs × outcomes from the tests' `CHAOS RESULT` lines. A seed printed
# here (or in a failure) replays the same moments:
#   BATON_CHAOS_SEED=<seed> BATON_CHAOS_FAULTS=<fault> BATON_CHAOS_RUNS=<run + 1> \
#       cargo test -p baton-tests --test orchestrator chaos_ -- --nocapture
set -euo pipefail

cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-target}
seed=${CHAOS_SEED:-}
if [ -z "$seed" ]; then
    seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
fi
runs=${CHAOS_RUNS:-20}
log_dir="$target/chaos"
mkdir -p "$log_dir"
log="$log_dir/chaos-$seed.log"

echo "chaos: seed $seed, $runs run(s) per fault${CHAOS_FAULTS:+, faults $CHAOS_FAULTS}; log: $log"
status=0
BATON_CHAOS_SEED=$seed BATON_CHAOS_RUNS=$runs BATON_CHAOS_FAULTS=${CHAOS_FAULTS:-} \
    "$cargo" test -p baton-tests --test orchestrator --locked chaos_ -- --test-threads 2 --nocapture \
    >"$log" 2>&1 || status=$?

echo
echo "chaos: seed $seed"
printf '%-6s %-36s %6s %6s  %s\n' fault name passed failed "durations (s)"
grep -a '^CHAOS RESULT' "$log" | python3 -c '
import re, sys
rows = {}
for line in sys.stdin:
    m = re.match(r"CHAOS RESULT fault (\d+) \((.*)\) run (\d+): (passed|FAILED) in ([0-9.]+)(ms|s)", line)
    if not m:
        continue
    fault, name, _, outcome, took, unit = m.groups()
    took = float(took) / (1000 if unit == "ms" else 1)
    row = rows.setdefault(int(fault), [name, 0, 0, []])
    row[1 if outcome == "passed" else 2] += 1
    row[3].append(round(took))
for fault in sorted(rows):
    name, passed, failed, took = rows[fault]
    print(f"{fault:<6} {name:<36} {passed:>6} {failed:>6}  {took}")
'
if [ "$status" -ne 0 ]; then
    echo
    grep -a -A3 "^CHAOS RESULT.*FAILED\|chaos (BATON_CHAOS_SEED" "$log" | head -60 || true
    echo "chaos: FAILED (seed $seed; the log: $log)" >&2
    exit 1
fi
echo "chaos: every run passed (seed $seed)"
