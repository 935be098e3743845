//! The tracker's wire format, shared by the server ([`crate::tracker`]) and the daemon's client
//! ([`crate::substitute::tracker`]): a signed announcement and a providers answer, JSON under `/v1`.
//!
//! An announcement is JSON text (`payload`) and an ed25519 signature over a domain tag and those
//! exact bytes (`signature`, base64), made with the peer's libp2p key. The key is not sent: an
//! ed25519 peer id embeds it (identity multihash), so a signature that verifies under the id's key
//! proves the sender owns the id, and nobody can announce for another peer. The payload carries a
//! timestamp and a nonce against replays, and a generation number that chains deltas: a full list
//! sets it, a delta names the generation it applies to, and the tracker refuses a delta on any
//! other, so a lost delta costs one full announcement, never a wrong record.

use data_encoding::BASE64;
use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};

/// The limits of an announcement, one set for the server (its HTTP body cap and its checks), the
/// client (which announces at most [`MAX_PATHS`] and says so when it holds more) and the README.
/// Paths one peer may share: a large NixOS workstation holds ~60 000 store paths.
pub const MAX_PATHS: usize = 200_000;

/// The libp2p protocol of the one idle stream a daemon holds to its tracker's node
/// ([`crate::tracker::presence`]): nothing is ever written on it; it keeps the connection open, so
/// the tracker sees the daemon leave (a reset, or its heartbeats stop) and stops naming it.
pub const PRESENCE_PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/peerix/presence/1.0.0");
/// An announcement body at most: [`MAX_PATHS`] hash32s are ~7.4 MB as a signed payload (each an
/// escaped JSON string of 37 bytes), checked by a test.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 8 << 20;

/// Signed before the payload, so a signature made for anything else never verifies here.
const DOMAIN: &[u8] = b"peerix-tracker-announce-v1\n";

/// What a peer says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    pub peer_id: String,
    /// Where the peer listens (multiaddrs, without the trailing `/p2p/<id>`).
    pub addrs: Vec<String>,
    /// Unix seconds when signed.
    pub timestamp: i64,
    /// Unique per announcement of this peer (hex, 16–64 characters).
    pub nonce: String,
    /// The record's generation once this announcement is applied.
    pub generation: u64,
    /// Every path the peer shares (hash32s), replacing what the tracker held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<Vec<String>>,
    /// For a delta: the generation it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// An announcement as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub payload: String,
    pub signature: String,
}

/// One peer that has a path, as `/v1/providers/<hash32>` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// Unix seconds of its last announcement or heartbeat.
    pub last_seen: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Providers {
    pub providers: Vec<Provider>,
}

/// The tracker's answer to an announcement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub generation: u64,
    /// Records expire this long after the last announcement: heartbeat well before.
    pub ttl_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot encode the announcement: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot sign the announcement: {0}")]
    Key(#[from] libp2p::identity::SigningError),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("payload is not a valid announcement: {0}")]
    Payload(String),
    #[error("peer id is malformed")]
    PeerId,
    #[error("peer id does not embed an ed25519 key")]
    KeyNotInline,
    #[error("signature is not base64")]
    SignatureEncoding,
    #[error("signature does not verify under the peer id's key")]
    BadSignature,
}

impl Signed {
    /// Signs `a` with `key` (the peer's libp2p identity).
    pub fn sign(a: &Announcement, key: &Keypair) -> Result<Self, SignError> {
        let payload = serde_json::to_string(a)?;
        let signature = key.sign(&[DOMAIN, payload.as_bytes()].concat())?;
        Ok(Self { payload, signature: BASE64.encode(&signature) })
    }

