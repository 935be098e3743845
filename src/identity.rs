//! The node's identity: an ed25519 key in the state dir (`identity.key`, 32-byte seed, mode 0600),
//! created on first start and never changed, so the peer id is stable across restarts. The same
//! key is the libp2p identity of the embedded IPFS node; here it also names the node in `/api/v0/id`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use data_encoding::BASE64;
use libp2p::identity::Keypair;

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
    key: Keypair,
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
                Self::from_seed(seed, &path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| io(std::io::Error::other(e.to_string())))?;
                std::fs::create_dir_all(state_dir).map_err(io)?;
                let mut f =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
                f.write_all(&seed).map_err(io)?;
                f.sync_all().map_err(io)?;
                Self::from_seed(seed, &path)
            }
            Err(e) => Err(io(e)),
        }
    }

    fn from_seed(mut seed: [u8; 32], path: &Path) -> Result<Self, IdentityError> {
        let key =
            Keypair::ed25519_from_bytes(&mut seed).map_err(|_| IdentityError::Malformed(path.display().to_string()))?;
        Ok(Self { key })
    }

    /// The libp2p key pair: the embedded node's identity, and what signs tracker announcements.
    pub fn keypair(&self) -> Keypair {
        self.key.clone()
    }

    /// The peer id (`12D3KooW…`).
    pub fn peer_id(&self) -> String {
        self.key.public().to_peer_id().to_base58()
    }

    /// The public key as kubo's `/api/v0/id` prints it: base64 of libp2p's protobuf encoding.
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(&self.key.public().encode_protobuf())
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
