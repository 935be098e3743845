//! Ed25519 keys and signatures in Nix's `name:base64` format, and the narinfo fingerprint they sign.
//!
//! A secret key file holds `name:base64(seed ‖ public)` (64 bytes, libsodium's layout), a public key
//! `name:base64(32 bytes)`, a `Sig:` line `name:base64(64 bytes)`. The signed message is the
//! fingerprint `1;<path>;<narHash>;<narSize>;<ref paths comma-joined>` (`ValidPathInfo::fingerprint`).
//! The trust module verifies peers' and the local DB's signatures here; the narinfo renderer adds ours.

use std::fmt;
use std::path::Path;

use data_encoding::BASE64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

use super::store_path::StorePath;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key is not of the form name:base64")]
    Form,
    #[error("key name {0:?} must be non-empty and use only [A-Za-z0-9.-_]")]
    Name(String),
    #[error("key data is not valid base64")]
    Base64,
    #[error("{kind} key must decode to {expected} bytes, got {got}")]
    Length { kind: &'static str, expected: usize, got: usize },
    #[error("secret key's public half does not match its seed")]
    Mismatch,
    #[error("public key is not a valid ed25519 point")]
    Point,
    #[error("cannot read key file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return Err(KeyError::Name(name.to_owned()));
    }
    Ok(())
}

fn split_key(s: &str) -> Result<(&str, Vec<u8>), KeyError> {
    let (name, data) = s.trim().split_once(':').ok_or(KeyError::Form)?;
    check_name(name)?;
    let bytes = BASE64.decode(data.as_bytes()).map_err(|_| KeyError::Base64)?;
    Ok((name, bytes))
}

/// A public key trusted to sign narinfos (`trusted-public-keys` entry).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub name: String,
    key: VerifyingKey,
}

impl PublicKey {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split_key(s)?;
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length {
            kind: "public",
            expected: 32,
            got: bytes.len(),
        })?;
        let key = VerifyingKey::from_bytes(&arr).map_err(|_| KeyError::Point)?;
        Ok(Self { name: name.to_owned(), key })
    }

    /// True if `sig` (a whole `name:base64` Sig value) is this key's valid signature over `fingerprint`.
    pub fn verifies(&self, fingerprint: &str, sig: &str) -> bool {
        let Some((name, data)) = sig.split_once(':') else {
            return false;
        };
        if name != self.name {
            return false;
        }
        let Ok(bytes) = BASE64.decode(data.as_bytes()) else {
            return false;
        };
        let Ok(arr) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&arr);
        self.key.verify_strict(fingerprint.as_bytes(), &signature).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A key we sign narinfos with (`--private-key-file`).
pub struct SecretKey {
    pub name: String,
    key: SigningKey,
}

impl SecretKey {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split_key(s)?;
        if bytes.len() != 64 {
            return Err(KeyError::Length { kind: "secret", expected: 64, got: bytes.len() });
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes() != &bytes[32..] {
            return Err(KeyError::Mismatch);
        }
        Ok(Self { name: name.to_owned(), key })
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeyError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text)
    }

    /// A fresh key from the OS's randomness.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| KeyError::Io { path: "getrandom".into(), source: std::io::Error::other(e.to_string()) })?;
        Ok(Self { name: name.to_owned(), key: SigningKey::from_bytes(&seed) })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey { name: self.name.clone(), key: self.key.verifying_key() }
    }

    /// `name:base64(seed ‖ public)`, exactly as `nix-store --generate-binary-cache-key` writes it.
    pub fn to_nix_string(&self) -> String {
        let mut bytes = self.key.to_bytes().to_vec();
        bytes.extend_from_slice(self.key.verifying_key().as_bytes());
        format!("{}:{}", self.name, BASE64.encode(&bytes))
    }

    /// A `Sig:` value over `fingerprint`.
    pub fn sign(&self, fingerprint: &str) -> String {
        let sig = self.key.sign(fingerprint.as_bytes());
        format!("{}:{}", self.name, BASE64.encode(&sig.to_bytes()))
    }
}

/// `1;<path>;<narHash>;<narSize>;<ref paths comma-joined>`, references sorted as Nix's `StorePathSet`.
pub fn fingerprint(path: &StorePath, nar_hash: &str, nar_size: u64, references: &[StorePath]) -> String {
    let mut refs: Vec<&StorePath> = references.iter().collect();
    refs.sort();
    let refs: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
    format!("1;{path};{nar_hash};{nar_size};{}", refs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Key pair and signature produced by `nix-store --generate-binary-cache-key test1` and
    // `nix copy --to file://…?secret-key=` on this machine kind (shared/reference/nix-client-here.md §3-4).
    const SK: &str = "test1:NpH46ZaKWOUES4j1VfUpa/bQL8rSmhm3ni+jrUi/qsJshpE8vq67NX56NEBOolEAMAx4Zl3ryJgJ2TKmdEc6UQ==";
    const PK: &str = "test1:bIaRPL6uuzV+ejRATqJRADAMeGZd68iYCdkypnRHOlE=";
    const SIG: &str = "test1:W3XrHvMHL+euCWu9qO70z2D0pHcRUeBv4xyS6rm3KWCjbf06s6G8ci40xHPVpDlhJTEyZ8NnjzeQ+4XAzfMhBg==";

    fn fixture_fingerprint() -> String {
        let path = StorePath::parse("/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-with-refs").unwrap();
        let dep = StorePath::parse("/nix/store/4mspmnyqbg8wgv51qfcjppav6w9x9zfw-hello-out").unwrap();
        fingerprint(&path, "sha256:1fchakpf46v0jbbnjwz9qlka85ga08idb2483db55k38z4l8yk0f", 792, &[dep])
    }

    #[test]
    fn reproduces_nix_signature() {
        let sk = SecretKey::parse(SK).unwrap();
        assert_eq!(sk.public().to_string(), PK);
        assert_eq!(sk.to_nix_string(), SK);
        assert_eq!(sk.sign(&fixture_fingerprint()), SIG);
        let pk = PublicKey::parse(PK).unwrap();
        assert!(pk.verifies(&fixture_fingerprint(), SIG));
    }

    #[test]
    fn rejects_wrong_signatures_and_keys() {
        let pk = PublicKey::parse(PK).unwrap();
        let fp = fixture_fingerprint();
        assert!(!pk.verifies(&fp.replace("792", "793"), SIG));
        assert!(!pk.verifies(&fp, &SIG.replace("test1:", "test2:")));
        assert!(!pk.verifies(&fp, &SIG.replace('W', "X")));
        assert!(!pk.verifies(&fp, "test1:AAAA"));
        assert!(matches!(PublicKey::parse("nocolon"), Err(KeyError::Form)));
        assert!(matches!(PublicKey::parse("a b:AAAA"), Err(KeyError::Name(_))));
        assert!(matches!(PublicKey::parse("k:AAAA"), Err(KeyError::Length { .. })));
        let mut bad = SK.to_owned();
        bad.replace_range(bad.len() - 6.., "AAAA==");
        assert!(matches!(SecretKey::parse(&bad), Err(KeyError::Mismatch)));
    }

    #[test]
    fn generated_keys_roundtrip() {
        let sk = SecretKey::generate("peerix-test-1").unwrap();
        let again = SecretKey::parse(&sk.to_nix_string()).unwrap();
        let sig = again.sign("1;x");
        assert!(sk.public().verifies("1;x", &sig));
        assert!(SecretKey::generate("bad name").is_err());
    }
}
