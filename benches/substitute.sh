#!/usr/bin/env bash
# Peer-to-peer substitution speed, in one run (release build, root, network namespaces):
#
#  1. narinfo latency at C with 10 peerix peers connected (lan mode, loopback): misses (random
#     absent hashes) against a local miss (a --no-p2p daemon), and hits answered by a peer, each a
#     path C never saw; p50/p99 over N lookups on one keep-alive connection.
#  2. a closure (4 paths, --mib MiB in all) realised by nix into an empty store over emulated LAN
#     links (network namespaces, tc tbf at 1 Gbit/s; this kernel has no netem, so no added delay):
#     (a) from nginx behind one link, (b) from one peerix seeder behind the same link through C,
#     (c) from two seeders each behind a link of its own through C.
#  3. the same closure on loopback, unconstrained: nginx against two seeders through C, with the
#     CPU-seconds per GiB the client machine spends (nix, plus C), and each end's CPU.
#  4. swarming: the closure from three seeders each behind a 10 MB/s link against one.
# Rounds alternate the variants; medians. Every daemon: --bootstrap none, --no-mdns (mDNS off;
# peers by --peer), --upstream none; traffic stays on loopback and the namespaces made here.
#
#   benches/substitute.sh [--mib M] [--rounds R] [--lookups N] [--swarm-mib M]
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=1024; ROUNDS=3; LOOKUPS=1000; SWARM_MIB=200
while (($#)); do
  case "$1" in
    --mib) MIB=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --lookups) LOOKUPS=$2; shift 2 ;;
    --swarm-mib) SWARM_MIB=$2; shift 2 ;;
    *) echo "usage: $0 [--mib M] [--rounds R] [--lookups N] [--swarm-mib M]" >&2; exit 2 ;;
  esac
done
. benches/common.sh
need nginx:nginx ip:iproute2 tc:iproute2 time:time

. benches/lab.sh
lab_start sub-bench
# --- fixtures ----------------------------------------------------------------------------------------
# make_store DIR MIB — a chroot store with a closure of 4 random-data paths (MIB MiB in all),
# signed; prints the paths.
make_store() {
  local dir=$1 mib=$2 paths=()
  mkdir -p "$B/src"
  for i in 1 2 3 4; do
    head -c "$((mib / 4))M" /dev/urandom > "$B/src/part-$i.bin"
    paths+=("$(nix-store --store "$dir" --add "$B/src/part-$i.bin")")
    rm "$B/src/part-$i.bin"
  done
  nix store sign --store "$dir" --key-file "$B/sk" "${paths[@]}"
  printf '%s\n' "${paths[@]}"
}
echo "building a ${MIB} MiB closure and a ${SWARM_MIB} MiB one ..." >&2
mapfile -t CLOSURE < <(make_store "$B/seed" "$MIB")
mapfile -t SMALL_CLOSURE < <(make_store "$B/seed-small" "$SWARM_MIB")
nix copy --from "$B/seed" --to "file://$B/static?compression=none" "${CLOSURE[@]}" 2>/dev/null
printf 'Priority: 30\n' >> "$B/static/nix-cache-info"
for s in a b c; do
  "$PEERIX" publish --state-dir "$B/state-seed-$s" --store-root "$B/seed" --upstream none --trusted-public-key "$PK" >/dev/null 2>&1
  "$PEERIX" publish --state-dir "$B/state-small-$s" --store-root "$B/seed-small" --upstream none --trusted-public-key "$PK" >/dev/null 2>&1
done
chmod -R a+rX "$B/static"

BYTES=$(nar_bytes "$B/seed" "${CLOSURE[@]}")
SMALL_BYTES=$(nar_bytes "$B/seed-small" "${SMALL_CLOSURE[@]}")

# --- 1. narinfo latency --------------------------------------------------------------------------------
echo "1/4 narinfo latency with 10 peers ..." >&2
mkdir -p "$B/src/many"
for i in $(seq 1 "$LOOKUPS"); do printf 'path %s\n' "$i" > "$B/src/many/p$i"; done
mapfile -t MANY < <(cd "$B/src/many" && nix-store --store "$B/many" --add $(ls))
nix store sign --store "$B/many" --key-file "$B/sk" "${MANY[@]}"
PEERS=()
for i in $(seq 1 10); do
  "$PEERIX" publish --state-dir "$B/state-many-$i" --store-root "$B/many" --upstream none --trusted-public-key "$PK" >/dev/null 2>&1
  run_daemon "many-$i" - 127.0.0.1 --store-root "$B/many"
  PEERS+=(--peer "$P2P")
