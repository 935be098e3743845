//! NAR serialisation of a store path straight from the filesystem, byte-identical to `nix-store --dump`.
//!
//! The walk emits a sequence of [`Segment`]s: framing bytes (tokens, lengths, padding) and file
//! contents named by path and length. [`NarWriter`] turns that into output bytes for a byte window,
//! so a `Range` request (and, later, a chunk of the block index) seeks into file contents instead of
//! re-reading everything before it. Memory is bounded by one output buffer (256 KiB) plus the names of
//! one directory at a time; files of any size stream through.
//!
//! Format (`src/libutil/archive.cc`): every token is `u64 LE length ‖ bytes ‖ zero padding to 8`;
//! `"nix-archive-1" node`, `node = "(" "type" T … ")"`; directory entries sorted bytewise by name.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bytes::{Bytes, BytesMut};

/// The first token of every NAR.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// Output is shipped in pieces of this size: big enough that per-piece overhead (a channel send, a
/// hyper frame) is noise at GB/s, small enough that 1000 concurrent downloads hold 256 MiB at most.
pub const OUT_CHUNK: usize = 256 * 1024;

/// Deeper trees are refused rather than risking the walker's stack; real store paths stay far below.
const MAX_DUMP_DEPTH: usize = 1024;

/// One piece of a NAR in order.
pub enum Segment<'a> {
    /// Framing: tokens, lengths, padding.
    Framing(&'a [u8]),
    /// `len` bytes of the regular file at `path`, from its start.
    Contents { path: &'a Path, len: u64 },
}

/// Walks `root` in NAR order, handing every segment to `visit`.
pub fn walk(root: &Path, visit: &mut dyn FnMut(Segment<'_>) -> io::Result<()>) -> io::Result<()> {
    let mut framing = Vec::with_capacity(512);
    put_str(&mut framing, MAGIC);
    walk_node(root, &mut framing, visit, 0)?;
    visit(Segment::Framing(&framing))
}

fn walk_node(
    path: &Path,
    framing: &mut Vec<u8>,
    visit: &mut dyn FnMut(Segment<'_>) -> io::Result<()>,
    depth: usize,
) -> io::Result<()> {
    if depth > MAX_DUMP_DEPTH {
        return Err(io::Error::other(format!("{} nests deeper than {MAX_DUMP_DEPTH} levels", path.display())));
    }
    let meta = fs::symlink_metadata(path)?;
    put_str(framing, b"(");
    put_str(framing, b"type");
    let ft = meta.file_type();
    if ft.is_symlink() {
        put_str(framing, b"symlink");
        put_str(framing, b"target");
        put_str(framing, fs::read_link(path)?.as_os_str().as_bytes());
    } else if ft.is_file() {
        put_str(framing, b"regular");
        if meta.permissions().mode() & 0o100 != 0 {
            put_str(framing, b"executable");
            put_str(framing, b"");
        }
        put_str(framing, b"contents");
        let len = meta.len();
        framing.extend_from_slice(&len.to_le_bytes());
        visit(Segment::Framing(framing))?;
        framing.clear();
        if len > 0 {
            visit(Segment::Contents { path, len })?;
        }
        framing.extend_from_slice(padding(len));
    } else if ft.is_dir() {
        put_str(framing, b"directory");
        let mut names: Vec<_> = fs::read_dir(path)?.map(|e| e.map(|e| e.file_name())).collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            put_str(framing, b"entry");
            put_str(framing, b"(");
            put_str(framing, b"name");
            put_str(framing, name.as_bytes());
            put_str(framing, b"node");
            walk_node(&path.join(&name), framing, visit, depth + 1)?;
            put_str(framing, b")");
        }
    } else {
        return Err(io::Error::other(format!("{} has an unsupported file type", path.display())));
    }
    put_str(framing, b")");
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(padding(s.len() as u64));
}

/// Zero bytes that pad `len` up to a multiple of 8.
pub fn padding(len: u64) -> &'static [u8] {
    const ZEROS: [u8; 8] = [0; 8];
    &ZEROS[..((8 - len % 8) % 8) as usize]
}

/// Writes the bytes of a NAR that fall in a window, in [`OUT_CHUNK`] pieces.
pub struct NarWriter<F: FnMut(Bytes) -> io::Result<()>> {
    window: Range<u64>,
    pos: u64,
    buf: BytesMut,
    ship: F,
}

impl<F: FnMut(Bytes) -> io::Result<()>> NarWriter<F> {
    pub fn new(window: Range<u64>, ship: F) -> Self {
        Self { window, pos: 0, buf: BytesMut::with_capacity(OUT_CHUNK), ship }
    }

    /// Dumps `root` and returns how many bytes the whole NAR has (not only the window).
    pub fn dump(mut self, root: &Path) -> io::Result<u64> {
        walk(root, &mut |seg| self.segment(seg))?;
        if !self.buf.is_empty() {
            let piece = self.buf.split().freeze();
            (self.ship)(piece)?;
        }
        Ok(self.pos)
    }

    fn segment(&mut self, seg: Segment<'_>) -> io::Result<()> {
        match seg {
            Segment::Framing(bytes) => {
                let start = self.pos;
                self.pos += bytes.len() as u64;
                let (from, to) = self.clip(start, self.pos);
                if from < to {
                    self.put(&bytes[(from - start) as usize..(to - start) as usize])?;
                }
            }
            Segment::Contents { path, len } => {
                let start = self.pos;
                self.pos += len;
                let (from, to) = self.clip(start, self.pos);
                if from < to {
                    self.copy_file(path, from - start, to - from, len)?;
                }
            }
        }
        Ok(())
    }

    fn clip(&self, start: u64, end: u64) -> (u64, u64) {
        (start.max(self.window.start), end.min(self.window.end))
    }

    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(OUT_CHUNK - self.buf.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.ship_if_full()?;
        }
        Ok(())
    }

    fn ship_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= OUT_CHUNK {
            let piece = self.buf.split().freeze();
            self.buf.reserve(OUT_CHUNK);
            (self.ship)(piece)?;
        }
        Ok(())
    }

    /// Reads `count` bytes from `offset` of a file that must be `expected_len` long, straight into
    /// the output buffer (no intermediate copy).
    fn copy_file(&mut self, path: &Path, offset: u64, count: u64, expected_len: u64) -> io::Result<()> {
        let mut file = File::open(path)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))?;
        }
        let mut left = count;
        while left > 0 {
            let room = (OUT_CHUNK - self.buf.len()).min(usize::try_from(left).unwrap_or(usize::MAX));
            let filled = self.buf.len();
            self.buf.resize(filled + room, 0);
            let n = read_full(&mut file, &mut self.buf[filled..])?;
            self.buf.truncate(filled + n);
            if n < room {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} shrank below {expected_len} bytes while being read", path.display()),
                ));
            }
            left -= n as u64;
            self.ship_if_full()?;
        }
        Ok(())
    }
}

