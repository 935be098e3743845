//! IPLD: how NARs become content-addressed blocks that any IPFS node can read.
//!
//! A NAR is cut by [`chunker`] (FastCDC v2020, 16/64/256 KiB, over the uncompressed NAR) into raw
//! blocks (CIDv1, codec raw 0x55, sha2-256); [`unixfs`] links them in order under a UnixFS v1 file
//! node (dag-pb 0x70, balanced, ≤ 1024 links a node), so `ipfs cat <root>` on kubo or Helia yields
//! the NAR. [`car`] frames a DAG as CAR v1 for the trustless gateway; [`walk`] is the one bounded
//! walk from a root to a file's pieces that every DAG reader uses. Pure code: no DB, no network.

pub mod car;
pub mod chunker;
pub mod unixfs;
pub mod walk;

use cid::Cid;
use multihash_codetable::{Code, MultihashDigest};

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

/// Multicodec of a raw block.
pub const RAW: u64 = 0x55;
/// Multicodec of a dag-pb block.
pub const DAG_PB: u64 = 0x70;
const SHA2_256: u64 = 0x12;
const IDENTITY: u64 = 0x00;

/// No block we make is larger (FastCDC's max is 256 KiB; a 1024-link node is ~50 KiB), and no block
/// we accept may be larger: bitswap and kubo cap blocks at 2 MiB, Helia at 4 MiB; 1 MiB bounds
/// what one peer can make us hold.
pub const MAX_BLOCK: usize = 1024 * 1024;

/// CIDv1 of a raw block.
pub fn raw_cid(data: &[u8]) -> Cid {
    Cid::new_v1(RAW, Code::Sha2_256.digest(data))
}

/// CIDv1 of a dag-pb block.
pub fn dag_pb_cid(block: &[u8]) -> Cid {
    Cid::new_v1(DAG_PB, Code::Sha2_256.digest(block))
}

/// True if `data` is the block `cid` names (sha2-256, or an inline identity hash).
pub fn verify(cid: &Cid, data: &[u8]) -> bool {
    let mh = cid.hash();
    match mh.code() {
        SHA2_256 => Code::Sha2_256.digest(data).digest() == mh.digest(),
        IDENTITY => mh.digest() == data,
        _ => false,
    }
}

/// The bytes of an identity-hashed CID (`bafkqaaa` is the empty one), which need no storage.
pub fn inline_block(cid: &Cid) -> Option<&[u8]> {
    (cid.hash().code() == IDENTITY).then(|| cid.hash().digest())
}

/// Appends `v` as an unsigned LEB128 varint (protobuf and multiformats both use it).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint from the front of `buf`: (value, bytes used).
pub fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_cids() {
        // From the IPFS docs and kubo: `echo -n "hello world" | ipfs add --raw-leaves --cid-version 1`.
        assert_eq!(raw_cid(b"hello world").to_string(), "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
        let cid = raw_cid(b"x");
        assert!(verify(&cid, b"x"));
        assert!(!verify(&cid, b"y"));
        let empty: Cid = "bafkqaaa".parse().unwrap();
        assert_eq!(inline_block(&empty), Some(&b""[..]));
        assert!(verify(&empty, b""));
    }

    #[test]
    fn varints() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(read_varint(&b), Some((v, b.len())));
        }
        assert_eq!(read_varint(&[0x80]), None);
    }
}
