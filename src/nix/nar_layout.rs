//! Random access into the NAR of a store path without producing the NAR.
//!
//! [`NarLayout`] records, from one metadata walk, where every piece of the NAR comes from: framing
//! bytes (kept in memory, a few hundred bytes per file) or a range of a file on disk. A chunk of the
//! block index (`local_chunks`: path, NAR offset, length) is then produced by [`NarLayout::read_range`]
//! — seeking into file contents, reading only what the chunk covers — and the whole NAR can be read
//! sequentially through [`LayoutReader`] (the chunker's input when a path is indexed).
//!
//! Each file's [`Stamp`] (device, inode, size, mtime, ctime) is taken by the walk; together they are
//! the layout's [`NarLayout::fingerprint`]. A store file is immutable once registered: any write to
//! it, even one that restores size and mtime, moves its ctime, which no user can set back. So a
//! chunk read from files whose stamps still equal the ones recorded when the path was read and
//! hashed whole is those bytes again ([`NarLayout::read_range_checked`]; README, "Blocks").

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::nar::{Segment, walk};

enum Piece {
    Framing(Vec<u8>),
    File { path: PathBuf, len: u64, stamp: Stamp },
}

/// What changes when a file's contents may have: device and inode (a replaced file), size, and
/// the modification and status-change times to the nanosecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp([i64; 7]);

impl Stamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self([
            meta.dev() as i64,
            meta.ino() as i64,
            meta.size() as i64,
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ])
    }
}

/// Where each byte of one NAR comes from.
pub struct NarLayout {
    /// NAR offset at which each piece starts, ascending.
    starts: Vec<u64>,
    pieces: Vec<Piece>,
    size: u64,
}

impl NarLayout {
    /// Walks `root` (metadata and symlink targets only; no file contents are read).
    pub fn of(root: &Path) -> io::Result<Self> {
        let mut layout = Self { starts: Vec::new(), pieces: Vec::new(), size: 0 };
        walk(root, &mut |seg| {
            let (piece, len) = match seg {
                Segment::Framing([]) => return Ok(()),
                Segment::Framing(b) => {
                    // Consecutive framing pieces merge (the walk emits many tiny ones).
                    if let Some(Piece::Framing(prev)) = layout.pieces.last_mut() {
                        prev.extend_from_slice(b);
                        layout.size += b.len() as u64;
                        return Ok(());
                    }
                    (Piece::Framing(b.to_vec()), b.len() as u64)
                }
                Segment::Contents { path, len, meta } => {
                    (Piece::File { path: path.to_owned(), len, stamp: Stamp::of(meta) }, len)
                }
            };
            layout.starts.push(layout.size);
            layout.pieces.push(piece);
            layout.size += len;
            Ok(())
        })?;
        Ok(layout)
    }

