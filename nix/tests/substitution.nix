# Two peers and a client on one test network (ipfs mode, no bootstrap: they meet by mDNS, as on a
# LAN). A path made and signed on peer1 only is realised on the client through its own peerix,
# which finds it on peer1, checks the signature and assembles the NAR from peer1's blocks.
{ self }:
{
  name = "peerix-substitution";
  nodes = {
    peer1 = import ./common.nix { inherit self; };
    peer2 = import ./common.nix { inherit self; };
    client = import ./common.nix { inherit self; };
  };
  testScript = ''
    start_all()
    for m in (peer1, peer2, client):
        m.wait_for_unit("peerix.service")
        m.wait_until_succeeds("curl -sf http://127.0.0.1:12304/nix-cache-info")

    # A path only peer1 holds, signed with the test key (trusted by every node).
    path = peer1.succeed(
        "echo 'made on peer1' > /tmp/payload && nix-store --add /tmp/payload"
    ).strip()
    peer1.succeed(f"nix store sign --key-file /etc/peerix-vmtest.sk {path}")
    peer1.wait_until_succeeds(
        f"peerix status --path {path} --json | jq -e '.gate.shared == true and .index.root_cid != null'"
    )
    client.fail(f"nix-store --check-validity {path}")

    # The client's peerix is connected to both peers (mDNS), then nix substitutes from it.
    client.wait_until_succeeds("peerix status --json | jq -e '.connected_peers | length >= 2'")
    client.succeed(f"nix-store --realise {path}")
    client.succeed(f"nix-store --verify-path {path}")
    assert client.succeed(f"cat {path}").strip() == "made on peer1"
    peer2.fail(f"nix-store --check-validity {path}")

    # The service stays up and private: the HTTP port answers on loopback only.
    peer1.fail("curl -sf --max-time 2 http://client:12304/nix-cache-info")
  '';
}
