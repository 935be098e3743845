#!/usr/bin/env bash
# Serving speed: peerix against nginx serving the static output of
# `nix copy --to file://…?compression=none` for the same store, in one run.
#
#   benches/serve.sh [--gib N] [--rounds R] [--seconds S]
#
# Prints a table: narinfo latency (1 keep-alive connection) and throughput (64 connections) with
# wrk; NAR throughput over 1 and 16 connections with curl and over 16 with a Python reader (a
# client that needs CPU itself); the CPU-seconds each server spends per GiB it serves to curl
# (user + system time from /proc, nginx's master and workers summed) and the whole machine spends
# (/proc/stat: client and softirq included), and the server's CPU per GiB to the Python readers (on
# loopback the receiving side's TCP work runs partly in the sender's softirq context: with one fast
# curl most of it is charged to the server, with 16 busy readers less); and `nix-store --realise` of
# the whole big closure into an empty store from each — each the median of R rounds, and the
# ratio peerix/nginx; then the same for the 256 small paths (paths/s: per-request cost, not
# bytes). The servers alternate which goes first in a round (odd rounds nginx, even rounds
# peerix), and each gets one worker per core: nginx `worker_processes $(nproc)`, peerix tokio's
# default of one runtime thread per core; the table states both. Everything binds 127.0.0.1;
# peerix runs with --upstream none.
# Needs root (nix-store --add into a chroot store), nix-bin, nginx, wrk, curl; installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

GIB=1; ROUNDS=3; SECS=5
while (($#)); do
  case "$1" in
    --gib) GIB=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    *) echo "usage: $0 [--gib N] [--rounds R] [--seconds S]" >&2; exit 2 ;;
  esac
done

. benches/common.sh
need nginx:nginx wrk:wrk

B=$(mktemp -d /var/tmp/peerix-bench.XXXXXX)
chmod 755 "$B" # nginx's workers run as www-data
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$B"; }
trap cleanup EXIT
export XDG_CACHE_HOME=$B/xdg

# --- fixture: 8 large NARs (GIB GiB in all) and 256 small paths, signed, in a chroot store --------
echo "building fixture in $B ($GIB GiB of NARs) ..." >&2
nix-store --generate-binary-cache-key bench-1 "$B/sk" "$B/pk" 2>/dev/null
STORE=$B/store
mkdir -p "$B/src"
BIG=()
per=$((GIB * 1024 / 8))
for i in $(seq 1 8); do
  head -c "${per}M" /dev/urandom > "$B/src/big-$i.bin"
  BIG+=("$(nix-store --store "$STORE" --add "$B/src/big-$i.bin")")
  rm "$B/src/big-$i.bin"
done
for i in $(seq 1 256); do
  mkdir -p "$B/src/small-$i/bin"
  printf 'small path %s\n' "$i" > "$B/src/small-$i/README"
  printf '#!/bin/sh\necho %s\n' "$i" > "$B/src/small-$i/bin/run"; chmod +x "$B/src/small-$i/bin/run"
done
mapfile -t SMALL < <(nix-store --store "$STORE" --add "$B"/src/small-*)
nix store sign --store "$STORE" --key-file "$B/sk" "${BIG[@]}" "${SMALL[@]}"
nix copy --from "$STORE" --to "file://$B/static?compression=none" --no-check-sigs "${BIG[@]}" "${SMALL[@]}" 2>/dev/null

# --- servers -------------------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NGINX_PORT=$(free_port)
mkdir -p "$B/nginx"
cat > "$B/nginx/nginx.conf" <<CONF
worker_processes $(nproc);
pid $B/nginx/nginx.pid;
error_log $B/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  types { text/x-nix-narinfo narinfo; application/x-nix-nar nar; }
  client_body_temp_path $B/nginx; proxy_temp_path $B/nginx; fastcgi_temp_path $B/nginx;
  uwsgi_temp_path $B/nginx; scgi_temp_path $B/nginx;
  server { listen 127.0.0.1:$NGINX_PORT; root $B/static; }
}
CONF
nginx -c "$B/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

# Index first, so the daemon's background scan does not compete with the measurements.
"$PEERIX" publish --state-dir "$B/state" --store-root "$STORE" --upstream none --trusted-public-key "$(cat "$B/pk")" >/dev/null 2>&1
RUST_LOG=info "$PEERIX" serve --listen 127.0.0.1:0 --state-dir "$B/state" --store-root "$STORE" \
  --upstream none --no-p2p --trusted-public-key "$(cat "$B/pk")" 2> "$B/peerix.log" &
