#!/usr/bin/env bash
# What watching the daemon costs a transfer, in one run: curl downloads a NAR of N GiB (default 1)
# from peerix, alone and while another client scrapes /metrics and /api/status 100 times each
# (back to back, as fast as they answer) during the download; rounds alternate. Prints the median
# MB/s of each condition, the ratio (goal ≥ 0.95), and the scrapes' own latency.
# The daemon: --no-p2p, --upstream none, 127.0.0.1 only.
#
#   benches/scrape.sh [--gib N] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=1; ROUNDS=5
while (($#)); do
  case "$1" in
    --gib) GIB=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "usage: $0 [--gib N] [--rounds R]" >&2; exit 2 ;;
  esac
done
. benches/common.sh

B=$(mktemp -d /var/tmp/peerix-scrape.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$B"; }
trap cleanup EXIT
export XDG_CACHE_HOME=$B/xdg
STORE=$B/store
head -c "$((GIB * 1024))M" /dev/urandom > "$B/big.bin"
BIG=$(nix-store --store "$STORE" --add "$B/big.bin"); rm "$B/big.bin"
# 200 small paths, so /api/status has tables to count.
for i in $(seq 1 200); do mkdir -p "$B/src/s-$i"; echo "$i" > "$B/src/s-$i/f"; done
nix-store --store "$STORE" --add "$B"/src/s-* >/dev/null
"$PEERIX" publish --state-dir "$B/state" --store-root "$STORE" --upstream none --serve-private >/dev/null 2>&1
RUST_LOG=info "$PEERIX" serve --listen 127.0.0.1:0 --state-dir "$B/state" --store-root "$STORE" \
  --upstream none --no-p2p --serve-private > /dev/null 2> "$B/peerix.log" &
PIDS+=($!)
U=""
for _ in $(seq 100); do
  U=$(grep -o 'listening on http://[0-9.:]*' "$B/peerix.log" 2>/dev/null | sed 's/listening on //' || true)
  [ -n "$U" ] && break; sleep 0.1
done
[ -n "$U" ] || { cat "$B/peerix.log" >&2; exit 1; }
h=$(basename "$BIG" | cut -c1-32)
NAR="$U/$(curl -fsS "$U/$h.narinfo" | sed -n 's/^URL: //p')"

mbs() { curl -fsS -o /dev/null -w '%{size_download} %{time_total}\n' "$NAR" | awk '{printf "%.0f", $1 / $2 / 1e6}'; }
scrape() { # 100 of each, back to back; prints the mean latency in ms
  local t0 t1
  t0=$(date +%s.%N)
  for _ in $(seq 100); do curl -fsS -o /dev/null "$U/metrics"; curl -fsS -o /dev/null "$U/api/status"; done
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{printf "%.2f", ($2 - $1) / 200 * 1000}'
}
ALONE=(); SCRAPED=(); LAT=()
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS ..." >&2
  for c in alone scraped; do
    ((r % 2)) || c=$([ $c = alone ] && echo scraped || echo alone)
    if [ "$c" = alone ]; then
      ALONE+=("$(mbs)")
    else
      scrape > "$B/lat" &
      s=$!
      SCRAPED+=("$(mbs)")
      wait "$s"; LAT+=("$(cat "$B/lat")")
    fi
  done
done
med() { printf '%s\n' "$@" | median; }
a=$(med "${ALONE[@]}"); s=$(med "${SCRAPED[@]}")
printf '\n%s GiB NAR from peerix with curl, median of %s rounds each (alternating)\n' "$GIB" "$ROUNDS"
printf '%-40s %10s\n' "condition" "MB/s"
printf '%-40s %10s\n' "alone" "$a" "while scraping /metrics + /api/status" "$s"
awk -v a="$a" -v s="$s" 'BEGIN {printf "ratio scraped/alone: %.3f (goal >= 0.95)\n", s / a}'
printf 'scrape latency, mean per request: %s ms (median over rounds)\n' "$(med "${LAT[@]}")"
