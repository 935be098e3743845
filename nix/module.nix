# services.peerix: the peerix daemon as a hardened systemd service, added to nix as one more
# substituter (appended: the machine's own substituters stay as they are). No IPFS daemon of its own
# is needed (peerix embeds its libp2p node), so nothing here touches services.kubo.
#
# The command line comes from ./args.nix, which tests/nixos_module.rs evaluates on plain attribute
# sets and feeds to the real `peerix serve --print-config`; the same test evaluates this file's
# options and unit against a stand-in for nixpkgs' lib and checks the unit with
# `systemd-analyze security --offline`.
{ config, lib, pkgs, utils, ... }:

let
  cfg = config.services.peerix;
  inherit (lib) mkOption types;

  settingsFormat = pkgs.formats.toml { };
  # Unset typed keys are null and not written: the daemon's own defaults apply.
  settings = lib.filterAttrs (_: v: v != null) cfg.settings;
  configFile = if settings == { } then null else settingsFormat.generate "peerix.toml" settings;
  invocation = import ./args.nix { inherit cfg configFile; };

  # cache.nixos.org's key, the daemon's default trusted key.
  cacheNixosOrgKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
  mdns = cfg.settings.mdns != false;
in
{
  options.services.peerix = {
    enable = lib.mkEnableOption "peerix, a peer-to-peer binary cache for Nix";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The peerix package to run.";
    };

    mode = mkOption {
      type = types.enum [ "ipfs" "lan" ];
      default = "ipfs";
      description = ''
        `ipfs`: Kademlia DHT and mDNS, so peers anywhere can be found. `lan`: mDNS only; nothing
        leaves the local network (no DHT, no bootstrap peers).
      '';
    };

    port = mkOption {
      type = types.port;
      default = 12304;
      description = ''
        Port of the binary-cache HTTP server, on 127.0.0.1 only (nix on this machine is its one
        client). Never opened in the firewall.
      '';
    };

    p2pPort = mkOption {
      type = types.port;
      default = 12306;
      description = "Port of the libp2p node, TCP and QUIC (UDP), on every address.";
    };

    trackerUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "http://tracker.example.org:12305";
      description = ''
        A peerix tracker (`services.peerix-tracker` on some machine all peers reach): the daemon
        announces its published paths there and asks it for peers that have a path. Ignored in
        `lan` mode, where nothing leaves the local network.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Open the p2p port (TCP and UDP) and, unless `settings.mdns` is false, mDNS (UDP 5353).
        The HTTP port is never opened: it listens on loopback.
      '';
    };

    privateKeyFile = mkOption {
      type = types.nullOr (types.either types.str types.path);
      default = null;
      example = "/run/keys/peerix.sk";
      description = ''
        Secret key (Nix's format, from `peerix keygen` or `nix-store --generate-binary-cache-key`)
        peerix signs the narinfos it serves with. A string path, read at run time through systemd's
        `LoadCredential` (the file may be root-only); a path literal would copy the key into the
        world-readable store and is rejected.
      '';
    };

    publicKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "peerix.myhost-1:Q2hhbmdlIG1lIQ==";
      description = ''
        Public key of the machines' peerix signing key, added to nix's
        `extra-trusted-public-keys`, so nix accepts paths peers signed with it.
      '';
    };

    trustedPublicKeys = mkOption {
      type = types.listOf types.str;
      default = [ cacheNixosOrgKey ];
      description = ''
        Keys whose signatures (in Nix's database, or on a peer's narinfo) make a path shareable and
        a peer's answer usable. This list is the whole set: it replaces cache.nixos.org's key.
      '';
    };

    upstream = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "none";
      description = ''
        Binary cache asked whether it holds a local path with the same NarHash (then the path is
        shareable), or "none". Null keeps the daemon's default, https://cache.nixos.org.
      '';
    };

    peers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "/ip4/192.168.1.20/tcp/12306/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN" ];
      description = "peerix nodes to stay connected to (multiaddrs ending in /p2p/<peer id>).";
    };

    fallback = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "https://trustless-gateway.link" ];
      description = ''
        Where to get blocks no peer delivers in time: trustless gateways (http(s)://) or kubo RPC
        APIs (kubo+http://), tried in order. Every block is checked against its CID.
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--lookup-timeout" "500ms" ];
      description = "More arguments for `peerix serve` (see `peerix serve --help`).";
    };

    settings = mkOption {
      default = { };
      description = ''
        peerix's TOML configuration (`--config`; keys are the long flag names of
        `peerix serve --help`). The options above, given as flags, win over these keys.
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          cache-size = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "20G";
            description = "Cap on blocks kept from peers and fallbacks (daemon default: 10G).";
          };
          lookup-timeout = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "500ms";
            description = "How long a narinfo lookup may ask peers (daemon default: 250ms).";
          };
          index-jobs = mkOption {
            type = types.nullOr types.ints.positive;
            default = null;
            description = "Store paths the indexer chunks at once (daemon default: 1).";
          };
          index-rate = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "100M";
            description = "Indexer read rate, bytes per second, 0 for no cap (daemon default: 256M).";
          };
          mdns = mkOption {
            type = types.nullOr types.bool;
            default = null;
            description = "Look for peers with mDNS (daemon default: true).";
          };
          upnp = mkOption {
            type = types.nullOr types.bool;
            default = null;
            description = ''
              Map the p2p port on the router by UPnP (daemon default: off). The router's SSDP
              answers come from UDP port 1900 and may need a firewall rule.
            '';
          };
          serve-private = mkOption {
            type = types.nullOr types.bool;
            default = null;
            description = ''
              Serve every valid local path, signed or not. Exposes private builds: only on a
              trusted network.
            '';
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = !(builtins.isPath cfg.privateKeyFile);
        message = ''
          services.peerix.privateKeyFile must be a string such as "/run/keys/peerix.sk", not a path
          literal: a path literal copies the secret key into the world-readable /nix/store.
        '';
      }
      {
        assertion = cfg.privateKeyFile == null || !(lib.hasPrefix builtins.storeDir (toString cfg.privateKeyFile));
        message = "services.peerix.privateKeyFile is in the world-readable Nix store; keep secret keys outside it.";
      }
    ];
    warnings = lib.optional (cfg.trackerUrl != null && cfg.mode == "lan")
      "services.peerix.trackerUrl has no effect in lan mode: nothing leaves the local network.";

    nix.settings = {
      # Appended to the machine's substituters, never replacing them. Priority 30 (from the
      # daemon's nix-cache-info) makes nix ask peerix before cache.nixos.org (40).
      extra-substituters = [ "http://127.0.0.1:${toString cfg.port}" ];
      extra-trusted-public-keys = lib.optional (cfg.publicKey != null) cfg.publicKey;
    };

    networking.firewall = lib.mkIf cfg.openFirewall {
      allowedTCPPorts = [ cfg.p2pPort ];
      allowedUDPPorts = [ cfg.p2pPort ] ++ lib.optional mdns 5353;
    };

    systemd.services.peerix = {
      description = "peerix, a peer-to-peer binary cache for Nix";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      environment = invocation.environment;
      serviceConfig = import ./hardening.nix // {
        ExecStart = "${lib.getExe cfg.package} ${utils.escapeSystemdExecArgs invocation.argv}";
        LoadCredential = lib.optional (cfg.privateKeyFile != null) "private-key:${cfg.privateKeyFile}";
        StateDirectory = "peerix";
        # The daemon raises its soft limit to this hard one and caps HTTP connections at
        # min(8192, limit - 2048); systemd's default of 1024 would hold ~1000 connections.
        LimitNOFILE = 65536;
        # Reads /nix/store and Nix's db.sqlite (read-only, as ProtectSystem=strict leaves them).
        ReadOnlyPaths = [ builtins.storeDir "/nix/var/nix/db" ];
      };
    };
  };
}
