#!/usr/bin/env bash
# A fleet of N peerix daemons (default 100) and one tracker on this machine, in a network
# namespace of its own: idle cost per node and at the tracker, lookup latency (one holder, nobody),
# freshness of a new path and of a departure. The fleet itself is benches/fleet.py (read its head
# for what each figure means); this builds the release binary, makes the namespace (loopback
# only: nothing leaves it, and all its traffic is the fleet's) and removes everything on exit.
# Needs root. Usage: benches/fleet.sh [--nodes N] [--own N] [--base N] [--idle SECS] [--tracker yes|no] …
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
need ip:iproute2
B=$(mktemp -d /var/tmp/peerix-fleet.XXXXXX)
NS="pxf-$$"
cleanup() {
  pkill -f "$B/" 2>/dev/null || true
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  [ -z "${FLEET_LOGS:-}" ] || { mkdir -p "$FLEET_LOGS"; cp "$B"/*.log "$FLEET_LOGS"/ 2>/dev/null; } || true
  rm -rf "$B"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
nix-store --generate-binary-cache-key fleet-1 "$B/sk" "$B/pk" 2>/dev/null
# 100 daemons hold ~60 file descriptors each at rest, more while they fetch.
ulimit -n "$(ulimit -Hn)"
ip netns exec "$NS" python3 benches/fleet.py --peerix "$PEERIX" --work "$B" "$@"
