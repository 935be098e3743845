# The command line of `peerix serve` for one `services.peerix` configuration: every flag the module
# can emit is built here. Plain builtins, no nixpkgs, so `tests/nixos_module.rs` can evaluate it
# with `nix-instantiate --eval` on plain attribute sets and run the real parser on the result
# (`peerix serve --print-config`): a renamed or removed flag fails the test suite, not a deployment.
#
# `cfg` is `config.services.peerix`; `configFile` the rendered `settings` (or null). Returns the
# argument vector (unescaped; the module escapes it for systemd) and the environment: the key is
# passed as `%d/private-key`, the credential systemd's `LoadCredential` places in the service's
# private credentials directory, which is the one specifier systemd must expand.
{ cfg, configFile ? null }:
let
  # `--flag v1 --flag v2 …` for a list option.
  repeated = flag: values: builtins.concatLists (map (v: [ flag v ]) values);
  optional = flag: value: if value == null then [ ] else [ flag (toString value) ];
  p2p = toString cfg.p2pPort;
in
{
  argv =
    [
      "serve"
      # Loopback only: the binary cache answers the local nix; peers use the p2p port.
      "--listen"
      "127.0.0.1:${toString cfg.port}"
      # systemd's StateDirectory=peerix (with DynamicUser, a link into /var/lib/private).
      "--state-dir"
      "/var/lib/peerix"
      "--mode"
      cfg.mode
      "--p2p-listen"
      "/ip4/0.0.0.0/tcp/${p2p}"
      "--p2p-listen"
      "/ip4/0.0.0.0/udp/${p2p}/quic-v1"
    ]
    ++ optional "--config" configFile
    ++ optional "--upstream" cfg.upstream
    # The list is the whole trusted set: an empty one trusts no key (the value "" says so, where
    # leaving the flag out would mean cache.nixos.org's key).
    ++ (if cfg.trustedPublicKeys == [ ] then [ "--trusted-public-key" "" ]
        else repeated "--trusted-public-key" cfg.trustedPublicKeys)
    ++ repeated "--peer" cfg.peers
    ++ repeated "--fallback" cfg.fallback
    ++ optional "--tracker" cfg.trackerUrl
    ++ cfg.extraArgs;
  environment =
    if cfg.privateKeyFile == null then { } else { PEERIX_PRIVATE_KEY_FILE = "%d/private-key"; };
}
