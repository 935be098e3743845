# Sourced by the benchmarks that run daemons, nginx and nix in network namespaces
# (substitute.sh, closure.sh), after common.sh; `lab_start NAME` first.

# lab_start NAME — the work dir B, ID (unique in interface names), a signing key (PK), and on
# exit: the processes in PIDS stopped, the namespaces in NSS deleted, ON_EXIT (a command, if set)
# run, and B removed.
lab_start() {
  B=$(mktemp -d "/var/tmp/peerix-$1.XXXXXX")
  chmod 755 "$B" # nginx's workers run as www-data
  ID=$(printf '%04x' $(( $$ % 65536 )))
  NSS=(); PIDS=()
  trap lab_cleanup EXIT
  export XDG_CACHE_HOME=$B/xdg
  nix-store --generate-binary-cache-key "bench-$1-1" "$B/sk" "$B/pk" 2>/dev/null
  PK=$(cat "$B/pk")
  NGINX_CONF=$B/nginx.conf
}
lab_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  [ -z "${ON_EXIT:-}" ] || eval "$ON_EXIT"
  chmod -R u+w "$B" 2>/dev/null; rm -rf "$B"
}

cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }

# --- daemons ---------------------------------------------------------------------------------------
# run_daemon NAME NETNS|- LISTEN_IP ARGS… — starts `peerix serve` (in NETNS unless -), waits until it
# listens; sets URL, P2P (its p2p address) and LAST (its pid).
run_daemon() {
  local name=$1 ns=$2 ip=$3; shift 3
  local pre=(); [ "$ns" != - ] && pre=(ip netns exec "$ns")
  RUST_LOG=info "${pre[@]}" "$PEERIX" serve --listen 127.0.0.1:0 --state-dir "$B/state-$name" --upstream none \
    --bootstrap none --no-mdns --mode lan --p2p-listen "/ip4/$ip/tcp/0" --trusted-public-key "$PK" "$@" \
    2>"$B/$name.log" &
  LAST=$!; PIDS+=("$LAST")
  for _ in $(seq 600); do
    URL=$(sed -n 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$B/$name.log" | head -1)
    P2P=$(sed -n 's/.*p2p listening on \(\/ip4\/[^ ]*\).*/\1/p' "$B/$name.log" | head -1)
    [ -n "$URL" ] && [ -n "$P2P" ] && return 0
    kill -0 "$LAST" 2>/dev/null || break
    sleep 0.05
  done
  cat "$B/$name.log" >&2; return 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# wait_summaries NETNS|- URL N — until the daemon holds have-summaries of N peers (knows what they hold).
wait_summaries() {
  local pre=(); [ "$1" != - ] && pre=(ip netns exec "$1")
  for _ in $(seq 600); do
    n=$("${pre[@]}" curl -fsS "$2/api/status" | python3 -c '
import json, sys
print(sum(1 for p in json.load(sys.stdin)["p2p"]["peers"] if p["connected"] and p["summary_paths"] is not None))')
    [ "$n" -ge "$3" ] && return 0
    sleep 0.05
  done
  echo "no $3 summaries at $2" >&2; return 1
}

# realise NETNS|- STORE SUBSTITUTER PATHS… — nix into an empty store; prints "seconds user+sys-cpu".
realise() {
  local ns=$1 store=$2 sub=$3; shift 3
  local pre=(); [ "$ns" != - ] && pre=(ip netns exec "$ns")
  rm -rf "$store"
  local t0 t1; t0=$(now)
  "${pre[@]}" env XDG_CACHE_HOME="$B/xdg-$RANDOM$RANDOM" /usr/bin/time -f '%U %S' -o "$B/time.out" \
    nix-store --store "$store" --realise "$@" --option substituters "$sub" --option trusted-public-keys "$PK" \
    >/dev/null 2>"$B/nix.err" || { cat "$B/nix.err" >&2; return 1; }
  t1=$(now)
  echo "$t0 $t1 $(cat "$B/time.out")" | awk '{printf "%.3f %.2f\n", $2 - $1, $3 + $4}'
}
# nar_bytes STORE PATHS… — the NAR bytes of PATHS in STORE.
nar_bytes() { nix path-info --store "$1" --json "${@:2}" | python3 -c 'import json,sys; print(sum(v["narSize"] for v in json.load(sys.stdin)))'; }
mbs() { echo "$1 $2" | awk '{printf "%.0f", $1 / $2 / 1e6}'; }
# mkns NAME — a new namespace (deleted on exit) with lo up; prints its name.
mkns() { local n="pxs-$ID-$1"; ip netns add "$n"; NSS+=("$n"); ip -n "$n" link set lo up; echo "$n"; }
nginx_on() { # nginx_on NETNS|- IP [ROOT] — serves a static cache (default $B/static); sets NGINX_URL
  local ns=$1 ip=$2 root=${3:-$B/static} port=18$((RANDOM % 900 + 100))
  mkdir -p "$B/nginx"
  cat > "$NGINX_CONF" <<CONF
worker_processes 2;
pid $B/nginx/nginx-$port.pid;
error_log $B/nginx/error.log;
daemon off;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; tcp_nopush on; tcp_nodelay on; keepalive_requests 1000000;
  types { text/x-nix-narinfo narinfo; application/x-nix-nar nar; }
  client_body_temp_path $B/nginx; proxy_temp_path $B/nginx; fastcgi_temp_path $B/nginx;
  uwsgi_temp_path $B/nginx; scgi_temp_path $B/nginx;
  server { listen $ip:$port; root $root; }
}
CONF
  local pre=(); [ "$ns" != - ] && pre=(ip netns exec "$ns")
  "${pre[@]}" nginx -c "$NGINX_CONF" &
  NGINX_PID=$!; PIDS+=("$NGINX_PID")
  NGINX_URL="http://$ip:$port"
  for _ in $(seq 100); do "${pre[@]}" curl -fsS -o /dev/null "$NGINX_URL/nix-cache-info" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}

