#!/usr/bin/env bash
# NAR throughput through NAT: a 64 MiB path realised by nix from a peer behind another NAT, over a
# hole-punched connection and (symmetric NAT) over the tracker's relay, against the same transfer
# between two namespaces on a plain veth LAN with no NAT; and the time from the daemon's start to
# the direct connection. The network namespaces and NATs are built and removed by the driver
# (tests/nat_traversal.rs, `nat_throughput`, release build). Needs root and iptables.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/common.sh
need iptables:iptables
cargo test --release --locked --quiet --test nat_traversal -- --ignored --exact nat_throughput --nocapture 2>/dev/null |
  grep -E '^(64 MiB|LAN|two NATs|symmetric|time from)'
