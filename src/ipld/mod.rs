//! IPLD: how NARs become content-addressed blocks that any IPFS node can read.
//!
//! A NAR is cut by [`chunker`] (FastCDC v2020, 16/64/256 KiB, over the uncompressed NAR) into raw
//! blocks (CIDv1, codec raw 0x55, sha2-256); [`unixfs`] links them in order under a UnixFS v1 file
//! node (dag-pb 0x70, balanced, ≤ 1024 links a node), so `ipfs cat <root>` on kubo or Helia yields
//! the NAR. [`car`] frames a DAG as CAR v1 for the trustless gateway; [`walk`] is the one bounded
//! walk from a root to a file's pieces that every DAG reader uses. Pure code: no DB, no network.

mod block;
pub mod car;
mod chunked;
pub mod chunker;
pub mod unixfs;
pub mod walk;

pub use block::*;
pub use chunked::ChunkedNar;
