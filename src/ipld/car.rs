//! CAR v1 framing: `varint(len) ‖ dag-cbor {"roots": [cid], "version": 1}`, then for each block
//! `varint(len(cid) + len(data)) ‖ cid ‖ data`. The header is written by hand: it is the same
//! dozen CBOR bytes around one CID every time.

use cid::Cid;

use super::put_varint;

/// The CAR v1 header naming `root`.
pub fn header(root: &Cid) -> Vec<u8> {
    let cid = root.to_bytes();
    let mut cbor = Vec::with_capacity(cid.len() + 24);
    cbor.push(0xa2); // map(2), keys in length-first order
    cbor.push(0x65); // text(5)
    cbor.extend_from_slice(b"roots");
    cbor.push(0x81); // array(1)
    cbor.extend_from_slice(&[0xd8, 0x2a]); // tag(42): CID
    let n = cid.len() + 1; // bytes, with the 0x00 multibase-identity prefix
    if n < 24 {
        cbor.push(0x40 | n as u8);
    } else {
        cbor.push(0x58);
        cbor.push(n as u8);
    }
    cbor.push(0x00);
    cbor.extend_from_slice(&cid);
    cbor.push(0x67); // text(7)
    cbor.extend_from_slice(b"version");
    cbor.push(0x01);
    let mut out = Vec::with_capacity(cbor.len() + 2);
    put_varint(&mut out, cbor.len() as u64);
    out.extend_from_slice(&cbor);
    out
}

/// The frame before a block's data: length prefix and CID.
pub fn block_prefix(cid: &Cid, data_len: usize) -> Vec<u8> {
    let c = cid.to_bytes();
    let mut out = Vec::with_capacity(c.len() + 4);
    put_varint(&mut out, (c.len() + data_len) as u64);
    out.extend_from_slice(&c);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::{raw_cid, read_varint};

    #[test]
    fn header_is_dag_cbor_with_the_root() {
        let root = raw_cid(b"x");
        let h = header(&root);
        let (len, n) = read_varint(&h).unwrap();
        assert_eq!(len as usize, h.len() - n);
        let body = &h[n..];
        assert_eq!(body[0], 0xa2);
        assert!(body.windows(root.to_bytes().len()).any(|w| w == root.to_bytes()));
        assert!(body.ends_with(b"version\x01"));
        let p = block_prefix(&root, 1);
        assert_eq!(read_varint(&p).unwrap().0 as usize, root.to_bytes().len() + 1);
    }
}
