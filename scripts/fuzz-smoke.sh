#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a few seconds each, one after another,
# starting from the checked-in seeds. Exits non-zero on the first finding
# (libFuzzer prints the input and cargo-fuzz the command to reproduce it;
# the input is saved under fuzz/artifacts/<target>/).
#
#   scripts/fuzz-smoke.sh [SECONDS] [TARGET...]   # default: 20 s, all targets
#
# Needs cargo-fuzz (installed here if missing). No nightly toolchain:
# RUSTC_BOOTSTRAP=1 lets stable rustc take the flags cargo-fuzz passes.
# One fuzzer at a time: the machine's cores are shared.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-20}
shift || true
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
mkdir -p target/smoke-logs
for t in "${targets[@]}"; do
    # New finds go to a scratch corpus; the seeds stay as checked in.
    work="target/smoke-corpus/$t"
    log="target/smoke-logs/$t.log"
    mkdir -p "$work"
    echo "== fuzz $t for ${secs}s"
    set +e
    cargo fuzz run "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    grep -E '^(#[0-9]+.*(INITED|DONE)|Done [0-9]+ runs|stat::number_of_executed_units)' "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 60 "$log" | cut -c1-300 >&2
        echo "fuzz target $t failed (full log: fuzz/$log)" >&2
        exit 1
    fi
done
echo "fuzz smoke: ${#targets[@]} targets, ${secs}s each, no finding"
