{
  description = "peerix: a peer-to-peer binary cache for Nix";

  # No flake.lock is committed: it could not be produced honestly where peerix is developed (no
  # nixpkgs there). The first `nix flake lock` (or any `nix build`) on a machine with network
  # access writes one; see the README.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        peerix = pkgs.callPackage ./nix/package.nix { };
        default = peerix;
      });

      overlays.default = final: _prev: { peerix = final.callPackage ./nix/package.nix { }; };

      nixosModules = {
        peerix = { pkgs, lib, ... }: {
          imports = [ ./nix/module.nix ];
          services.peerix.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
        peerix-tracker = { pkgs, lib, ... }: {
          imports = [ ./nix/tracker-module.nix ];
          services.peerix-tracker.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
        default = {
          imports = [ self.nixosModules.peerix self.nixosModules.peerix-tracker ];
        };
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = with pkgs; [ cargo clippy rustfmt rust-analyzer nix nodejs python3 iproute2 curl ];
        };
      });

      checks = forAllSystems (pkgs:
        let
          vmTest = file: pkgs.testers.runNixOSTest (import file { inherit self; });
        in
        {
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          substitution = vmTest ./nix/tests/substitution.nix;
          lan = vmTest ./nix/tests/lan.nix;
          hardening = vmTest ./nix/tests/hardening.nix;
        });
    };
}
