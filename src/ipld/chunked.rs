//! [`ChunkedNar`]: a NAR as the index stores it — its chunks and the nodes above them.

use cid::Cid;

/// A NAR as blocks: its chunks (NAR offset, length, CID) in NAR order, and the dag-pb nodes above
/// them (parents after children) under `root`. What the index stores for a published path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedNar {
    pub root: Cid,
    pub chunks: Vec<(u64, u32, Cid)>,
    pub nodes: Vec<(Cid, Vec<u8>)>,
    /// The path's files' fingerprint ([`crate::nix::nar_layout::NarLayout::fingerprint`]) when
    /// these chunks were known to be their bytes; `None` when that cannot be vouched for.
    pub fingerprint: Option<[u8; 32]>,
}

impl ChunkedNar {
    /// True if the chunks cover exactly `0..size`, in order, without gaps or overlaps.
    pub fn covers(&self, size: u64) -> bool {
        let mut at = 0u64;
        for (offset, len, _) in &self.chunks {
            if *offset != at {
                return false;
            }
            at += *len as u64;
        }
        at == size
    }
}
