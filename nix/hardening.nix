# The systemd sandbox of peerix's services. Plain data, so tests/nixos_module.rs can render it into
# a unit and score it with `systemd-analyze security --offline` on a machine without nixpkgs.
#
# What peerix needs: TCP/UDP on IPv4 and IPv6 (HTTP, libp2p TCP and QUIC), netlink (libp2p's
# interface watcher for mDNS and listen addresses), read access to /nix/store and Nix's database
# (ProtectSystem=strict leaves both readable), its state directory, sendfile(2) for NAR bodies and
# setrlimit(2) to raise its open-file soft limit (both in @system-service).
{
  DynamicUser = true;
  StateDirectoryMode = "0700";
  UMask = "0077";
  Restart = "on-failure";
  RestartSec = 5;

  CapabilityBoundingSet = "";
  AmbientCapabilities = "";
  NoNewPrivileges = true;
  PrivateUsers = true;
  PrivateTmp = true;
  PrivateDevices = true;
  DevicePolicy = "closed";
  ProtectSystem = "strict";
  ProtectHome = true;
  ProtectHostname = true;
  ProtectClock = true;
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  ProtectProc = "invisible";
  ProcSubset = "pid";
  RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  LockPersonality = true;
  MemoryDenyWriteExecute = true;
  RemoveIPC = true;
  KeyringMode = "private";
  SystemCallArchitectures = "native";
  SystemCallFilter = [ "@system-service" "~@privileged" ];
  SystemCallErrorNumber = "EPERM";
}
