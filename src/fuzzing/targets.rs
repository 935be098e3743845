//! One entry point per parser of outside bytes (see [`super`]).

// Panicking on a broken property is how a fuzz target reports it.
#![allow(clippy::expect_used)]

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use cid::Cid;
use sha2::{Digest, Sha256};

use super::nar_reader;
use crate::config::{FileConfig, ServeArgs, ServeConfig};
use crate::ipld::unixfs;
use crate::nix::base32;
use crate::nix::narinfo::NarInfo;
use crate::nix::signing::{PublicKey, SecretKey};
use crate::p2p::{bitswap, frame, have, narinfo};

/// One parser's entry point: arbitrary bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("nar", nar),
    ("narinfo", narinfo_text),
    ("nix32", nix32),
    ("keys", keys),
    ("unixfs", unixfs_node),
    ("bitswap", bitswap_messages),
    ("have", have_summaries),
    ("narinfo_answer", narinfo_answer),
    ("range", range),
    ("config", config),
    ("http", http_requests),
];

/// Runs a future that reads from memory (it never waits).
fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a read from memory waited"),
    }
}

/// A NAR from a peer or a file: a valid one is exactly the input, and its hash is the input's.
pub fn nar(data: &[u8]) {
    if let Ok(summary) = nar_reader::validate(data) {
        assert_eq!(summary.nar_size, data.len() as u64);
        assert_eq!(summary.nar_hash.0, <[u8; 32]>::from(Sha256::digest(data)));
    }
}

/// A narinfo from a peer or upstream: what parses renders to text that parses to the same.
pub fn narinfo_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(info) = NarInfo::parse(text) {
        let again = NarInfo::parse(&info.render()).expect("a rendered narinfo parses");
        assert_eq!(again, info);
        let _ = info.fingerprint();
    }
}

/// Nix's base-32: what decodes encodes back to the same text (one spelling per value).
pub fn nix32(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(bytes) = base32::decode::<32>(text) {
        assert_eq!(base32::encode(&bytes), text);
    }
    if let Ok(bytes) = base32::decode::<20>(text) {
        assert_eq!(base32::encode(&bytes), text);
    }
}

/// Keys and signatures (`name:base64`): a key from the config, a Sig line from a peer.
pub fn keys(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (key, fingerprint, sig) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Ok(k) = PublicKey::parse(key) {
        let _ = k.verifies(fingerprint, sig);
    }
    if let Ok(k) = SecretKey::parse(key) {
        let sig = k.sign(fingerprint);
        assert!(k.public().verifies(fingerprint, &sig), "a key does not verify its own signature");
    }
}

/// A dag-pb UnixFS node from a peer: its sizes add up without overflow.
pub fn unixfs_node(data: &[u8]) {
    if let Ok(node) = unixfs::decode(data) {
        let _ = node.block_sizes.iter().try_fold(node.inline_data.len() as u64, |a, b| a.checked_add(*b));
    }
}

/// Bitswap messages as they arrive on a stream, back to back.
pub fn bitswap_messages(data: &[u8]) {
    let mut input = data;
    while let Ok(Some(msg)) = now(bitswap::message::read(&mut input)) {
        for block in &msg.payload {
            if let Some(cid) = bitswap::message::cid_of(&block.prefix, &block.data) {
                assert!(crate::ipld::verify(&cid, &block.data));
            }
        }
        for entry in msg.wantlist.iter().flat_map(|w| &w.entries) {
            let _ = Cid::try_from(entry.block.as_slice());
        }
    }
}

/// Have-summary frames on one stream, applied in order to what we hold of the peer.
pub fn have_summaries(data: &[u8]) {
    let mut input = data;
    let mut held = None;
    while let Ok(Some(body)) = now(frame::read(&mut input, have::MAX_FRAME)) {
        if let Ok(msg) = <have::wire::Have as prost::Message>::decode(body) {
            let _ = have::apply(&mut held, msg);
        }
        if let Some(s) = &held {
            let _ = s.contains(&[0x5a; 20]);
        }
    }
}

/// A peer's answer on `/peerix/narinfo/1.0.0`, then the narinfo it carries.
pub fn narinfo_answer(data: &[u8]) {
    if let Ok(Some(answer)) = narinfo::decode_answer(Bytes::copy_from_slice(data)) {
        let _ = NarInfo::parse(&answer.narinfo);
        for (_, related) in &answer.closure {
            let _ = NarInfo::parse(&related.narinfo);
            if let Some(node) = &related.root_node {
                let _ = crate::ipld::verify(&related.root, node);
            }
        }
        if let Some(node) = &answer.root_node {
            let _ = crate::ipld::verify(&answer.root, node);
        }
    }
}

/// A `Range` header (after the body size, 8 bytes little-endian): a range is inside the body and
/// not empty.
pub fn range(data: &[u8]) {
    let Some((size, spec)) = data.split_first_chunk::<8>() else { return };
    let size = u64::from_le_bytes(*size);
    if let Ok(Some(r)) = crate::httpd::range::parse(&String::from_utf8_lossy(spec), size) {
        assert!(r.start < r.end && r.end <= size, "{r:?} of {size} bytes");
    }
}

/// The TOML config, through the loader and the merge with (empty) flags.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = FileConfig::parse(text, Path::new("fuzz.toml")) else { return };
    if file.private_key_file.is_some() {
        return; // The merge would read a file the input names.
    }
    let args = ServeArgs { state_dir: Some("/nonexistent".into()), ..Default::default() };
    let _ = ServeConfig::merge(args, file);
}

/// Bytes a client sends the HTTP server (request heads, chunked and fixed bodies, pipelined
/// requests), read as a connection reads them, with the daemon's body cap and the tracker's: no
/// panic, no body over its cap, at most one Host per request.
pub fn http_requests(data: &[u8]) {
    thread_local! {
        static RT: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    }
    RT.with(|rt| {
        for max_body in [crate::httpd::conn::MAX_BODY, 64 << 10] {
            rt.block_on(crate::httpd::conn::read_all(data, max_body));
        }
    });
}
