//! UnixFS v1 file DAGs over raw chunks: what makes a NAR `ipfs cat`-able by its root CID.
//!
//! Layout (dag-pb spec; go-unixfs / Helia importer byte order): a `PBNode` is its `Links` (field 2)
//! then `Data` (field 1); a `PBLink` is `Hash` (1), `Name` (2, always the empty string, as kubo and
//! Helia write it) and `Tsize` (3, bytes of the whole sub-DAG). `Data` holds a UnixFS message:
//! `Type` (1) = File (2), `filesize` (3), and one unpacked `blocksizes` (4) per link: the file bytes
//! under it. A one-chunk NAR's root is the raw chunk itself; more than 1024 chunks get a balanced tree.

use cid::Cid;

use super::{dag_pb_cid, put_varint, read_varint};

/// Links per node: Helia's and IPIP-499's `unixfs-v1-2025` width. A full node is ~50 KiB.
pub const MAX_LINKS: usize = 1024;
const UNIXFS_FILE: u64 = 2;

/// A child of a file node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub cid: Cid,
    /// Bytes of the file under this link.
    pub file_size: u64,
    /// Bytes of all blocks of the sub-DAG (`Tsize`).
    pub dag_size: u64,
}

/// The interior nodes of a file DAG and its root.
pub struct FileDag {
    pub root: Cid,
    /// Every dag-pb node, parents after their children; the root last (empty for a one-chunk file).
    pub nodes: Vec<(Cid, Vec<u8>)>,
}

/// Builds the DAG over `leaves` (raw chunks in file order: CID and length).
pub fn build(leaves: &[(Cid, u64)]) -> FileDag {
    let mut level: Vec<Link> =
        leaves.iter().map(|(cid, len)| Link { cid: *cid, file_size: *len, dag_size: *len }).collect();
    let mut nodes = Vec::new();
    if level.len() == 1 {
        return FileDag { root: level[0].cid, nodes };
    }
    loop {
        let mut next = Vec::with_capacity(level.len().div_ceil(MAX_LINKS));
        for group in level.chunks(MAX_LINKS) {
            let block = encode_file_node(group);
            let cid = dag_pb_cid(&block);
            let link = Link {
                cid,
                file_size: group.iter().map(|l| l.file_size).sum(),
                dag_size: block.len() as u64 + group.iter().map(|l| l.dag_size).sum::<u64>(),
            };
            nodes.push((cid, block));
            next.push(link);
        }
        if next.len() == 1 {
            return FileDag { root: next[0].cid, nodes };
        }
        level = next;
    }
}

fn put_tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, field << 3 | wire);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One UnixFS file node over `links`.
pub fn encode_file_node(links: &[Link]) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + links.len() * 5);
    put_tag(&mut data, 1, 0);
    put_varint(&mut data, UNIXFS_FILE);
    put_tag(&mut data, 3, 0);
    put_varint(&mut data, links.iter().map(|l| l.file_size).sum());
    for l in links {
        put_tag(&mut data, 4, 0);
        put_varint(&mut data, l.file_size);
    }
    let mut node = Vec::with_capacity(data.len() + links.len() * 48);
    for l in links {
        let mut link = Vec::with_capacity(48);
        put_bytes(&mut link, 1, &l.cid.to_bytes());
        put_bytes(&mut link, 2, b"");
        put_tag(&mut link, 3, 0);
        put_varint(&mut link, l.dag_size);
        put_bytes(&mut node, 2, &link);
    }
    put_bytes(&mut node, 1, &data);
    node
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed dag-pb/UnixFS node")]
pub struct DecodeError;

/// A decoded dag-pb node: its links and, when it is a UnixFS file node, the file bytes under each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub links: Vec<Cid>,
    /// `blocksizes` of a UnixFS file node (one per link), else empty.
    pub block_sizes: Vec<u64>,
    /// Inline file data of a UnixFS node (leaves made without raw-leaves carry their bytes here).
    pub inline_data: Vec<u8>,
}

