#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and integration tests against a real `nix`.
# Installs what the tests need when it is missing (Debian's nix-bin 2.8; needs root, as CI has).
# Integration tests build fixtures in /nix/store as root in single-user mode (no nix-daemon), bind
# only 127.0.0.1, and run every daemon with `--upstream none` or a local test upstream.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive

need=()
command -v nix-store >/dev/null 2>&1 || need+=(nix-bin)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)   # network namespaces for the mDNS test
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)   # the NixOS module's unit, scored offline
command -v chromium >/dev/null 2>&1 || need+=(chromium)   # the dashboard test's headless browser
command -v iptables >/dev/null 2>&1 || need+=(iptables)   # the NAT lab (MASQUERADE in namespaces)
command -v npm >/dev/null 2>&1 || need+=(npm)   # the Helia interop peer and the dashboard's browser driver
if ((${#need[@]})); then
  echo "test.sh: installing ${need[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Helia (JavaScript IPFS) interop peer: pinned by tests/helia/package-lock.json.
if [ ! -d tests/helia/node_modules ] || [ tests/helia/package-lock.json -nt tests/helia/node_modules ]; then
  (cd tests/helia && npm ci --no-audit --no-fund --loglevel=error)
  touch tests/helia/node_modules
fi
# playwright-core, which drives Debian's Chromium for the dashboard test.
if [ ! -d tests/dashboard/node_modules ] || [ tests/dashboard/package-lock.json -nt tests/dashboard/node_modules ]; then
  (cd tests/dashboard && npm ci --no-audit --no-fund --loglevel=error)
  touch tests/dashboard/node_modules
fi
# The reference OpenMetrics parser (Prometheus's Python client), for the /metrics test: Debian's
# package when python3 is the system's (stock Debian 12 has no pip, and refuses pip installs into
# the system: PEP 668), else pip, else a venv of our own that the test is told about.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  if [ "$(command -v python3)" = /usr/bin/python3 ] && apt-get install -y -qq --no-install-recommends python3-prometheus-client >/dev/null 2>&1; then
    :
  elif python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore prometheus-client==0.21.1 2>/dev/null; then
    :
  else
    venv=${CARGO_TARGET_DIR:-target}/test-venv
    [ -x "$venv/bin/python3" ] || python3 -m venv "$venv" 2>/dev/null || {
      apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv "$venv"
    }
    "$venv/bin/python3" -c 'import prometheus_client' 2>/dev/null ||
      "$venv/bin/python3" -m pip install -q --disable-pip-version-check prometheus-client==0.21.1
    PEERIX_TEST_PYTHON=$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")/bin/python3
    export PEERIX_TEST_PYTHON
  fi
fi
# Single-user nix as root: a systemd user session may set NIX_REMOTE=daemon, and no daemon runs here.
unset NIX_REMOTE
# Create Nix's database once, before tests run in parallel: on a fresh machine every test's first nix
# command would race to create it, and the losers fail with "SQLite database ... is busy" (seen in CI).
NIX_CONFIG=$'sandbox = false\nbuild-users-group =\n' nix-store --init

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
