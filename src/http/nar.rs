//! `GET|HEAD /nar/<NarHash nix32>.nar`: a NAR streamed from the store path on disk, or — for a
//! path accepted from peers — from its DAG ([`crate::substitute`]: every block verified, the whole
//! hashed, the body aborted on any failure; `Range` served from the blocks that cover it).
//!
//! The NAR's file contents go from the page cache to the socket by `sendfile(2)` ([`body::FileBody`],
//! sent by [`super::sendfile`]); its framing and small files are read from its layout (one
//! metadata walk, then preads). A slow client holds no thread and no buffer of file contents.
//! `Range` (one range; nix uses it to resume) starts the read at its offset: bytes before the
//! range are not read. With `Accept-Encoding: zstd` and no `Range`, the
//! body is zstd-compressed on the fly (`Compression: none` stays true of the NAR itself; Nix decodes
//! `Content-Encoding` transparently). An I/O error mid-stream aborts the body, so nix sees a failed
//! transfer, never a wrong NAR.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use tracing::warn;

use super::AppState;
use super::error::ApiError;
use crate::httpd::{body, range};
use crate::local_cache::LocalNar;
use crate::nix::hash::NarHash;
use crate::nix::nar::OUT_CHUNK;
use crate::nix::nar_layout::{Cursor, NarLayout, SENDFILE_MIN};
use crate::substitute::NarSource;

/// zstd level 1 compresses at ~500 MB/s per core, well above a 1 Gbit/s LAN (125 MB/s); higher
/// levels would make the CPU, not the wire, the limit.
const ZSTD_LEVEL: i32 = 1;

pub async fn get(
    State(app): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let Some(stem) = file.strip_suffix(".nar") else {
        return Err(ApiError::NotFound("no such NAR"));
    };
    let nar_hash = NarHash::parse_digits(stem).map_err(|_| ApiError::BadRequest("malformed NAR hash"))?;
    let Some(source) = app.substituter.nar(&nar_hash).await? else {
        return Err(ApiError::NotFound("no such NAR"));
    };
    let size = match &source {
        NarSource::Local(l) => l.nar_size,
        NarSource::Dag(d) => d.nar_size,
    };
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) => range::parse(spec, size).map_err(|range::Unsatisfiable| ApiError::RangeNotSatisfiable(size))?,
        None => None,
    };
    // zstd needs the bytes in userspace anyway; a peer NAR is sent as it arrives.
    let zstd = range.is_none() && matches!(source, NarSource::Local(_)) && accepts_zstd(&headers);

    let mut resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/x-nix-nar")
        .header(header::ACCEPT_RANGES, "bytes");
    let window = match &range {
        Some(r) => {
            resp = resp
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1))
                .header(header::CONTENT_LENGTH, r.end - r.start);
            r.clone()
        }
        None if zstd => {
            resp = resp.header(header::CONTENT_ENCODING, "zstd").header(header::VARY, "Accept-Encoding");
            0..size
        }
        None => {
            resp = resp.header(header::CONTENT_LENGTH, size).header(header::VARY, "Accept-Encoding");
            0..size
        }
    };
    let body = match source {
        _ if method == Method::HEAD => Body::empty(),
        NarSource::Local(local) if !zstd => {
            // The layout is made (a metadata walk) before the status goes out, so a path changed
            // on disk is refused with an error status rather than a body cut short.
            let served = move |sent| {
                let counters = &app.cache.counters;
                counters.nars_served.fetch_add(1, Ordering::Relaxed);
                counters.nar_bytes_served.fetch_add(sent, Ordering::Relaxed);
            };
            match crate::tasks::spawn_blocking(module_path!(), move || open_small_whole(&local, window)).await?? {
                Opened::Whole(nar) => {
                    // Counted once read: the whole body is in memory and leaves in one write.
                    served(nar.len() as u64);
                    Body::from(nar)
                }
                Opened::Cursor(cursor) => {
                    let (file, body) = body::FileBody::new(cursor, served);
                    resp = resp.extension(file);
                    body
                }
            }
        }
        NarSource::Local(local) => stream(app, local, window, zstd),
        NarSource::Dag(nar) => match app.substituter.prefetched(&nar.nar_hash).await {
            // Fetched and verified while nix was still asking narinfos.
            Some(whole) => Body::from(whole.slice(window.start as usize..window.end as usize)),
            None => match app.substituter.transfer(nar, window).await {
                Some(pieces) => Body::from_stream(pieces),
                None => return Err(ApiError::NotFound("no such NAR")),
            },
        },
    };
    resp.body(body).map_err(|_| ApiError::BadRequest("unrepresentable header"))
}

