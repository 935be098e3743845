#!/usr/bin/env bash
# Block exchange speed on loopback, in one run: a NAR of N GiB (default 1) from daemon A to a fresh
# daemon B by bitswap (`peerix fetch`), against (a) plain HTTP of the same NAR from A (curl of
# /nar/…) and (b) a Helia node fetching the same DAG from another Helia node. Median of R rounds;
# MB/s, ratios, the peak RSS of each daemon, and the ceilings this machine sets (disk, crypto).
# Every daemon: --bootstrap none, --no-mdns, --upstream none, 127.0.0.1 only.
#
#   benches/p2p.sh [--gib N] [--rounds R]
set -euo pipefail
cd "$(dirname "$0")/.."
GIB=1; ROUNDS=3
while (($#)); do
  case "$1" in
    --gib) GIB=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    *) echo "usage: $0 [--gib N] [--rounds R]" >&2; exit 2 ;;
  esac
done
. benches/common.sh
need openssl:openssl
[ -d tests/helia/node_modules ] || (cd tests/helia && npm ci --no-audit --no-fund --loglevel=error)
B=$(mktemp -d /var/tmp/peerix-p2p-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; chmod -R u+w "$B" 2>/dev/null; rm -rf "$B"; }
trap cleanup EXIT
export XDG_CACHE_HOME=$B/xdg
mbs() { echo "$1 $2 $3" | awk '{printf "%.0f", $1 / ($3 - $2) / 1e6}'; }
# Starts a daemon in the background; sets URL and P2P (its first p2p address) for it.
start() {
  local name=$1; shift
  RUST_LOG=info "$PEERIX" serve --listen 127.0.0.1:0 --state-dir "$B/$name" --upstream none --no-mdns \
    --bootstrap none --p2p-listen /ip4/127.0.0.1/tcp/0 --mode lan "$@" 2>"$B/$name.log" &
  PIDS+=($!); LAST=$!
  for _ in $(seq 300); do
    URL=$(sed -n 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$B/$name.log" | head -1)
    P2P=$(sed -n 's/.*p2p listening on \(\/ip4\/[^ ]*\).*/\1/p' "$B/$name.log" | head -1)
    [ -n "$URL" ] && [ -n "$P2P" ] && return 0
    sleep 0.1
  done
  cat "$B/$name.log" >&2; return 1
}
hwm() { awk '/VmHWM/ {printf "%d", $2 / 1024}' "/proc/$1/status"; }

echo "building a ${GIB} GiB NAR in $B ..." >&2
head -c "${GIB}G" /dev/urandom > "$B/payload.bin"
P=$(nix-store --store "$B/store" --add "$B/payload.bin"); rm "$B/payload.bin"
"$PEERIX" publish --state-dir "$B/a" --store-root "$B/store" --upstream none --serve-private >/dev/null 2>&1
start a --store-root "$B/store" --serve-private; A_URL=$URL; A_P2P=$P2P; A_PID=$LAST
H=$(basename "$P" | cut -c1-32)
ROOT=$(curl -fsS "$A_URL/api/paths/$H" | python3 -c 'import json,sys; print(json.load(sys.stdin)["index"]["root_cid"])')
NAR_URL="$A_URL/$(curl -fsS "$A_URL/$H.narinfo" | sed -n 's/^URL: //p')"
SIZE=$(curl -fsS "$A_URL/$H.narinfo" | sed -n 's/^NarSize: //p')

# Helia peer holding the same DAG (imported from A's CAR).
coproc HELIA { cd tests/helia && exec node --import ./polyfill.mjs serve-car.mjs "$A_URL/ipfs/$ROOT?format=car"; }
PIDS+=($HELIA_PID)
read -r HELLO <&"${HELIA[0]}"
HELIA_ADDR=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["addr"])' "$HELLO")

