//! `/health` (200 `ok`, or 503 with what is degraded) and `/api/status` (JSON for operators,
//! `peerix status` and the dashboard).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::error;

use super::AppState;
use super::error::ApiError;
use crate::httpd::{Failure, plain};
use crate::store::{IndexStats, ScanProgress};
use crate::timeouts::NO_PEERS_GRACE;

/// A scan whose progress has not moved for this long is stuck (a scan saves progress at least
/// every few seconds while it works).
const INDEX_STUCK_SECS: i64 = 600;

/// 200 `ok`, or 503 naming each degraded part in one line: Nix's DB or the state DB unreadable, the
/// indexer stuck, or no peer connected when the configuration names some.
pub async fn health(State(app): State<AppState>) -> Response {
    let problems = problems(&app).await;
    if problems.is_empty() {
        return "ok\n".into_response();
    }
    plain(Failure::Unavailable, &format!("degraded: {}", problems.join("; ")))
}

/// What is degraded now, one phrase each; empty when healthy. `/health`, `/api/status` (and so
/// `peerix status` and the dashboard) all say what this says. Opens both DBs afresh (~200 µs), so
/// a file that went away is noticed.
async fn problems(app: &AppState) -> Vec<String> {
    let cache = app.cache.clone();
    // A scan the operator paused makes no progress, and is not stuck.
    let paused = app.index.is_paused();
    let mut problems = crate::tasks::spawn_blocking(module_path!(), move || {
        let mut problems = Vec::new();
        if let Err(e) = cache.store_db().probe() {
            // The phrase only: the cause (paths, SQLite's words) goes to the log.
            error!(cause = %crate::errors::chain(&e), "Nix DB unreadable");
            problems.push("Nix DB unreadable".to_owned());
        }
        match cache.state().probe().and_then(|()| cache.state().scan_progress()) {
            Err(e) => {
                error!(cause = %crate::errors::chain(&e), "state DB unreadable");
                problems.push("state DB unreadable".to_owned())
            }
            Ok(scan) if scan.running && !paused && crate::store::now_secs() - scan.updated_at > INDEX_STUCK_SECS => {
                problems
                    .push(format!("indexer stuck (no progress for {} s)", crate::store::now_secs() - scan.updated_at))
            }
            Ok(_) => {}
        }
        problems
    })
    .await
    .unwrap_or_else(|e| {
        error!(cause = %e, "health check failed");
        vec!["health check failed".to_owned()]
    });
    if let Some(node) = &app.p2p
        && node.expects_peers()
        && app.started.elapsed() > NO_PEERS_GRACE
        && node.connected_peers().await.is_empty()
    {
        problems.push("no peers connected (the configuration names some: --peer, --tracker or bootstrap peers)".into());
    }
    problems
}

/// Scan progress with rate and ETA derived from what is persisted.
pub fn scan_json(p: &ScanProgress, paused: bool) -> Value {
    let elapsed = (p.updated_at - p.started_at).max(0) as f64;
    let rate = if elapsed > 0.0 { p.done_bytes as f64 / elapsed } else { 0.0 };
    let left = p.total_bytes.saturating_sub(p.done_bytes) as f64;
    let eta = (p.running && rate > 0.0).then(|| (left / rate).ceil() as u64);
    json!({
        "running": p.running,
        "paused": paused,
        "done_paths": p.done_paths,
        "total_paths": p.total_paths,
        "done_bytes": p.done_bytes,
        "total_bytes": p.total_bytes,
        "bytes_per_sec": rate.round() as u64,
        "eta_secs": eta,
        "started_at": p.started_at,
        "updated_at": p.updated_at,
    })
}

/// What `/api/status` reads from whole tables.
pub struct Totals {
    valid_paths: u64,
    nar_bytes: u64,
    known_paths: u64,
    verdicts: u64,
    index: IndexStats,
    scan: ScanProgress,
    blocks: u64,
    block_bytes: u64,
}

/// The last [`Totals`], with the state DB version and Nix DB stamp they were read at: a dashboard
/// polling an idle daemon costs two version checks, not a scan of the index (a GROUP BY over
/// every chunk) each time.
#[derive(Default)]
pub struct Memo(std::sync::Mutex<Option<(Versions, Arc<Totals>)>>);

/// The state DB's `data_version` and the Nix DB's stamp.
type Versions = (i64, Option<[i64; 6]>);