/// The body of a local NAR compressed with zstd, read from the store as the client takes it.
fn stream(app: AppState, source: LocalNar, window: Range<u64>, zstd: bool) -> Body {
    let mut nar: Option<LocalBody> = None;
    body::pull(move || {
        // The layout (a metadata walk) is made on the first pull: it runs on a blocking thread.
        let nar = match &mut nar {
            Some(n) => n,
            None => nar.insert(LocalBody::open(&source, window.clone(), zstd)?),
        };
        let piece = nar.next()?;
        if piece.is_none() {
            let counters = &app.cache.counters;
            counters.nars_served.fetch_add(1, Ordering::Relaxed);
            counters.nar_bytes_served.fetch_add(nar.read, Ordering::Relaxed);
        }
        Ok(piece)
    })
}

/// A window of a store path's NAR in [`OUT_CHUNK`] pieces, zstd-compressed when asked.
struct LocalBody {
    cursor: Cursor,
    zstd: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    /// NAR bytes read (before compression).
    read: u64,
}

/// The store path's NAR layout, unless the path on disk no longer has the size Nix registered:
/// then serving it would give a NAR whose hash cannot match (nix would reject it after the whole
/// download).
fn layout(source: &LocalNar) -> io::Result<NarLayout> {
    let layout = NarLayout::of(&source.fs_path)?;
    if layout.size() != source.nar_size {
        warn!(path = %source.path, on_disk = layout.size(), in_db = source.nar_size, "NAR on disk differs in size from Nix's DB");
        return Err(io::Error::other("NAR size mismatch"));
    }
    Ok(layout)
}

/// A local NAR window to send: read whole already, or to be sent by `sendfile`.
enum Opened {
    Whole(Vec<u8>),
    Cursor(Cursor),
}

/// The [`layout`]'s cursor over `window`, or a window of at most [`SENDFILE_MIN`] bytes read at
/// once on the same blocking thread: it holds no file worth `sendfile`, and answering it from memory saves the second
/// thread hop a [`body::FileBody`] costs — most paths of a closure are this small (256 of them
/// realised from nginx in 0.34 s, from peerix in 0.45 s before this).
fn open_small_whole(source: &LocalNar, window: Range<u64>) -> io::Result<Opened> {
    let layout = layout(source)?;
    let len = window.end - window.start;
    if len > SENDFILE_MIN {
        return Ok(Opened::Cursor(layout.into_cursor(window)));
    }
    Ok(Opened::Whole(layout.read_range(window.start, len as usize)?))
}

impl LocalBody {
    fn open(source: &LocalNar, window: Range<u64>, zstd: bool) -> io::Result<Self> {
        let cursor = layout(source)?.into_cursor(window);
        let zstd = match zstd {
            true => Some(zstd::stream::write::Encoder::new(Vec::with_capacity(OUT_CHUNK), ZSTD_LEVEL)?),
            false => None,
        };
        Ok(Self { cursor, zstd, read: 0 })
    }

    fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let piece = self.cursor.next_piece(OUT_CHUNK)?;
            self.read += piece.as_ref().map_or(0, |p| p.len() as u64);
            let Some(enc) = &mut self.zstd else { return Ok(piece.map(Bytes::from)) };
            match piece {
                Some(p) => {
                    enc.write_all(&p)?;
                    if enc.get_ref().len() >= OUT_CHUNK {
                        return Ok(Some(Bytes::from(std::mem::take(enc.get_mut()))));
                    }
                }
                None => {
                    let rest = self.zstd.take().map(|e| e.finish()).transpose()?.unwrap_or_default();
                    return Ok((!rest.is_empty()).then(|| Bytes::from(rest)));
                }
            }
        }
    }
}

/// True if `Accept-Encoding` lists zstd with a non-zero q-value.
fn accepts_zstd(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts
                .any(|p| p.trim().strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q == 0.0)));
            coding.eq_ignore_ascii_case("zstd") && !q_zero
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn zstd_negotiation() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_zstd(&m)
        };
        assert!(h("zstd"));
        assert!(h("gzip, zstd;q=0.5"));
        assert!(!h("gzip, br"));
        assert!(!h("zstd;q=0"));
        assert!(!accepts_zstd(&HeaderMap::new()));
    }
}
