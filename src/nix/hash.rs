//! `NarHash`: the sha256 of a NAR, in the three spellings Nix uses.
//!
//! narinfos print `sha256:<nix32>`; Nix's `ValidPaths.hash` column holds `sha256:<base16>`; `nix path-info
//! --json` prints SRI `sha256-<base64>`. We accept all three and always print nix32.

use std::fmt;

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};

use super::base32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hash is not a sha256 in nix32, base16 or SRI form")]
pub struct HashError;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NarHash(pub [u8; 32]);

impl NarHash {
    pub fn parse(s: &str) -> Result<Self, HashError> {
        if let Some(b64) = s.strip_prefix("sha256-") {
            let bytes = BASE64.decode(b64.as_bytes()).map_err(|_| HashError)?;
            return bytes.as_slice().try_into().map(Self).map_err(|_| HashError);
        }
        let digits = s.strip_prefix("sha256:").ok_or(HashError)?;
        Self::parse_digits(digits)
    }

    /// A bare digest: 52 nix32 characters or 64 hex digits.
    pub fn parse_digits(digits: &str) -> Result<Self, HashError> {
        match digits.len() {
            52 => base32::decode::<32>(digits).map(Self).map_err(|_| HashError),
            64 => {
                let bytes = HEXLOWER_PERMISSIVE.decode(digits.as_bytes()).map_err(|_| HashError)?;
                bytes.as_slice().try_into().map(Self).map_err(|_| HashError)
            }
            _ => Err(HashError),
        }
    }

    /// The 52-character nix32 digest, as in NAR URLs.
    pub fn to_nix32(&self) -> String {
        base32::encode(&self.0)
    }

    /// `sha256:<base16>`, the spelling of Nix's `ValidPaths.hash`.
    pub fn to_db_string(&self) -> String {
        format!("sha256:{}", data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Display for NarHash {
    /// `sha256:<nix32>`, the spelling of narinfos and fingerprints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_nix32())
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarHash({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_spellings_agree() {
        // From `nix path-info --json` and the narinfo of the same path (nix-client-here.md §4).
        let sri = NarHash::parse("sha256-DkyPKPlozFJWG4iI1SIC6hWkJsXpc2nXkmAb4u5UkLk=").unwrap();
        let nix32 = NarHash::parse(&sri.to_string()).unwrap();
        let db = NarHash::parse(&sri.to_db_string()).unwrap();
        assert_eq!(sri, nix32);
        assert_eq!(sri, db);
        assert!(sri.to_db_string().starts_with("sha256:0e4c8f"));
        assert!(NarHash::parse("md5:abc").is_err());
        assert!(NarHash::parse("sha256:tooshort").is_err());
    }
}