    /// The announcement, if its signature verifies under the key its peer id embeds.
    pub fn verify(&self) -> Result<(Announcement, PeerId), WireError> {
        let a: Announcement = serde_json::from_str(&self.payload).map_err(|e| WireError::Payload(e.to_string()))?;
        let peer: PeerId = a.peer_id.parse().map_err(|_| WireError::PeerId)?;
        let key = public_key(&peer).ok_or(WireError::KeyNotInline)?;
        let signature = BASE64.decode(self.signature.as_bytes()).map_err(|_| WireError::SignatureEncoding)?;
        if !key.verify(&[DOMAIN, self.payload.as_bytes()].concat(), &signature) {
            return Err(WireError::BadSignature);
        }
        Ok((a, peer))
    }
}

/// The public key an ed25519 peer id carries (its multihash is the identity hash of the key).
fn public_key(peer: &PeerId) -> Option<PublicKey> {
    let mh = multihash::Multihash::<64>::from_bytes(&peer.to_bytes()).ok()?;
    if mh.code() != 0 {
        return None;
    }
    PublicKey::try_decode_protobuf(mh.digest()).ok().filter(|k| k.clone().try_into_ed25519().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_announcement_fits_the_body_limit() {
        let key = Keypair::generate_ed25519();
        let a = Announcement {
            peer_id: key.public().to_peer_id().to_string(),
            addrs: (0..16)
                .map(|i| format!("/ip6/2001:db8::{i}/udp/12306/quic-v1/p2p/{}", key.public().to_peer_id()))
                .collect(),
            timestamp: i64::MAX,
            nonce: "f".repeat(64),
            generation: u64::MAX,
            base: None,
            full: Some((0..MAX_PATHS).map(|i| format!("{i:0>32}")).collect()),
            add: Vec::new(),
            remove: Vec::new(),
        };
        let body = serde_json::to_vec(&Signed::sign(&a, &key).unwrap()).unwrap();
        assert!(body.len() <= MAX_ANNOUNCEMENT_BYTES, "{} > {MAX_ANNOUNCEMENT_BYTES}", body.len());
    }

    fn announcement(peer: &PeerId) -> Announcement {
        Announcement {
            peer_id: peer.to_string(),
            addrs: vec!["/ip4/192.0.2.1/tcp/12306".into()],
            timestamp: 1_800_000_000,
            nonce: "00112233445566778899aabbccddeeff".into(),
            generation: 1,
            full: Some(vec!["0".repeat(32)]),
            base: None,
            add: vec![],
            remove: vec![],
        }
    }

    #[test]
    fn only_the_owner_of_a_peer_id_can_announce_for_it() {
        let key = Keypair::generate_ed25519();
        let me = key.public().to_peer_id();
        let signed = Signed::sign(&announcement(&me), &key).unwrap();
        assert_eq!(signed.verify().unwrap(), (announcement(&me), me));

        // Any change to the signed bytes breaks the signature.
        let mut tampered = signed.clone();
        tampered.payload = tampered.payload.replace("12306", "12307");
        assert_eq!(tampered.verify(), Err(WireError::BadSignature));

        // Another peer's id, signed with my key.
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let forged = Signed::sign(&announcement(&other), &key).unwrap();
        assert_eq!(forged.verify(), Err(WireError::BadSignature));

        // A signature made for something else (no domain tag) does not verify.
        let bare = Signed {
            payload: signed.payload.clone(),
            signature: BASE64.encode(&key.sign(signed.payload.as_bytes()).unwrap()),
        };
        assert_eq!(bare.verify(), Err(WireError::BadSignature));

        // An id whose key is hashed (RSA-style), not inline, cannot be checked.
        let hashed = PeerId::from_multihash(multihash::Multihash::wrap(0x12, &[7; 32]).unwrap()).unwrap();
        let mut a = announcement(&me);
        a.peer_id = hashed.to_string();
        assert_eq!(Signed::sign(&a, &key).unwrap().verify(), Err(WireError::KeyNotInline));

        let garbage = Signed { payload: "{\"peer_id\": 1}".into(), signature: String::new() };
        assert!(matches!(garbage.verify(), Err(WireError::Payload(_))));
    }
}
