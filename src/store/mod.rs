//! peerix's own state: one SQLite file in the state dir (`peerix.sqlite`).
//!
//! Holds what the Nix DB cannot tell us: which NAR hash belongs to which store path (so a
//! `nar/<narhash>.nar` URL handed out 30 days ago still resolves after a restart) and the upstream
//! verdicts of the publish gate. Later layers add blocks, chunk indexes, providers and peers through
//! new schema versions in [`schema`].
//!
//! Concurrency: SQLite allows one writer; we keep one connection behind a std `Mutex` (never held
//! across an `.await`). Writes are a few rows per served path, far below what one connection does.
//! Reads take a connection of their own from a small pool, so they never wait for a write: in WAL
//! mode a reader sees the last committed state while an indexing transaction is open.
//! The exception is the blockstore's writes, led by the bulk insert of fetched blocks (a batch is
//! ~10 MB, tens of ms of writing): they have a connection of their own, so lookups — every block a
//! fetch probes, every chunk a peer asks for — read the last committed state (WAL) instead of
//! queueing behind them.
//! WAL with `synchronous=NORMAL`: a crash can lose the last transactions, never corrupt the file, and
//! everything here can be recomputed.

mod blockstore;
mod db;
mod index;
mod paths;
mod progress;
mod schema;
mod verdicts;

pub use db::{STATE_DB_FILE, StateDb, StateError, now_secs};
pub use index::{PathEntry, Published, Seen, Status};
pub use progress::{IndexStats, ScanProgress};
pub use verdicts::{StoredVerdict, UpstreamVerdict};
