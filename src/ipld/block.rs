//! Blocks and their CIDs: CIDv1 of raw chunks and dag-pb nodes (sha2-256), checking a block
//! against its CID, inline (identity) blocks, and the varint both protobuf and multiformats use.

use cid::Cid;
use multihash_codetable::{Code, MultihashDigest};

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

/// Appends `v` as an unsigned LEB128 varint (protobuf and multiformats both use it): the one
/// varint of the crate, by the `unsigned-varint` crate (libp2p's).
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(unsigned_varint::encode::u64(v, &mut unsigned_varint::encode::u64_buffer()));
}

/// Reads a varint from the front of `buf`: (value, bytes used). A truncated, overlong (more than
/// 10 bytes) or non-minimal encoding is `None`, as the multiformats spec requires.
pub fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let (v, rest) = unsigned_varint::decode::u64(buf).ok()?;
    Some((v, buf.len() - rest.len()))
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
