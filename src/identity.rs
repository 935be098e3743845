//! The node's identity: an ed25519 key in the state dir (`identity.key`, 32-byte seed, mode 0600),
//! created on first start and never changed, so the peer id is stable across restarts. The same
//! key is the libp2p identity of the embedded IPFS node; here it also names the node in `/api/v0/id`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use data_encoding::BASE64;
use ed25519_dalek::SigningKey;

pub const IDENTITY_FILE: &str = "identity.key";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or create {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a 32-byte ed25519 seed")]
    Malformed(String),
}

pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// Loads `<state_dir>/identity.key`, creating it if absent.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, IdentityError> {
        let path = state_dir.join(IDENTITY_FILE);
        let io = |source| IdentityError::Io { path: path.display().to_string(), source };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let seed: [u8; 32] =
                    bytes.as_slice().try_into().map_err(|_| IdentityError::Malformed(path.display().to_string()))?;
                Ok(Self { key: SigningKey::from_bytes(&seed) })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| io(std::io::Error::other(e.to_string())))?;
                std::fs::create_dir_all(state_dir).map_err(io)?;
                let mut f =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
                f.write_all(&seed).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok(Self { key: SigningKey::from_bytes(&seed) })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The 32-byte seed (what libp2p's `Keypair::ed25519_from_bytes` takes).
    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// libp2p's protobuf `PublicKey { Type: Ed25519, Data }`.
    pub fn public_key_protobuf(&self) -> Vec<u8> {
        let mut out = vec![0x08, 0x01, 0x12, 0x20];
        out.extend_from_slice(self.key.verifying_key().as_bytes());
        out
    }

    /// The peer id: base58btc of the identity multihash of the protobuf public key (`12D3KooW…`).
    pub fn peer_id(&self) -> String {
        let proto = self.public_key_protobuf();
        let mut mh = vec![0x00, proto.len() as u8];
        mh.extend_from_slice(&proto);
        bs58::encode(mh).into_string()
    }

    /// The public key as kubo's `/api/v0/id` prints it.
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(&self.public_key_protobuf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_across_loads_and_shaped_like_libp2p() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        assert!(a.peer_id().starts_with("12D3KooW"), "{}", a.peer_id());
        std::fs::write(dir.path().join(IDENTITY_FILE), b"short").unwrap();
        assert!(matches!(Identity::load_or_create(dir.path()), Err(IdentityError::Malformed(_))));
    }
}
