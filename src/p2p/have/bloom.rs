//! The Bloom filter a have-summary carries: which store hashes a node can serve, in 16 bits per
//! path. Pure code, no I/O.
//!
//! Sizing: with 16 bits per element and 11 hash functions a filter answers "maybe" for an absent
//! hash ≈ 0.05 % of the time ((1 − e^(−11/16))^11). That is 20× under the 1 % the design allows,
//! on purpose: a lookup checks every connected peer's filter, and a false "maybe" costs a round
//! trip, so with 10 peers a narinfo miss stays a local-only miss 99.5 % of the time. A store of
//! 100 000 paths is a 200 KB summary. Filters are built for 25 % more paths than they hold, so
//! additions sent as deltas do not degrade them before the next full summary.
//!
//! Positions come from the 20 bytes of the store hash (already uniform: a truncated SHA-256)
//! mixed with the filter's seed, by double hashing; a sender picks the seed, so two nodes' filters
//! do not share false positives.

/// Bits per element a filter is built with.
pub const BITS_PER_ELEMENT: usize = 16;
/// Hash functions: 16 · ln 2 ≈ 11.
pub const HASHES: u32 = 11;
/// Largest filter accepted or built (≈ 2 million paths).
pub const MAX_BYTES: usize = 4 << 20;
/// Most hash functions a received filter may ask for (each is a memory access per lookup).
pub const MAX_HASHES: u32 = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BloomError {
    #[error("filter of {0} bytes is empty or larger than 4 MiB")]
    Size(usize),
    #[error("filter uses {0} hash functions (1–32 allowed)")]
    Hashes(u32),
}

#[derive(Clone, PartialEq, Eq)]
pub struct Bloom {
    bits: Vec<u8>,
    hashes: u32,
    seed: u64,
}

impl std::fmt::Debug for Bloom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bloom({} bytes, k={})", self.bits.len(), self.hashes)
    }
}

/// splitmix64's finaliser: spreads the seed into every bit of a position.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Bloom {
    /// An empty filter sized for `capacity` elements.
    pub fn with_capacity(capacity: usize, seed: u64) -> Self {
        let bytes = (capacity.max(64) * BITS_PER_ELEMENT).div_ceil(8).min(MAX_BYTES);
        Self { bits: vec![0; bytes], hashes: HASHES, seed }
    }

    /// A filter as received: checked, not trusted.
    pub fn from_parts(bits: Vec<u8>, hashes: u32, seed: u64) -> Result<Self, BloomError> {
        if bits.is_empty() || bits.len() > MAX_BYTES {
            return Err(BloomError::Size(bits.len()));
        }
        if hashes == 0 || hashes > MAX_HASHES {
            return Err(BloomError::Hashes(hashes));
        }
        Ok(Self { bits, hashes, seed })
    }

    pub fn bits(&self) -> &[u8] {
        &self.bits
    }

    pub fn hashes(&self) -> u32 {
        self.hashes
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How many elements this filter was sized for.
    pub fn capacity(&self) -> usize {
        self.bits.len() * 8 / BITS_PER_ELEMENT
    }

    /// Double hashing: position i is (a + i·b) mod m.
    fn probe(&self, key: &[u8; 20]) -> (u64, u64, u64) {
        let word = |i: usize| u64::from_le_bytes(key[i..i + 8].try_into().unwrap_or([0; 8]));
        let a = mix(word(0) ^ self.seed);
        let b = mix(word(8) ^ self.seed.rotate_left(32)) | 1;
        (a, b, (self.bits.len() * 8) as u64)
    }

    pub fn insert(&mut self, key: &[u8; 20]) {
        let (a, b, m) = self.probe(key);
        for i in 0..self.hashes as u64 {
            let p = (a.wrapping_add(i.wrapping_mul(b)) % m) as usize;
            self.bits[p / 8] |= 1 << (p % 8);
        }
    }

    pub fn contains(&self, key: &[u8; 20]) -> bool {
        let (a, b, m) = self.probe(key);
        (0..self.hashes as u64).all(|i| {
            let p = (a.wrapping_add(i.wrapping_mul(b)) % m) as usize;
            self.bits[p / 8] & (1 << (p % 8)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64, salt: u64) -> [u8; 20] {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest([i.to_le_bytes(), salt.to_le_bytes()].concat());
        d[..20].try_into().unwrap()
    }

    #[test]
    fn no_false_negatives_and_false_positives_near_the_design_rate() {
        let n = 20_000u64;
        let mut f = Bloom::with_capacity(n as usize, 42);
        for i in 0..n {
            f.insert(&key(i, 1));
        }
        assert!((0..n).all(|i| f.contains(&key(i, 1))), "every inserted key matches");
        let trials = 200_000u64;
        let fp = (0..trials).filter(|i| f.contains(&key(*i, 2))).count() as f64 / trials as f64;
        // Design rate 0.046 %; allow sampling noise, and stay an order of magnitude under 1 %.
        assert!(fp < 0.001, "false-positive rate {fp}");
        assert_eq!(f.capacity(), n as usize);
    }

    #[test]
    fn seeds_change_positions_and_received_filters_are_checked() {
        let mut a = Bloom::with_capacity(100, 1);
        let mut b = Bloom::with_capacity(100, 2);
        a.insert(&key(7, 0));
        b.insert(&key(7, 0));
        assert_ne!(a.bits(), b.bits());
        let copy = Bloom::from_parts(a.bits().to_vec(), a.hashes(), a.seed()).unwrap();
        assert!(copy.contains(&key(7, 0)));
        assert!(matches!(Bloom::from_parts(Vec::new(), 11, 0), Err(BloomError::Size(0))));
        assert!(matches!(Bloom::from_parts(vec![0; MAX_BYTES + 1], 11, 0), Err(BloomError::Size(_))));
        assert!(matches!(Bloom::from_parts(vec![0; 8], 0, 0), Err(BloomError::Hashes(0))));
        assert!(matches!(Bloom::from_parts(vec![0; 8], 33, 0), Err(BloomError::Hashes(33))));
    }
}
