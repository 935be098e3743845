#!/usr/bin/env bash
# What a want-have flood costs a seeder, on loopback, in one run: client C (a peerix daemon) fetches
# an N MiB NAR from seeder S over /peerix/blocks, alone and while a third peer floods S with
# bitswap want-haves for S's own chunks (1 024 per message, as fast as S takes them), rounds
# alternating. Prints C's MB/s in each condition (medians), S's CPU-seconds and chunk bytes read
# per transfer, the wants the flood sent and S answered, and the ratio flooded/alone (goal ≥ 0.80).
# Every daemon: --bootstrap none, --no-mdns (lan mode on 127.0.0.1), --upstream none.
#
#   benches/flood.sh [--mb N] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."
MB=128; ROUNDS=3
while (($#)); do
  case "$1" in
    --mb) MB=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "usage: $0 [--mb N] [--rounds R]" >&2; exit 2 ;;
  esac
done
. benches/common.sh
FLOOD_MB=$MB FLOOD_ROUNDS=$ROUNDS cargo test --release --locked --quiet --test bitswap_budgets -- \
  --ignored --exact flood_bench --nocapture 2>&1 | grep -v '^$' | grep -v '^running\|^test result\|^test flood_bench'
