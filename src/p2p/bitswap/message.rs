//! Bitswap messages (boxo `bitswap/message/pb/message.proto`) as prost structs, and their framing:
//! `uvarint(len) ‖ protobuf`, many messages per stream until EOF, each at most 4 MiB (the spec's
//! cap, also boxo's `MessageSizeMax` and Helia's default).

use cid::Cid;
use futures_util::{AsyncRead, AsyncWrite, AsyncWriteExt};
use multihash_codetable::{Code, MultihashDigest};

use crate::ipld::{put_varint, read_varint};
use crate::p2p::frame::FrameError;

/// Largest message we read or write.
pub const MAX_MESSAGE: usize = 4 << 20;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(message, optional, tag = "1")]
    pub wantlist: Option<Wantlist>,
    /// Bitswap 1.0.0 blocks (CIDv0 implied).
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub blocks: Vec<bytes::Bytes>,
    #[prost(message, repeated, tag = "3")]
    pub payload: Vec<Block>,
    #[prost(message, repeated, tag = "4")]
    pub block_presences: Vec<BlockPresence>,
    #[prost(int32, tag = "5")]
    pub pending_bytes: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Wantlist {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    #[prost(bool, tag = "2")]
    pub full: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(bytes = "vec", tag = "1")]
    pub block: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub priority: i32,
    #[prost(bool, tag = "3")]
    pub cancel: bool,
    /// 0 = Block, 1 = Have.
    #[prost(int32, tag = "4")]
    pub want_type: i32,
    #[prost(bool, tag = "5")]
    pub send_dont_have: bool,
}

pub const WANT_BLOCK: i32 = 0;
pub const WANT_HAVE: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Block {
    /// `uvarint(version) uvarint(codec) uvarint(mh code) uvarint(mh len)`.
    #[prost(bytes = "vec", tag = "1")]
    pub prefix: Vec<u8>,
    /// Block bytes: `Bytes`, so a decoded message shares its buffer instead of copying each block.
    #[prost(bytes = "bytes", tag = "2")]
    pub data: bytes::Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BlockPresence {
    #[prost(bytes = "vec", tag = "1")]
    pub cid: Vec<u8>,
    /// 0 = Have, 1 = DontHave.
    #[prost(int32, tag = "2")]
    pub r#type: i32,
}

pub const HAVE: i32 = 0;
pub const DONT_HAVE: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("stream I/O failed")]
    Io(#[from] std::io::Error),
    #[error("message of {0} bytes exceeds the 4 MiB cap")]
    TooLarge(usize),
    #[error("malformed length prefix")]
    Varint,
    #[error("malformed protobuf")]
    Decode(#[from] prost::DecodeError),
}

/// Writes one framed message.
pub async fn write<S: AsyncWrite + Unpin>(stream: &mut S, msg: &Message) -> Result<(), WireError> {
    let len = prost::Message::encoded_len(msg);
    if len > MAX_MESSAGE {
        return Err(WireError::TooLarge(len));
    }
    // Prefix and body in one buffer, encoded in place: one copy of the block bytes, not two.
    let mut frame = Vec::new();
    crate::p2p::frame::encode_message(&mut frame, msg);
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads one framed message; `None` at a clean end of stream. The buffer grows as bytes arrive
/// ([`crate::p2p::frame`]), so an announced 4 MiB costs nothing until it is sent.
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<Message>, WireError> {
    match crate::p2p::frame::read(stream, MAX_MESSAGE).await {
        Ok(Some(body)) => Ok(Some(prost::Message::decode(body)?)),
        Ok(None) => Ok(None),
        Err(FrameError::Io(e)) => Err(WireError::Io(e)),
        Err(FrameError::TooLarge { len, .. }) => Err(WireError::TooLarge(len as usize)),
        Err(FrameError::Varint) => Err(WireError::Varint),
    }
}

/// The CID prefix bitswap sends with a block.
pub fn prefix_of(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    put_varint(&mut out, cid.version() as u64);
    put_varint(&mut out, cid.codec());
    put_varint(&mut out, cid.hash().code());
    put_varint(&mut out, cid.hash().size() as u64);
    out
}

/// Rebuilds a received block's CID from its prefix by hashing the data (so the CID is, by
/// construction, the data's; the caller checks it is one it asked for). sha2-256 only, as kubo's
/// `verifcid` allows nothing weaker.
pub fn cid_of(prefix: &[u8], data: &[u8]) -> Option<Cid> {
    let (version, a) = read_varint(prefix)?;
    let (codec, b) = read_varint(&prefix[a..])?;
    let (mh_code, c) = read_varint(&prefix[a + b..])?;
    let (mh_len, _) = read_varint(&prefix[a + b + c..])?;
    if mh_code != 0x12 || mh_len != 32 {
        return None;
    }
    let mh = Code::Sha2_256.digest(data);
    match version {
        0 if codec == 0x70 => Cid::new_v0(mh).ok(),
        1 => Some(Cid::new_v1(codec, mh)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::raw_cid;

    #[tokio::test]
    async fn framing_roundtrip_and_caps() {
        let cid = raw_cid(b"block");
        let msg = Message {
            payload: vec![Block { prefix: prefix_of(&cid), data: bytes::Bytes::from_static(b"block") }],
            block_presences: vec![BlockPresence { cid: cid.to_bytes(), r#type: DONT_HAVE }],
            ..Default::default()
        };
        let mut buf = Vec::new();
        write(&mut futures_util::io::Cursor::new(&mut buf), &msg).await.unwrap();
        let mut r = futures_util::io::Cursor::new(buf.clone());
        assert_eq!(read(&mut r).await.unwrap(), Some(msg.clone()));
        assert_eq!(cid_of(&msg.payload[0].prefix, &msg.payload[0].data), Some(cid));
        assert_eq!(cid_of(&msg.payload[0].prefix, b"other"), Some(raw_cid(b"other")));

        let mut huge = Vec::new();
        put_varint(&mut huge, (MAX_MESSAGE + 1) as u64);
        assert!(matches!(read(&mut futures_util::io::Cursor::new(huge)).await, Err(WireError::TooLarge(_))));
        let mut garbage = Vec::new();
        put_varint(&mut garbage, 3);
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(read(&mut futures_util::io::Cursor::new(garbage)).await, Err(WireError::Decode(_))));
        assert!(read(&mut futures_util::io::Cursor::new(Vec::new())).await.unwrap().is_none());
    }
}
