#!/usr/bin/env bash
# Tracker lookups: `peerix tracker` answering GET /v1/providers/<hash32> (SQLite, 200 peers × 500
# paths announced, ten providers per path) against nginx serving one of its answers as a static
# file — the ceiling for an HTTP server answering the same JSON on this machine. wrk, 2 threads, 64
# and 512 connections, rounds alternating which server goes first; requests/s and p99 latency,
# medians of the rounds, and the ratio tracker/nginx. Loopback only; the tracker runs --no-p2p.
# Needs root (apt-get for nginx and wrk). Usage: benches/tracker.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
need nginx:nginx wrk:wrk
cargo build --release --locked --quiet --example tracker_load
ROUNDS=${1:-3}
SECS=${2:-5}
B=$(mktemp -d /tmp/peerix-bench-tracker.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$B"; }
trap cleanup EXIT
chmod 755 "$B"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TPORT=$(free_port)
RUST_LOG=warn "$PEERIX" tracker --listen "127.0.0.1:$TPORT" --state-dir "$B/state" --no-p2p 2> "$B/tracker.log" &
PIDS+=($!)
TRACKER="http://127.0.0.1:$TPORT"
for _ in $(seq 100); do curl -fsS "$TRACKER/health" >/dev/null 2>&1 && break; sleep 0.1; done
"$CARGO_TARGET_DIR/release/examples/tracker_load" "$TRACKER" 200 500 > "$B/paths"

# nginx: the same answer (ten providers) at every path.
mkdir -p "$B/static/v1/providers" "$B/nginx"
curl -fsS "$TRACKER$(head -1 "$B/paths")" > "$B/answer.json"
while read -r p; do ln -s "$B/answer.json" "$B/static$p"; done < "$B/paths"
NPORT=$(free_port)
cat > "$B/nginx/nginx.conf" <<CONF
worker_processes $(nproc);
pid $B/nginx/nginx.pid;
error_log $B/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nodelay on; keepalive_requests 1000000;
  default_type application/json;
  client_body_temp_path $B/nginx; proxy_temp_path $B/nginx; fastcgi_temp_path $B/nginx;
  uwsgi_temp_path $B/nginx; scgi_temp_path $B/nginx;
  server { listen 127.0.0.1:$NPORT; root $B/static; }
}
CONF
nginx -c "$B/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
NGINX="http://127.0.0.1:$NPORT"
for _ in $(seq 100); do curl -fsS "$NGINX$(head -1 "$B/paths")" >/dev/null 2>&1 && break; sleep 0.1; done
cmp <(curl -fsS "$NGINX$(head -1 "$B/paths")") <(curl -fsS "$TRACKER$(head -1 "$B/paths")")

cat > "$B/paths.lua" <<LUA
local paths = {}
for line in io.lines("$B/paths") do paths[#paths + 1] = line end
local i = 0
request = function() i = i % #paths + 1; return wrk.format("GET", paths[i]) end
LUA
# "rps p99_ms" of one wrk run.
run_wrk() {
  wrk -t2 -c"$2" -d"${SECS}s" --latency -s "$B/paths.lua" "$1" | awk '
    /Requests\/sec/ {rps = $2}
    /^ +99%/ {v = $2; if (v ~ /ms$/) {sub(/ms/, "", v)} else if (v ~ /us$/) {sub(/us/, "", v); v /= 1000} else if (v ~ /s$/) {sub(/s/, "", v); v *= 1000}; p99 = v}
    END {print rps, p99}'
}
ulimit -n 20000
printf '%-16s %12s %12s %8s %14s %14s\n' connections tracker/s nginx/s ratio "tracker p99" "nginx p99"
for c in 64 512; do
  : > "$B/t"; : > "$B/n"
  for r in $(seq "$ROUNDS"); do
    if ((r % 2)); then run_wrk "$NGINX" "$c" >> "$B/n"; run_wrk "$TRACKER" "$c" >> "$B/t"
    else run_wrk "$TRACKER" "$c" >> "$B/t"; run_wrk "$NGINX" "$c" >> "$B/n"; fi
  done
  t=$(cut -d' ' -f1 "$B/t" | median); n=$(cut -d' ' -f1 "$B/n" | median)
  tp=$(cut -d' ' -f2 "$B/t" | median); np=$(cut -d' ' -f2 "$B/n" | median)
  printf '%-16s %12.0f %12.0f %8.2f %11.2f ms %11.2f ms\n' "$c" "$t" "$n" "$(echo "$t $n" | awk '{print $1/$2}')" "$tp" "$np"
done
echo "tracker peak RSS: $(awk '/VmHWM/ {print $2, $3}' "/proc/${PIDS[0]}/status")"
