//! The one bounded walk over a UnixFS file DAG: from a root CID to the file's pieces in order
//! (raw leaves to fetch, inline data already at hand), used by every reader of a DAG — the peer
//! NAR transfer, bitswap's `cat` and the local `cat` — and, as [`Dfs`], to its blocks in CAR
//! order (the gateway's and the RPC's CAR export), under the same rules. Sans-I/O: the caller
//! fetches the blocks [`Walk::wanted`] names, by whatever means it has, and [`Walk::feed`]s them
//! back, one DAG level per round, so the same checks guard a blocking reader of the local store and
//! an async transfer from strangers.
//!
//! A root is something a peer *said*; nothing in it is trusted. Every node must be a UnixFS file
//! node whose `blocksizes` describe its links one to one and add up to the size its parent gave it
//! (for a NAR, the root must add up to the signed `NarSize`), and the walk stops at [`Limits`]:
//! depth, links per node, nodes and pieces in all, and inline bytes held. A hostile root therefore
//! costs a few blocks and an error, never memory or time in proportion to what it claims.

use bytes::Bytes;
use cid::Cid;

use super::{DAG_PB, RAW, unixfs};

/// Average piece size below which a DAG is refused (FastCDC's minimum is 16 KiB, kubo's chunks
/// 256 KiB, Helia's 1 MiB): bounds the plan of a NAR to NarSize / 8 KiB entries.
const MIN_AVG_PIECE: u64 = 8 << 10;

/// Bounds of one walk.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Levels below the root (our DAGs have 1–3; 8 is 1024⁸ leaves).
    pub max_depth: usize,
    /// Links in one node (ours have ≤ 1024, kubo's 174; a 1 MiB node holds ~26 000).
    pub max_links: usize,
    /// Interior nodes fetched in all.
    pub max_nodes: usize,
    /// Pieces in the plan.
    pub max_pieces: usize,
    /// Inline data held (leaves made without raw-leaves carry their bytes in the node).
    pub max_inline: usize,
}

impl Limits {
    /// For a file (NAR) that must be exactly `size` bytes.
    pub fn for_size(size: u64) -> Self {
        let pieces = (size / MIN_AVG_PIECE + 1024).min(1 << 22) as usize;
        Self { max_depth: 8, max_links: 8192, max_nodes: 16 + pieces / 64, max_pieces: pieces, max_inline: 32 << 20 }
    }

    /// For a file of unknown size (`cat` of any CID).
    pub fn generic() -> Self {
        Self { max_depth: 16, max_links: 8192, max_nodes: 1 << 16, max_pieces: 1 << 20, max_inline: 32 << 20 }
    }
}

/// A piece of the file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A raw block of `len` bytes at file offset `offset`, still to be fetched.
    Block { cid: Cid, offset: u64, len: u64 },
    /// Bytes already at hand (a raw root, inline UnixFS data).
    Data { offset: u64, bytes: Bytes },
}

