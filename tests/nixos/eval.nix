# Evaluates nix/module.nix on one configuration of `services.peerix` (the options' defaults, with
# `overrides` on top) against ./stub.nix, and returns what tests/nixos_module.rs checks: the options
# (type and default), values that fail their option's type, the failed assertions, and what the
# module sets: nix.settings, the firewall, the unit (ExecStart's argument vector among it).
{ overrides ? { } }:
let
  stub = import ./stub.nix;
  inherit (stub.lib) filterAttrs;
  evalWith = cfg: import ../../nix/module.nix {
    inherit (stub) lib pkgs utils;
    config.services.peerix = cfg;
  };
  options = (evalWith { }).options.services.peerix;
  defaults = builtins.mapAttrs (_: o: o.default) options;
  settingsOptions = options.settings.type.options;
  settings = builtins.mapAttrs (_: o: o.default) settingsOptions // (overrides.settings or { });
  cfg = defaults // overrides // { inherit settings; };
  module = evalWith cfg;
  described = o: { type = o.type.name; default = if builtins.isPath o.default then "<path>" else o.default; }
    // (if o.type ? values then { inherit (o.type) values; } else { });
  badTypes = builtins.attrNames (filterAttrs (n: v: !(options.${n}.type.check v)) (removeAttrs cfg [ "package" ]))
    ++ builtins.attrNames (filterAttrs (n: v: settingsOptions ? ${n} && !(settingsOptions.${n}.type.check v)) settings);
  inherit (module.config) condition content;
  service = content.systemd.services.peerix;
in
{
  options = builtins.mapAttrs (_: described) (removeAttrs options [ "package" ]);
  settingsOptions = builtins.mapAttrs (_: described) settingsOptions;
  inherit badTypes condition;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) content.assertions);
  inherit (content) warnings;
  # What the module renders into the --config file (null values left out), as JSON.
  settings = filterAttrs (_: v: v != null) settings;
  nixSettings = content.nix.settings;
  firewall = if content.networking.firewall.condition then content.networking.firewall.content else null;
  execStart = service.serviceConfig.ExecStart;
  environment = service.environment;
  serviceConfig = removeAttrs service.serviceConfig [ "ExecStart" ];
  unit = removeAttrs service [ "serviceConfig" "environment" ];
}
