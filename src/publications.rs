//! The one stream of publication events: a local store path became shareable (published) or
//! stopped being shareable (garbage-collected, gated out, found broken on disk). It drives
//! everything that tells the world what we have — have-summaries to peerix peers, DHT provider
//! announcements and their withdrawal — and the local narinfo cache, so none of them can disagree
//! about a path for longer than it takes to deliver an event.
//!
//! A `tokio::sync::broadcast` channel: senders never wait (the indexer and the HTTP path emit), and a
//! subscriber that falls more than [`CAPACITY`] events behind is told so (`Lagged`) and rebuilds its
//! view from the state DB instead of silently missing a withdrawal.

use cid::Cid;
use tokio::sync::broadcast;

use crate::nix::store_path::StoreHash;

/// Events buffered per subscriber: a scan publishing a whole store emits one per path, and the
/// subscribers (summaries, DHT announcer) drain them in microseconds each.
pub const CAPACITY: usize = 16_384;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// Shareable now, with this NAR root.
    Published { hash: StoreHash, root: Cid },
    /// No longer shareable; `root` when it had one (its DHT records are withdrawn with it).
    Withdrawn { hash: StoreHash, root: Option<Cid> },
}

pub struct Publications {
    tx: broadcast::Sender<Publication>,
}

impl Default for Publications {
    fn default() -> Self {
        Self { tx: broadcast::channel(CAPACITY).0 }
    }
}

impl Publications {
    pub fn subscribe(&self) -> broadcast::Receiver<Publication> {
        self.tx.subscribe()
    }

    /// Emits an event; nobody listening (a `peerix publish` run) is fine.
    pub fn emit(&self, event: Publication) {
        tracing::debug!(?event, "publication");
        let _ = self.tx.send(event);
    }
}