HTTP=(); BITSWAP=(); HH=(); B_HWM=0
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS ..." >&2
  t0=$(now); curl -fsS -o /dev/null "$NAR_URL"; t1=$(now); HTTP+=("$(mbs "$SIZE" "$t0" "$t1")")
  start "b$r" --store-root "$B/empty-$r" --peer "$A_P2P"
  B_URL=$URL; B_PID=$LAST
  for _ in $(seq 100); do grep -q 'peer connected' "$B/b$r.log" && break; sleep 0.1; done
  t0=$(now); "$PEERIX" fetch "$ROOT" --url "$B_URL" -o /dev/null 2>/dev/null; t1=$(now)
  BITSWAP+=("$(mbs "$SIZE" "$t0" "$t1")")
  B_HWM=$(( $(hwm "$B_PID") > B_HWM ? $(hwm "$B_PID") : B_HWM )); kill "$B_PID"; wait "$B_PID" 2>/dev/null || true
  rm -rf "$B/b$r" "$B/empty-$r"
  OUT=$(cd tests/helia && node --import ./polyfill.mjs fetch.mjs "$HELIA_ADDR" "$ROOT" /dev/null)
  HH+=("$(python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(round(v["bytes"]/v["ms"]/1e3))' "$OUT")")
done
A_HWM=$(hwm "$A_PID")
# What this machine allows, measured now. Storing: B keeps every block in SQLite, whose WAL writes
# each byte twice (log, then checkpoint), so synced disk writes / 2 bound a stored fetch. CPU: a
# verified transfer costs, per byte, sha2-256 on A (chunks are checked before they leave) and on B,
# plus ChaCha20-Poly1305 (noise) on both ends; with every core on it and nothing else, that bounds
# any libp2p transfer here.
DISK=$(dd if=/dev/zero of="$B/dd.bin" bs=1M count=512 conv=fdatasync 2>&1 | awk '/copied/ {print $(NF-1) * ($NF == "GB/s" ? 1000 : 1)}'); rm -f "$B/dd.bin"
speed() { openssl speed -elapsed -seconds 2 -bytes 16384 -evp "$1" 2>/dev/null | tail -1 | awk '{sub("k", "", $NF); print $NF / 1000}'; }
AEAD=$(speed chacha20-poly1305); SHA=$(speed sha256)
CPU_CEIL=$(echo "$AEAD $SHA $(nproc)" | awk '{printf "%.0f", $3 / (2 / $1 + 2 / $2)}')
STORE_CEIL=$(echo "$DISK" | awk '{printf "%.0f", $1 / 2}')
H_MBS=$(printf '%s\n' "${HTTP[@]}" | median); B_MBS=$(printf '%s\n' "${BITSWAP[@]}" | median); HH_MBS=$(printf '%s\n' "${HH[@]}" | median)

printf '\nblock exchange over loopback, a %s MB NAR (%s), median of %s rounds\n' "$((SIZE / 1000000))" "$ROOT" "$ROUNDS"
printf '%-52s %10s %10s\n' "measure" "MB/s" "goal"
printf '%-52s %10s\n' "plain HTTP from A (curl /nar/…)" "$H_MBS"
printf '%-52s %10s\n' "Helia -> Helia bitswap (same DAG)" "$HH_MBS"
printf '%-52s %10s\n' "peerix A -> peerix B bitswap (peerix fetch)" "$B_MBS"
printf '%-52s %9.2fx %10s\n' "ratio bitswap / plain HTTP" "$(echo "$B_MBS $H_MBS" | awk '{print $1/$2}')" ">=0.5x"
printf '%-52s %9.2fx %10s\n' "ratio bitswap / Helia<->Helia" "$(echo "$B_MBS $HH_MBS" | awk '{print $1/$2}')" ">=2x"
printf '%-52s %7s MiB %10s\n' "peak RSS daemon A (serving)" "$A_HWM" "<200MiB"
printf '%-52s %7s MiB %10s\n' "peak RSS daemon B (fetching, max over rounds)" "$B_HWM" "<200MiB"
printf '\nwhat the machine allows (same run)\n'
printf '%-52s %10s\n' "disk, synced writes (dd conv=fdatasync)" "$DISK"
printf '%-52s %10.0f\n' "ChaCha20-Poly1305, one core (openssl)" "$AEAD"
printf '%-52s %10.0f\n' "sha2-256, one core (openssl)" "$SHA"
printf '%-52s %10s\n' "ceiling: stored fetch (disk / 2, WAL)" "$STORE_CEIL"
printf '%-52s %10s\n' "ceiling: verified transfer, $(nproc) cores, crypto only" "$CPU_CEIL"
printf '%-52s %10.0f\n' "0.5x plain HTTP (the goal)" "$(echo "$H_MBS" | awk '{print $1 / 2}')"
printf '%-52s %9.2fx\n' "ratio bitswap / stored-fetch ceiling" "$(echo "$B_MBS $STORE_CEIL" | awk '{print $1/$2}')"
