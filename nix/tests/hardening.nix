# The unit's sandbox as systemd scores it on a running NixOS, and the module's promises about the
# machine's configuration: substituters appended, not replaced; the key never in the store.
{ self }:
{
  name = "peerix-hardening";
  nodes.machine = { lib, ... }: {
    imports = [ (import ./common.nix { inherit self; }) ];
    # A user substituter the module must keep.
    nix.settings.substituters = lib.mkOverride 10 [ "http://cache.example.invalid" ];
    services.peerix.privateKeyFile = "/etc/peerix-vmtest.sk";
    # Paths of the VM's own closure carry no signature: serve them so the key's use shows.
    services.peerix.settings.serve-private = true;
  };
  testScript = ''
    machine.wait_for_unit("peerix.service")
    machine.wait_until_succeeds("curl -sf http://127.0.0.1:12304/nix-cache-info")

    # Exposure 0-10 as `systemd-analyze security` computes it (the threshold is x10); offline, on
    # the same settings, tests/nixos_module.rs measures 1.4 and requires 2.0 at every CI run.
    # tests/nixos_module.rs scores the same settings offline at every CI run.
    machine.succeed("systemd-analyze security peerix.service --threshold=25 --no-pager")

    conf = machine.succeed("nix config show 2>/dev/null || nix show-config")
    assert "http://cache.example.invalid" in conf, conf
    assert "http://127.0.0.1:12304" in conf, conf

    # The key reached the daemon as a credential: an unsigned path's narinfo carries its signature.
    path = machine.succeed("readlink -f /run/current-system").strip()
    hash = path.removeprefix("/nix/store/")[:32]
    machine.succeed(f"curl -sf http://127.0.0.1:12304/{hash}.narinfo | grep '^Sig: peerix-vmtest-1:'")
    # The daemon runs as a dynamic user, not root, with no capabilities.
    machine.succeed("test \"$(ps -o user= -C peerix)\" != root")
    machine.succeed("grep -q '^CapEff:\\s*0*$' /proc/$(pgrep -x peerix)/status")
  '';
}