/// Reads protobuf fields: (field number, wire type, varint value or byte slice).
fn fields(mut buf: &[u8]) -> impl Iterator<Item = Result<(u64, Field<'_>), DecodeError>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let step = || -> Result<((u64, Field<'_>), &[u8]), DecodeError> {
            let (tag, n) = read_varint(buf).ok_or(DecodeError)?;
            let rest = &buf[n..];
            match tag & 7 {
                0 => {
                    let (v, m) = read_varint(rest).ok_or(DecodeError)?;
                    Ok(((tag >> 3, Field::Varint(v)), &rest[m..]))
                }
                2 => {
                    let (len, m) = read_varint(rest).ok_or(DecodeError)?;
                    let len = usize::try_from(len).map_err(|_| DecodeError)?;
                    let body = rest.get(m..m.checked_add(len).ok_or(DecodeError)?).ok_or(DecodeError)?;
                    Ok(((tag >> 3, Field::Bytes(body)), &rest[m + len..]))
                }
                _ => Err(DecodeError),
            }
        };
        match step() {
            Ok((item, rest)) => {
                buf = rest;
                Some(Ok(item))
            }
            Err(e) => {
                buf = &[];
                Some(Err(e))
            }
        }
    })
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// Decodes a dag-pb node (links in order) and its UnixFS data, if any.
pub fn decode(block: &[u8]) -> Result<Node, DecodeError> {
    let mut node = Node { links: Vec::new(), block_sizes: Vec::new(), inline_data: Vec::new() };
    for f in fields(block) {
        match f? {
            (2, Field::Bytes(link)) => {
                let mut cid = None;
                for lf in fields(link) {
                    if let (1, Field::Bytes(h)) = lf? {
                        cid = Some(Cid::try_from(h).map_err(|_| DecodeError)?);
                    }
                }
                node.links.push(cid.ok_or(DecodeError)?);
            }
            (1, Field::Bytes(data)) => {
                for df in fields(data) {
                    match df? {
                        (4, Field::Varint(v)) => node.block_sizes.push(v),
                        (2, Field::Bytes(d)) => node.inline_data = d.to_vec(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::raw_cid;

    #[test]
    fn small_file_root_matches_helia() {
        // Root CIDs made by Helia's importer (ipfs-unixfs-importer, whose balanced layout is kubo's)
        // for the same bytes and chunking: CIDv1, raw leaves, fixed-size chunks, ≤ 1024 links a node
        // (`ipfs add --raw-leaves --cid-version 1 --chunker size-2` for "hello": "he", "ll", "o").
        // Recorded with tests/helia's modules, as in `big_file_tree_matches_helia`.
        let leaves: Vec<(Cid, u64)> = [&b"he"[..], b"ll", b"o"].iter().map(|c| (raw_cid(c), c.len() as u64)).collect();
        let dag = build(&leaves);
        assert_eq!(dag.nodes.len(), 1);
        let node = decode(&dag.nodes[0].1).unwrap();
        assert_eq!(node.links, leaves.iter().map(|l| l.0).collect::<Vec<_>>());
        assert_eq!(node.block_sizes, vec![2, 2, 1]);
        assert_eq!(dag.root.codec(), crate::ipld::DAG_PB);
        assert_eq!(dag.root.to_string(), "bafybeicgesbykmheqcwkxjidkw3ohzhivcjzxhc4ptuysl4hq2bdxfdvfq");
    }

    /// `importer([{content}], bs, {cidVersion: 1, rawLeaves: true, chunker: fixedSize({chunkSize: 4}),
    /// layout: balanced({maxChildrenPerNode: 1024}), reduceSingleLeafToSelf: true})` over the 2500
    /// little-endian u32s 0..2500 (and over "only") gave these roots.
    #[test]
    fn big_file_tree_matches_helia() {
        let leaves: Vec<(Cid, u64)> = (0..2500u32).map(|i| (raw_cid(&i.to_le_bytes()), 4)).collect();
        assert_eq!(build(&leaves).root.to_string(), "bafybeifksykgydiydrjoo7uhked76ynf7c6jpwd6sigsjoml7r4gw5l6fm");
        let one = [(raw_cid(b"only"), 4u64)];
        assert_eq!(build(&one).root.to_string(), "bafkreihzawyzkqxnbde2tqtfipgkglsxchjapxh7xanuzw2ezyfzrfbrze");
    }

    #[test]
    fn one_chunk_is_its_own_root_and_big_files_get_a_tree() {
        let one = [(raw_cid(b"only"), 4u64)];
        let dag = build(&one);
        assert_eq!(dag.root, one[0].0);
        assert!(dag.nodes.is_empty());

        let leaves: Vec<(Cid, u64)> = (0..2500u32).map(|i| (raw_cid(&i.to_le_bytes()), 4)).collect();
        let dag = build(&leaves);
        // 2500 leaves → 3 nodes of ≤ 1024 → 1 root.
        assert_eq!(dag.nodes.len(), 4);
        assert_eq!(dag.nodes.last().unwrap().0, dag.root);
        let root = decode(&dag.nodes[3].1).unwrap();
        assert_eq!(root.block_sizes, vec![4096, 4096, 1808]);
        assert!(dag.nodes.iter().all(|(_, b)| b.len() < crate::ipld::MAX_BLOCK));
        assert!(decode(&[0x12, 0x05, 0x01]).is_err());
    }
}
