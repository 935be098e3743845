# The command line of `peerix tracker` for one `services.peerix-tracker` configuration. Plain
# builtins, as ./args.nix, so tests/nixos_module.rs runs the real parser on it
# (`peerix tracker --print-config`).
{ cfg }:
let
  flag = name: value:
    if builtins.isBool value then (if value then [ "--${name}" ] else [ ])
    else [ "--${name}" (toString value) ];
in
[
  "tracker"
  "--listen"
  "0.0.0.0:${toString cfg.port}"
  "--state-dir"
  "/var/lib/peerix-tracker"
  "--p2p-listen"
  "/ip4/0.0.0.0/tcp/${toString cfg.p2pPort}"
  "--p2p-listen"
  "/ip4/0.0.0.0/udp/${toString cfg.p2pPort}/quic-v1"
]
# Every other flag of `peerix tracker --help`, by its long name (null: the tracker's default).
++ builtins.concatLists (map (name: flag name cfg.settings.${name})
  (builtins.filter (name: cfg.settings.${name} != null) (builtins.attrNames cfg.settings)))
