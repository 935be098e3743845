# A LAN-mode pair: mDNS only, no DHT. A path signed on `a` is realised on `b` through b's peerix,
# and neither node opens a connection to anything but its neighbour.
{ self }:
{
  name = "peerix-lan";
  nodes = {
    a = { imports = [ (import ./common.nix { inherit self; }) ]; services.peerix.mode = "lan"; };
    b = { imports = [ (import ./common.nix { inherit self; }) ]; services.peerix.mode = "lan"; };
  };
  testScript = ''
    start_all()
    for m in (a, b):
        m.wait_for_unit("peerix.service")
        m.wait_until_succeeds("curl -sf http://127.0.0.1:12304/nix-cache-info")

    path = a.succeed("echo 'made on a' > /tmp/payload && nix-store --add /tmp/payload").strip()
    a.succeed(f"nix store sign --key-file /etc/peerix-vmtest.sk {path}")
    a.wait_until_succeeds(f"peerix status --path {path} --json | jq -e '.index.root_cid != null'")
    b.wait_until_succeeds("peerix status --json | jq -e '.connected_peers | length == 1'")
    b.succeed(f"nix-store --realise {path}")
    assert b.succeed(f"cat {path}").strip() == "made on a"

    # lan mode runs no DHT: the one peer b knows is a, found by mDNS.
    a_id = a.succeed("peerix status --json | jq -r .peer_id").strip()
    b.succeed(f"peerix status --json | jq -e '[.connected_peers[] | tostring | contains(\"{a_id}\")] == [true]'")
  '';
}