fn read_full(file: &mut File, mut buf: &mut [u8]) -> io::Result<usize> {
    let mut total = 0;
    while !buf.is_empty() {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n;
                buf = &mut buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// The whole NAR of `root` in memory (tests and small paths only).
pub fn dump_to_vec(root: &Path) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    NarWriter::new(0..u64::MAX, |b: Bytes| {
        out.extend_from_slice(&b);
        Ok(())
    })
    .dump(root)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_file_layout_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"hi").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let nar = dump_to_vec(&f).unwrap();
        let mut expect = Vec::new();
        for t in [&b"nix-archive-1"[..], b"(", b"type", b"regular", b"contents", b"hi", b")"] {
            put_str(&mut expect, t);
        }
        assert_eq!(nar, expect);
    }

    #[test]
    fn every_window_is_a_slice_of_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("a"), vec![7u8; 3 * OUT_CHUNK + 5]).unwrap();
        fs::write(root.join("sub/b"), b"bee").unwrap();
        std::os::unix::fs::symlink("../a", root.join("sub/l")).unwrap();
        let whole = dump_to_vec(&root).unwrap();
        let n = whole.len() as u64;
        for (s, e) in [(0, 1), (0, n), (1, n), (100, 200), (200, OUT_CHUNK as u64 * 2 + 3), (n - 9, n), (n - 1, n)] {
            let mut part = Vec::new();
            let total = NarWriter::new(s..e, |b: Bytes| {
                part.extend_from_slice(&b);
                Ok(())
            })
            .dump(&root)
            .unwrap();
            assert_eq!(total, n);
            assert_eq!(part, whole[s as usize..e as usize], "window {s}..{e}");
        }
    }
}
