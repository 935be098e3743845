//! Blocks by CID: the one read path behind the trustless gateway, the kubo RPC subset, bitswap and
//! `/peerix/blocks`, so the publish gate is enforced in exactly one place.
//!
//! Sources, in order: inline identity CIDs; blocks a transfer verified moments ago
//! ([`crate::received`], until their path is indexed); dag-pb nodes of published local NARs (SQLite); chunks
//! of published local NARs, produced on demand from /nix/store through the NAR layout and verified
//! against their CID before they are returned (once per file version: see
//! [`crate::nix::nar_layout`]); blocks received by bitswap (the `blocks` table, verified on
//! insert). A local chunk whose path has left the store drops out of the index and is reported
//! missing, never wrong. A local node or chunk is served only while the gate, asked live
//! ([`LocalCache::servable_offline`]), still says its path is shareable.
//!
//! The blockstore keeps received blocks under a size cap (`--cache-size`), evicting the least
//! recently used first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cid::Cid;
use tracing::{debug, warn};

use crate::bounded::Lru;
use crate::ipld::{self, MAX_BLOCK};
use crate::local_cache::{CacheError, LocalCache};
use crate::nix::nar_layout::NarLayout;
use crate::nix::store_path::StoreHash;
use crate::store::StateError;

/// NAR layouts kept for serving chunks: a layout costs one metadata walk of the path to build and
/// ~150 bytes per file to keep, so the cache is bounded by bytes (a few layouts of huge trees
/// must not pin hundreds of MB) and by entries.
const LAYOUT_CACHE_BYTES: usize = 32 << 20;
const LAYOUT_CACHE_ENTRIES: usize = 512;
/// Chunk locations kept in memory (~150 bytes each: ~10 MB, the chunks of ~4 GiB of NARs).
const LOCATION_CACHE_ENTRIES: usize = 64 * 1024;

/// Where a chunk of a published path is: (hash32, NAR offset, length).
type Location = (String, u64, u32);

/// Chunk locations of recently served paths, valid for one state of Nix's DB.
struct Locations {
    stamp: Option<[i64; 6]>,
    map: Lru<Cid, Location>,
}

/// Where a block came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Inline,
    Received,
    LocalNode,
    LocalChunk,
    Blockstore,
}

pub struct Blocks {
    cache: Arc<LocalCache>,
    layouts: Mutex<Layouts>,
    /// A peer fetching a NAR asks for every chunk of it, in order: the first lookup loads the
    /// locations of all the path's chunks, and the other ~16 000 of a GiB need no query each.
    locations: Mutex<Locations>,
    cache_size: u64,
    /// Bytes in the `blocks` table, kept here so a put does not scan the table.
    stored: AtomicU64,
    /// Bytes of local chunks read from the store to serve them, and of those, hashed.
    chunk_bytes_read: AtomicU64,
    chunk_bytes_hashed: AtomicU64,
    /// Bytes evicted from the blockstore to stay under the cap.
    evicted: AtomicU64,
}

/// Recently used NAR layouts, least recently used evicted first, bounded by their heap bytes: each
/// with whether its files are as they were when the path was read and hashed whole (its
/// fingerprint is the one the index recorded then).
type Layouts = Lru<String, (Arc<NarLayout>, bool)>;

fn layout_weight(entry: &(Arc<NarLayout>, bool)) -> usize {
    entry.0.heap_size()
}

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("block does not match its CID")]
    Mismatch,
    #[error("block is larger than 1 MiB")]
    TooLarge,
    #[error(transparent)]
    State(#[from] StateError),
}

