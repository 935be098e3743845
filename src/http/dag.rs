//! Streaming a DAG out of [`Blocks`]: as CAR v1 (gateway `?format=car`, RPC `dag/export`) or as
//! the UnixFS file bytes it encodes (RPC `cat`). Both run on a blocking thread and feed a
//! [`body`]; a block missing mid-stream aborts the body, so the client sees a truncated transfer
//! (the trustless-gateway spec leaves completeness checks to the client, and every client does).

use std::collections::HashSet;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use cid::Cid;

use super::body;
use crate::blocks::Blocks;
use crate::ipld::{DAG_PB, RAW, car, unixfs};

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
    body::spawn(move |tx| {
        tx.send(Bytes::from(car::header(&root)))?;
        let mut stack = vec![root];
        let mut seen = HashSet::new();
        while let Some(cid) = stack.pop() {
            if !seen.insert(cid) {
                continue;
            }
            let data = get(&blocks, &cid)?;
            tx.send(Bytes::from(car::block_prefix(&cid, data.len())))?;
            if scope == Scope::All && cid.codec() == DAG_PB {
                let node = unixfs::decode(&data).map_err(|e| io::Error::other(format!("{cid}: {e}")))?;
                stack.extend(node.links.iter().rev());
            }
            tx.send(data)?;
            if scope == Scope::Block {
                break;
            }
        }
        Ok(())
    })
}

/// The bytes `range` of the UnixFS file (or raw block) at `root`.
pub fn cat_body(blocks: Arc<Blocks>, root: Cid, range: Range<u64>) -> Body {
    body::spawn(move |tx| emit(&blocks, &root, 0, &range, tx, 0))
}

/// Emits the part of the file under `cid` (which starts at file offset `start`) inside `want`.
fn emit(blocks: &Blocks, cid: &Cid, start: u64, want: &Range<u64>, tx: &body::Sender, depth: usize) -> io::Result<()> {
    // Our trees are 2–3 levels deep; 32 bounds the recursion for any DAG a peer could hand us.
    if depth > 32 {
        return Err(io::Error::other("DAG is deeper than 32 levels"));
    }
    let data = get(blocks, cid)?;
    let slice = |bytes: Bytes| -> Option<Bytes> {
        let end = start + bytes.len() as u64;
        let (from, to) = (want.start.max(start), want.end.min(end));
        (from < to).then(|| bytes.slice((from - start) as usize..(to - start) as usize))
    };
    match cid.codec() {
        RAW => {
            if let Some(piece) = slice(data) {
                tx.send(piece)?;
            }
            Ok(())
        }
        DAG_PB => {
            let node = unixfs::decode(&data).map_err(|e| io::Error::other(format!("{cid}: {e}")))?;
            if node.links.is_empty() {
                if let Some(piece) = slice(Bytes::from(node.inline_data)) {
                    tx.send(piece)?;
                }
                return Ok(());
            }
            if node.block_sizes.len() != node.links.len() {
                return Err(io::Error::other(format!("{cid}: not a UnixFS file node")));
            }
            let mut at = start + node.inline_data.len() as u64;
            for (child, size) in node.links.iter().zip(&node.block_sizes) {
                if at < want.end && at + size > want.start {
                    emit(blocks, child, at, want, tx, depth + 1)?;
                }
                at += size;
            }
            Ok(())
        }
        other => Err(io::Error::other(format!("{cid}: codec {other:#x} is not a file"))),
    }
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