pub async fn status(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    // Aggregates over whole tables (Nix's DB, the index): SQLite work, off the async workers, and
    // only when a DB has changed since the last status.
    let (db, memo) = (app.cache.clone(), app.clone());
    let totals = crate::tasks::spawn_blocking(module_path!(), move || -> Result<Arc<Totals>, ApiError> {
        let key = (db.state().version()?, db.store_db().stamp());
        if let Some((at, totals)) = &*memo.status_memo.0.lock().unwrap_or_else(|e| e.into_inner())
            && *at == key
        {
            return Ok(totals.clone());
        }
        tracing::debug!(state_version = key.0, "reading status totals");
        let (valid_paths, nar_bytes) = db.store_db().counts()?;
        let (known_paths, verdicts) = db.state().counts()?;
        let (blocks, block_bytes) = db.state().block_stats()?;
        let (index, scan) = (db.state().index_stats()?, db.state().scan_progress()?);
        let totals =
            Arc::new(Totals { valid_paths, nar_bytes, known_paths, verdicts, index, scan, blocks, block_bytes });
        *memo.status_memo.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, totals.clone()));
        Ok(totals)
    })
    .await??;
    let Totals { valid_paths, nar_bytes, known_paths, verdicts, blocks, block_bytes, .. } = *totals;
    let (index, scan) = (&totals.index, &totals.scan);
    let cache = &app.cache;
    let c = &cache.counters;
    let node = match &app.p2p {
        Some(n) => n.info().await,
        None => None,
    };
    let p2p = match &app.p2p {
        Some(n) => {
            let lanes: serde_json::Map<_, _> =
                n.lane_counters().into_iter().map(|(name, c)| (name.to_owned(), json!(c))).collect();
            json!({ "node": node, "bitswap": n.bitswap_stats(), "lanes": lanes, "peers": n.peers().view() })
        }
        None => Value::Null,
    };
    let (a, held, received) = (&cache.arrivals.counters, cache.arrivals.held(), cache.received.held());
    let n = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
    let sub = &app.substituter;
    let substitution = json!({
        "counters": &sub.activity.counters,
        "lookups": sub.activity.recent_lookups(),
        "transfers": sub.activity.transfers(),
        "fallbacks": sub.fallbacks().iter().map(|f| f.url().to_owned()).collect::<Vec<_>>(),
        "prefetch": sub.prefetch_counters(),
    });
    let problems = problems(&app).await;
    // Work done for peers, next to the work done for the local nix: narinfos answered over
    // /peerix/narinfo, blocks sent over /peerix/blocks and bitswap.
    let (mut peer_narinfos, mut peer_blocks, mut peer_bytes) = (0u64, 0u64, 0u64);
    if let Some(n) = &app.p2p {
        for p in n.peers().view() {
            peer_narinfos += p.stats.narinfos_served;
            peer_blocks += p.stats.blocks_sent;
            peer_bytes += p.stats.bytes_sent;
        }
        let bs = n.bitswap_stats();
        peer_blocks += bs.blocks_sent.load(Ordering::Relaxed);
        peer_bytes += bs.bytes_sent.load(Ordering::Relaxed);
    }
    Ok(Json(json!({
        "health": { "ok": problems.is_empty(), "problems": problems },
        "version": env!("CARGO_PKG_VERSION"),
        "peer_id": app.identity.peer_id(),
        "listen_addrs": node.as_ref().map(|n| n.listen_addrs.clone()).unwrap_or_default(),
        "connected_peers": node.as_ref().map(|n| n.connected_peers.clone()).unwrap_or_default(),
        "uptime_secs": app.started.elapsed().as_secs(),
        "tasks": crate::tasks::counts().into_iter()
            .map(|(task, (running, panics))| (task.to_owned(), json!({ "running": running, "panics": panics })))
            .collect::<serde_json::Map<_, _>>(),
        "listen": app.listen.to_string(),
        "store_root": cache.store_root().display().to_string(),
        "nix_db": {
            "path": cache.store_db().db_path().display().to_string(),
            "present": cache.store_db().exists(),
            "valid_paths": valid_paths,
            "nar_bytes": nar_bytes,
        },
        "state": { "known_paths": known_paths, "upstream_verdicts": verdicts },
        "trust": {
            "trusted_keys": cache.gate().trusted_keys().iter().map(|k| k.name.clone()).collect::<Vec<_>>(),
            "upstream": app.upstream.clone(),
            "serve_private": app.serve_private,
            "signing_key": app.signing_key.clone(),
            "signing_public_key": cache.served().signing_public_key(),
        },
        "index": index,
        "scan": scan_json(scan, app.index.is_paused()),
        "blockstore": {
            "blocks": blocks,
            "bytes": block_bytes,
            "cap_bytes": app.blocks.cache_size(),
            "local_chunk_bytes_read": app.blocks.local_chunk_bytes_read(),
            "local_chunk_bytes_hashed": app.blocks.local_chunk_bytes_hashed(),
            "evicted_bytes": app.blocks.evicted_bytes(),
        },
        "arrivals": {
            "held": held.0,
            "held_bytes": held.1,
            "offered": n(&a.offered),
            "adopted": n(&a.adopted),
            "evicted": n(&a.evicted),
            "read_paths": n(&a.read_paths),
            "read_bytes": n(&a.read_bytes),
        },
        "received": {
            "held": received.0,
            "held_bytes": received.1,
            "served": n(&cache.received.counters.served),
            "served_bytes": n(&cache.received.counters.served_bytes),
        },
        "p2p": p2p,
        "substitution": substitution,
        "requests": {
            "narinfo_hits": c.narinfo_hits.load(Ordering::Relaxed),
            "narinfo_misses": c.narinfo_misses.load(Ordering::Relaxed),
            "narinfo_private": c.narinfo_denied.load(Ordering::Relaxed),
            "nars_served": c.nars_served.load(Ordering::Relaxed),
            "nar_bytes_served": c.nar_bytes_served.load(Ordering::Relaxed),
            "peer_narinfos_served": peer_narinfos,
            "peer_blocks_served": peer_blocks,
            "peer_bytes_served": peer_bytes,
            "nar_db_scans": c.nar_db_scans.load(Ordering::Relaxed),
        },
    })))
}