impl Blocks {
    pub fn new(cache: Arc<LocalCache>, cache_size: u64) -> Self {
        let stored = cache.state().block_stats().map(|(_, bytes)| bytes).unwrap_or(0);
        Self {
            cache,
            layouts: Mutex::new(Lru::weighted(LAYOUT_CACHE_ENTRIES, LAYOUT_CACHE_BYTES, layout_weight)),
            locations: Mutex::new(Locations { stamp: None, map: Lru::new(LOCATION_CACHE_ENTRIES) }),
            cache_size,
            stored: AtomicU64::new(stored),
            chunk_bytes_read: AtomicU64::new(0),
            chunk_bytes_hashed: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn cache(&self) -> &LocalCache {
        &self.cache
    }

    /// Bytes of received blocks kept now.
    pub fn stored_bytes(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Bytes evicted from the blockstore since start.
    pub fn evicted_bytes(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// The cap on received blocks kept (`--cache-size`).
    pub fn cache_size(&self) -> u64 {
        self.cache_size
    }

    /// Bytes of local chunks hashed to check them before they left: those whose files were not
    /// provably unchanged since the path was indexed.
    pub fn local_chunk_bytes_hashed(&self) -> u64 {
        self.chunk_bytes_hashed.load(Ordering::Relaxed)
    }

    /// Bytes of local chunks read from the store so far: what serving costs in I/O.
    pub fn local_chunk_bytes_read(&self) -> u64 {
        self.chunk_bytes_read.load(Ordering::Relaxed)
    }

    /// The block, if this node may serve it. Blocking (file and SQLite reads): call from a
    /// blocking thread on hot paths.
    pub fn get(&self, cid: &Cid) -> Result<Option<(Bytes, Origin)>, CacheError> {
        if let Some(data) = ipld::inline_block(cid) {
            return Ok(Some((Bytes::copy_from_slice(data), Origin::Inline)));
        }
        if let Some(data) = self.cache.received.get(cid) {
            return Ok(Some((data, Origin::Received)));
        }
        let state = self.cache.state();
        if cid.codec() == ipld::DAG_PB {
            for (hash32, data) in state.local_node(cid)? {
                if self.servable(&hash32) {
                    return Ok(Some((Bytes::from(data), Origin::LocalNode)));
                }
            }
        }
        if cid.codec() == ipld::RAW {
            if let Some((hash32, offset, len)) = self.remembered(cid)
                && self.servable(&hash32)
                && let Some(data) = self.local_chunk(cid, &hash32, offset, len)?
            {
                return Ok(Some((data, Origin::LocalChunk)));
            }
            for (hash32, offset, len) in state.chunk_locations(cid)? {
                if !self.servable(&hash32) {
                    continue;
                }
                if let Some(data) = self.local_chunk(cid, &hash32, offset, len)? {
                    self.remember_path(&hash32);
                    return Ok(Some((data, Origin::LocalChunk)));
                }
            }
        }
        Ok(state.get_block(cid)?.map(|d| (Bytes::from(d), Origin::Blockstore)))
    }

    /// The size of the block, if this node may serve it, from the index alone: a local chunk is
    /// neither read nor hashed (a bitswap want-have for it costs a lookup, not a 1 MiB read and a
    /// sha2-256). A chunk that no longer matches its file is found out when it is asked for.
    pub fn size_of(&self, cid: &Cid) -> Result<Option<u64>, CacheError> {
        if let Some(len) = self.cache.received.size_of(cid) {
            return Ok(Some(len));
        }
        if cid.codec() == ipld::RAW {
            if let Some((hash32, _, len)) = self.remembered(cid)
                && self.servable(&hash32)
            {
                return Ok(Some(len.into()));
            }
            let state = self.cache.state();
            if let Some((_, _, len)) = state.chunk_locations(cid)?.into_iter().find(|(h, _, _)| self.servable(h)) {
                return Ok(Some(len.into()));
            }
            return Ok(state.block_size(cid)?);
        }
        // Inline and dag-pb blocks are small and read from memory or SQLite: no shortcut needed.
        Ok(self.get(cid)?.map(|(data, _)| data.len() as u64))
    }

    /// A chunk's location from memory, while Nix's DB is as it was when it was loaded.
    fn remembered(&self, cid: &Cid) -> Option<Location> {
        let stamp = self.cache.store_db().stamp();
        let mut l = self.locations.lock().ok()?;
        if l.stamp != stamp {
            l.map.clear();
            l.stamp = stamp;
            return None;
        }
        l.map.get(cid).cloned()
    }

    /// Loads the locations of every chunk of a published path.
    fn remember_path(&self, hash32: &str) {
        let stamp = self.cache.store_db().stamp();
        let Ok(chunks) = self.cache.state().chunks_of(hash32) else { return };
        let Ok(mut l) = self.locations.lock() else { return };
        if l.stamp != stamp {
            l.map.clear();
            l.stamp = stamp;
        }
        if chunks.len() <= LOCATION_CACHE_ENTRIES {
            for (offset, len, cid) in chunks {
                l.map.insert(cid, (hash32.to_owned(), offset, len));
            }
        }
    }

    fn servable(&self, hash32: &str) -> bool {
        StoreHash::parse(hash32).is_ok_and(|h| self.cache.servable_offline(&h))
    }

    /// Reads a chunk of a local NAR and checks it against its CID — unless its files are provably
    /// the ones that were read and hashed whole when the path was indexed (the layout is vouched
    /// for and no file's stamp moved during the read: [`NarLayout::read_range_checked`]), which
    /// saves a sha2-256 of every byte a seeder sends. `None` if the path is gone or changed (then
    /// it leaves the index).
    fn local_chunk(&self, cid: &Cid, hash32: &str, offset: u64, len: u32) -> Result<Option<Bytes>, CacheError> {
        let read = self.layout(hash32).and_then(|(l, vouched)| {
            let (data, unchanged) = l.read_range_checked(offset, len as usize)?;
            Ok((data, vouched && unchanged))
        });
        let n = read.as_ref().map_or(0, |(d, _)| d.len() as u64);
        self.chunk_bytes_read.fetch_add(n, Ordering::Relaxed);
        let verified = |(data, known): (Vec<u8>, bool)| {
            if known {
                return Some(data);
            }
            self.chunk_bytes_hashed.fetch_add(data.len() as u64, Ordering::Relaxed);
            ipld::verify(cid, &data).then_some(data)
        };
        match read.map(verified) {
            Ok(Some(data)) => return Ok(Some(Bytes::from(data))),
            Ok(_) => warn!(path = hash32, %cid, "local chunk no longer matches its CID"),
            Err(e) => debug!(path = hash32, %cid, cause = %e, "local chunk unreadable"),
        }
        self.drop_layout(hash32);
        if let Ok(mut l) = self.locations.lock() {
            l.map.retain(|_, (h, _, _)| h != hash32);
        }
        if let Ok(hash) = StoreHash::parse(hash32) {
            self.cache.unpublish_broken(&hash, "chunk on disk no longer matches the index")?;
        }
        Ok(None)
    }

    fn layout(&self, hash32: &str) -> std::io::Result<(Arc<NarLayout>, bool)> {
        if let Some(l) = self.layouts.lock().ok().and_then(|mut m| m.get(hash32).cloned()) {
            return Ok(l);
        }
        let entry = self
            .cache
            .state()
            .path_entry(hash32)
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "path not indexed"))?;
        let base = entry.store_path.trim_start_matches("/nix/store/");
        let layout = Arc::new(NarLayout::of(&self.cache.store_root().join("nix/store").join(base))?);
        let recorded = self.cache.state().fingerprint(hash32).map_err(std::io::Error::other)?;
        let vouched = recorded == Some(layout.fingerprint());
        if let Ok(mut m) = self.layouts.lock() {
            m.insert(hash32.to_owned(), (layout.clone(), vouched));
        }
        Ok((layout, vouched))
    }

    fn drop_layout(&self, hash32: &str) {
        if let Ok(mut m) = self.layouts.lock() {
            m.remove(hash32);
        }
    }

    /// Stores a block received from elsewhere, after checking it against its CID, then evicts
    /// down to the size cap.
    pub fn put(&self, cid: &Cid, data: &[u8]) -> Result<(), PutError> {
        if data.len() > MAX_BLOCK {
            return Err(PutError::TooLarge);
        }
        if !ipld::verify(cid, data) {
            return Err(PutError::Mismatch);
        }
        self.put_verified(&[(*cid, Bytes::copy_from_slice(data))])
    }

    /// Stores blocks that were already checked against their CIDs (by construction: bitswap
    /// computes the CID from the bytes), in one transaction, then evicts down to the cap.
    pub fn put_verified(&self, blocks: &[(Cid, Bytes)]) -> Result<(), PutError> {
        let added = self.cache.state().put_blocks(blocks)?;
        let total = self.stored.fetch_add(added, Ordering::Relaxed) + added;
        if total > self.cache_size {
            let freed = self.cache.state().evict_blocks(total - self.cache_size)?;
            self.stored.fetch_sub(freed.min(total), Ordering::Relaxed);
            self.evicted.fetch_add(freed, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateDb;
    use crate::trust::Gate;

    #[test]
    fn put_checks_the_cid_and_get_serves_what_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(StateDb::open(dir.path()).unwrap());
        let gate = Gate::new(Vec::new(), None, false, std::time::Duration::from_secs(60), state.clone());
        let cache = Arc::new(LocalCache::new(&dir.path().join("store"), state, gate, crate::trust::Served::new(None)));
        let blocks = Blocks::new(cache, 1 << 20);
        let cid = ipld::raw_cid(b"the real block");
        assert!(matches!(blocks.put(&cid, b"some other bytes"), Err(PutError::Mismatch)));
        assert!(blocks.get(&cid).unwrap().is_none(), "a refused block is not kept");
        assert!(matches!(blocks.put(&cid, &vec![0u8; MAX_BLOCK + 1]), Err(PutError::TooLarge)));
        blocks.put(&cid, b"the real block").unwrap();
        let (data, origin) = blocks.get(&cid).unwrap().unwrap();
        assert_eq!((&data[..], origin), (&b"the real block"[..], Origin::Blockstore));
    }

    #[test]
    fn the_layout_cache_is_bounded_by_bytes_and_keeps_the_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let layout_of = |files: usize| {
            let root = dir.path().join(format!("tree{files}"));
            std::fs::create_dir_all(&root).unwrap();
            for i in 0..files {
                std::fs::write(root.join(format!("file-with-a-longish-name-{i}")), b"x").unwrap();
            }
            Arc::new(NarLayout::of(&root).unwrap())
        };
        let (small, big) = (layout_of(10), layout_of(2000));
        let budget = big.heap_size() + 2 * small.heap_size();
        let mut cache: Layouts = Lru::weighted(100, budget, layout_weight);
        cache.insert("a".into(), (small.clone(), false));
        cache.insert("b".into(), (small.clone(), false));
        assert!(cache.get("a").is_some(), "a is now the more recently used");
        cache.insert("big".into(), (big.clone(), false));
        cache.insert("c".into(), (small.clone(), false));
        assert!(cache.weight() <= budget, "{} bytes kept over a budget of {budget}", cache.weight());
        assert!(cache.get("b").is_none(), "the least recently used went first");
        assert!(cache.get("c").is_some());
        let mut tight: Layouts = Lru::weighted(100, big.heap_size() - 1, layout_weight);
        tight.insert("huge".into(), (big.clone(), false));
        assert!(tight.get("huge").is_none(), "a layout over the whole budget is not kept");
        let total: usize = cache.keys().map(|k| cache.peek(k).map_or(0, layout_weight)).sum();
        assert_eq!(cache.weight(), total, "the running total matches what is kept");
        let mut few: Layouts = Lru::weighted(4, usize::MAX, layout_weight);
        for i in 0..10 {
            few.insert(format!("n{i}"), (small.clone(), false));
        }
        assert_eq!(few.len(), 4, "bounded by entries too");
    }
}
