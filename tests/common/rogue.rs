//! A peerix peer inside the test process that behaves as the test tells it: it speaks the peerix
//! protocols (so identify marks it as a peerix node), claims in its have-summary to hold every
//! path, and answers narinfo and block requests from a [`Plan`] — honestly or not. It also records
//! the have-summaries and bitswap presences it receives, and can ask a daemon things directly, so
//! tests can see what a daemon tells the network.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use futures_util::{AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};
use peerix::p2p::{bitswap, blocks, frame, have, lanes, narinfo};

/// What the rogue answers.
#[derive(Clone, Default)]
pub struct Plan {
    /// The answer to narinfo requests (narinfo text, root CID); `None`: "not here".
    pub narinfo: Option<(String, Cid)>,
    /// Sent with a narinfo answer as the path's closure: (hash, narinfo text, root CID).
    pub closure: Vec<(String, String, Cid)>,
    /// Sent with a narinfo answer as the root's node (with `narinfo`).
    pub root_node: Option<Vec<u8>>,
    /// Answer only requests for this hash (any other: "not here"); `None`: answer every request.
    pub for_hash: Option<String>,
    /// Never answer narinfo requests (the stream is held open and nothing is written).
    pub silent: bool,
    /// A busy seeder: narinfo requests are answered one at a time across all streams, each this
    /// long after the previous one, and a stream carries request after request (a lane).
    pub busy: Option<Duration>,
    /// What the block protocol serves; any other CID is "not here".
    pub blocks: HashMap<Cid, Vec<u8>>,
    /// A block request naming this CID is answered only after this long (a seeder slow for it).
    pub slow_block: Option<(Cid, Duration)>,
    /// Send no have-summary.
    pub no_summary: bool,
    /// Every narinfo request received: (hash, whether it asked for the closure).
    pub asked: Arc<Mutex<Vec<(String, bool)>>>,
    /// The agent string identify sends [default: `ipfs/0.1.0`].
    pub agent: Option<String>,
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Behaviour {
    stream: libp2p_stream::Behaviour,
    identify: libp2p::identify::Behaviour,
    ping: libp2p::ping::Behaviour,
}

pub struct Rogue {
    pub peer_id: PeerId,
    /// `/ip4/127.0.0.1/tcp/N/p2p/<id>`.
    pub addr: String,
    control: libp2p_stream::Control,
    /// Have-summaries received (whole messages).
    pub summaries: Arc<Mutex<Vec<have::wire::Have>>>,
    /// Bitswap (CID, have) presences received.
    pub presences: Arc<Mutex<Vec<(Cid, bool)>>>,
    /// CIDs of the bitswap wants received (never answered).
    pub wants: Arc<Mutex<Vec<Cid>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A full summary whose filter has every bit set: "I have everything".
fn everything() -> Vec<u8> {
    let msg = have::wire::Have {
        epoch: 1,
        generation: 1,
        full: Some(have::wire::Full { hashes: 1, seed: 0, bits: vec![0xff; 64], count: 1 }),
        delta: None,
    };
    let mut frame = Vec::new();
    peerix::ipld::put_varint(&mut frame, prost::Message::encoded_len(&msg) as u64);
    prost::Message::encode_raw(&msg, &mut frame);
    frame
}

impl Rogue {
    /// Starts the rogue on 127.0.0.1 and dials `dial` (a daemon), if given.
    pub async fn start(plan: Plan, dial: Option<&str>) -> Self {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|k| Behaviour {
                stream: libp2p_stream::Behaviour::new(),
                identify: libp2p::identify::Behaviour::new(
                    libp2p::identify::Config::new("ipfs/0.1.0".into(), k.public())
                        .with_agent_version(plan.agent.clone().unwrap_or_else(|| "ipfs/0.1.0".into())),
                ),
                ping: libp2p::ping::Behaviour::new(libp2p::ping::Config::new()),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let summaries = Arc::new(Mutex::new(Vec::new()));
        let presences = Arc::new(Mutex::new(Vec::new()));
        let wants = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(plan);
        serve(&control, &plan, &summaries, &presences, &wants);
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break format!("{address}/p2p/{peer_id}");
            }
        };
        let send_summary = move |mut control: libp2p_stream::Control, peer_id: PeerId| {
            tokio::spawn(async move {
                if let Ok(mut s) = control.open_stream(peer_id, have::PROTOCOL).await {
                    let _ = s.write_all(&everything()).await;
                    let _ = s.flush().await;
                    // Keep the stream (and so the connection) open.
                    tokio::time::sleep(Duration::from_secs(600)).await;
                }
            });
        };
        if let Some(d) = dial {
            swarm.dial(d.parse::<Multiaddr>().unwrap()).unwrap();
            // Connected before the test's first request (libp2p-stream's open on a connection
            // being set up is the race vendor/README.md describes).
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        if !plan.no_summary {
                            send_summary(control.clone(), peer_id);
                        }
                        break;
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => panic!("rogue cannot dial {d}: {error}"),
                    _ => {}
                }
            }
        }
        let summary_control = control.clone();
        let task = tokio::spawn(async move {
            loop {
                if let SwarmEvent::ConnectionEstablished { peer_id, .. } = swarm.select_next_some().await
                    && !plan.no_summary
                {
                    send_summary(summary_control.clone(), peer_id);
                }
            }
        });
        Self { peer_id, addr, control, summaries, presences, wants, task }
    }

    /// Asks `peer` for the narinfo of `hash` over `/peerix/narinfo/1.0.0`.
    pub async fn ask_narinfo(&self, peer: PeerId, hash: &str) -> Option<String> {
        self.ask_narinfo_answer(peer, hash, false).await.map(|a| a.narinfo)
    }

    /// Asks `peer` for the narinfo of `hash`, and of its `closure`: the whole answer.
    pub async fn ask_narinfo_answer(&self, peer: PeerId, hash: &str, closure: bool) -> Option<narinfo::Answer> {
        let hash = peerix::nix::store_path::StoreHash::parse(hash).unwrap();
        let lanes = lanes::Lanes::new(self.control.clone(), narinfo::PROTOCOL, 1, peerix::timeouts::NARINFO_RETRIES);
        narinfo::ask(&lanes, peer, &hash, closure).await.unwrap()
    }

    /// Lanes of `/peerix/blocks/1.0.0` from this peer, as a daemon makes them (one per peer).
    pub fn block_lanes(&self) -> lanes::Lanes {
        lanes::Lanes::new(self.control.clone(), blocks::PROTOCOL, 1, peerix::timeouts::BLOCK_RETRIES)
    }

    /// Asks `peer` for blocks over `/peerix/blocks/1.0.0` (compressed on the wire if `compress`).
    pub async fn fetch_blocks_as(
        &self,
        peer: PeerId,
        cids: &[Cid],
        compress: bool,
    ) -> Result<Vec<bytes::Bytes>, blocks::FetchError> {
        self.fetch_blocks_if_busy(peer, cids, compress, blocks::IfBusy::default()).await
    }

    /// Asks `peer` for blocks, allowing the busy answers `if_busy`.
    pub async fn fetch_blocks_if_busy(
        &self,
        peer: PeerId,
        cids: &[Cid],
        compress: bool,
        if_busy: blocks::IfBusy,
    ) -> Result<Vec<bytes::Bytes>, blocks::FetchError> {
        let lanes = lanes::Lanes::new(self.control.clone(), blocks::PROTOCOL, 1, peerix::timeouts::BLOCK_RETRIES);
        blocks::fetch(&lanes, peer, cids, compress, if_busy).await
    }

    /// Asks `peer` for blocks over `/peerix/blocks/1.0.0`.
    pub async fn fetch_blocks(&self, peer: PeerId, cids: &[Cid]) -> Result<Vec<bytes::Bytes>, blocks::FetchError> {
        self.fetch_blocks_as(peer, cids, false).await
    }

    /// The answer frames of one block request as they come over the wire: each frame's status
    /// byte and length.
    pub async fn block_frames(&self, peer: PeerId, cids: &[Cid], compress: bool) -> Vec<(u8, usize)> {
        let mut stream = self.control.clone().open_stream(peer, blocks::PROTOCOL).await.unwrap();
        let request = block_request(cids, compress);
        frame::write_message(&mut stream, &request).await.unwrap();
        stream.flush().await.unwrap();
        let mut out = Vec::new();
        for _ in cids {
            let body = frame::read(&mut stream, 1 << 20).await.unwrap().unwrap();
            out.push((body[0], body.len()));
        }
        out
    }

    /// Opens `n` block streams to `peer`, asks for `cids` on each and reads nothing: each holds
    /// one of the peer's answer slots until its answer times out.
    pub async fn hold_block_answers(&self, peer: PeerId, cids: &[Cid], n: usize) -> Vec<libp2p::Stream> {
        let mut held = Vec::new();
        let request = block_request(cids, false);
        for _ in 0..n {
            let mut stream = self.control.clone().open_stream(peer, blocks::PROTOCOL).await.unwrap();
            frame::write_message(&mut stream, &request).await.unwrap();
            stream.flush().await.unwrap();
            held.push(stream);
        }
        held
    }

    /// Opens `n` block streams to `peer`, each asking for `cids` again and again and reading the
    /// answers slowly (16 KiB every 50 ms: each answer stays in progress for seconds, yet no block
    /// write stalls): a crowd that keeps `n` of the peer's answer slots busy. Returns once every
    /// stream's answer has begun; the streams end when the returned guard drops.
    pub async fn trickle_block_answers(&self, peer: PeerId, cids: &[Cid], n: usize) -> Trickle {
        let request = block_request(cids, false);
        let mut tasks = Vec::new();
        for _ in 0..n {
            let mut stream = self.control.clone().open_stream(peer, blocks::PROTOCOL).await.unwrap();
            // Answered one after the other on the stream: ~30 s of answers for a 3 MB NAR.
            for _ in 0..10 {
                frame::write_message(&mut stream, &request).await.unwrap();
            }
            stream.flush().await.unwrap();
            let (began, answered) = tokio::sync::oneshot::channel();
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                let mut began = Some(began);
                while let Ok(1..) = futures_util::AsyncReadExt::read(&mut stream, &mut buf).await {
                    if let Some(b) = began.take() {
                        let _ = b.send(());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
            answered.await.expect("the peer answers a trickling stream");
        }
        Trickle(tasks)
    }

    /// Sends `peer` one bitswap message wanting every one of `cids` as `want_type` (with
    /// sendDontHave), again if the stream is reset: libp2p-stream drops an inbound stream that
    /// finds its accept queue full (rust-libp2p#5651; our patched queue holds 256, upstream's
    /// one), and a real peer re-sends as our own client does. A reset that comes
    /// after the message was written goes unseen, so a test sends what it wants in one message.
    pub async fn send_wants(&self, peer: PeerId, cids: &[Cid], want_type: i32) -> Result<(), String> {
        self.send_wants_times(peer, cids, want_type, 1).await
    }

    /// Like [`Rogue::send_wants`], the message written `times` times on one stream (as boxo keeps
    /// one stream per peer: a burst of streams can meet a full accept queue).
    pub async fn send_wants_times(
        &self,
        peer: PeerId,
        cids: &[Cid],
        want_type: i32,
        times: usize,
    ) -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..3 {
            match self.want_once(peer, cids, want_type, times).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }

    async fn want_once(&self, peer: PeerId, cids: &[Cid], want_type: i32, times: usize) -> Result<(), String> {
        let msg = bitswap::message::Message {
            wantlist: Some(bitswap::message::Wantlist {
                entries: cids
                    .iter()
                    .map(|cid| bitswap::message::Entry {
                        block: cid.to_bytes(),
                        priority: 1,
                        cancel: false,
                        want_type,
                        send_dont_have: true,
                    })
                    .collect(),
                full: false,
            }),
            ..Default::default()
        };
        let mut control = self.control.clone();
        let open = tokio::time::timeout(Duration::from_secs(5), control.open_stream(peer, bitswap::PROTOCOL_1_2_0));
        let mut s = open.await.map_err(|_| "no stream within 5 s".to_owned())?.map_err(|e| e.to_string())?;
        for _ in 0..times {
            bitswap::message::write(&mut s, &msg).await.map_err(|e| e.to_string())?;
        }
        let _ = s.close().await;
        Ok(())
    }
}

impl Rogue {
    /// Opens up to `n` bitswap streams to `peer` and holds them (nothing written); stops at the
    /// first that fails or does not open within 5 s (the peer hung up).
    pub async fn hold_bitswap_streams(&self, peer: PeerId, n: usize) -> Vec<libp2p::Stream> {
        let mut held = Vec::new();
        let mut control = self.control.clone();
        for _ in 0..n {
            let open = control.open_stream(peer, bitswap::PROTOCOL_1_2_0);
            match tokio::time::timeout(Duration::from_secs(5), open).await {
                Ok(Ok(s)) => held.push(s),
                _ => break,
            }
        }
        held
    }
}

/// The rogue's side of every protocol.
fn serve(
    control: &libp2p_stream::Control,
    plan: &Arc<Plan>,
    summaries: &Arc<Mutex<Vec<have::wire::Have>>>,
    presences: &Arc<Mutex<Vec<(Cid, bool)>>>,
    wants: &Arc<Mutex<Vec<Cid>>>,
) {
    let accept = |p: StreamProtocol| control.clone().accept(p).unwrap();
    let mut narinfos = accept(narinfo::PROTOCOL);
    let p = plan.clone();
    let one_at_a_time = Arc::new(tokio::sync::Mutex::new(()));
    tokio::spawn(async move {
        while let Some((_, mut s)) = narinfos.next().await {
            let (p, one_at_a_time) = (p.clone(), one_at_a_time.clone());
            tokio::spawn(async move {
                while let Ok(Some(body)) = frame::read(&mut s, 1024).await {
                    let req = <narinfo::wire::Request as prost::Message>::decode(body).unwrap();
                    p.asked.lock().unwrap().push((req.hash.clone(), req.closure));
                    if p.silent {
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        return;
                    }
                    let resp = match &p.narinfo {
                        Some((text, root)) if p.for_hash.as_ref().is_none_or(|h| *h == req.hash) => {
                            let closure = (p.closure.iter())
                                .map(|(hash, narinfo, root)| narinfo::wire::Related {
                                    hash: hash.clone(),
                                    narinfo: narinfo.clone(),
                                    root: root.to_bytes(),
                                    root_node: Vec::new(),
                                })
                                .collect();
                            let (narinfo, root, root_node) =
                                (text.clone(), root.to_bytes(), p.root_node.clone().unwrap_or_default());
                            narinfo::wire::Response { narinfo, root, closure, root_node }
                        }
                        _ => narinfo::wire::Response::default(),
                    };
                    let Some(each) = p.busy else {
                        let _ = frame::write_message(&mut s, &resp).await;
                        let _ = s.close().await;
                        return;
                    };
                    let _turn = one_at_a_time.lock().await;
                    tokio::time::sleep(each).await;
                    if frame::write_message(&mut s, &resp).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut block_reqs = accept(blocks::PROTOCOL);
    let p = plan.clone();
    tokio::spawn(async move {
        while let Some((_, mut s)) = block_reqs.next().await {
            let p = p.clone();
            tokio::spawn(async move {
                let Ok(Some(body)) = frame::read(&mut s, 4096).await else { return };
                let req = <blocks::wire::Request as prost::Message>::decode(body).unwrap();
                if let Some((slow, after)) = p.slow_block
                    && req.cids.contains(&slow.to_bytes())
                {
                    tokio::time::sleep(after).await;
                }
                for raw in req.cids {
                    let cid = Cid::try_from(raw.as_slice()).unwrap();
                    let payload = match p.blocks.get(&cid) {
                        Some(data) => [&[0u8][..], data].concat(),
                        None => vec![1u8],
                    };
                    if frame::write(&mut s, &payload).await.is_err() {
                        return;
                    }
                }
                let _ = s.close().await;
            });
        }
    });
    let mut haves = accept(have::PROTOCOL);
    let sums = summaries.clone();
    tokio::spawn(async move {
        while let Some((_, mut s)) = haves.next().await {
            let sums = sums.clone();
            tokio::spawn(async move {
                while let Ok(Some(f)) = frame::read(&mut s, 8 << 20).await {
                    sums.lock().unwrap().push(<have::wire::Have as prost::Message>::decode(f).unwrap());
                }
            });
        }
    });
    let mut swaps = accept(bitswap::PROTOCOL_1_2_0);
    let (pres, wanted) = (presences.clone(), wants.clone());
    tokio::spawn(async move {
        while let Some((_, mut s)) = swaps.next().await {
            let (pres, wanted) = (pres.clone(), wanted.clone());
            tokio::spawn(async move {
                while let Ok(Some(m)) = bitswap::message::read(&mut s).await {
                    for e in m.wantlist.iter().flat_map(|w| &w.entries).filter(|e| !e.cancel) {
                        wanted.lock().unwrap().extend(Cid::try_from(e.block.as_slice()));
                    }
                    for b in m.block_presences {
                        let cid = Cid::try_from(b.cid.as_slice()).unwrap();
                        pres.lock().unwrap().push((cid, b.r#type == bitswap::message::HAVE));
                    }
                    for b in m.payload {
                        if let Some(cid) = bitswap::message::cid_of(&b.prefix, &b.data) {
                            pres.lock().unwrap().push((cid, true));
                        }
                    }
                }
            });
        }
    });
}

/// True if a received summary says its sender may hold `hash` (the first 20-byte form).
pub fn summary_claims(summary: &have::wire::Have, hash: &str) -> bool {
    let full = summary.full.as_ref().expect("a full summary");
    let bloom = have::bloom::Bloom::from_parts(full.bits.clone(), full.hashes, full.seed).unwrap();
    bloom.contains(&peerix::nix::store_path::StoreHash::parse(hash).unwrap().to_bytes())
}

/// A block request for `cids` as an asker that takes no redirect sends it.
fn block_request(cids: &[Cid], compress: bool) -> blocks::wire::Request {
    blocks::wire::Request {
        cids: cids.iter().map(|c| c.to_bytes()).collect(),
        compress,
        may_redirect: false,
        may_defer: false,
    }
}

/// Streams reading answers slowly ([`Rogue::trickle_block_answers`]); they end on drop.
pub struct Trickle(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Trickle {
    fn drop(&mut self) {
        self.0.iter().for_each(|t| t.abort());
    }
}
