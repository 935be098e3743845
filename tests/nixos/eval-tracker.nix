# As ./eval.nix, for nix/tracker-module.nix (`services.peerix-tracker`).
{ overrides ? { } }:
let
  stub = import ./stub.nix;
  evalWith = cfg: import ../../nix/tracker-module.nix {
    inherit (stub) lib pkgs utils;
    config.services.peerix-tracker = cfg;
  };
  options = (evalWith { }).options.services.peerix-tracker;
  settingsOptions = options.settings.type.options;
  settings = builtins.mapAttrs (_: o: o.default) settingsOptions // (overrides.settings or { });
  cfg = builtins.mapAttrs (_: o: o.default) options // overrides // { inherit settings; };
  inherit ((evalWith cfg).config) condition content;
  service = content.systemd.services.peerix-tracker;
in
{
  options = builtins.mapAttrs (_: o: { type = o.type.name; default = o.default; }) (removeAttrs options [ "package" ]);
  badTypes = builtins.attrNames (stub.lib.filterAttrs (n: v: !(options.${n}.type.check v)) (removeAttrs cfg [ "package" ]));
  inherit condition;
  firewall = if content.networking.firewall.condition then content.networking.firewall.content else null;
  execStart = service.serviceConfig.ExecStart;
  environment = { };
  settings = { };
  serviceConfig = removeAttrs service.serviceConfig [ "ExecStart" ];
  unit = removeAttrs service [ "serviceConfig" ];
}
