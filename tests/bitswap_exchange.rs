//! Bitswap between separate processes on 127.0.0.1: daemon B fetches daemon A's NAR (root and every
//! chunk) and gets bytes equal to `nix-store --dump`; B checks every block, so a rogue peer's wrong
//! blocks are dropped; a peer sending malformed or over-size messages is disconnected while the
//! daemon keeps running; a restart keeps the peer id and the provider records it holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use futures_util::{AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, noise, tcp, yamux};

/// A store holding a 3 MB tree (≈ 45 chunks), indexed by `peerix publish`.
struct Source {
    w: Work,
    store: PathBuf,
    path: String,
}

fn source() -> Source {
    let w = Work::new();
    let src = w.path("tree");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(src.join("lib/data.bin"), pseudo_random(3_000_000, 0x2545F4914F6CDD1D)).unwrap();
    std::fs::write(src.join("README"), "shared over bitswap\n").unwrap();
    let store = w.path("store");
    let path = run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(&src));
    run(&mut peerix_cmd("publish", &w.path("state-a"), &["--store-root", store.to_str().unwrap(), "--serve-private"]));
    Source { w, store, path }
}

impl Source {
    fn daemon_a(&self, extra: &[&str]) -> Daemon {
        let args = [
            &["--store-root", self.store.to_str().unwrap(), "--serve-private", "--p2p-listen", "/ip4/127.0.0.1/tcp/0"]
                [..],
            extra,
        ]
        .concat();
        Daemon::start(&self.w.path("state-a"), &args)
    }

    /// B, joined to A through `connect` (`--peer A` in `lan` mode, `--bootstrap A` for the DHT).
    fn daemon_b(&self, state: &str, connect: &[&str], extra: &[&str]) -> Daemon {
        let store = self.w.path(&format!("{state}-store"));
        let args =
            [&["--store-root", store.to_str().unwrap(), "--p2p-listen", "/ip4/127.0.0.1/tcp/0"][..], connect, extra]
                .concat();
        Daemon::start(&self.w.path(state), &args)
    }

    fn nar(&self) -> Vec<u8> {
        nix_dump(&self.store.join(&self.path[1..]))
    }
}

