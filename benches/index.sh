#!/usr/bin/env bash
# Indexing: speed, rescan cost, dedup and memory, in one run, printed as a table.
#
#   benches/index.sh [--rounds R] [--rss-gib N]
#
# 1. Throughput: `peerix publish` (FastCDC + CIDs + NarHash check) of real trees — the Rust
#    toolchain's lib dir and /usr/lib/x86_64-linux-gnu, copied into a chroot store — against
#    `nix-store --dump P | sha256sum` over the same paths, warm page cache, median of R rounds.
# 2. Rescan: `peerix publish` again over an unchanged store of 10 000 paths (wall time of the command).
# 3. Dedup: a second version of the toolchain tree with a few files changed and appended; bytes of
#    its chunks not already indexed, as a share of its NAR.
# 4. Memory: a daemon indexes N GiB of random data (≥ 100 000 chunks); its RSS afterwards.
# Needs root (chroot stores), nix-bin, python3; everything stays on this machine (--upstream none).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3; RSS_GIB=8
while (($#)); do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --rss-gib) RSS_GIB=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds R] [--rss-gib N]" >&2; exit 2 ;;
  esac
done
. benches/common.sh
B=$(mktemp -d /var/tmp/peerix-index-bench.XXXXXX)
DAEMON=""
cleanup() { [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null; wait 2>/dev/null || true; chmod -R u+w "$B" 2>/dev/null; rm -rf "$B"; }
trap cleanup EXIT
export XDG_CACHE_HOME=$B/xdg
publish() { "$PEERIX" publish --state-dir "$1" --store-root "$2" --upstream none --serve-private --index-rate 0 "${@:3}" 2>/dev/null; }

echo "building fixtures in $B ..." >&2
# --- real trees ---------------------------------------------------------------------------------
TOOLCHAIN="$(rustc --print sysroot)/lib"
cp -a "$TOOLCHAIN" "$B/toolchain-v1"
cp -a "$TOOLCHAIN" "$B/toolchain-v2"
# Version 2: a few files changed in the middle, a few appended to, one added.
mapfile -t FILES < <(find "$B/toolchain-v2" -type f -size +1M | sort | head -6)
for f in "${FILES[@]:0:3}"; do chmod u+w "$f"; printf 'patched' | dd of="$f" bs=1 seek=$(( $(stat -c %s "$f") / 2 )) conv=notrunc status=none; done
for f in "${FILES[@]:3:3}"; do chmod u+w "$f"; head -c 100000 /dev/urandom >> "$f"; done
head -c 2000000 /dev/urandom > "$B/toolchain-v2/new-file.bin"
REAL=$B/real
P_TOOL=$(nix-store --store "$REAL" --add "$B/toolchain-v1")
P_LIBS=$(nix-store --store "$REAL" --add /usr/lib/x86_64-linux-gnu)
NAR_BYTES=$(python3 -c "import sqlite3,sys; print(sqlite3.connect('$REAL/nix/var/nix/db/db.sqlite').execute('select sum(narSize) from ValidPaths').fetchone()[0])")

# --- 1. throughput ------------------------------------------------------------------------------
for p in "$P_TOOL" "$P_LIBS"; do nix-store --dump "$REAL$p" | sha256sum >/dev/null; done # warm the page cache
BASE=(); OURS=()
for r in $(seq 1 "$ROUNDS"); do
  t0=$(now); for p in "$P_TOOL" "$P_LIBS"; do nix-store --dump "$REAL$p" | sha256sum >/dev/null; done; t1=$(now)
  BASE+=("$(echo "$t0 $t1" | awk -v b="$NAR_BYTES" '{printf "%.0f", b / ($2 - $1) / 1e6}')")
  rm -rf "$B/state-real"
  t0=$(now); publish "$B/state-real" "$REAL" --jobs 1 >/dev/null; t1=$(now)
  OURS+=("$(echo "$t0 $t1" | awk -v b="$NAR_BYTES" '{printf "%.0f", b / ($2 - $1) / 1e6}')")
done
BASE_MBS=$(printf '%s\n' "${BASE[@]}" | median); OURS_MBS=$(printf '%s\n' "${OURS[@]}" | median)

# --- 3. dedup -----------------------------------------------------------------------------------
P_TOOL2=$(nix-store --store "$REAL" --add "$B/toolchain-v2")
publish "$B/state-real" "$REAL" >/dev/null
read -r NEW_BYTES V2_NAR < <(python3 - "$B/state-real/peerix.sqlite" "${P_TOOL:11:32}" "${P_TOOL2:11:32}" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
v1 = set(r[0] for r in db.execute("select cid from local_chunks where hash32 = ?", (sys.argv[2],)))
rows = db.execute("select cid, length from local_chunks where hash32 = ?", (sys.argv[3],)).fetchall()
seen, new = set(), 0
for cid, length in rows:
    if cid not in v1 and cid not in seen:
        new += length
    seen.add(cid)
print(new, sum(l for _, l in rows))
PY
)

# --- 2. rescan of 10 000 paths ------------------------------------------------------------------
mkdir -p "$B/many"
for i in $(seq 1 10000); do printf 'path %s\n' "$i" > "$B/many/f$i"; done
MANY=$B/many-store
find "$B/many" -type f -print0 | xargs -0 -n 2000 nix-store --store "$MANY" --add >/dev/null
publish "$B/state-many" "$MANY" >/dev/null
RESCAN=()
for r in $(seq 1 "$ROUNDS"); do
  t0=$(now); out=$(publish "$B/state-many" "$MANY"); t1=$(now)
  case "$out" in *"unchanged 10000"*) ;; *) echo "rescan did work: $out" >&2; exit 1 ;; esac
  RESCAN+=("$(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}')")
done
RESCAN_S=$(printf '%s\n' "${RESCAN[@]}" | median)

# --- 4. daemon RSS after >= 100 000 chunks -------------------------------------------------------
BIG=$B/big-store
for i in $(seq 1 "$RSS_GIB"); do
  head -c 1G /dev/urandom > "$B/rand-$i.bin"
  nix-store --store "$BIG" --add "$B/rand-$i.bin" >/dev/null
  rm -f "$B/rand-$i.bin"
done
RUST_LOG=info "$PEERIX" serve --listen 127.0.0.1:0 --state-dir "$B/state-big" --store-root "$BIG" \
  --upstream none --no-p2p --serve-private --index-rate 0 --index-jobs 2 2>"$B/daemon.log" &
DAEMON=$!
PORT=""
for _ in $(seq 300); do
  PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$B/daemon.log" | head -1)
  [ -n "$PORT" ] && break; sleep 0.1
done
[ -n "$PORT" ] || { cat "$B/daemon.log" >&2; exit 1; }
while :; do
  S=$(curl -fsS "http://127.0.0.1:$PORT/api/status")
  read -r RUNNING DONE TOTAL CHUNKS < <(python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["scan"]["running"], s["scan"]["done_paths"], s["scan"]["total_paths"], s["index"]["chunks"])' <<<"$S")
  [ "$RUNNING" = False ] && [ "$DONE" = "$TOTAL" ] && [ "$TOTAL" != 0 ] && break
  sleep 1
done
RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$DAEMON/status"); HWM_KB=$(awk '/VmHWM/ {print $2}' "/proc/$DAEMON/status")

printf '\nindexing, %s MB of real NARs (toolchain lib + /usr/lib/x86_64-linux-gnu), median of %s rounds\n' "$((NAR_BYTES / 1000000))" "$ROUNDS"
printf '%-58s %14s %8s\n' "measure" "value" "goal"
printf '%-58s %14s\n' "nix-store --dump | sha256sum (MB/s)" "$BASE_MBS"
printf '%-58s %14s %8s\n' "peerix publish, 1 job (MB/s)" "$OURS_MBS" ""
printf '%-58s %13.2fx %8s\n' "ratio peerix / dump|sha256sum" "$(echo "$OURS_MBS $BASE_MBS" | awk '{print $1/$2}')" ">=0.8x"
printf '%-58s %13ss %8s\n' "rescan of an unchanged store of 10 000 paths" "$RESCAN_S" "<1s"
printf '%-58s %13.1f%% %8s\n' "dedup: new bytes of toolchain v2 / its NAR ($((V2_NAR / 1000000)) MB)" "$(echo "$NEW_BYTES $V2_NAR" | awk '{print 100*$1/$2}')" "<=25%"
printf '%-58s %11s MiB %8s\n' "daemon RSS after indexing $CHUNKS chunks ($RSS_GIB GiB)" "$((RSS_KB / 1024))" "<64MiB"
printf '%-58s %11s MiB\n' "daemon peak RSS (VmHWM) during that" "$((HWM_KB / 1024))"
