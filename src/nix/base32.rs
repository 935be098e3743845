//! Nix's base32 ("nix32"): the encoding of store-path hashes and of `sha256:` hashes in narinfos.
//!
//! It is not RFC 4648: the alphabet omits `e o u t`, and the bytes are read as one little-endian
//! integer printed most-significant digit first (`src/libutil/hash.cc` `printHash32`). Every
//! narinfo lookup and NAR URL goes through here, so both directions are allocation-light.

/// The 32 digits, in value order.
const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Maps an ASCII byte to its digit value, or 0xff for a byte outside the alphabet.
const REVERSE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 32 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Why a string is not the nix32 form of a byte string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("nix32 string has length {got}, expected {expected}")]
    Length { got: usize, expected: usize },
    #[error("character {byte:#04x} at position {pos} is not in the nix32 alphabet")]
    Character { pos: usize, byte: u8 },
    #[error("nix32 string encodes more bits than {len} bytes hold")]
    Overflow { len: usize },
}

/// The length of the nix32 form of `len` bytes: 20 → 32, 32 → 52.
pub const fn encoded_len(len: usize) -> usize {
    if len == 0 { 0 } else { (len * 8 - 1) / 5 + 1 }
}

/// Encodes bytes as nix32.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let low = bytes[i] as u16 >> j;
        let high = if i + 1 < bytes.len() { (bytes[i + 1] as u16) << (8 - j) } else { 0 };
        out.push(ALPHABET[((low | high) & 0x1f) as usize] as char);
    }
    out
}

/// Decodes a nix32 string into exactly `N` bytes.
pub fn decode<const N: usize>(s: &str) -> Result<[u8; N], DecodeError> {
    let input = s.as_bytes();
    let expected = encoded_len(N);
    if input.len() != expected {
        return Err(DecodeError::Length { got: input.len(), expected });
    }
    let mut out = [0u8; N];
    for (n, &byte) in input.iter().rev().enumerate() {
        let digit = REVERSE[byte as usize];
        if digit == 0xff {
            return Err(DecodeError::Character { pos: input.len() - 1 - n, byte });
        }
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        out[i] |= digit << j;
        let carry = (digit as u16) >> (8 - j);
        if i + 1 < N {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(DecodeError::Overflow { len: N });
        }
    }
    Ok(out)
}

/// True when every byte of `s` is a nix32 digit (a cheap syntactic check for route parameters).
pub fn is_nix32(s: &str) -> bool {
    s.bytes().all(|b| REVERSE[b as usize] != 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn sha256_of_hello_matches_nix_hash() {
        // `echo hello | nix-hash --type sha256 --flat --base32 /dev/stdin`, checked on this machine kind.
        let digest: [u8; 32] = Sha256::digest(b"hello\n").into();
        assert_eq!(encode(&digest), "00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq");
        assert_eq!(decode::<32>("00xyyr3fi8l6hb839bv3f7yb86yjv7xi1cgh1xnhipym4asvb4aq"), Ok(digest));
    }

    #[test]
    fn roundtrips_every_length_and_pattern() {
        for len in [1usize, 2, 5, 19, 20, 32, 64] {
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(151).wrapping_add(7)).collect();
            let s = encode(&bytes);
            assert_eq!(s.len(), encoded_len(len));
            match len {
                20 => assert_eq!(decode::<20>(&s).map(|a| a.to_vec()), Ok(bytes)),
                32 => assert_eq!(decode::<32>(&s).map(|a| a.to_vec()), Ok(bytes)),
                _ => {}
            }
        }
        assert_eq!(encode(&[0xff; 20]), "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(decode::<20>("abc"), Err(DecodeError::Length { .. })));
        let bad = format!("e{}", "0".repeat(31));
        assert!(matches!(decode::<20>(&bad), Err(DecodeError::Character { pos: 0, .. })));
        // 52 digits hold 260 bits; a leading digit above 0b1 overflows 256 bits.
        let over = format!("z{}", "0".repeat(51));
        assert!(matches!(decode::<32>(&over), Err(DecodeError::Overflow { .. })));
        assert!(!is_nix32("0123e"));
        assert!(is_nix32("0123a"));
    }
}