async fn status(d: &Daemon) -> serde_json::Value {
    serde_json::from_slice(&get(&format!("{}/api/status", d.url)).await.body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_fetches_another_daemons_nar_block_by_block() {
    let s = source();
    let a = s.daemon_a(&["--mode", "lan"]);
    let root = root_cid(&a, &s.path).await;
    let b = s.daemon_b("state-b", &["--peer", &a.p2p_addr()], &["--mode", "lan"]);
    b.wait_log("peer connected");

    let out = s.w.path("fetched.nar");
    let f = b.fetch(&root, &out);
    assert!(f.status.success(), "{}\n{}", String::from_utf8_lossy(&f.stderr), b.log());
    assert!(std::fs::read(&out).unwrap() == s.nar(), "fetched NAR differs from nix-store --dump");

    let chunks = {
        let v: serde_json::Value =
            serde_json::from_slice(&get(&format!("{}/api/paths/{}", a.url, hash_part(&s.path))).await.body).unwrap();
        v["index"]["chunk_count"].as_u64().unwrap()
    };
    let sb = status(&b).await;
    assert!(sb["p2p"]["bitswap"]["blocks_received"].as_u64().unwrap() > chunks, "root + every chunk: {sb}");
    assert_eq!(sb["connected_peers"][0].as_str().unwrap(), status(&a).await["peer_id"].as_str().unwrap());
    assert!(sb["listen_addrs"][0].as_str().unwrap().ends_with(&format!("/p2p/{}", sb["peer_id"].as_str().unwrap())));
    // What the swarm fetched is B's now: its gateway serves it, verified.
    let car = get(&format!("{}/ipfs/{root}?format=car", b.url)).await;
    assert_eq!(car.status, 200);
    let (_, blocks) = parse_car(&car.body);
    assert_eq!(blocks.len() as u64, chunks + 1);
    assert!(blocks.iter().all(|(c, d)| block_matches(c, d)));
}

/// A test peer in this process: bitswap over libp2p-stream, behaving badly on purpose.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct Rogue {
    stream: libp2p_stream::Behaviour,
    identify: libp2p::identify::Behaviour,
    ping: libp2p::ping::Behaviour,
}

fn rogue_swarm() -> libp2p::Swarm<Rogue> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|k| Rogue {
            stream: libp2p_stream::Behaviour::new(),
            identify: libp2p::identify::Behaviour::new(libp2p::identify::Config::new("ipfs/0.1.0".into(), k.public())),
            ping: libp2p::ping::Behaviour::new(libp2p::ping::Config::new()),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Drives the swarm until `peer` connects (true) or disconnects (false) — whichever `want`s.
async fn until_connection(swarm: &mut libp2p::Swarm<Rogue>, peer: PeerId, connected: bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer && connected => return,
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } if peer_id == peer && !connected => {
                    return;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("peer {peer} never {}", if connected { "connected" } else { "disconnected" }));
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_blocks_are_dropped_and_malformed_messages_disconnect() {
    use peerix::p2p::bitswap::message::{self, Block, Message};
    let s = source();
    let a = s.daemon_a(&["--mode", "lan"]);
    let root = root_cid(&a, &s.path).await;
    let b = s.daemon_b("state-b", &["--peer", &a.p2p_addr()], &["--mode", "lan"]);
    let b_addr: Multiaddr = b.p2p_addr().parse().unwrap();
    let Some(libp2p::multiaddr::Protocol::P2p(b_id)) = b_addr.iter().last() else { panic!("{b_addr}") };

    // The rogue answers every want with the wrong bytes under the wanted CID's prefix.
    let mut swarm = rogue_swarm();
    let mut control = swarm.behaviour().stream.new_control();
    let mut incoming = control.accept(peerix::p2p::bitswap::PROTOCOL_1_2_0).unwrap();
    swarm.dial(b_addr.clone()).unwrap();
    until_connection(&mut swarm, b_id, true).await;
    let driver = tokio::spawn(async move {
        // Keep the rogue's swarm polled while B asks it for blocks.
        loop {
            swarm.select_next_some().await;
        }
    });
    let mut responder = control.clone();
    let answered = tokio::spawn(async move {
        let mut lies = 0;
        while let Some((peer, mut stream)) = incoming.next().await {
            while let Ok(Some(msg)) = message::read(&mut stream).await {
                let Some(wl) = msg.wantlist else { continue };
                let payload: Vec<Block> = wl
                    .entries
                    .iter()
                    .filter(|e| !e.cancel)
                    .filter_map(|e| cid::Cid::try_from(e.block.as_slice()).ok())
                    .map(|c| Block {
                        prefix: message::prefix_of(&c),
                        data: bytes::Bytes::from_static(b"definitely not this block"),
                    })
                    .collect();
                if payload.is_empty() {
                    continue;
                }
                let lie = Message { payload, ..Default::default() };
                for _attempt in 0..3 {
                    let Ok(mut out) = responder.open_stream(peer, peerix::p2p::bitswap::PROTOCOL_1_2_0).await else {
                        continue;
                    };
                    if message::write(&mut out, &lie).await.is_ok() {
                        lies += lie.payload.len();
                        let _ = out.close().await;
                        break;
                    }
                }
                if lies >= 1 {
                    return lies;
                }
            }
        }
        lies
    });
    let out = s.w.path("fetched.nar");
    let f = b.fetch(&root, &out);
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
    assert!(std::fs::read(&out).unwrap() == s.nar(), "a wrong block got through");
    let lies = tokio::time::timeout(Duration::from_secs(30), answered).await.unwrap().unwrap();
    assert!(lies >= 1, "the rogue was asked");
    // The lie reached B (the rogue wrote it): B counts it as a block nobody wanted under that CID.
    b.wait_status("the rogue's wrong block counted as unwanted", |s| {
        s["p2p"]["bitswap"]["unwanted_blocks"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    driver.abort();

    // Malformed protobuf, then an over-size frame: each gets the sender disconnected.
    for garbage in [vec![3u8, 0xff, 0xff, 0xff], {
        let mut v = Vec::new();
        peerix::ipld::put_varint(&mut v, 5 << 20);
        v.extend_from_slice(&[0u8; 64]);
        v
    }] {
        let mut swarm = rogue_swarm();
        let mut control = swarm.behaviour().stream.new_control();
        swarm.dial(b_addr.clone()).unwrap();
        until_connection(&mut swarm, b_id, true).await;
        let send = tokio::spawn(async move {
            let mut s = control.open_stream(b_id, peerix::p2p::bitswap::PROTOCOL_1_2_0).await.unwrap();
            let _ = s.write_all(&garbage).await;
            let _ = s.flush().await;
            s
        });
        until_connection(&mut swarm, b_id, false).await;
        drop(send);
    }
    assert!(status(&b).await["p2p"]["bitswap"]["peers_dropped"].as_u64().unwrap() >= 2);
    // Still serving, over HTTP and bitswap.
    let again = s.w.path("again.nar");
    assert!(b.fetch(&root, &again).status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_the_peer_id_and_provider_records() {
    let s = source();
    let a = s.daemon_a(&["--mode", "ipfs", "--dht-server"]);
    let root = root_cid(&a, &s.path).await;
    let a_id = status(&a).await["peer_id"].as_str().unwrap().to_owned();
    let state_b = "state-b";
    let b = s.daemon_b(state_b, &["--bootstrap", &a.p2p_addr()], &["--mode", "ipfs", "--dht-server"]);
    let b_id = status(&b).await["peer_id"].as_str().unwrap().to_owned();
    // A announces its NAR roots once it has a peer; B, a DHT server, stores the record.
    b.wait_log("stored provider record");
    let findprovs = |d: &Daemon| {
        let url = format!("{}/api/v0/routing/findprovs?arg={root}", d.url);
        async move {
            let r = request(&client(), "POST", &url, &[]).await;
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["Responses"].as_array().unwrap().iter().map(|p| p["ID"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    assert!(findprovs(&b).await.contains(&a_id));
    drop(b);
    drop(a);

    // B alone, restarted on the same state: same identity, and it still knows who provides the root.
    let b = s.daemon_b(state_b, &["--bootstrap", "none"], &["--mode", "ipfs", "--dht-server"]);
    assert_eq!(status(&b).await["peer_id"].as_str().unwrap(), b_id);
    assert!(findprovs(&b).await.contains(&a_id), "provider record survived the restart");
}
