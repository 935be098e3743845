//! NAR serialisation of a store path straight from the filesystem, byte-identical to `nix-store --dump`.
//!
//! The walk emits a sequence of [`Segment`]s: framing bytes (tokens, lengths, padding) and file
//! contents named by path and length. [`NarLayout`] records them and reads any byte range of the
//! NAR from them (a `Range` request, a chunk of the block index, a whole NAR for nix), reading file
//! contents only where the range covers them. The walk holds the names of one directory at a time;
//! files of any size stream through.
//!
//! Format (`src/libutil/archive.cc`): every token is `u64 LE length ‖ bytes ‖ zero padding to 8`;
//! `"nix-archive-1" node`, `node = "(" "type" T … ")"`; directory entries sorted bytewise by name.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::nar_layout::NarLayout;

/// The first token of every NAR.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// Output is shipped in pieces of this size: big enough that per-piece overhead (a channel send, a
/// write call) is noise at GB/s, small enough that 1000 concurrent downloads hold 256 MiB at most.
pub const OUT_CHUNK: usize = 256 * 1024;

/// Deeper trees are refused rather than risking the walker's stack; real store paths stay far below.
const MAX_DUMP_DEPTH: usize = 1024;

/// One piece of a NAR in order.
pub enum Segment<'a> {
    /// Framing: tokens, lengths, padding.
    Framing(&'a [u8]),
    /// `len` bytes of the regular file at `path`, from its start; `meta` is what the walk read of
    /// it (a consumer that records the file's identity needs no second `stat`).
    Contents { path: &'a Path, len: u64, meta: &'a fs::Metadata },
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
            visit(Segment::Contents { path, len, meta: &meta })?;
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

/// The whole NAR of `root` in memory (tests and small paths only).
/// It is read the way the daemon serves a NAR (a [`NarLayout`] cursor in [`OUT_CHUNK`] pieces), so a
/// test of this against `nix-store --dump` is a test of what nix gets.
pub fn dump_to_vec(root: &Path) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut cursor = NarLayout::of(root)?.into_cursor(0..u64::MAX);
    while let Some(piece) = cursor.next_piece(OUT_CHUNK)? {
        out.extend_from_slice(&piece);
    }
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
}
