# services.peerix-tracker: `peerix tracker` (which peer shares which path, for peers that share no
# LAN) as a hardened systemd service. Its command line comes from ./tracker-args.nix, checked by
# tests/nixos_module.rs against the real parser like the daemon's.
{ config, lib, pkgs, utils, ... }:

let
  cfg = config.services.peerix-tracker;
  inherit (lib) mkOption types;
in
{
  options.services.peerix-tracker = {
    enable = lib.mkEnableOption "the peerix tracker";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The peerix package to run.";
    };

    port = mkOption {
      type = types.port;
      default = 12305;
      description = "Port of the tracker's HTTP API, on every address (peers announce and look up here).";
    };

    p2pPort = mkOption {
      type = types.port;
      default = 12307;
      description = ''
        Port of the tracker's libp2p node (Kademlia bootstrap, relay v2, AutoNAT), TCP and QUIC,
        on every address. Peers behind NAT reach each other through it.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = "Open the tracker's HTTP port (TCP) and its p2p port (TCP and UDP).";
    };

    settings = mkOption {
      default = { };
      description = ''
        Other flags of `peerix tracker --help`, by long name (`ttl = 600;` gives `--ttl 600`).
      '';
      type = types.submodule {
        freeformType = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.int types.str ]));
        options = {
          ttl = mkOption {
            type = types.nullOr types.ints.positive;
            default = null;
            description = "Seconds a peer's record lives after its last announcement (tracker default: 300).";
          };
          trust-proxy = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "127.0.0.1";
            description = "Address of a reverse proxy whose X-Forwarded-For names the client.";
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    networking.firewall = lib.mkIf cfg.openFirewall {
      allowedTCPPorts = [ cfg.port cfg.p2pPort ];
      allowedUDPPorts = [ cfg.p2pPort ];
    };

    systemd.services.peerix-tracker = {
      description = "peerix tracker";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = import ./hardening.nix // {
        ExecStart = "${lib.getExe cfg.package} ${utils.escapeSystemdExecArgs (import ./tracker-args.nix { inherit cfg; })}";
        StateDirectory = "peerix-tracker";
        LimitNOFILE = 65536;
      };
    };
  };
}
