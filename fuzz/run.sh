#!/usr/bin/env bash
# Fuzzes every parser of outside bytes (the targets in fuzz/fuzz_targets, one per function of
# peerix::fuzzing) with libFuzzer for SECONDS each (default 600), then prints a table: executions,
# executions per second, coverage (edges, features), corpus size, and crashes/OOMs/timeouts.
# Each run: -rss_limit_mb=512, -timeout=10, seeded from fuzz/seeds/<target> (real NARs, narinfos,
# keys and messages, rewritten first by `cargo test --test fuzz_regressions -- --ignored`).
# A crash is copied to fuzz/regressions/<target>/, which `tests/fuzz_regressions.rs` replays on
# stable in CI once the bug is fixed. Needs the nightly toolchain; installs cargo-fuzz if missing.
# Not part of CI.
#
#   fuzz/run.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-600}; shift || true
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-/var/tmp/peerix-fuzz-target}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
(cd .. && CARGO_TARGET_DIR=${PEERIX_TARGET_DIR:-/var/tmp/peerix-target} \
  cargo test -q --test fuzz_regressions -- --ignored write_seeds >/dev/null)
TARGETS=("$@")
((${#TARGETS[@]})) || mapfile -t TARGETS < <(cargo +nightly fuzz list)
cargo +nightly fuzz build -O "${TARGETS[@]:0:1}" >/dev/null 2>&1 || true
mkdir -p logs
printf '%-16s %8s %12s %10s %8s %8s %8s %8s\n' target seconds execs execs/s edges features corpus crashes
status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  rc=0
  cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$SECS" -rss_limit_mb=512 -timeout=10 -print_final_stats=1 >"logs/$t.log" 2>&1 || rc=$?
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "logs/$t.log" | tail -1)
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "logs/$t.log" | tail -1)
  last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1)
  edges=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last"); feats=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corpus=$(find "corpus/$t" -type f | wc -l)
  crashes=$(find "artifacts/$t" -type f | wc -l)
  if ((crashes)); then
    mkdir -p "regressions/$t"; cp "artifacts/$t"/* "regressions/$t/"; status=1
  elif ((rc)); then
    crashes="rc=$rc"; status=1
  fi
  printf '%-16s %8s %12s %10s %8s %8s %8s %8s\n' "$t" "$SECS" "${execs:-?}" "${rate:-?}" "${edges:-?}" "${feats:-?}" "$corpus" "$crashes"
done
((status == 0)) || echo "crashes copied to fuzz/regressions/: fix them, then tests/fuzz_regressions.rs replays them" >&2
exit $status
