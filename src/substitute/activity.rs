//! What substitution did, for `/api/status`, `peerix status` and the logs: counters, the last
//! [`RECENT`] lookups that went to peers and the last transfers — each with where its bytes came
//! from — and the transfers running now. Bounded; updated once per lookup and once per unit of a
//! transfer, never per block.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::store::now_secs;

/// Lookups and transfers remembered.
pub const RECENT: usize = 64;

#[derive(Default, Serialize)]
pub struct Counters {
    /// Narinfo lookups answered from peers, and misses: those no summary matched (no network) and
    /// those asked of peers that had no trusted answer in time.
    pub peer_hits: AtomicU64,
    /// Of those, answered from a closure a peer sent with an earlier answer (no question asked).
    pub closure_hits: AtomicU64,
    pub misses_unasked: AtomicU64,
    pub misses_asked: AtomicU64,
    pub transfers_done: AtomicU64,
    pub transfers_failed: AtomicU64,
    pub bytes_from_peers: AtomicU64,
    pub bytes_from_fallbacks: AtomicU64,
    /// Bytes received twice (a stalled unit asked of a second source, both answered).
    pub duplicate_bytes: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LookupView {
    pub hash: String,
    /// `peer` or `miss`.
    pub outcome: &'static str,
    /// The peer whose answer was used.
    pub peer: Option<String>,
    pub asked: usize,
    pub micros: u64,
    pub at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceBytes {
    pub source: String,
    pub bytes: u64,
    pub blocks: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TransferView {
    pub id: u64,
    pub store_path: String,
    pub bytes_total: u64,
    pub bytes_done: u64,
    pub duplicate_bytes: u64,
    pub started_at: i64,
    pub secs: f64,
    pub mb_per_s: f64,
    /// `running`, `done`, or `failed: <why>`.
    pub outcome: String,
    pub sources: Vec<SourceBytes>,
}

#[derive(Default)]
pub struct Activity {
    pub counters: Counters,
    lookups: Mutex<VecDeque<LookupView>>,
    transfers: Mutex<VecDeque<TransferView>>,
    running: Mutex<HashMap<u64, TransferView>>,
    next_id: AtomicU64,
}

fn push<T>(q: &Mutex<VecDeque<T>>, item: T) {
    let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
    if q.len() >= RECENT {
        q.pop_front();
    }
    q.push_back(item);
}

impl Activity {
    pub fn lookup(&self, hash: &str, peer: Option<String>, asked: usize, micros: u64) {
        let c = &self.counters;
        if peer.is_some() { &c.peer_hits } else { &c.misses_asked }.fetch_add(1, Ordering::Relaxed);
        let outcome = if peer.is_some() { "peer" } else { "miss" };
        push(&self.lookups, LookupView { hash: hash.to_owned(), outcome, peer, asked, micros, at: now_secs() });
    }

    pub fn transfer_started(&self, store_path: String, bytes_total: u64) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let view = TransferView {
            id,
            store_path,
            bytes_total,
            bytes_done: 0,
            duplicate_bytes: 0,
            started_at: now_secs(),
            secs: 0.0,
            mb_per_s: 0.0,
            outcome: "running".into(),
            sources: Vec::new(),
        };
        self.running.lock().unwrap_or_else(|e| e.into_inner()).insert(id, view);
        id
    }

    /// Progress of a running transfer.
    pub fn transfer_progress(&self, id: u64, update: impl FnOnce(&mut TransferView)) {
        if let Some(v) = self.running.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id) {
            update(v);
        }
    }

    pub fn transfer_ended(&self, id: u64, outcome: String) {
        let Some(mut view) = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) else { return };
        let c = &self.counters;
        if outcome == "done" { &c.transfers_done } else { &c.transfers_failed }.fetch_add(1, Ordering::Relaxed);
        c.duplicate_bytes.fetch_add(view.duplicate_bytes, Ordering::Relaxed);
        view.outcome = outcome;
        push(&self.transfers, view);
    }

    pub fn recent_lookups(&self) -> Vec<LookupView> {
        self.lookups.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().cloned().collect()
    }

    /// Running transfers first, then the most recent ones.
    pub fn transfers(&self) -> Vec<TransferView> {
        let mut v: Vec<TransferView> =
            self.running.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.extend(self.transfers.lock().unwrap_or_else(|e| e.into_inner()).iter().rev().cloned());
        v
    }
}
