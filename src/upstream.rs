//! The upstream binary cache (default `https://cache.nixos.org`): asked for narinfos by the publish
//! gate ("does upstream have this exact NAR?"). Answers are bounded in size and time; anything but a
//! clean 200 or 404 is `Unreachable`, which the gate treats as "no".

use reqwest::StatusCode;

use crate::nix::narinfo::{MAX_NARINFO_LEN, NarInfo};
use crate::nix::store_path::StoreHash;
use crate::timeouts::UPSTREAM_REQUEST;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream request failed")]
    Http(#[from] reqwest::Error),
    #[error("upstream: {0}")]
    Remote(crate::remote::RemoteError),
    #[error("upstream answered HTTP {0}")]
    Status(StatusCode),
    #[error("upstream narinfo is larger than 64 KiB")]
    TooLarge,
    #[error("upstream narinfo is malformed")]
    Malformed(#[from] crate::nix::narinfo::ParseError),
}

#[derive(Clone)]
pub struct Upstream {
    base: String,
    http: reqwest::Client,
}

impl Upstream {
    pub fn new(base: &str) -> Result<Self, UpstreamError> {
        let http = crate::remote::client(UPSTREAM_REQUEST).map_err(UpstreamError::Remote)?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The upstream narinfo for `hash`, `None` on 404/403 (what Nix also reads as "not in cache").
    pub async fn narinfo(&self, hash: &StoreHash) -> Result<Option<NarInfo>, UpstreamError> {
        let resp = self.http.get(format!("{}/{hash}.narinfo", self.base)).send().await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => return Ok(None),
            other => return Err(UpstreamError::Status(other)),
        }
        let body = crate::remote::read_capped(resp, MAX_NARINFO_LEN).await.map_err(|e| match e {
            crate::remote::RemoteError::TooLarge(_) => UpstreamError::TooLarge,
            other => UpstreamError::Remote(other),
        })?;
        let text = String::from_utf8_lossy(&body);
        Ok(Some(NarInfo::parse(&text)?))
    }
}
