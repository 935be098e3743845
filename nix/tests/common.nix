# What every VM test's machines share: the module, a test signing key and test-network hygiene.
# The key pair in ./keys/ exists only for these tests (it signs paths made inside the VMs).
{ self }:
{ config, lib, pkgs, ... }:
{
  imports = [ self.nixosModules.default ];
  services.peerix = {
    enable = true;
    # Nothing may leave the test network: no upstream cache, no public bootstrap peers.
    upstream = "none";
    settings.bootstrap = [ "none" ];
    trustedPublicKeys = [ (lib.fileContents ./keys/vmtest.pk) ];
    publicKey = lib.fileContents ./keys/vmtest.pk;
  };
  # No cache.nixos.org in the sandbox: only peerix is asked.
  nix.settings.substituters = lib.mkForce [ ];
  nix.settings.experimental-features = [ "nix-command" ];
  environment.etc."peerix-vmtest.sk".source = ./keys/vmtest.sk;
  environment.systemPackages = [ config.services.peerix.package pkgs.jq pkgs.curl ];
}
