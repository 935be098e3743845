//! Store paths: `/nix/store/<hash32>-<name>`, and the `<hash32>` key every lookup starts from.
//!
//! Route parameters and peer-supplied narinfos are parsed here before anything touches a database,
//! so a malformed hash is a 400 at the edge and never a query.

use std::fmt;

use super::base32;

/// The store directory every path is named in, whatever `--store-root` the files live under.
pub const STORE_DIR: &str = "/nix/store";

/// Length of the nix32 hash part: 20 bytes → 32 characters.
pub const HASH_LEN: usize = 32;

/// Nix caps a store path name at 211 characters (`StorePath::MaxPathLen` minus the hash part).
const MAX_NAME_LEN: usize = 211;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorePathError {
    #[error("store path hash must be 32 nix32 characters")]
    Hash,
    #[error("store path name is empty, longer than 211 bytes, or has a character outside [0-9a-zA-Z+-._?=]")]
    Name,
    #[error("store path is not of the form /nix/store/<hash>-<name>")]
    Form,
}

/// The 32-character nix32 hash part of a store path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreHash([u8; HASH_LEN]);

impl StoreHash {
    pub fn parse(s: &str) -> Result<Self, StorePathError> {
        if s.len() != HASH_LEN || !base32::is_nix32(s) {
            return Err(StorePathError::Hash);
        }
        let mut out = [0u8; HASH_LEN];
        out.copy_from_slice(s.as_bytes());
        Ok(Self(out))
    }

    pub fn as_str(&self) -> &str {
        // Only nix32 ASCII is ever stored (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The 20 bytes the hash part encodes (what have-summaries and the wire carry).
    pub fn to_bytes(&self) -> [u8; 20] {
        // 32 nix32 digits are exactly 160 bits, so every valid hash part decodes.
        base32::decode::<20>(self.as_str()).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8; 20]) -> Self {
        let mut out = [0u8; HASH_LEN];
        out.copy_from_slice(base32::encode(bytes).as_bytes());
        Self(out)
    }
}

impl fmt::Display for StoreHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for StoreHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreHash({})", self.as_str())
    }
}

/// A full store path, kept as its base name `<hash32>-<name>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    base: String,
}

impl StorePath {
    /// Parses `/nix/store/<hash>-<name>`.
    pub fn parse(full: &str) -> Result<Self, StorePathError> {
        let base = full.strip_prefix(STORE_DIR).and_then(|rest| rest.strip_prefix('/')).ok_or(StorePathError::Form)?;
        Self::from_base_name(base)
    }

    /// Parses `<hash>-<name>` (the form of `References:` entries).
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        if base.len() < HASH_LEN + 2 || base.as_bytes()[HASH_LEN] != b'-' {
            return Err(StorePathError::Form);
        }
        StoreHash::parse(&base[..HASH_LEN])?;
        let name = &base[HASH_LEN + 1..];
        if name.len() > MAX_NAME_LEN || !name.bytes().all(valid_name_byte) || name.starts_with('.') {
            return Err(StorePathError::Name);
        }
        Ok(Self { base: base.to_owned() })
    }

    pub fn hash(&self) -> StoreHash {
        let mut out = [0u8; HASH_LEN];
        out.copy_from_slice(&self.base.as_bytes()[..HASH_LEN]);
        StoreHash(out)
    }

    pub fn name(&self) -> &str {
        &self.base[HASH_LEN + 1..]
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.base
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.base)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

/// Nix's name alphabet (`src/libstore/path.cc` `checkName`).
fn valid_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+-._?=".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p = StorePath::parse("/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-with-refs").unwrap();
        assert_eq!(p.hash().as_str(), "qxkmhhvi8i3pc831vvw023h4mhzpfflr");
        assert_eq!(p.name(), "with-refs");
        assert_eq!(p.to_string(), "/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-with-refs");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr",
            "/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-",
            "/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-a/b",
            "/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpffle-ok",
            "/gnu/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-ok",
            "/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-.hidden",
        ] {
            assert!(StorePath::parse(bad).is_err(), "{bad}");
        }
        assert!(StoreHash::parse("qxkmhhvi8i3pc831vvw023h4mhzpffl").is_err());
        assert!(StoreHash::parse("QXKMHHVI8I3PC831VVW023H4MHZPFFLR").is_err());
    }
}
