# peerix, built from this repository with nixpkgs' Rust tooling.
{ lib, rustPlatform }:

let
  manifest = (lib.importTOML ../Cargo.toml).package;
in
rustPlatform.buildRustPackage {
  pname = manifest.name;
  inherit (manifest) version;

  # The crate and nothing else: no target/, benches or fuzz corpora in the source hash.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [ ../Cargo.toml ../Cargo.lock ../src ../vendor ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  # Every C dependency is vendored and built with cc (SQLite bundled, zstd, aws-lc-sys's cc
  # builder for rustls): no system libraries.

  # Unit tests only. The integration tests in tests/ need what the build sandbox lacks: they run
  # the real nix as root against /nix/store, network namespaces (root, `ip netns`), a Helia node
  # from npm and loopback daemons. CI runs them with ./test.sh; the NixOS VM tests in nix/tests/
  # cover the service itself.
  cargoTestFlags = [ "--lib" ];

  meta = {
    description = manifest.description;
    homepage = manifest.repository;
    license = lib.licenses.mit;
    mainProgram = "peerix";
    platforms = lib.platforms.linux;
  };
}