done
run_daemon c10 - 127.0.0.1 --store-root "$B/c10-store" "${PEERS[@]}"; C10=$URL
wait_summaries - "$C10" 10
RUST_LOG=info "$PEERIX" serve --listen 127.0.0.1:0 --state-dir "$B/state-local" --store-root "$B/c10-store" \
  --upstream none --no-p2p --trusted-public-key "$PK" 2>"$B/local.log" &
PIDS+=($!)
for _ in $(seq 200); do LOCAL=$(sed -n 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$B/local.log" | head -1); [ -n "$LOCAL" ] && break; sleep 0.05; done
printf '%s\n' "${MANY[@]}" | sed 's|/nix/store/||; s|-.*||' > "$B/hits.txt"
# latency URL FILE|- — p50 and p99 (ms) of one GET per line of FILE (or N random absent hashes),
# on one keep-alive connection; checks every answer's status.
latency() {
  python3 - "$1" "$2" "$LOOKUPS" <<'PY'
import http.client, os, sys, time, urllib.parse
url, src, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
if src == "-":
    hashes, want = ["".join(alphabet[b % 32] for b in os.urandom(32)) for _ in range(n)], 404
else:
    hashes, want = [l.strip() for l in open(src)][:n], 200
u = urllib.parse.urlparse(url)
c = http.client.HTTPConnection(u.hostname, u.port)
c.request("GET", "/nix-cache-info"); c.getresponse().read()
times = []
for h in hashes:
    t = time.perf_counter_ns()
    c.request("GET", f"/{h}.narinfo")
    r = c.getresponse(); r.read()
    times.append((time.perf_counter_ns() - t) / 1e6)
    assert r.status == want, (h, r.status)
times.sort()
print(f"{times[len(times) // 2]:.3f} {times[int(len(times) * 0.99)]:.3f}")
PY
}
read -r LOCAL_P50 LOCAL_P99 < <(latency "$LOCAL" -)
read -r MISS_P50 MISS_P99 < <(latency "$C10" -)
read -r HIT_P50 HIT_P99 < <(latency "$C10" "$B/hits.txt")
ASKED=$(curl -fsS "$C10/api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["substitution"]["counters"]["misses_asked"])')
for p in "${PIDS[@]}"; do stop "$p"; done; PIDS=()

# --- namespaces ----------------------------------------------------------------------------------------
# A client machine (cl) and three seeders (s1..s3), each seeder on a point-to-point link to cl.
CL=$(mkns cl)
SEEDNS=()
for i in 1 2 3; do
  s=$(mkns "s$i"); SEEDNS+=("$s")
  ip link add "pxc$ID$i" netns "$CL" type veth peer name "pxs$ID$i" netns "$s"
  ip -n "$CL" addr add "10.77.$i.1/30" dev "pxc$ID$i"; ip -n "$s" addr add "10.77.$i.2/30" dev "pxs$ID$i"
  ip -n "$CL" link set "pxc$ID$i" up; ip -n "$s" link set "pxs$ID$i" up
done
# shape RATE — every link limited to RATE in both directions (tc tbf).
shape() {
  for i in 1 2 3; do
    ip netns exec "$CL" tc qdisc replace dev "pxc$ID$i" root tbf rate "$1" burst 256kb latency 10ms
    ip netns exec "${SEEDNS[$((i - 1))]}" tc qdisc replace dev "pxs$ID$i" root tbf rate "$1" burst 256kb latency 10ms
  done
}
# seeders N ns|lo PREFIX STORE — starts N seeder daemons (state dirs $B/state-PREFIX-{a,b,c}, published
# above) in the seeder namespaces or on loopback; sets SEEDER_ARGS (--peer …) and SEEDER_PIDS.
seeders() {
  local n=$1 where=$2 prefix=$3 store=$4 names=(a b c); SEEDER_ARGS=(); SEEDER_PIDS=()
  for i in $(seq 1 "$n"); do
    local s=${names[$((i - 1))]}
    if [ "$where" = lo ]; then run_daemon "$prefix-$s" - 127.0.0.1 --store-root "$store"
    else run_daemon "$prefix-$s" "${SEEDNS[$((i - 1))]}" "10.77.$i.2" --store-root "$store"; fi
    SEEDER_ARGS+=(--peer "$P2P"); SEEDER_PIDS+=("$LAST")
  done
}
stop_all() { for p in "$@"; do stop "$p"; done; }
# through_c NAME NETNS|- IP ROUND PATHS… — C (a fresh client machine) with the seeders started last,
# nix through it; prints "seconds nix-cpu c-cpu duplicate-bytes".
through_c() {
  local name=$1 ns=$2 ip=$3 store="$B/client-$1"; shift 3
  run_daemon "$name" "$ns" "$ip" --store-root "$store" "${SEEDER_ARGS[@]}"
  local c_pid=$LAST c_url=$URL n=$((${#SEEDER_ARGS[@]} / 2))
  wait_summaries "$ns" "$c_url" "$n"
  local c0; c0=$(cpu_of "$c_pid")
  local secs cpu; read -r secs cpu < <(realise "$ns" "$store" "$c_url" "$@")
  local c1; c1=$(cpu_of "$c_pid")
  local pre=(); [ "$ns" != - ] && pre=(ip netns exec "$ns")
  local dup; dup=$("${pre[@]}" curl -fsS "$c_url/api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["substitution"]["counters"]["duplicate_bytes"])')
  stop "$c_pid"; rm -rf "$store"
  echo "$secs $cpu $(echo "$c0 $c1" | awk '{printf "%.2f", $2 - $1}') $dup"
}
# direct NETNS|- URL PATHS… — nix straight from nginx; prints "seconds nix-cpu".
direct() {
  local ns=$1 url=$2 store="$B/client-direct"; shift 2
  realise "$ns" "$store" "$url" "$@"; rm -rf "$store"
}

# --- 2. emulated LAN ----------------------------------------------------------------------------------
echo "2/4 over 1 Gbit/s links ..." >&2
shape 1gbit
LAN_A=(); LAN_B=(); LAN_C=()
for r in $(seq 1 "$ROUNDS"); do
  echo "  round $r/$ROUNDS" >&2
  nginx_on "${SEEDNS[0]}" 10.77.1.2
  read -r secs _ < <(direct "$CL" "$NGINX_URL" "${CLOSURE[@]}"); LAN_A+=("$secs"); stop "$NGINX_PID"
  seeders 1 ns seed "$B/seed"
  read -r secs _ < <(through_c "lan-b-$r" "$CL" 10.77.1.1 "${CLOSURE[@]}"); LAN_B+=("$secs"); stop_all "${SEEDER_PIDS[@]}"
  seeders 2 ns seed "$B/seed"
  read -r secs _ < <(through_c "lan-c-$r" "$CL" 10.77.1.1 "${CLOSURE[@]}"); LAN_C+=("$secs"); stop_all "${SEEDER_PIDS[@]}"
done

# --- 3. loopback, unconstrained --------------------------------------------------------------------------
echo "3/4 on loopback ..." >&2
LO_N=(); LO_N_CPU=(); LO_P=(); LO_P_CPU=(); LO_C_CPU=(); LO_SEED_CPU=()
for r in $(seq 1 "$ROUNDS"); do
  echo "  round $r/$ROUNDS" >&2
  nginx_on - 127.0.0.1
  read -r secs cpu < <(direct - "$NGINX_URL" "${CLOSURE[@]}"); LO_N+=("$secs"); LO_N_CPU+=("$cpu"); stop "$NGINX_PID"
  seeders 2 lo seed "$B/seed"
  s0=0; for p in "${SEEDER_PIDS[@]}"; do s0=$(echo "$s0 $(cpu_of "$p")" | awk '{print $1 + $2}'); done
  read -r secs cpu ccpu _ < <(through_c "lo-$r" - 127.0.0.1 "${CLOSURE[@]}")
  s1=0; for p in "${SEEDER_PIDS[@]}"; do s1=$(echo "$s1 $(cpu_of "$p")" | awk '{print $1 + $2}'); done
  LO_P+=("$secs"); LO_P_CPU+=("$cpu"); LO_C_CPU+=("$ccpu"); LO_SEED_CPU+=("$(echo "$s0 $s1" | awk '{print $2 - $1}')")
  stop_all "${SEEDER_PIDS[@]}"
done

# --- 4. swarming ----------------------------------------------------------------------------------------
echo "4/4 swarming over 10 MB/s links ..." >&2
shape 80mbit
SW_1=(); SW_3=(); SW_DUP=()
for r in $(seq 1 "$ROUNDS"); do
  echo "  round $r/$ROUNDS" >&2
  seeders 1 ns small "$B/seed-small"
  read -r secs _ _ _ < <(through_c "sw1-$r" "$CL" 10.77.1.1 "${SMALL_CLOSURE[@]}"); SW_1+=("$secs"); stop_all "${SEEDER_PIDS[@]}"
  seeders 3 ns small "$B/seed-small"
  read -r secs _ _ dup < <(through_c "sw3-$r" "$CL" 10.77.1.1 "${SMALL_CLOSURE[@]}"); SW_3+=("$secs"); SW_DUP+=("$dup")
  stop_all "${SEEDER_PIDS[@]}"
done

# --- report -----------------------------------------------------------------------------------------------
med() { printf '%s\n' "$@" | median; }
GIB=$(echo "$BYTES" | awk '{print $1 / 1073741824}')
ratio() { echo "$1 $2" | awk '{printf "%.2fx", $1 / $2}'; }
printf '\nnarinfo lookups at C, %s each, one keep-alive connection (ms)\n' "$LOOKUPS"
printf '%-58s %9s %9s %12s\n' "measure" "p50" "p99" "goal"
printf '%-58s %9s %9s\n' "local miss (a --no-p2p daemon)" "$LOCAL_P50" "$LOCAL_P99"
printf '%-58s %9s %9s %12s\n' "miss at C, 10 peerix peers connected (summaries checked)" "$MISS_P50" "$MISS_P99" "p99<5"
printf '%-58s %9s %9s %12s\n' "  ratio to a local miss" "$(ratio "$MISS_P50" "$LOCAL_P50")" "$(ratio "$MISS_P99" "$LOCAL_P99")" "<=2x"
printf '%-58s %9s\n' "  misses that cost a round trip (summary false positives)" "$ASKED"
printf '%-58s %9s %9s %12s\n' "hit via a peer (a path C never saw, 10 peers hold it)" "$HIT_P50" "$HIT_P99" "p99<20"

printf '\nnix-store --realise of %s MB (4 paths) into an empty store, median of %s (MB/s)\n' "$((BYTES / 1000000))" "$ROUNDS"
A=$(med "${LAN_A[@]}"); Bm=$(med "${LAN_B[@]}"); Cm=$(med "${LAN_C[@]}")
printf '%-58s %9s %9s %12s\n' "over 1 Gbit/s links (tc tbf; no added delay)" "MB/s" "vs (a)" "goal"
printf '%-58s %9s\n' "(a) nginx behind one link" "$(mbs "$BYTES" "$A")"
printf '%-58s %9s %9s %12s\n' "(b) one peerix seeder behind the same link, through C" "$(mbs "$BYTES" "$Bm")" "$(ratio "$A" "$Bm")" ">=0.9x"
printf '%-58s %9s %9s %12s\n' "(c) two seeders, a link each, through C" "$(mbs "$BYTES" "$Cm")" "$(ratio "$A" "$Cm")" ">=1.6x"
N=$(med "${LO_N[@]}"); P=$(med "${LO_P[@]}")
NCPU=$(med "${LO_N_CPU[@]}"); PCPU=$(med "${LO_P_CPU[@]}"); CCPU=$(med "${LO_C_CPU[@]}"); SCPU=$(med "${LO_SEED_CPU[@]}")
CLIENT=$(echo "$PCPU $CCPU" | awk '{print $1 + $2}')
per_gib() { echo "$1 $GIB" | awk '{printf "%.2f", $1 / $2}'; }
printf '%-58s %9s %9s\n' "loopback, unconstrained" "MB/s" "CPU-s/GiB"
printf '%-58s %9s %9s\n' "nginx -> nix (client CPU: nix)" "$(mbs "$BYTES" "$N")" "$(per_gib "$NCPU")"
printf '%-58s %9s %9s\n' "two seeders -> C -> nix (client CPU: nix + C)" "$(mbs "$BYTES" "$P")" "$(per_gib "$CLIENT")"
printf '%-58s %9s %9s\n' "  of which C (fetch, verify, hash, serve to nix)" "" "$(per_gib "$CCPU")"
printf '%-58s %9s %9s\n' "  seeders A + B together (read, verify, encrypt)" "" "$(per_gib "$SCPU")"
printf '%-58s %9s %9s %12s\n' "  client CPU ratio peerix / nginx" "" "$(ratio "$CLIENT" "$NCPU")" "<=1.5x"
S1=$(med "${SW_1[@]}"); S3=$(med "${SW_3[@]}"); DUP=$(med "${SW_DUP[@]}")
printf '\nswarming: %s MB from seeders behind 10 MB/s links, through C\n' "$((SMALL_BYTES / 1000000))"
printf '%-58s %9s %9s %12s\n' "one seeder" "$(mbs "$SMALL_BYTES" "$S1")" "" ""
printf '%-58s %9s %9s %12s\n' "three seeders" "$(mbs "$SMALL_BYTES" "$S3")" "$(ratio "$S1" "$S3")" ">=2.5x"
printf '%-58s %9s %9s %12s\n' "duplicate bytes received (three seeders)" "$DUP" "$(echo "$DUP $SMALL_BYTES" | awk '{printf "%.2f%%", 100 * $1 / $2}')" "<=2%"
