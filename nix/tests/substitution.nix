# A tracker, two peers and a client on one test network, with mDNS off: the peers and the client
# find each other only through the tracker. A path made and signed on peer1 only is realised on
# the client through its own peerix, which finds peer1 through the tracker, checks the signature
# and assembles the NAR from peer1's blocks.
{ self }:
let
  peer = { lib, ... }: {
    imports = [ (import ./common.nix { inherit self; }) ];
    services.peerix.trackerUrl = "http://tracker:12305";
    services.peerix.settings.mdns = false;
  };
in
{
  name = "peerix-substitution";
  nodes = {
    tracker = { ... }: {
      imports = [ self.nixosModules.default ];
      services.peerix-tracker.enable = true;
    };
    peer1 = peer;
    peer2 = peer;
    client = peer;
  };
  testScript = ''
    start_all()
    tracker.wait_for_unit("peerix-tracker.service")
    tracker.wait_until_succeeds("curl -sf http://127.0.0.1:12305/health")
    for m in (peer1, peer2, client):
        m.wait_for_unit("peerix.service")
        m.wait_until_succeeds("curl -sf http://127.0.0.1:12304/nix-cache-info")

    # A path only peer1 holds, signed with the test key (trusted by every node).
    path = peer1.succeed(
        "echo 'made on peer1' > /tmp/payload && nix-store --add /tmp/payload"
    ).strip()
    peer1.succeed(f"nix store sign --key-file /etc/peerix-vmtest.sk {path}")
    hash = path.removeprefix("/nix/store/")[:32]
    peer1.wait_until_succeeds(
        f"peerix status --path {path} --json | jq -e '.gate.shared == true and .index.root_cid != null'"
    )
    # peer1 announced it: the tracker names peer1 as its provider.
    peer1_id = peer1.succeed("peerix status --json | jq -r .peer_id").strip()
    tracker.wait_until_succeeds(
        f"curl -sf http://127.0.0.1:12305/v1/providers/{hash} | jq -e '.providers[0].peer_id == \"{peer1_id}\"'"
    )
    client.fail(f"nix-store --check-validity {path}")

    client.succeed(f"nix-store --realise {path}")
    client.succeed(f"nix-store --verify-path {path}")
    assert client.succeed(f"cat {path}").strip() == "made on peer1"
    client.succeed(f"peerix status --json | jq -e '[.p2p.peers[] | select(.found == \"tracker\")] | length >= 1'")
    peer2.fail(f"nix-store --check-validity {path}")

    # The HTTP port answers on loopback only.
    peer1.fail("curl -sf --max-time 2 http://client:12304/nix-cache-info")
  '';
}
