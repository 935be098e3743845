//! NAR reader/validator: checks that a byte stream is a NAR Nix would accept, and hashes it.
//!
//! Test and fuzz support (see [`super`]): nothing in the daemon parses NARs. Rejects what Nix's
//! parser rejects (`src/libutil/archive.cc`) and what Nix HEAD caps: unsorted or duplicate entries,
//! names `""`, `.`, `..`, or containing `/` or NUL, non-zero padding, truncation, trailing bytes,
//! unknown tokens, nesting deeper than 64. Every error names the byte offset. Memory is bounded:
//! file contents stream through a 64 KiB buffer; other tokens are capped.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::nix::hash::NarHash;
use crate::nix::nar::MAGIC;

/// Nix HEAD's `narMaxDepth`.
pub const MAX_DEPTH: usize = 64;
/// Longest name token (Linux `NAME_MAX`) and symlink target (`PATH_MAX`) we accept.
const MAX_NAME: u64 = 255;
const MAX_TARGET: u64 = 4095;
/// Longest other framing token (`nix-archive-1`, `directory`, …).
const MAX_TOKEN: u64 = 64;

#[derive(Debug, thiserror::Error)]
#[error("invalid NAR at byte {offset}: {kind}")]
pub struct NarError {
    pub offset: u64,
    pub kind: NarErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum NarErrorKind {
    #[error("truncated")]
    Truncated,
    #[error("read failed")]
    Io(#[source] io::Error),
    #[error("expected {expected:?}, found {found:?}")]
    Unexpected { expected: &'static str, found: String },
    #[error("token of {0} bytes is longer than allowed")]
    TooLong(u64),
    #[error("non-zero padding")]
    Padding,
    #[error("entry name {0:?} is not allowed")]
    BadName(String),
    #[error("entry {name:?} is not after {prev:?}: directory is not sorted or has duplicates")]
    Unsorted { prev: String, name: String },
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("data after the end of the archive")]
    Trailing,
}

/// What a valid NAR contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarSummary {
    pub nar_size: u64,
    pub nar_hash: NarHash,
    pub regular_files: u64,
    pub directories: u64,
    pub symlinks: u64,
}

/// Reads a whole NAR from `input` and validates it.
pub fn validate(input: impl Read) -> Result<NarSummary, NarError> {
    let mut p = Parser { input, offset: 0, hasher: Sha256::new(), summary: (0, 0, 0) };
    p.expect(MAGIC, "nix-archive-1")?;
    p.node(0)?;
    let mut probe = [0u8; 1];
    match p.input.read(&mut probe) {
        Ok(0) => {}
        Ok(_) => return Err(p.err(NarErrorKind::Trailing)),
        Err(e) => return Err(p.err(NarErrorKind::Io(e))),
    }
    Ok(NarSummary {
        nar_size: p.offset,
        nar_hash: NarHash(p.hasher.finalize().into()),
        regular_files: p.summary.0,
        directories: p.summary.1,
        symlinks: p.summary.2,
    })
}

struct Parser<R> {
    input: R,
    offset: u64,
    hasher: Sha256,
    summary: (u64, u64, u64),
}

impl<R: Read> Parser<R> {
    fn err(&self, kind: NarErrorKind) -> NarError {
        NarError { offset: self.offset, kind }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        let mut done = 0;
        while done < buf.len() {
            match self.input.read(&mut buf[done..]) {
                Ok(0) => return Err(self.err(NarErrorKind::Truncated)),
                Ok(n) => {
                    self.hasher.update(&buf[done..done + n]);
                    self.offset += n as u64;
                    done += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(NarErrorKind::Io(e))),
            }
        }
        Ok(())
    }

    fn u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let pad = ((8 - len % 8) % 8) as usize;
        let at = self.offset;
        let mut b = [0u8; 8];
        self.fill(&mut b[..pad])?;
        if b[..pad].iter().any(|&x| x != 0) {
            return Err(NarError { offset: at, kind: NarErrorKind::Padding });
        }
        Ok(())
    }

    fn string(&mut self, max: u64) -> Result<Vec<u8>, NarError> {
        let at = self.offset;
        let len = self.u64()?;
        if len > max {
            return Err(NarError { offset: at, kind: NarErrorKind::TooLong(len) });
        }
        let mut s = vec![0u8; len as usize];
        self.fill(&mut s)?;
        self.padding(len)?;
        Ok(s)
    }

    fn token(&mut self) -> Result<(u64, Vec<u8>), NarError> {
        let at = self.offset;
        Ok((at, self.string(MAX_TOKEN)?))
    }

    fn expect(&mut self, want: &[u8], name: &'static str) -> Result<(), NarError> {
        let (at, got) = self.token()?;
        if got != want {
            return Err(unexpected(at, name, &got));
        }
        Ok(())
    }

