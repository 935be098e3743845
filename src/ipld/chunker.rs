//! Content-defined chunking of NARs (FastCDC v2020).
//!
//! Parameters are part of the data model: every peer must cut the same NAR at the same places for
//! chunks (and roots) to be shared, so changing them breaks dedup with every existing index.
//! 16/64/256 KiB over the *uncompressed* NAR follows attic and ncps (ncps measured a 47.7 % dedup hit
//! rate on uncompressed NARs against 6.4 % on compressed ones).

use std::io::Read;

use fastcdc::v2020::StreamCDC;

pub const MIN_CHUNK: u32 = 16 * 1024;
pub const AVG_CHUNK: u32 = 64 * 1024;
pub const MAX_CHUNK: u32 = 256 * 1024;

/// One chunk: where it is in the NAR and its bytes.
pub struct Chunk {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Cuts everything `input` yields into chunks, in order.
pub fn chunks<R: Read>(input: R) -> impl Iterator<Item = std::io::Result<Chunk>> {
    StreamCDC::new(input, MIN_CHUNK as usize, AVG_CHUNK as usize, MAX_CHUNK as usize).map(|r| {
        r.map(|c| Chunk { offset: c.offset, data: c.data }).map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn sizes_stay_in_bounds_and_cover_the_input() {
        // Boundary sizes: empty, below min, min ± 1, avg, max ± 1, and several max.
        for n in [0, 1, 16383, 16384, 16385, 65536, 262143, 262144, 262145, 3_000_000] {
            let input = data(n, 7);
            let cs: Vec<Chunk> = chunks(&input[..]).collect::<Result<_, _>>().unwrap();
            let mut off = 0;
            for (i, c) in cs.iter().enumerate() {
                assert_eq!(c.offset, off);
                assert!(c.data.len() <= MAX_CHUNK as usize);
                if i + 1 < cs.len() {
                    assert!(c.data.len() >= MIN_CHUNK as usize);
                }
                assert_eq!(c.data, input[off as usize..off as usize + c.data.len()]);
                off += c.data.len() as u64;
            }
            assert_eq!(off, n as u64);
        }
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let a = data(2_000_000, 3);
        let mut b = a.clone();
        b.splice(1_000_000..1_000_000, b"inserted bytes".iter().copied());
        let set = |v: &[u8]| -> std::collections::HashSet<Vec<u8>> { chunks(v).map(|c| c.unwrap().data).collect() };
        let (sa, sb) = (set(&a), set(&b));
        let shared: usize = sb.iter().filter(|c| sa.contains(*c)).map(|c| c.len()).sum();
        assert!(shared as f64 > 0.8 * b.len() as f64, "only {shared} of {} bytes shared", b.len());
    }
}