PIDS+=($!)
PEERIX_URL=""
for _ in $(seq 100); do
  PEERIX_URL=$(grep -o 'listening on http://[0-9.:]*' "$B/peerix.log" 2>/dev/null | sed 's/listening on //' || true)
  [ -n "$PEERIX_URL" ] && break
  sleep 0.1
done
[ -n "$PEERIX_URL" ] || { cat "$B/peerix.log" >&2; exit 1; }
NGINX_URL="http://127.0.0.1:$NGINX_PORT"
for u in "$NGINX_URL" "$PEERIX_URL"; do
  for _ in $(seq 100); do curl -fsS "$u/nix-cache-info" >/dev/null 2>&1 && break; sleep 0.1; done
done

# Each server's own NAR URLs (nginx: nar/<FileHash>.nar; peerix: nar/<NarHash>.nar; equal for
# uncompressed NARs, but read them from the narinfos to be sure).
nar_urls() { for p in "${BIG[@]}"; do h=$(basename "$p" | cut -c1-32); echo "$1/$(curl -fsS "$1/$h.narinfo" | sed -n 's/^URL: //p')"; done; }
mapfile -t NGINX_NARS < <(nar_urls "$NGINX_URL")
mapfile -t PEERIX_NARS < <(nar_urls "$PEERIX_URL")

# Sanity: both serve the same bytes and narinfos agree on NarHash.
h=$(basename "${BIG[0]}" | cut -c1-32)
[ "$(curl -fsS "$NGINX_URL/$h.narinfo" | grep NarHash)" = "$(curl -fsS "$PEERIX_URL/$h.narinfo" | grep NarHash)" ]
cmp <(curl -fsS "${NGINX_NARS[0]}") <(curl -fsS "${PEERIX_NARS[0]}")

cat > "$B/narinfo.lua" <<LUA
local paths = {}
for line in io.lines("$B/narinfo-paths") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
LUA
for p in "${SMALL[@]}"; do echo "/$(basename "$p" | cut -c1-32).narinfo"; done > "$B/narinfo-paths"

# wrk prints "Requests/sec: N" and, with --latency, "50% Xus|ms".
wrk_rps() { wrk -t"$1" -c"$2" -d"${SECS}s" -s "$B/narinfo.lua" "$3" | awk '/Requests\/sec/ {print $2}'; }
nar_mbs() { # $1 = parallel downloads; rest = URLs. Downloads every URL once per slot.
  local par=$1; shift
  local start end bytes
  start=$(date +%s.%N)
  bytes=$(for ((k = 0; k < par; k++)); do printf '%s\n' "$@"; done |
    xargs -P "$par" -n 1 curl -fsS -o /dev/null -w '%{size_download}\n' | awk '{s += $1} END {print s}')
  end=$(date +%s.%N)
  echo "$bytes $start $end" | awk '{printf "%.0f", $1 / ($3 - $2) / 1e6}'
}

HZ=$(getconf CLK_TCK)
NGINX_PID=${PIDS[0]}; PEERIX_PID=${PIDS[1]}
# User + system clock ticks of a server's processes.
ticks() {
  local pids=$PEERIX_PID
  [ "$1" = nginx ] && pids="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
  for p in $pids; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'
}
# Busy clock ticks of the whole machine (user, nice, system, irq, softirq): on loopback the
# kernel's TCP work for both ends lands partly in the server, partly in softirq, partly in curl.
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
py_mbs() { # 16 Python readers, each downloading every URL once in 64 KiB reads.
  local start end bytes
  start=$(date +%s.%N)
  # Each reader writes its count to its own file: their lines through one shared pipe were
  # once read back run together (a sum of 1.07e19 bytes).
  rm -f "$B"/py.*
  seq 16 | xargs -P 16 -I{} python3 -c '
import sys, urllib.request
n = 0
for u in sys.argv[2:]:
    with urllib.request.urlopen(u) as r:
        while b := r.read(65536):
            n += len(b)
open(sys.argv[1], "w").write(f"{n}\n")' "$B/py.{}" "$@"
  bytes=$(cat "$B"/py.* | awk '{s += $1} END {printf "%.0f", s}')
  end=$(date +%s.%N)
  echo "$bytes $start $end" | awk '{printf "%.0f", $1 / ($3 - $2) / 1e6}'
}
# nix-store --realise of the paths after $1 into an empty store from $1; prints the seconds taken.
realise_secs() {
  local url=$1 st=$B/realise-$RANDOM start end
  shift
  start=$(date +%s.%N)
  nix-store --store "$st" --realise "$@" --option substituters "$url" \
    --option trusted-public-keys "$(cat "$B/pk")" --option download-attempts 1 >/dev/null 2>"$B/realise.log" ||
    { cat "$B/realise.log" >&2; exit 1; }
  end=$(date +%s.%N)
  chmod -R u+w "$st"; rm -rf "$st"
  echo "$start $end" | awk '{printf "%.6f", $2 - $1}'
}
realise_mbs() { realise_secs "$1" "${BIG[@]}" | awk -v g="$GIB" '{printf "%.0f", g * 1073741824 / $1 / 1e6}'; }
small_paths_per_s() { realise_secs "$1" "${SMALL[@]}" | awk -v n="${#SMALL[@]}" '{printf "%.0f", n / $1}'; }

