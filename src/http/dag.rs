//! Streaming a DAG out of [`Blocks`]: as CAR v1 (gateway `?format=car`, RPC `dag/export`) or as
//! the UnixFS file bytes it encodes (RPC `cat`). Both are producers a [`body`] pulls as the client
//! reads (each piece read on a blocking thread, none held while the client is slow). A block
//! missing mid-stream aborts the body, so the client sees a truncated transfer (the
//! trustless-gateway spec leaves completeness checks to the client, and every client does).

use std::collections::HashSet;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use cid::Cid;

use crate::blocks::Blocks;
use crate::httpd::body;
use crate::ipld::{DAG_PB, RAW, car, unixfs, walk};

/// How much of the DAG a CAR carries (`dag-scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The root block only.
    Block,
    /// The whole DAG (for a UnixFS file, `entity` is the same).
    All,
}

fn get(blocks: &Blocks, cid: &Cid) -> io::Result<Bytes> {
    match blocks.get(cid) {
        Ok(Some((data, _))) => Ok(data),
        Ok(None) => Err(io::Error::new(io::ErrorKind::NotFound, format!("block {cid} is not available"))),
        Err(e) => Err(io::Error::other(e)),
    }
}

/// A CAR v1 of the DAG under `root`, depth-first, each block once.
pub fn car_body(blocks: Arc<Blocks>, root: Cid, scope: Scope) -> Body {
    // The next piece if it is already known: the header first, then each block after its prefix.
    let mut ready = Some(Bytes::from(car::header(&root)));
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    body::pull(move || {
        if let Some(piece) = ready.take() {
            return Ok(Some(piece));
        }
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            let data = get(&blocks, &cid)?;
            match scope {
                Scope::All if cid.codec() == DAG_PB => {
                    let node = unixfs::decode(&data).map_err(|e| io::Error::other(format!("{cid}: {e}")))?;
                    stack.extend(node.links.iter().rev());
                }
                Scope::All => {}
                Scope::Block => stack.clear(),
            }
            let prefix = Bytes::from(car::block_prefix(&cid, data.len()));
            ready = Some(data);
            return Ok(Some(prefix));
        }
        Ok(None)
    })
}

/// The bytes `range` of the UnixFS file (or raw block) at `root`, planned by the one bounded
/// walk ([`walk`]) on the first pull and read piece by piece.
pub fn cat_body(blocks: Arc<Blocks>, root: Cid, range: Range<u64>) -> Body {
    let mut plan: Option<std::vec::IntoIter<walk::Piece>> = None;
    body::pull(move || {
        let pieces = match &mut plan {
            Some(p) => p,
            None => {
                let pieces = walk::walk_blocking(root, None, walk::Limits::generic(), |cids| {
                    cids.iter().map(|c| get(&blocks, c)).collect::<io::Result<Vec<_>>>()
                })
                .map_err(|e| match e {
                    walk::WalkOrFetch::Fetch(e) => e,
                    walk::WalkOrFetch::Walk(e) => io::Error::other(e),
                })?;
                plan.insert(pieces.into_iter())
            }
        };
        for piece in pieces.by_ref() {
            let (start, end) = (piece.offset(), piece.offset() + piece.len());
            let (from, to) = (range.start.max(start), range.end.min(end));
            if from >= to {
                continue;
            }
            let bytes = match piece {
                walk::Piece::Data { bytes, .. } => bytes,
                walk::Piece::Block { cid, len, .. } => {
                    let data = get(&blocks, &cid)?;
                    if data.len() as u64 != len {
                        return Err(io::Error::other(format!("{cid}: {} bytes where the DAG says {len}", data.len())));
                    }
                    data
                }
            };
            return Ok(Some(bytes.slice((from - start) as usize..(to - start) as usize)));
        }
        Ok(None)
    })
}

/// The file size of the UnixFS file (or raw block) at `root`.
pub fn file_size(blocks: &Blocks, root: &Cid) -> io::Result<u64> {
    let data = get(blocks, root)?;
    if root.codec() == RAW {
        return Ok(data.len() as u64);
    }
    let node = unixfs::decode(&data).map_err(|e| io::Error::other(format!("{root}: {e}")))?;
    Ok(node.inline_data.len() as u64 + node.block_sizes.iter().sum::<u64>())
}