    /// Length of the whole NAR.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes this layout holds on the heap (its framing, file paths and tables): what keeping it
    /// in a cache costs. A path of 100 000 small files costs ~15 MB.
    pub fn heap_size(&self) -> usize {
        let pieces: usize = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Framing(b) => b.capacity(),
                Piece::File { path, .. } => path.as_os_str().len(),
            })
            .sum();
        pieces + self.pieces.capacity() * std::mem::size_of::<Piece>() + self.starts.capacity() * 8
    }

    /// Number of regular files with contents (each costs an `open` when read).
    pub fn files(&self) -> usize {
        self.pieces.iter().filter(|p| matches!(p, Piece::File { .. })).count()
    }

    /// The stamps of every file, in NAR order, hashed: equal fingerprints mean no file of the
    /// path was written, replaced, grown or shrunk between the two walks.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.size.to_le_bytes());
        for p in &self.pieces {
            if let Piece::File { stamp, .. } = p {
                for v in stamp.0 {
                    h.update(v.to_le_bytes());
                }
            }
        }
        h.finalize().into()
    }

    /// Bytes `offset .. offset + len` of the NAR.
    pub fn read_range(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = self.range_end(offset, len)?;
        let mut out = Vec::with_capacity(len);
        self.read_into(offset, end, &mut out, &mut None)?;
        Ok(out)
    }

    /// Bytes `offset .. offset + len` of the NAR, and whether every file they came from still had
    /// the stamp of this layout's walk once its bytes were read (an `fstat` per file, after the
    /// read: a write during the read shows too). For a seeder's chunks; serving a NAR to the local
    /// nix, which checks the NarHash itself, uses [`Self::read_range`] and no `fstat`.
    pub fn read_range_checked(&self, offset: u64, len: usize) -> io::Result<(Vec<u8>, bool)> {
        let end = self.range_end(offset, len)?;
        let mut out = Vec::with_capacity(len);
        let mut unchanged = true;
        let mut open = None;
        let mut i = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let mut pos = offset;
        while pos < end {
            let stop = self.starts.get(i + 1).copied().unwrap_or(self.size).min(end);
            self.read_into(pos, stop, &mut out, &mut open)?;
            if let (Piece::File { stamp, .. }, Some((at, f))) = (&self.pieces[i], &open)
                && *at == i
            {
                unchanged &= f.metadata().is_ok_and(|m| Stamp::of(&m) == *stamp);
            }
            pos = stop;
            i += 1;
        }
        Ok((out, unchanged))
    }

    /// `offset + len`, if that is within the NAR.
    fn range_end(&self, offset: u64, len: usize) -> io::Result<u64> {
        offset.checked_add(len as u64).filter(|&e| e <= self.size).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("range {offset}+{len} is past the NAR's end"))
        })
    }

    /// Appends bytes `pos .. end` (within the NAR) to `out`. `open` is the file last read (its
    /// piece index): kept across calls, so reading a big file piece by piece opens it once.
    fn read_into(&self, mut pos: u64, end: u64, out: &mut Vec<u8>, open: &mut Option<(usize, File)>) -> io::Result<()> {
        let mut i = self.starts.partition_point(|&s| s <= pos).saturating_sub(1);
        while pos < end {
            let within = pos - self.starts[i];
            match &self.pieces[i] {
                Piece::Framing(b) => {
                    let take = (b.len() as u64 - within).min(end - pos) as usize;
                    out.extend_from_slice(&b[within as usize..within as usize + take]);
                    pos += take as u64;
                }
                Piece::File { len: 0, .. } => {}
                Piece::File { path, len: flen, .. } => {
                    let take = (flen - within).min(end - pos);
                    let f = match open {
                        Some((at, f)) if *at == i => f,
                        _ => &open.insert((i, File::open(path)?)).1,
                    };
                    let before = out.len();
                    out.resize(before + take as usize, 0);
                    // One pread per file segment (a chunk is one or two): no seek, no short reads.
                    f.read_exact_at(&mut out[before..], within).map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof => io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{} is shorter than when it was indexed", path.display()),
                        ),
                        _ => e,
                    })?;
                    pos += take;
                }
            }
            i += 1;
        }
        Ok(())
    }

    /// Reads `window` (clipped to the NAR) piece by piece, for a body that pulls as its client reads.
    pub fn into_cursor(self, window: Range<u64>) -> Cursor {
        let end = window.end.min(self.size);
        Cursor { pos: window.start.min(end), end, layout: self, open: None }
    }

    /// A sequential reader over the whole NAR.
    pub fn reader(&self) -> LayoutReader<'_> {
        LayoutReader { layout: self, index: 0, within: 0, file: None }
    }
}

/// A window of a NAR, read in pieces ([`NarLayout::into_cursor`]); the file being read stays open
/// between pieces.
pub struct Cursor {
    layout: NarLayout,
    pos: u64,
    end: u64,
    open: Option<(usize, File)>,
}

