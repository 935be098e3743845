//! Streaming a DAG out of [`Blocks`]: as CAR v1 (gateway `?format=car`, RPC `dag/export`) or as
//! the UnixFS file bytes it encodes (RPC `cat`). Both are producers a [`body`] pulls as the client
//! reads (each piece read on a blocking thread, none held while the client is slow), and both
//! follow the one bounded walk ([`walk`]). A file is planned before its status is sent, so a DAG
//! that breaks a rule or a bound is a clear error; a CAR streams as it walks, so such a DAG, or a
//! block missing mid-stream, aborts the body and the client sees a truncated transfer (the
//! trustless-gateway spec leaves completeness checks to the client, and every client does).

use std::io;
use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use cid::Cid;

use crate::blocks::Blocks;
use crate::httpd::body;
use crate::ipld::{car, walk};

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

/// A CAR v1 of the DAG under `root`, depth-first, each block once, visited by the one bounded walk
/// ([`walk::Dfs`]): a DAG that breaks its rules or bounds ends the body there, aborted.
pub fn car_body(blocks: Arc<Blocks>, root: Cid, scope: Scope) -> Body {
    // The next piece if it is already known: the header first, then each block after its prefix.
    let mut ready = Some(Bytes::from(car::header(&root)));
    // `dag-scope=block` is the root alone, whatever it is; the whole DAG must be a file DAG.
    let mut block_scope = (scope == Scope::Block).then_some(root);
    let mut dfs = (scope == Scope::All).then(|| walk::Dfs::new(root, walk::Limits::generic()));
    body::pull(move || {
        if let Some(piece) = ready.take() {
            return Ok(Some(piece));
        }
        let cid = match (&mut dfs, block_scope.take()) {
            (_, Some(root)) => root,
            (Some(Ok(dfs)), None) => match dfs.next_block() {
                Some(cid) => cid,
                None => return Ok(None),
            },
            (Some(Err(e)), None) => return Err(io::Error::other(e.clone())),
            (None, None) => return Ok(None),
        };
        let data = get(&blocks, &cid)?;
        if let Some(Ok(dfs)) = &mut dfs {
            dfs.feed(&data).map_err(io::Error::other)?;
        }
        let prefix = Bytes::from(car::block_prefix(&cid, data.len()));
        ready = Some(data);
        Ok(Some(prefix))
    })
}

/// The pieces of the UnixFS file (or raw block) at `root`, planned by the one bounded walk
/// ([`walk`]) from local blocks before any byte is answered, so a hostile or incomplete DAG is a
/// clear error and not a body that breaks off. Blocking (SQLite reads).
pub fn cat_plan(blocks: &Blocks, root: Cid) -> Result<Vec<walk::Piece>, walk::WalkOrFetch<io::Error>> {
    walk::walk_blocking(root, None, walk::Limits::generic(), |cids| {
        cids.iter().map(|c| get(blocks, c)).collect::<io::Result<Vec<_>>>()
    })
}

/// The bytes `range` of a file planned by [`cat_plan`], each leaf read as the client pulls.
pub fn cat_body(blocks: Arc<Blocks>, pieces: Vec<walk::Piece>, range: Range<u64>) -> Body {
    let mut pieces = pieces.into_iter();
    body::pull(move || {
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
