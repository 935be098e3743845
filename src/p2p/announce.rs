//! Keeps the DHT's provider records in step with what we publish (`ipfs` mode): every published
//! NAR's root CID and store-path key is announced at most `--provide-rate` paths a second, again
//! every 22 h, and withdrawn the moment the path is (garbage-collected, gated out, broken on disk).
//!
//! Driven by publication events ([`crate::publications`]), plus a scan of the state DB for paths
//! that are due (never announced, or not for 22 h) whenever the queue runs dry. State DB reads and
//! writes run on blocking threads; the swarm only sees `Provide`/`StopProviding` commands.
//! Kademlia cannot recall a record another node stores: a withdrawn path's records there expire
//! within their 48 h TTL, while ours is removed at once (we stop answering for it and stop
//! re-announcing it).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cid::Cid;
use libp2p::kad::RecordKey;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Client;
use super::event_loop::store_path_key;
use crate::local_cache::LocalCache;
use crate::publications::Publication;
use crate::timeouts::{REPROVIDE_AFTER, REPROVIDE_SCAN_EVERY};

/// Paths queued at most (a first scan of a big store publishes them all at once).
const MAX_QUEUE: usize = 65_536;

fn keys(hash32: &str, root: &Cid) -> Vec<RecordKey> {
    vec![RecordKey::new(&root.hash().to_bytes()), store_path_key(hash32)]
}

pub async fn run(client: Client, cache: Arc<LocalCache>, rate: u32, shutdown: CancellationToken) {
    let mut events = cache.publications().subscribe();
    let mut queue: VecDeque<(String, Cid)> = VecDeque::new();
    let mut queued: HashSet<String> = HashSet::new();
    let mut last_scan: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(Publication::Published { hash, root }) => {
                    let h = hash.as_str().to_owned();
                    if queue.len() < MAX_QUEUE && queued.insert(h.clone()) {
                        queue.push_back((h, root));
                    }
                }
                Ok(Publication::Withdrawn { hash, root }) => {
                    let h = hash.as_str();
                    if queued.remove(h) {
                        queue.retain(|(q, _)| q != h);
                    }
                    if let Some(root) = root {
                        debug!(%hash, %root, "withdrawing provider records");
                        client.stop_providing(keys(h, &root)).await;
                    }
                }
                // Missed publications are found by the next due scan; missed withdrawals leave our
                // own record until the path is announced or withdrawn again.
                Err(broadcast::error::RecvError::Lagged(n)) => warn!(missed = n, "publication events lagged"),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                if queue.is_empty() && last_scan.is_none_or(|t| t.elapsed() >= REPROVIDE_SCAN_EVERY) {
                    last_scan = Some(Instant::now());
                    for (h, root) in due(&cache, rate as usize * REPROVIDE_SCAN_EVERY.as_secs() as usize).await {
                        if queued.insert(h.clone()) {
                            queue.push_back((h, root));
                        }
                    }
                }
                // An announcement nobody hears is lost: wait for a first connection.
                if queue.is_empty() || client.connected_peers().await.is_empty() {
                    continue;
                }
                let batch: Vec<(String, Cid)> = (0..rate).map_while(|_| queue.pop_front()).collect();
                for (h, root) in &batch {
                    queued.remove(h);
                    client.provide(keys(h, root)).await;
                }
                let cache = cache.clone();
                let announced: Vec<String> = batch.into_iter().map(|(h, _)| h).collect();
                let _ = crate::tasks::spawn_blocking(module_path!(), move || {
                    for h in announced {
                        if let Err(e) = cache.state().mark_announced(&h) {
                            warn!(cause = %e, "cannot record announcement");
                        }
                    }
                })
                .await;
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Published paths never announced, or not for 22 h.
async fn due(cache: &Arc<LocalCache>, limit: usize) -> Vec<(String, Cid)> {
    let cache = cache.clone();
    let rows = crate::tasks::spawn_blocking(module_path!(), move || {
        cache.state().due_announcements(limit, REPROVIDE_AFTER.as_secs() as i64)
    })
    .await;
    match rows {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            warn!(cause = %e, "cannot read announcements due");
            Vec::new()
        }
        Err(_) => Vec::new(),
    }
}