impl Piece {
    pub fn offset(&self) -> u64 {
        match self {
            Piece::Block { offset, .. } | Piece::Data { offset, .. } => *offset,
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Piece::Block { len, .. } => *len,
            Piece::Data { bytes, .. } => bytes.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error("block {0} is not a UnixFS file node")]
    NotAFile(Cid),
    #[error("block {0} is malformed")]
    Malformed(Cid),
    #[error("node {cid} describes {found} bytes where {expected} were expected")]
    Size { cid: Cid, expected: u64, found: u64 },
    #[error("DAG exceeds the walk's bounds ({0})")]
    Bounds(&'static str),
    #[error("{wanted} blocks were asked for, {got} given")]
    Feed { wanted: usize, got: usize },
}

enum Item {
    Node { cid: Cid, offset: u64, size: Option<u64> },
    Piece(Piece),
}

/// A walk in progress.
pub struct Walk {
    items: Vec<Item>,
    limits: Limits,
    depth: usize,
    nodes: usize,
    pieces: usize,
    inline: usize,
}

impl Walk {
    /// Starts at `root`; `size` is what the file must add up to, when known (a NAR's NarSize).
    pub fn new(root: Cid, size: Option<u64>, limits: Limits) -> Result<Self, WalkError> {
        let first = match (root.codec(), size) {
            (RAW, Some(len)) => Item::Piece(Piece::Block { cid: root, offset: 0, len }),
            (RAW | DAG_PB, _) => Item::Node { cid: root, offset: 0, size },
            _ => return Err(WalkError::NotAFile(root)),
        };
        let nodes = usize::from(matches!(first, Item::Node { .. }));
        Ok(Self { items: vec![first], limits, depth: 0, nodes, pieces: 0, inline: 0 })
    }

    /// The blocks to fetch next (one level of the DAG), in order; empty when the walk is done.
    pub fn wanted(&self) -> Vec<Cid> {
        self.items.iter().filter_map(|i| if let Item::Node { cid, .. } = i { Some(*cid) } else { None }).collect()
    }

    pub fn is_done(&self) -> bool {
        self.items.iter().all(|i| matches!(i, Item::Piece(_)))
    }

    /// Hands over the blocks [`Walk::wanted`] named, in that order (each already checked against
    /// its CID by the caller), and expands them.
    pub fn feed(&mut self, blocks: &[Bytes]) -> Result<(), WalkError> {
        let wanted = self.items.iter().filter(|i| matches!(i, Item::Node { .. })).count();
        if blocks.len() != wanted {
            return Err(WalkError::Feed { wanted, got: blocks.len() });
        }
        if wanted == 0 {
            return Ok(());
        }
        self.depth += 1;
        if self.depth > self.limits.max_depth + 1 {
            return Err(WalkError::Bounds("depth"));
        }
        let mut blocks = blocks.iter();
        let mut next = Vec::with_capacity(self.items.len());
        for item in std::mem::take(&mut self.items) {
            let Item::Node { cid, offset, size } = item else {
                next.push(item);
                continue;
            };
            let data = blocks.next().ok_or(WalkError::Feed { wanted, got: 0 })?;
            self.expand(cid, offset, size, data, &mut next)?;
        }
        self.items = next;
        Ok(())
    }

    fn expand(
        &mut self,
        cid: Cid,
        offset: u64,
        size: Option<u64>,
        data: &Bytes,
        out: &mut Vec<Item>,
    ) -> Result<(), WalkError> {
        let node = file_node(cid, size, data, &self.limits)?;
        let mut at = offset;
        if !node.inline.is_empty() || cid.codec() == RAW {
            let len = node.inline.len() as u64;
            self.push_data(at, node.inline, out)?;
            at += len;
        }
        for (child, len) in node.children {
            if child.codec() == RAW {
                spend(&mut self.pieces, 1, self.limits.max_pieces, "pieces")?;
                out.push(Item::Piece(Piece::Block { cid: child, offset: at, len }));
            } else {
                // Counted as it is named, not when fetched: a level of 8 000 links to one node
                // that itself has 8 000 links must stop here, before 64 million entries exist.
                spend(&mut self.nodes, 1, self.limits.max_nodes, "nodes")?;
                out.push(Item::Node { cid: child, offset: at, size: Some(len) });
            }
            at += len;
        }
        Ok(())
    }

    fn push_data(&mut self, offset: u64, bytes: Bytes, out: &mut Vec<Item>) -> Result<(), WalkError> {
        spend(&mut self.pieces, 1, self.limits.max_pieces, "pieces")?;
        spend(&mut self.inline, bytes.len(), self.limits.max_inline, "inline data")?;
        if !bytes.is_empty() {
            out.push(Item::Piece(Piece::Data { offset, bytes }));
        }
        Ok(())
    }

    /// The file's pieces in order; call once [`Walk::is_done`].
    pub fn pieces(self) -> Vec<Piece> {
        self.items.into_iter().filter_map(|i| if let Item::Piece(p) = i { Some(p) } else { None }).collect()
    }
}

/// Adds `n` to what a walk has `used` of one bound, refusing the DAG once it is over.
fn spend(used: &mut usize, n: usize, bound: usize, name: &'static str) -> Result<(), WalkError> {
    *used += n;
    if *used > bound {
        return Err(WalkError::Bounds(name));
    }
    Ok(())
}

/// A block of a file DAG, checked: its own bytes (a raw block's, or a node's inline data) and its
/// children with the file bytes under each.
struct FileNode {
    inline: Bytes,
    children: Vec<(Cid, u64)>,
}

/// The rules every node of a file DAG must meet, whoever walks it: a raw block, or a UnixFS file
/// node with at most `max_links` links, one `blocksizes` entry per link, children that are raw or
/// dag-pb, and sizes that add up to `size` (what the parent said, when known).
fn file_node(cid: Cid, size: Option<u64>, data: &Bytes, limits: &Limits) -> Result<FileNode, WalkError> {
    let check = |found: u64| match size {
        Some(expected) if expected != found => Err(WalkError::Size { cid, expected, found }),
        _ => Ok(()),
    };
    if cid.codec() == RAW {
        check(data.len() as u64)?;
        return Ok(FileNode { inline: data.clone(), children: Vec::new() });
    }
    let node = unixfs::decode(data).map_err(|_| WalkError::Malformed(cid))?;
    if node.links.len() > limits.max_links {
        return Err(WalkError::Bounds("links per node"));
    }
    if node.links.len() != node.block_sizes.len() {
        return Err(WalkError::NotAFile(cid));
    }
    let total = node
        .block_sizes
        .iter()
        .try_fold(node.inline_data.len() as u64, |acc, s| acc.checked_add(*s))
        .ok_or(WalkError::Size { cid, expected: size.unwrap_or(0), found: u64::MAX })?;
    check(total)?;
    if let Some(other) = node.links.iter().find(|c| c.codec() != RAW && c.codec() != DAG_PB) {
        return Err(WalkError::NotAFile(*other));
    }
    Ok(FileNode {
        inline: Bytes::from(node.inline_data),
        children: node.links.into_iter().zip(node.block_sizes).collect(),
    })
}

/// Every block of a file DAG once, depth-first in link order (a CAR's `order=dfs; dups=n`), under
/// the same rules and [`Limits`] as [`Walk`]: the caller asks [`Dfs::next_block`] for the next block,
/// reads it and hands it to [`Dfs::feed`] before asking again. A block named twice is visited once,
/// so a DAG of repeated CIDs costs its distinct blocks, and those are capped.
pub struct Dfs {
    /// Blocks still to visit: (CID, file bytes its parent said it holds, depth).
    stack: Vec<(Cid, Option<u64>, usize)>,
    /// The block handed out by `next_block` and not yet fed.
    current: Option<(Cid, Option<u64>, usize)>,
    seen: std::collections::HashSet<Cid>,
    limits: Limits,
    nodes: usize,
    pieces: usize,
}

impl Dfs {
    pub fn new(root: Cid, limits: Limits) -> Result<Self, WalkError> {
        if root.codec() != RAW && root.codec() != DAG_PB {
            return Err(WalkError::NotAFile(root));
        }
        Ok(Self { stack: vec![(root, None, 0)], current: None, seen: Default::default(), limits, nodes: 0, pieces: 0 })
    }

    /// The next block to read, or `None` when every block has been visited.
    pub fn next_block(&mut self) -> Option<Cid> {
        while let Some(entry) = self.stack.pop() {
            if self.seen.insert(entry.0) {
                self.current = Some(entry);
                return Some(entry.0);
            }
        }
        None
    }

    /// The bytes of the block [`Dfs::next_block`] named (checked against its CID by the caller).
    pub fn feed(&mut self, data: &Bytes) -> Result<(), WalkError> {
        let Some((cid, size, depth)) = self.current.take() else {
            return Err(WalkError::Feed { wanted: 0, got: 1 });
        };
        match cid.codec() {
            RAW => spend(&mut self.pieces, 1, self.limits.max_pieces, "pieces")?,
            _ => spend(&mut self.nodes, 1, self.limits.max_nodes, "nodes")?,
        }
        // As in [`Walk`]: nodes down to `max_depth` levels below the root, leaves one further.
        if cid.codec() == DAG_PB && depth > self.limits.max_depth {
            return Err(WalkError::Bounds("depth"));
        }
        let node = file_node(cid, size, data, &self.limits)?;
        // Children in reverse, so the first link is visited first.
        self.stack.extend(node.children.into_iter().rev().map(|(c, len)| (c, Some(len), depth + 1)));
        Ok(())
    }
}

/// Walks to the end with a blocking `get` (one level at a time).
pub fn walk_blocking<E>(
    root: Cid,
    size: Option<u64>,
    limits: Limits,
    mut get: impl FnMut(&[Cid]) -> Result<Vec<Bytes>, E>,
) -> Result<Vec<Piece>, WalkOrFetch<E>> {
    let mut walk = Walk::new(root, size, limits).map_err(WalkOrFetch::Walk)?;
    while !walk.is_done() {
        let blocks = get(&walk.wanted()).map_err(WalkOrFetch::Fetch)?;
        walk.feed(&blocks).map_err(WalkOrFetch::Walk)?;
    }
    Ok(walk.pieces())
}

/// A walk that failed on the DAG, or on fetching a block of it.
#[derive(Debug)]
pub enum WalkOrFetch<E> {
    Walk(WalkError),
    Fetch(E),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{dag_pb_cid, raw_cid, unixfs};
    use std::collections::HashMap;

    fn store(blocks: &[(Cid, Vec<u8>)]) -> HashMap<Cid, Bytes> {
        blocks.iter().map(|(c, d)| (*c, Bytes::from(d.clone()))).collect()
    }

    fn run(root: Cid, size: Option<u64>, limits: Limits, s: &HashMap<Cid, Bytes>) -> Result<Vec<Piece>, WalkError> {
        walk_blocking(root, size, limits, |cids| Ok::<_, ()>(cids.iter().map(|c| s[c].clone()).collect())).map_err(
            |e| match e {
                WalkOrFetch::Walk(w) => w,
                WalkOrFetch::Fetch(()) => unreachable!(),
            },
        )
    }

    #[test]
    fn a_tree_becomes_its_leaves_in_order() {
        let chunks: Vec<Vec<u8>> = (0..2500u32).map(|i| i.to_le_bytes().repeat(3)).collect();
        let leaves: Vec<(Cid, u64)> = chunks.iter().map(|c| (raw_cid(c), c.len() as u64)).collect();
        let dag = unixfs::build(&leaves);
        let s = store(&dag.nodes);
        // (Tiny chunks: the piece budget of a 30 000-byte file is raised for the test.)
        let limits = Limits { max_pieces: 10_000, ..Limits::for_size(2500 * 12) };
        let pieces = run(dag.root, Some(2500 * 12), limits, &s).unwrap();
        assert_eq!(pieces.len(), 2500);
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(p, &Piece::Block { cid: leaves[i].0, offset: i as u64 * 12, len: 12 });
        }
        // The same DAG read as a file of another size is refused at the root.
        assert!(matches!(run(dag.root, Some(7), Limits::for_size(7), &s), Err(WalkError::Size { .. })));
        // A raw root of known size is its own plan; of unknown size, it is fetched.
        let raw = raw_cid(b"abc");
        assert_eq!(
            run(raw, Some(3), Limits::generic(), &HashMap::new()).unwrap(),
            vec![Piece::Block { cid: raw, offset: 0, len: 3 }]
        );
        let s = store(&[(raw, b"abc".to_vec())]);
        assert_eq!(
            run(raw, None, Limits::generic(), &s).unwrap(),
            vec![Piece::Data { offset: 0, bytes: Bytes::from_static(b"abc") }]
        );
    }

    #[test]
    fn hostile_dags_stop_at_the_bounds() {
        // Blocksizes that do not add up to the size the parent gave.
        let leaf = raw_cid(b"x");
        let liar = unixfs::encode_file_node(&[unixfs::Link { cid: leaf, file_size: 5, dag_size: 1 }]);
        let liar_cid = dag_pb_cid(&liar);
        let top = unixfs::encode_file_node(&[unixfs::Link { cid: liar_cid, file_size: 6, dag_size: 9 }]);
        let top_cid = dag_pb_cid(&top);
        let s = store(&[(liar_cid, liar.clone()), (top_cid, top)]);
        assert!(matches!(run(top_cid, Some(6), Limits::for_size(6), &s), Err(WalkError::Size { .. })));

        // A huge link list.
        let many: Vec<unixfs::Link> =
            (0..9000u32).map(|_| unixfs::Link { cid: leaf, file_size: 1, dag_size: 1 }).collect();
        let wide = unixfs::encode_file_node(&many);
        let wide_cid = dag_pb_cid(&wide);
        let s = store(&[(wide_cid, wide)]);
        assert_eq!(run(wide_cid, Some(9000), Limits::for_size(9000), &s), Err(WalkError::Bounds("links per node")));

        // Tiny pieces claiming a big file: refused by the piece budget.
        let tiny: Vec<unixfs::Link> =
            (0..4000u32).map(|_| unixfs::Link { cid: leaf, file_size: 1, dag_size: 1 }).collect();
        let node = unixfs::encode_file_node(&tiny);
        let node_cid = dag_pb_cid(&node);
        let s = store(&[(node_cid, node)]);
        assert_eq!(run(node_cid, Some(4000), Limits::for_size(4000), &s), Err(WalkError::Bounds("pieces")));

        // A chain deeper than the bound.
        let mut cid = leaf;
        let mut blocks = Vec::new();
        for _ in 0..12 {
            let n = unixfs::encode_file_node(&[unixfs::Link { cid, file_size: 1, dag_size: 1 }]);
            cid = dag_pb_cid(&n);
            blocks.push((cid, n));
        }
        let s = store(&blocks);
        assert_eq!(run(cid, Some(1), Limits::for_size(1), &s), Err(WalkError::Bounds("depth")));

        // Not a file at all, and garbage.
        assert!(matches!(
            Walk::new(Cid::new_v1(0x71, *leaf.hash()), None, Limits::generic()),
            Err(WalkError::NotAFile(_))
        ));
        let junk = dag_pb_cid(b"\xff\xff");
        let s = store(&[(junk, b"\xff\xff".to_vec())]);
        assert!(matches!(run(junk, None, Limits::generic(), &s), Err(WalkError::Malformed(_))));
    }

    /// Every block of a DAG in CAR order through [`Dfs`], or the error that stopped it.
    fn dfs(root: Cid, limits: Limits, s: &HashMap<Cid, Bytes>) -> Result<Vec<Cid>, WalkError> {
        let mut dfs = Dfs::new(root, limits)?;
        let mut out = Vec::new();
        while let Some(cid) = dfs.next_block() {
            dfs.feed(&s[&cid])?;
            out.push(cid);
        }
        Ok(out)
    }

    #[test]
    fn repeated_cids_cost_their_distinct_blocks_and_stop_at_the_bounds() {
        // "Billion laughs" by CID: 8 000 links to one node, which has 8 000 links to one node
        // over a leaf — 64 million pieces claimed by three blocks. The walk refuses it while the
        // second level is named, before it exists in memory.
        let leaf = raw_cid(b"x");
        let mut s = store(&[(leaf, b"x".to_vec())]);
        let mut cid = leaf;
        let mut size = 1u64;
        for _ in 0..3 {
            let node = unixfs::encode_file_node(
                &(0..8000).map(|_| unixfs::Link { cid, file_size: size, dag_size: 1 }).collect::<Vec<_>>(),
            );
            cid = dag_pb_cid(&node);
            size *= 8000;
            s.insert(cid, Bytes::from(node));
        }
        assert_eq!(run(cid, None, Limits::generic(), &s), Err(WalkError::Bounds("nodes")));
        // The CAR visits each distinct block once: the three nodes and the leaf.
        assert_eq!(dfs(cid, Limits::generic(), &s).unwrap().len(), 4);
    }

    #[test]
    fn the_car_order_is_depth_first_and_hostile_dags_stop_it() {
        let chunks: Vec<Vec<u8>> = (0..2000u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let leaves: Vec<(Cid, u64)> = chunks.iter().map(|c| (raw_cid(c), 4)).collect();
        let dag = unixfs::build(&leaves);
        let mut s = store(&dag.nodes);
        s.extend(chunks.iter().map(|c| (raw_cid(c), Bytes::from(c.clone()))));
        let order = dfs(dag.root, Limits::generic(), &s).unwrap();
        // Root, first interior node, its 1 024 leaves, the second node, its 976 leaves.
        assert_eq!(order.len(), 2003);
        assert_eq!((order[0], order[1], order[2]), (dag.root, dag.nodes[0].0, leaves[0].0));
        assert_eq!((order[1026], order[1027]), (dag.nodes[1].0, leaves[1024].0));

        // The same rules as the walk (one `file_node`): a lying blocksize, too deep.
        let liar = unixfs::encode_file_node(&[unixfs::Link { cid: leaves[0].0, file_size: 5, dag_size: 4 }]);
        let liar_cid = dag_pb_cid(&liar);
        s.insert(liar_cid, Bytes::from(liar));
        assert!(matches!(dfs(liar_cid, Limits::generic(), &s), Err(WalkError::Size { .. })));
        let mut cid = leaves[0].0;
        for _ in 0..20 {
            let n = unixfs::encode_file_node(&[unixfs::Link { cid, file_size: 4, dag_size: 4 }]);
            cid = dag_pb_cid(&n);
            s.insert(cid, Bytes::from(n));
        }
        assert_eq!(dfs(cid, Limits::generic(), &s), Err(WalkError::Bounds("depth")));
    }
}