    fn node(&mut self, depth: usize) -> Result<(), NarError> {
        if depth > MAX_DEPTH {
            return Err(self.err(NarErrorKind::TooDeep));
        }
        self.expect(b"(", "(")?;
        self.expect(b"type", "type")?;
        let (at, kind) = self.token()?;
        match kind.as_slice() {
            b"regular" => {
                self.summary.0 += 1;
                let (at, mut tok) = self.token()?;
                if tok == b"executable" {
                    self.expect(b"", "\"\"")?;
                    let next = self.token()?;
                    tok = next.1;
                    if tok != b"contents" {
                        return Err(unexpected(next.0, "contents", &tok));
                    }
                } else if tok != b"contents" {
                    return Err(unexpected(at, "executable or contents", &tok));
                }
                let len = self.u64()?;
                self.contents(len)?;
                self.padding(len)?;
            }
            b"symlink" => {
                self.summary.2 += 1;
                self.expect(b"target", "target")?;
                let at = self.offset;
                let target = self.string(MAX_TARGET)?;
                if target.is_empty() || target.contains(&0) {
                    return Err(NarError { offset: at, kind: NarErrorKind::BadName(lossy(&target)) });
                }
            }
            b"directory" => {
                self.summary.1 += 1;
                let mut prev: Option<Vec<u8>> = None;
                loop {
                    let (at, tok) = self.token()?;
                    match tok.as_slice() {
                        b")" => return Ok(()),
                        b"entry" => {}
                        _ => return Err(unexpected(at, "entry or )", &tok)),
                    }
                    self.expect(b"(", "(")?;
                    self.expect(b"name", "name")?;
                    let at = self.offset;
                    let name = self.string(MAX_NAME)?;
                    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
                        return Err(NarError { offset: at, kind: NarErrorKind::BadName(lossy(&name)) });
                    }
                    if let Some(p) = &prev
                        && name <= *p
                    {
                        return Err(NarError {
                            offset: at,
                            kind: NarErrorKind::Unsorted { prev: lossy(p), name: lossy(&name) },
                        });
                    }
                    self.expect(b"node", "node")?;
                    self.node(depth + 1)?;
                    self.expect(b")", ")")?;
                    prev = Some(name);
                }
            }
            _ => return Err(unexpected(at, "regular, symlink or directory", &kind)),
        }
        self.expect(b")", ")")
    }

    fn contents(&mut self, mut len: u64) -> Result<(), NarError> {
        let mut buf = vec![0u8; 64 * 1024];
        while len > 0 {
            let n = len.min(buf.len() as u64) as usize;
            self.fill(&mut buf[..n])?;
            len -= n as u64;
        }
        Ok(())
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn unexpected(offset: u64, expected: &'static str, found: &[u8]) -> NarError {
    NarError { offset, kind: NarErrorKind::Unexpected { expected, found: lossy(found) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny NAR builder for hand-made (also malformed) archives.
    struct B(Vec<u8>);
    impl B {
        fn s(mut self, t: &[u8]) -> Self {
            self.0.extend_from_slice(&(t.len() as u64).to_le_bytes());
            self.0.extend_from_slice(t);
            self.0.extend_from_slice(crate::nix::nar::padding(t.len() as u64));
            self
        }
        fn toks(self, ts: &[&str]) -> Self {
            ts.iter().fold(self, |b, t| b.s(t.as_bytes()))
        }
    }
    fn nar() -> B {
        B(Vec::new()).s(MAGIC)
    }
    fn dir_with(names: &[&[u8]]) -> Vec<u8> {
        let mut b = nar().toks(&["(", "type", "directory"]);
        for n in names {
            b = b.toks(&["entry", "(", "name"]).s(n).toks(&["node", "(", "type", "symlink", "target", "x", ")", ")"]);
        }
        b.toks(&[")"]).0
    }

    #[test]
    fn accepts_a_valid_tree_and_hashes_it() {
        let bytes = dir_with(&[b"a", b"b"]);
        let s = validate(&bytes[..]).unwrap();
        assert_eq!(s.nar_size, bytes.len() as u64);
        assert_eq!(s.symlinks, 2);
        assert_eq!(s.nar_hash.0, <[u8; 32]>::from(Sha256::digest(&bytes)));
    }

    #[test]
    fn rejects_each_malformed_case_with_its_offset() {
        let kind = |b: &[u8]| validate(b).unwrap_err().kind;
        assert!(matches!(kind(&dir_with(&[b"b", b"a"])), NarErrorKind::Unsorted { .. }));
        assert!(matches!(kind(&dir_with(&[b"a", b"a"])), NarErrorKind::Unsorted { .. }));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(matches!(kind(&dir_with(&[bad])), NarErrorKind::BadName(_)), "{bad:?}");
        }
        let good = dir_with(&[b"a"]);
        for cut in [1, 8, 20, good.len() - 1] {
            assert!(matches!(kind(&good[..cut]), NarErrorKind::Truncated), "cut {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(kind(&trailing), NarErrorKind::Trailing));
        // Padding after the magic (13 bytes + 3 of padding) starts at byte 8 + 13 = 21.
        let mut pad = good.clone();
        pad[22] = 1;
        let e = validate(&pad[..]).unwrap_err();
        assert!(matches!(e.kind, NarErrorKind::Padding));
        assert_eq!(e.offset, 21);
        assert!(matches!(kind(&nar().toks(&["(", "type", "fifo", ")"]).0), NarErrorKind::Unexpected { .. }));
        assert!(matches!(kind(&nar().s(b"nix-archive-2").0), NarErrorKind::Unexpected { .. }));
    }

    #[test]
    fn rejects_nesting_deeper_than_64() {
        fn nested(levels: usize) -> Vec<u8> {
            let mut b = nar();
            for _ in 0..levels {
                b = b.toks(&["(", "type", "directory", "entry", "(", "name", "d", "node"]);
            }
            b = b.toks(&["(", "type", "directory", ")"]);
            for _ in 0..levels {
                b = b.toks(&[")", ")"]);
            }
            b.0
        }
        assert!(validate(&nested(MAX_DEPTH)[..]).is_ok());
        assert!(matches!(validate(&nested(MAX_DEPTH + 1)[..]).unwrap_err().kind, NarErrorKind::TooDeep));
    }

    #[test]
    fn executable_file_with_padding() {
        let b = nar().toks(&["(", "type", "regular", "executable", "", "contents", "hello", ")"]).0;
        let s = validate(&b[..]).unwrap();
        assert_eq!(s.regular_files, 1);
    }
}