# Warm-up: every NAR once from each server, untimed, so no round reads from the disk (the first
# round otherwise measured nginx at 0.4-0.7 GB/s against 2 GB/s after).
nar_mbs 1 "${NGINX_NARS[@]}" "${PEERIX_NARS[@]}" >/dev/null

declare -A R
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS ..." >&2
  order="nginx peerix"; ((r % 2)) || order="peerix nginx"
  for s in $order; do
    if [ $s = nginx ]; then U=$NGINX_URL; NARS=("${NGINX_NARS[@]}"); else U=$PEERIX_URL; NARS=("${PEERIX_NARS[@]}"); fi
    R[$s,c1]+="$(wrk_rps 1 1 "$U") "
    R[$s,c64]+="$(wrk_rps 2 64 "$U") "
    t0=$(ticks $s); m0=$(machine_ticks)
    R[$s,n1]+="$(nar_mbs 1 "${NARS[@]}") "
    R[$s,cpu]+="$(awk -v t="$(($(ticks $s) - t0))" -v hz="$HZ" -v g="$GIB" 'BEGIN {printf "%.3f", t / hz / g}') "
    R[$s,mcpu]+="$(awk -v t="$(($(machine_ticks) - m0))" -v hz="$HZ" -v g="$GIB" 'BEGIN {printf "%.3f", t / hz / g}') "
    R[$s,n16]+="$(nar_mbs 16 "${NARS[@]}") "
    t0=$(ticks $s)
    R[$s,py16]+="$(py_mbs "${NARS[@]}") "
    R[$s,pycpu]+="$(awk -v t="$(($(ticks $s) - t0))" -v hz="$HZ" -v g="$GIB" 'BEGIN {printf "%.3f", t / hz / g / 16}') "
    R[$s,realise]+="$(realise_mbs "$U") "
    R[$s,small]+="$(small_paths_per_s "$U") "
  done
done
med() { tr ' ' '\n' <<<"${R[$1]}" | grep . | median; }

printf '\nserving speed, %s GiB of NARs in 8 paths + 256 small paths, median of %s rounds (%s s each for wrk)\n' "$GIB" "$ROUNDS" "$SECS"
printf '%-44s %12s %12s %8s\n' "measure" "nginx" "peerix" "ratio"
printf '%-44s %12s %12s\n' "workers (nginx processes, peerix threads)" "$(nproc)" "$(nproc)"
row() { awk -v n="$2" -v p="$3" -v l="$1" 'BEGIN {
  if (n + 0 == 0) { printf "%-44s %12s %12s %8s\n", l, n, p, "-"; exit }
  r = p / n; printf "%-44s %12s %12s %7.2fx\n", l, n, p, r }'; }
n=$(med nginx,c1); p=$(med peerix,c1)
row "narinfo latency, 1 conn (us/req; ratio p/n)" "$(awk -v x="$n" 'BEGIN{printf "%.1f", 1e6/x}')" "$(awk -v x="$p" 'BEGIN{printf "%.1f", 1e6/x}')"
row "narinfo req/s, 64 conns" "$(med nginx,c64)" "$(med peerix,c64)"
row "NAR MB/s, 1 conn" "$(med nginx,n1)" "$(med peerix,n1)"
row "NAR MB/s, 16 conns" "$(med nginx,n16)" "$(med peerix,n16)"
row "NAR MB/s, 16 Python readers" "$(med nginx,py16)" "$(med peerix,py16)"
row "server CPU-s per GiB to curl (ratio p/n)" "$(med nginx,cpu)" "$(med peerix,cpu)"
row "machine CPU-s per GiB to curl (ratio p/n)" "$(med nginx,mcpu)" "$(med peerix,mcpu)"
row "server CPU-s per GiB to 16 Python readers" "$(med nginx,pycpu)" "$(med peerix,pycpu)"
row "nix-store --realise MB/s, empty store" "$(med nginx,realise)" "$(med peerix,realise)"
row "nix-store --realise, 256 small paths/s" "$(med nginx,small)" "$(med peerix,small)"
echo "(latency and CPU ratios: peerix/nginx, lower is better; the others: peerix/nginx, higher is better)"
