#!/usr/bin/env bash
# Closures from peers against nginx, in one run (release build, root, network namespaces).
#
# The fixture is a closure shaped like a real one: LAYERS layers of WIDTH paths (400 by default)
# under one top path, each path referring to two of the layer below; most NARs a few files of
# 1–16 KiB, a quarter 0.1–2 MB, one in twenty 2–8 MB, cut from this machine's own binaries and
# documentation so they compress as packages do (fresh paths each run: a salt). nix 2.8 realises
# it into an empty store
#   (n) from nginx serving `nix copy --to file://…` of it (uncompressed; zstd on the WAN row, as
#       cache.nixos.org serves), and
#   (p) from two peerix seeders A and B through C (the client machine's daemon, fresh each round,
#       whose store is the one nix writes to, so it re-shares what arrives as it would for real),
# alternating which goes first, on three networks:
#   loopback   all processes on 127.0.0.1 (so it measures total CPU: they share 2 cores);
#   lan        nginx, A and B each in a namespace of its own behind a 1 Gbit/s link (tc tbf) with
#              0.5 ms round-trip time;
#   wan        the same behind 50 Mbit/s links with 40 ms round-trip time.
# This kernel has no netem: rates are shaped with tc tbf, and the delay is added by a relay
# (examples/delay_relay.rs) in the client's namespace that every connection to nginx and to the
# seeders goes through: it holds each chunk for half the RTT in each direction (so TCP's own
# window dynamics over a long link are not emulated, only the latency each request sees).
# Prints, per network: paths/s of each, the ratio, and CPU-seconds per GiB of C, of the seeders
# together and of nix; for the peers also C's prefetch hits and the paths C's indexer re-read
# (goal 0: re-shared from the DAGs they arrived in). Every daemon: --bootstrap none, --no-mdns,
# --mode lan, --upstream none; traffic stays on loopback and the namespaces made here.
#
#   benches/closure.sh [--layers L] [--width W] [--rounds R] [--wan-rounds R] [--rows "loopback lan wan"]
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=20; WIDTH=20; ROUNDS=3; WAN_ROUNDS=1; ROWS="loopback lan wan"
while (($#)); do
  case "$1" in
    --layers) LAYERS=$2; shift 2 ;;
    --width) WIDTH=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --wan-rounds) WAN_ROUNDS=$2; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    *) echo "usage: $0 [--layers L] [--width W] [--rounds R] [--wan-rounds R] [--rows \"loopback lan wan\"]" >&2; exit 2 ;;
  esac
done
. benches/common.sh
need nginx:nginx ip:iproute2 tc:iproute2 time:time
cargo build --release --locked --quiet --example delay_relay
RELAY="$CARGO_TARGET_DIR/release/examples/delay_relay"

CLOSURE=()
# The fixture is built in the machine's store: it goes again on exit.
ON_EXIT='((${#CLOSURE[@]} == 0)) || nix-store --delete "${CLOSURE[@]}" >/dev/null 2>&1 || true'
. benches/lab.sh
lab_start closure-bench

# --- fixture -----------------------------------------------------------------------------------------
echo "building a closure of $((LAYERS * WIDTH + 1)) paths ..." >&2
# 96 MiB of this machine's binaries and text, the pool every path's files are cut from.
find /usr/bin /usr/lib/x86_64-linux-gnu /usr/share/doc -type f -size +4k 2>/dev/null | sort | head -4000 |
  xargs cat 2>/dev/null | head -c 96M > "$B/corpus" || true
python3 - "$B/corpus" "$LAYERS" "$WIDTH" "$RANDOM$RANDOM" > "$B/closure.nix" <<'PY'
import os, random, sys
corpus, layers, width, salt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pool = os.path.getsize(corpus)
rng = random.Random(salt)
def files():
    r = rng.random()
    if r < 0.05:   sizes = [rng.randint(2 << 20, 8 << 20)]
    elif r < 0.30: sizes = [rng.randint(100_000, 2_000_000)]
    else:          sizes = [rng.randint(1 << 10, 16 << 10) for _ in range(rng.randint(1, 4))]
    return " ".join(f"{rng.randint(1, pool - s)}:{s}" for s in sizes)
