#!/usr/bin/env bash
# Block exchange speed on loopback, in one run: a NAR of N GiB (default 1) fetched by three
# contenders, each twice — blocks kept in memory, and kept on disk:
#   plain HTTP    curl of A's /nar/… into /dev/null | into a file on disk
#   peerix        daemon B (state in /dev/shm | on disk) gets the DAG from daemon A by bitswap,
#                 verified, and streams it to curl via /api/v0/cat
#   Helia         a Helia node (MemoryBlockstore | FsBlockstore on disk) gets the same DAG from
#                 another Helia node by bitswap and writes it out
# Every contender is timed over the same span: from its request (peers already connected) to the
# last byte at its sink (curl's time_total; Helia's own clock started after the dial). The order of
# the contenders rotates from round to round. Median of R rounds; MB/s, ratios, the peak RSS of
# each daemon, and the ceilings this machine sets (disk, crypto). No contender fsyncs at the end;
# peerix's SQLite (WAL, synchronous=NORMAL) fsyncs at checkpoints, blockstore-fs never.
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
# Blocks in RAM: peerix B keeps its state DB on tmpfs.
SHM=$(mktemp -d /dev/shm/peerix-p2p-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; chmod -R u+w "$B" 2>/dev/null; rm -rf "$B" "$SHM"; }
trap cleanup EXIT
export XDG_CACHE_HOME=$B/xdg
# Starts a daemon in the background; sets URL and P2P (its first p2p address) for it.
start() {
  local name=$1; shift
  RUST_LOG=info "$PEERIX" serve --listen 127.0.0.1:0 --upstream none --no-mdns \
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
start a --state-dir "$B/a" --store-root "$B/store" --serve-private; A_URL=$URL; A_P2P=$P2P; A_PID=$LAST
H=$(basename "$P" | cut -c1-32)
ROOT=$(curl -fsS "$A_URL/api/paths/$H" | python3 -c 'import json,sys; print(json.load(sys.stdin)["index"]["root_cid"])')
NAR_URL="$A_URL/$(curl -fsS "$A_URL/$H.narinfo" | sed -n 's/^URL: //p')"
SIZE=$(curl -fsS "$A_URL/$H.narinfo" | sed -n 's/^NarSize: //p')

# Helia peer holding the same DAG (imported from A's CAR).
coproc HELIA { cd tests/helia && exec node --import ./polyfill.mjs serve-car.mjs "$A_URL/ipfs/$ROOT?format=car"; }
PIDS+=($HELIA_PID)
read -r HELLO <&"${HELIA[0]}"
HELIA_ADDR=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["addr"])' "$HELLO")

# One measurement each, into MBS (run in this shell, not a subshell: B's pid and peak RSS).
curl_mbs() { curl -fsS -w '%{size_download} %{time_total}\n' "$@" | tail -1 | awk '{printf "%.0f", $1 / $2 / 1e6}'; }
http_mem() { MBS=$(curl_mbs -o /dev/null "$NAR_URL"); }
http_disk() { MBS=$(curl_mbs -o "$B/http.out" "$NAR_URL"); rm -f "$B/http.out"; }
# peerix B with its state in $1 (tmpfs or disk): started, connected to A, timed, stopped.
peerix_in() {
  start b --state-dir "$1" --store-root "$B/empty" --peer "$A_P2P"
  local pid=$LAST url=$URL
  for _ in $(seq 100); do grep -q 'peer connected' "$B/b.log" && break; sleep 0.1; done
  MBS=$(curl_mbs -X POST -o /dev/null "$url/api/v0/cat?arg=$ROOT")
  B_HWM=$(( $(hwm "$pid") > B_HWM ? $(hwm "$pid") : B_HWM )); kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$1" "$B/empty"
}
peerix_mem() { peerix_in "$SHM/b"; }
peerix_disk() { peerix_in "$B/b"; }
helia_in() {
  local out
  out=$(cd tests/helia && node --import ./polyfill.mjs fetch.mjs "$HELIA_ADDR" "$ROOT" /dev/null "$@")
  MBS=$(python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(round(v["bytes"]/v["ms"]/1e3))' "$out")
}
helia_mem() { helia_in; }
helia_disk() { helia_in "$B/helia-blocks"; rm -rf "$B/helia-blocks"; }

CONTENDERS=(http_mem http_disk peerix_mem peerix_disk helia_mem helia_disk)
declare -A RESULTS
B_HWM=0
for r in $(seq 1 "$ROUNDS"); do
  # Rotate: round r starts with contender r-1, so none always runs first (cold) or last.
  for i in $(seq 0 $((${#CONTENDERS[@]} - 1))); do
    c=${CONTENDERS[$(( (i + r - 1) % ${#CONTENDERS[@]} ))]}
    echo "round $r/$ROUNDS: $c ..." >&2
    $c
    RESULTS[$c]+="$MBS "
  done
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
med() { tr ' ' '\n' <<<"${RESULTS[$1]}" | grep . | median; }
ratio() { echo "$1 $2" | awk '{printf "%.2fx", $1 / $2}'; }
for c in "${CONTENDERS[@]}"; do declare "M_$c=$(med "$c")"; done

printf '\nblock exchange over loopback, a %s MB NAR (%s), median of %s rounds, MB/s\n' "$((SIZE / 1000000))" "$ROOT" "$ROUNDS"
printf '%-44s %14s %14s\n' "contender (request -> last byte at the sink)" "blocks in RAM" "blocks on disk"
printf '%-44s %14s %14s\n' "plain HTTP from A (curl /nar/…)" "$M_http_mem" "$M_http_disk"
printf '%-44s %14s %14s\n' "Helia -> Helia bitswap (same DAG)" "$M_helia_mem" "$M_helia_disk"
printf '%-44s %14s %14s\n' "peerix A -> peerix B bitswap (verified)" "$M_peerix_mem" "$M_peerix_disk"
printf '%-44s %14s %14s   goal >=0.5x\n' "ratio peerix / plain HTTP" "$(ratio "$M_peerix_mem" "$M_http_mem")" "$(ratio "$M_peerix_disk" "$M_http_disk")"
printf '%-44s %14s %14s   goal >=2x\n' "ratio peerix / Helia" "$(ratio "$M_peerix_mem" "$M_helia_mem")" "$(ratio "$M_peerix_disk" "$M_helia_disk")"
printf '%-44s %10s MiB   goal <200MiB\n' "peak RSS daemon A (serving)" "$A_HWM"
printf '%-44s %10s MiB   goal <200MiB\n' "peak RSS daemon B (fetching, max over runs)" "$B_HWM"
printf '\nwhat the machine allows (same run), MB/s\n'
printf '%-44s %14s\n' "disk, synced writes (dd conv=fdatasync)" "$DISK"
printf '%-44s %14.0f\n' "ChaCha20-Poly1305, one core (openssl)" "$AEAD"
printf '%-44s %14.0f\n' "sha2-256, one core (openssl)" "$SHA"
printf '%-44s %14s\n' "ceiling: stored fetch (disk / 2, WAL)" "$STORE_CEIL"
printf '%-44s %14s\n' "ceiling: verified transfer, $(nproc) cores" "$CPU_CEIL"
printf '%-44s %14s\n' "ratio peerix on disk / stored-fetch ceiling" "$(ratio "$M_peerix_disk" "$STORE_CEIL")"