/// File contents at least this long go to the socket by `sendfile(2)` ([`Cursor::next_part`]);
/// shorter ones are read with the framing around them: an `open` and a syscall per small file
/// would cost more than copying it.
pub const SENDFILE_MIN: u64 = 64 << 10;

/// The next part of a NAR window for a socket: bytes to write, or a range of a file to send.
pub enum Part {
    Bytes(Vec<u8>),
    File { file: std::sync::Arc<File>, offset: u64, len: u64 },
}

impl Cursor {
    /// Bytes of the window not yet produced.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// The next part of the window: a range of ≥ [`SENDFILE_MIN`] bytes of one file, or up to
    /// `max` bytes of framing and small files read into memory; `None` at its end.
    pub fn next_part(&mut self, max: usize) -> io::Result<Option<Part>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let layout = &self.layout;
        let mut i = layout.starts.partition_point(|&s| s <= self.pos).saturating_sub(1);
        let mut stop = self.pos;
        while stop < self.end && stop - self.pos < max as u64 {
            let piece_end = layout.starts.get(i + 1).copied().unwrap_or(layout.size).min(self.end);
            if let Piece::File { path, .. } = &layout.pieces[i]
                && piece_end - stop >= SENDFILE_MIN
            {
                if stop > self.pos {
                    break; // Send what is gathered first.
                }
                let file = std::sync::Arc::new(File::open(path)?);
                let offset = stop - layout.starts[i];
                self.pos = piece_end;
                return Ok(Some(Part::File { file, offset, len: piece_end - stop }));
            }
            stop = piece_end.min(self.pos + max as u64);
            i += 1;
        }
        let mut out = Vec::with_capacity((stop - self.pos) as usize);
        self.layout.read_into(self.pos, stop, &mut out, &mut self.open)?;
        self.pos = stop;
        Ok(Some(Part::Bytes(out)))
    }

    /// The next ≤ `max` bytes of the window; `None` at its end.
    pub fn next_piece(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let stop = self.end.min(self.pos.saturating_add(max as u64));
        let mut out = Vec::with_capacity((stop - self.pos) as usize);
        self.layout.read_into(self.pos, stop, &mut out, &mut self.open)?;
        self.pos = stop;
        Ok(Some(out))
    }
}

/// Reads a [`NarLayout`] front to back, opening each file once.
pub struct LayoutReader<'a> {
    layout: &'a NarLayout,
    index: usize,
    within: u64,
    file: Option<File>,
}

