//! Length-prefixed frames, `uvarint(len) ‖ bytes`: the framing of bitswap and of peerix's own
//! protocols (`/peerix/narinfo`, `/peerix/have`, `/peerix/blocks`).
//!
//! Reads are bounded twice: a frame longer than the caller's cap is refused before anything is
//! allocated, and the buffer grows only as bytes arrive ([`READ_STEP`] at a time), so a peer that
//! announces 4 MiB and sends nothing costs us 64 KiB, not 4 MiB.

use bytes::{Bytes, BytesMut};
use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ipld::{put_varint, read_varint};

/// The buffer of a frame being read grows by at most this much before bytes arrive to fill it.
pub const READ_STEP: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream I/O failed")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the cap of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("malformed length prefix")]
    Varint,
}

/// Reads one frame of at most `max` bytes; `None` at a clean end of stream (before a prefix).
pub async fn read<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> Result<Option<Bytes>, FrameError> {
    let mut prefix = [0u8; 10];
    let mut n = 0;
    loop {
        if n == prefix.len() {
            return Err(FrameError::Varint);
        }
        if stream.read(&mut prefix[n..n + 1]).await? == 0 {
            return if n == 0 { Ok(None) } else { Err(FrameError::Varint) };
        }
        n += 1;
        if prefix[n - 1] & 0x80 == 0 {
            break;
        }
    }
    let (len, _) = read_varint(&prefix[..n]).ok_or(FrameError::Varint)?;
    if len > max as u64 {
        return Err(FrameError::TooLarge { len, max });
    }
    let len = len as usize;
    let mut buf = BytesMut::with_capacity(len.min(READ_STEP));
    while buf.len() < len {
        // Zero (safe Rust reads into initialised memory only) one step, then fill it completely.
        let start = buf.len();
        let end = start + (len - start).min(READ_STEP);
        buf.resize(end, 0);
        stream.read_exact(&mut buf[start..end]).await?;
    }
    Ok(Some(buf.freeze()))
}

/// Writes one frame: prefix and payload in one write when the payload is small, else the payload
/// as it is (no copy of a block into a second buffer).
pub async fn write<S: AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(10 + payload.len().min(1024));
    put_varint(&mut head, payload.len() as u64);
    if payload.len() <= 1024 {
        head.extend_from_slice(payload);
        stream.write_all(&head).await?;
    } else {
        stream.write_all(&head).await?;
        stream.write_all(payload).await?;
    }
    Ok(())
}

/// Appends a protobuf message to `out` as one frame.
pub fn encode_message<M: prost::Message>(out: &mut Vec<u8>, msg: &M) {
    let len = msg.encoded_len();
    out.reserve(len + 10);
    put_varint(out, len as u64);
    msg.encode_raw(out);
}

/// Encodes a protobuf message as one frame.
pub async fn write_message<S: AsyncWrite + Unpin, M: prost::Message>(stream: &mut S, msg: &M) -> std::io::Result<()> {
    let mut frame = Vec::new();
    encode_message(&mut frame, msg);
    stream.write_all(&frame).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::io::Cursor;

    #[tokio::test]
    async fn frames_roundtrip_and_caps_hold_before_allocation() {
        let mut w = Cursor::new(Vec::new());
        let big = vec![7u8; 200_000];
        write(&mut w, b"small").await.unwrap();
        write(&mut w, &big).await.unwrap();
        let mut r = Cursor::new(w.into_inner());
        assert_eq!(read(&mut r, 1 << 20).await.unwrap().unwrap(), &b"small"[..]);
        assert!(read(&mut r, 1 << 20).await.unwrap().unwrap() == big, "the large frame comes back whole");
        assert!(read(&mut r, 1 << 20).await.unwrap().is_none());

        // A prefix over the cap is refused at once.
        let mut over = Vec::new();
        put_varint(&mut over, 5_000_000);
        assert!(matches!(read(&mut Cursor::new(over), 4 << 20).await, Err(FrameError::TooLarge { .. })));
        // A frame cut short is an error, not a short frame.
        let mut short = Vec::new();
        put_varint(&mut short, 100);
        short.extend_from_slice(&[1; 10]);
        assert!(matches!(read(&mut Cursor::new(short), 1024).await, Err(FrameError::Io(_))));
        // Eleven continuation bytes are no varint.
        assert!(matches!(read(&mut Cursor::new(vec![0x80; 11]), 1024).await, Err(FrameError::Varint)));
    }
}
