#!/usr/bin/env bash
# The test run of `make test` after its builds: `cargo test --workspace` (unit tests, the
# etcd/registry contract tests, the simulated fleets, the demo's end-to-end test) and,
# beside it, the VM tier. The VM tier spends ~25 minutes mostly waiting on QEMU under TCG
# on one core, so running it alongside the rest keeps `make test` about as long as the
# longer of the two instead of their sum. Its output is kept in a log and printed at the
# end; the run fails if either part fails.
set -euo pipefail

cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-target}
logs="$target/test-logs"
mkdir -p "$logs"

# Build every test binary first: one cargo holds the target folder for its whole run,
# tests included, so the VM tier's binary is run directly, from the tests crate's folder
# as cargo would.
"$cargo" test --workspace --locked --no-run
vm_bin=$("$cargo" test --workspace --test vm --locked --no-run --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "vm" and msg.get("executable"):
        print(msg["executable"])
')
if [ -z "$vm_bin" ]; then
    echo "run-tests: cargo did not name the VM tier's test binary" >&2
    exit 1
fi

vm_log="$logs/vm.log"
echo "run-tests: VM tier started beside the other tests ($vm_bin); its log: $vm_log"
(cd tests && exec "$vm_bin") >"$vm_log" 2>&1 &
vm_pid=$!
# On an interrupted run, stop the VM tier too.
trap 'kill "$vm_pid" 2>/dev/null || true' INT TERM

rest=0
"$cargo" test --workspace --locked || rest=$?
echo "run-tests: the other tests are done (exit $rest); waiting for the VM tier"
vm=0
wait "$vm_pid" || vm=$?

echo "=== VM tier (tests/tests/vm), exit $vm:"
cat "$vm_log"
if [ "$rest" -ne 0 ] || [ "$vm" -ne 0 ]; then
    echo "run-tests: FAILED (cargo test --workspace: exit $rest; VM tier: exit $vm)" >&2
    exit 1
fi
