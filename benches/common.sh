# Sourced by the benchmark scripts: tools, a nix that works here without a daemon or network, a
# release build of peerix in $PEERIX, and small helpers. Needs root (chroot stores, apt-get).

# need TOOL:PACKAGE… — installs the Debian packages of the tools that are missing.
need() {
  local missing=()
  for t in "$@"; do command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}"); done
  if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
need nix-store:nix-bin python3:python3 curl:curl
unset NIX_REMOTE
export NIX_CONFIG=$'experimental-features = nix-command\nsubstituters =\nsandbox = false\nbuild-users-group =\n'
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/peerix-target}"
cargo build --release --locked --quiet
PEERIX="$CARGO_TARGET_DIR/release/peerix"

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