impl Read for LayoutReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(piece) = self.layout.pieces.get(self.index) else { return Ok(0) };
            let (plen, n) = match piece {
                Piece::Framing(b) => {
                    let n = (b.len() - self.within as usize).min(buf.len());
                    buf[..n].copy_from_slice(&b[self.within as usize..self.within as usize + n]);
                    (b.len() as u64, n)
                }
                Piece::File { path, len, .. } => {
                    if self.within == *len {
                        (*len, 0)
                    } else {
                        let f = match &mut self.file {
                            Some(f) => f,
                            None => self.file.insert(File::open(path)?),
                        };
                        let want = ((len - self.within) as usize).min(buf.len());
                        let n = f.read(&mut buf[..want])?;
                        if n == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("{} shrank while being read", path.display()),
                            ));
                        }
                        (*len, n)
                    }
                }
            };
            self.within += n as u64;
            if self.within == plen {
                self.index += 1;
                self.within = 0;
                self.file = None;
            }
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::nar::dump_to_vec;
    use std::fs;

    #[test]
    fn a_write_to_any_file_moves_the_fingerprint_and_is_seen_after_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("a"), vec![1u8; 100_000]).unwrap();
        fs::write(root.join("b"), vec![2u8; 100_000]).unwrap();
        // As in a Nix store: mtime 1 (so any write moves it, whatever the clock's granularity).
        let epoch1 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1);
        for f in ["a", "b"] {
            fs::File::options().write(true).open(root.join(f)).unwrap().set_modified(epoch1).unwrap();
        }
        let layout = NarLayout::of(&root).unwrap();
        assert_eq!(layout.fingerprint(), NarLayout::of(&root).unwrap().fingerprint(), "two walks agree");
        let (bytes, unchanged) = layout.read_range_checked(0, layout.size() as usize).unwrap();
        assert!(unchanged);
        assert_eq!(bytes, dump_to_vec(&root).unwrap());
        // Rewritten in place, same size.
        fs::write(root.join("b"), vec![3u8; 100_000]).unwrap();
        assert_ne!(layout.fingerprint(), NarLayout::of(&root).unwrap().fingerprint());
        let (_, unchanged) = layout.read_range_checked(0, layout.size() as usize).unwrap();
        assert!(!unchanged, "a read across the rewritten file must say so");
        // A range within the untouched file alone is still vouched for.
        let (_, unchanged) = layout.read_range_checked(200, 1000).unwrap();
        assert!(unchanged);
    }

    #[test]
    fn ranges_and_reader_match_the_dump() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        fs::create_dir_all(root.join("d/e")).unwrap();
        fs::write(root.join("big"), (0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()).unwrap();
        fs::write(root.join("d/small"), b"abc").unwrap();
        fs::write(root.join("d/empty"), b"").unwrap();
        std::os::unix::fs::symlink("x", root.join("d/e/l")).unwrap();
        let whole = dump_to_vec(&root).unwrap();
        let layout = NarLayout::of(&root).unwrap();
        assert_eq!(layout.size(), whole.len() as u64);
        let mut seq = Vec::new();
        layout.reader().read_to_end(&mut seq).unwrap();
        assert_eq!(seq, whole);
        let n = whole.len();
        for (off, len) in [(0, 1), (0, n), (7, 100), (150, 200_000), (n - 5, 5), (n - 1, 1), (300, 0)] {
            assert_eq!(layout.read_range(off as u64, len).unwrap(), &whole[off..off + len], "{off}+{len}");
        }
        assert!(layout.read_range(n as u64 - 1, 2).is_err());
        for (window, piece) in [(0..n, 4096), (7..200_000, 1000), (150..n - 3, 65_536), (n - 2..n + 10, 1)] {
            let mut cursor = NarLayout::of(&root).unwrap().into_cursor(window.start as u64..window.end as u64);
            let mut got = Vec::new();
            while let Some(p) = cursor.next_piece(piece).unwrap() {
                assert!(!p.is_empty() && p.len() <= piece);
                got.extend_from_slice(&p);
            }
            assert_eq!(got, &whole[window.start..window.end.min(n)], "{window:?} in {piece}-byte pieces");
        }
        // Parts for a socket: file ranges (read here with pread, as sendfile would) and bytes.
        for (window, max) in [(0..n, 256 << 10), (7..200_000, 1000), (150..n - 3, 65_536), (n - 100..n, 10)] {
            let mut cursor = NarLayout::of(&root).unwrap().into_cursor(window.start as u64..window.end as u64);
            let (mut got, mut files) = (Vec::new(), 0);
            while let Some(seg) = cursor.next_part(max).unwrap() {
                match seg {
                    Part::Bytes(b) => {
                        assert!(!b.is_empty() && b.len() <= max);
                        got.extend_from_slice(&b);
                    }
                    Part::File { file, offset, len } => {
                        assert!(len >= SENDFILE_MIN);
                        let mut buf = vec![0; len as usize];
                        file.read_exact_at(&mut buf, offset).unwrap();
                        got.extend_from_slice(&buf);
                        files += 1;
                    }
                }
            }
            assert_eq!(got, &whole[window.clone()], "{window:?} in parts of {max}");
            assert_eq!(files, (window.len() > 100) as usize, "{window:?}: the 300 kB file is sent, the rest copied");
        }
    }
}
