# A stand-in for the parts of nixpkgs that nix/module.nix uses, so tests/nixos_module.rs can
# evaluate the module with Debian's nix and no nixpkgs (which these machines cannot fetch). Types
# carry a `check` like nixpkgs' do; `mkIf` keeps its condition so the test can see it. Only what
# the module calls is here: a call to anything else fails the evaluation, and with it the test.
let
  type = name: check: { inherit name check; };
  all = pred: list: builtins.all pred list;
  filterAttrs = pred: set:
    builtins.listToAttrs (builtins.concatMap
      (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ])
      (builtins.attrNames set));
  hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
in
{
  lib = {
    inherit filterAttrs hasPrefix;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = what: { _type = "option"; default = false; type = type "bool" builtins.isBool; description = "Whether to enable ${what}."; };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    optional = cond: x: if cond then [ x ] else [ ];
    getExe = pkg: "${pkg}/bin/peerix";
    types = {
      bool = type "bool" builtins.isBool;
      str = type "str" builtins.isString;
      path = type "path" (v: builtins.isPath v || (builtins.isString v && hasPrefix "/" v));
      package = type "package" (v: builtins.isString v);
      port = type "port" (v: builtins.isInt v && v >= 0 && v <= 65535);
      int = type "int" builtins.isInt;
      ints.positive = type "positive int" (v: builtins.isInt v && v > 0);
      oneOf = ts: type "one of" (v: builtins.any (t: t.check v) ts);
      attrsOf = t: type "attrs of ${t.name}" (v: builtins.isAttrs v && builtins.all t.check (builtins.attrValues v));
      enum = values: type "enum" (v: builtins.elem v values) // { inherit values; };
      nullOr = t: type "null or ${t.name}" (v: v == null || t.check v) // { inner = t; };
      either = a: b: type "${a.name} or ${b.name}" (v: a.check v || b.check v);
      listOf = t: type "list of ${t.name}" (v: builtins.isList v && all t.check v);
      submodule = m: type "submodule" builtins.isAttrs // m;
    };
  };
  pkgs = {
    callPackage = _: _: "/nix/store/00000000000000000000000000000000-peerix-stub";
    # The test renders `settings` itself (TOML from the JSON below) and puts the file at this path.
    formats.toml = _: {
      type = type "TOML value" (_: true);
      generate = _name: _value: "@settings.toml@";
    };
  };
  # As nixpkgs' nixos/lib/utils.nix: each argument JSON-quoted, systemd's % and $ doubled.
  utils.escapeSystemdExecArgs = args:
    builtins.concatStringsSep " "
      (map (a: builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON a)) args);
}