print("let mk = name: deps: files: builtins.derivation {")
print('  inherit name deps files; system = builtins.currentSystem; builder = "/bin/sh";')
print(f'  PATH = "/usr/bin:/bin"; salt = "{salt}"; corpus = "{corpus}";')
print('  args = [ "-c" "mkdir -p $out/share; n=0; for f in $files; do o=$(echo $f | cut -d: -f1); l=$(echo $f | cut -d: -f2); tail -c +$o $corpus | head -c $l > $out/share/f$n; n=$((n+1)); done; echo $deps > $out/refs" ];')
print("}; in let")
for l in range(layers):
    for i in range(width):
        deps = "" if l == 0 else f"l{l-1}_{rng.randrange(width)} l{l-1}_{rng.randrange(width)}"
        print(f'  l{l}_{i} = mk "closure-{l}-{i}" [ {deps} ] "{files()}";')
print('in mk "closure-top" [ ' + " ".join(f"l{layers-1}_{i}" for i in range(width)) + ' ] "1:100"')
PY
TOP=$(nix-build "$B/closure.nix" --no-out-link --max-jobs 2 --option build-users-group '' --option sandbox false 2>"$B/build.err") ||
  { cat "$B/build.err" >&2; exit 1; }
mapfile -t CLOSURE < <(nix-store -qR "$TOP")
NPATHS=${#CLOSURE[@]}
nix store sign --key-file "$B/sk" "${CLOSURE[@]}"
nix copy --no-check-sigs --to "$B/seed" "$TOP" 2>/dev/null
nix copy --to "file://$B/static?compression=none" "$TOP" 2>/dev/null
nix copy --to "file://$B/static-zstd?compression=zstd" "$TOP" 2>/dev/null
chmod -R a+rX "$B/static" "$B/static-zstd"
for s in a b; do
  "$PEERIX" publish --state-dir "$B/state-seed-$s" --store-root "$B/seed" --upstream none --trusted-public-key "$PK" >/dev/null 2>&1
done
BYTES=$(nar_bytes "$B/seed" "${CLOSURE[@]}")
ZBYTES=$(du -sb "$B/static-zstd/nar" | cut -f1)
GIB=$(echo "$BYTES" | awk '{print $1 / 1073741824}')
echo "closure: $NPATHS paths, $((BYTES / 1000000)) MB of NARs ($((ZBYTES / 1000000)) MB as zstd)" >&2

# --- the two ways to get it --------------------------------------------------------------------------
# relay_on NETNS TARGET DELAY_MS — a delaying relay to TARGET (ip:port) on NETNS's loopback; sets RELAY_ADDR.
relay_on() {
  local out="$B/relay-$RANDOM$RANDOM.out"
  ip netns exec "$1" "$RELAY" 127.0.0.1:0 "$2" "$3" > "$out" &
  PIDS+=($!)
  for _ in $(seq 100); do
    RELAY_ADDR=$(sed -n 's/^listening on //p' "$out"); [ -n "$RELAY_ADDR" ] && return 0; sleep 0.02
  done
  return 1
}
# via NETNS ADDR DELAY_MS — ADDR (ip:port) as the client reaches it: itself with no delay, else a relay.
via() { if [ "$3" = 0 ]; then VIA=$2; else relay_on "$1" "$2" "$3"; VIA=$RELAY_ADDR; fi; }
seeder_cpu() { local t=0; for p in "${SEEDER_PIDS[@]}"; do t=$(echo "$t $(cpu_of "$p")" | awk '{print $1 + $2}'); done; echo "$t"; }

# from_nginx NETNS|- URL — prints "seconds nix-cpu".
from_nginx() { local store="$B/client-n"; realise "$1" "$store" "$2" "$TOP"; rm -rf "$store"; }
# from_peers NAME NETNS|- — C (fresh, its store the one nix writes) with SEEDER_ARGS; prints
# "seconds nix-cpu c-cpu seeders-cpu prefetch-hits paths-re-read".
from_peers() {
  local name=$1 ns=$2 store="$B/client-$1"
  run_daemon "$name" "$ns" 127.0.0.1 --store-root "$store" "${SEEDER_ARGS[@]}"
  local c_pid=$LAST c_url=$URL pre=(); [ "$ns" != - ] && pre=(ip netns exec "$ns")
  wait_summaries "$ns" "$c_url" 2
  local c0 s0; c0=$(cpu_of "$c_pid"); s0=$(seeder_cpu)
  local secs cpu
  if ! read -r secs cpu < <(realise "$ns" "$store" "$c_url" "$TOP") || [ -z "$secs" ]; then
    stop "$c_pid"; chmod -R u+w "$store" 2>/dev/null; rm -rf "$store"; echo FAIL; return 0
  fi
  # C goes on indexing what arrived after nix is done: wait for the index to hold the closure.
  for _ in $(seq 600); do
    n=$("${pre[@]}" curl -fsS "$c_url/api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["index"]["published_paths"])')
    [ "$n" -ge "$NPATHS" ] && break; sleep 0.1
  done
  local c1 s1; c1=$(cpu_of "$c_pid"); s1=$(seeder_cpu)
  local extra; extra=$("${pre[@]}" curl -fsS "$c_url/api/status" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["substitution"]["prefetch"]["hits"], s["arrivals"]["read_paths"])')
  stop "$c_pid"; chmod -R u+w "$store" 2>/dev/null; rm -rf "$store"
  echo "$secs $cpu $(echo "$c0 $c1" | awk '{printf "%.2f", $2 - $1}') $(echo "$s0 $s1" | awk '{printf "%.2f", $2 - $1}') $extra"
}

# row NAME NETNS|- DELAY_MS STATIC ROUNDS SEED_NS… — alternating rounds; appends to the report
# (a realisation nix failed is listed under FAILED, not timed).
REPORT=(); FAILED=()
row() {
  local name=$1 ns=$2 delay=$3 static=$4 rounds=$5; shift 5
  local seed_ns=("$@") n_s=() p_s=() n_cpu=() p_cpu=() c_cpu=() s_cpu=() hits=() reread=()
  # Seeders: live for the whole row.
  SEEDER_ARGS=(); SEEDER_PIDS=()
  local names=(a b)
  for i in 0 1; do
    local sns=${seed_ns[$i]} ip=127.0.0.1
    [ "$sns" != - ] && ip=10.78.$((i + 1)).2
    run_daemon "seed-${names[$i]}" "$sns" "$ip" --store-root "$B/seed" >/dev/null
    SEEDER_PIDS+=("$LAST")
    local addr=${P2P#/ip4/}; addr=${addr%%/p2p/*}; addr=${addr/\/tcp\//:}
    local id=${P2P##*/p2p/}
    via "$ns" "$addr" "$delay"
    SEEDER_ARGS+=(--peer "/ip4/${VIA%:*}/tcp/${VIA##*:}/p2p/$id")
  done
  local nginx_ip=127.0.0.1; [ "${seed_ns[0]}" != - ] && nginx_ip=10.78.1.2
  nginx_on "${seed_ns[0]}" "$nginx_ip" "$static"
  via "$ns" "${NGINX_URL#http://}" "$delay"
  local nginx_url="http://$VIA"
  for r in $(seq 1 "$rounds"); do
    echo "  $name round $r/$rounds" >&2
    local order=(n p); ((r % 2 == 0)) && order=(p n)
    for o in "${order[@]}"; do
      if [ "$o" = n ]; then
        read -r secs cpu < <(from_nginx "$ns" "$nginx_url") || { echo "  nginx: nix failed" >&2; FAILED+=("$name nginx r$r"); continue; }
        n_s+=("$secs"); n_cpu+=("$cpu")
      else
        read -r secs cpu ccpu scpu hit rr < <(from_peers "$name-c-$r" "$ns") || true
        [ -n "${secs:-}" ] && [ "$secs" != FAIL ] || { echo "  peers: nix failed" >&2; FAILED+=("$name peers r$r"); continue; }
        p_s+=("$secs"); p_cpu+=("$cpu"); c_cpu+=("$ccpu"); s_cpu+=("$scpu"); hits+=("$hit"); reread+=("$rr")
      fi
    done
  done
  for p in "${SEEDER_PIDS[@]}"; do stop "$p"; done
  stop "$NGINX_PID"
  if ((${#n_s[@]} == 0 || ${#p_s[@]} == 0)); then REPORT+=("$name: no successful realisation from one of them"); return 0; fi
  local med_n med_p; med_n=$(printf '%s\n' "${n_s[@]}" | median); med_p=$(printf '%s\n' "${p_s[@]}" | median)
  per_gib() { printf '%s\n' "$@" | median | awk -v g="$GIB" '{printf "%.2f", $1 / g}'; }
  REPORT+=("$(printf '%-9s %9.0f %9.0f %7.2fx %9s %9s %9s %9s %7s %7s' "$name" \
    "$(echo "$NPATHS $med_n" | awk '{print $1 / $2}')" "$(echo "$NPATHS $med_p" | awk '{print $1 / $2}')" \
    "$(echo "$med_n $med_p" | awk '{print $1 / $2}')" \
    "$(per_gib "${c_cpu[@]}")" "$(per_gib "${s_cpu[@]}")" "$(per_gib "${n_cpu[@]}")" "$(per_gib "${p_cpu[@]}")" \
    "$(printf '%s\n' "${hits[@]}" | median)" "$(printf '%s\n' "${reread[@]}" | median)")")
}

# --- namespaces: the client machine (cl) and two seeder machines, a point-to-point link each ----------
lab() {
  CL=$(mkns cl); S1=$(mkns s1); S2=$(mkns s2)
  local i=1
  for s in "$S1" "$S2"; do
    ip link add "pxk$ID$i" netns "$CL" type veth peer name "pxq$ID$i" netns "$s"
    ip -n "$CL" addr add "10.78.$i.1/30" dev "pxk$ID$i"; ip -n "$s" addr add "10.78.$i.2/30" dev "pxq$ID$i"
    ip -n "$CL" link set "pxk$ID$i" up; ip -n "$s" link set "pxq$ID$i" up
    i=$((i + 1))
  done
}
# shape RATE — both links limited to RATE in both directions.
shape() {
  local i=1
  for s in "$S1" "$S2"; do
    ip netns exec "$CL" tc qdisc replace dev "pxk$ID$i" root tbf rate "$1" burst 256kb latency 10ms
    ip netns exec "$s" tc qdisc replace dev "pxq$ID$i" root tbf rate "$1" burst 256kb latency 10ms
    i=$((i + 1))
  done
}

for r in $ROWS; do
  case "$r" in
    loopback) echo "loopback ..." >&2; row loopback - 0 "$B/static" "$ROUNDS" - - ;;
    lan) echo "1 Gbit/s, 0.5 ms RTT ..." >&2; [ -n "${CL:-}" ] || lab; shape 1gbit
      row lan "$CL" 0.25 "$B/static" "$ROUNDS" "$S1" "$S2" ;;
    wan) echo "50 Mbit/s, 40 ms RTT, nginx serving zstd ..." >&2; [ -n "${CL:-}" ] || lab; shape 50mbit
      row wan "$CL" 20 "$B/static-zstd" "$WAN_ROUNDS" "$S1" "$S2" ;;
    *) echo "unknown row $r" >&2; exit 2 ;;
  esac
done

printf '\nnix-store --realise of a %s-path closure (%s MB of NARs, %s MB as zstd) into an empty store\n' \
  "$NPATHS" "$((BYTES / 1000000))" "$((ZBYTES / 1000000))"
printf 'medians of %s rounds (wan: %s); nginx vs two peerix seeders through C; CPU-s per GiB of NARs\n' "$ROUNDS" "$WAN_ROUNDS"
printf '%-9s %9s %9s %8s %9s %9s %9s %9s %7s %7s\n' network "nginx p/s" "peers p/s" ratio "C cpu" "seeders" "nix(n)" "nix(p)" prefetch re-read
printf '%s\n' "${REPORT[@]}"
((${#FAILED[@]} == 0)) || printf 'nix FAILED: %s\n' "${FAILED[@]}"
printf 'goals: ratio >= 0.6x loopback, >= 1.2x lan, >= 1.0x wan; C <= 2.5 and seeders <= 1.5 CPU-s/GiB on loopback; re-read 0\n'
