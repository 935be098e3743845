//! Where a transfer's blocks can come from, behind one interface ([`Sources::fetch`]): a peerix
//! peer over the bulk block protocol ([`crate::p2p::blocks`]), any other IPFS node over bitswap,
//! and the operator's fallbacks — a trustless gateway (`GET /ipfs/{cid}?format=raw`) or a kubo
//! RPC API (`POST /api/v0/block/get`). Every block from every source is checked against its CID
//! before it is returned; a source that sends wrong bytes is reported as [`SourceError::BadBlock`].

use bytes::Bytes;
use cid::Cid;
use futures_util::{StreamExt, TryStreamExt};
use libp2p::PeerId;

use crate::ipld::{self, MAX_BLOCK};
use crate::p2p::blocks::IfBusy;
use crate::p2p::{self, Node};
use crate::timeouts::BLOCK_REQUEST;

/// Blocks of one unit asked of a bitswap peer or a fallback at once.
const PARALLEL: usize = 16;

/// A block source of last resort (`--fallback`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// A trustless gateway's base URL.
    Gateway(String),
    /// A kubo RPC API's base URL (given as `kubo+http://…`).
    Kubo(String),
}

impl Fallback {
    pub fn parse(url: &str) -> Option<Self> {
        let url = url.trim().trim_end_matches('/');
        if let Some(rest) = url.strip_prefix("kubo+") {
            return (rest.starts_with("http://") || rest.starts_with("https://")).then(|| Self::Kubo(rest.to_owned()));
        }
        (url.starts_with("http://") || url.starts_with("https://")).then(|| Self::Gateway(url.to_owned()))
    }

    /// As `--fallback` takes it: `parse(f.to_config())` gives `f` back.
    pub fn to_config(&self) -> String {
        match self {
            Self::Gateway(u) => u.clone(),
            Self::Kubo(u) => format!("kubo+{u}"),
        }
    }

    pub fn url(&self) -> &str {
        match self {
            Fallback::Gateway(u) | Fallback::Kubo(u) => u,
        }
    }
}

/// One place blocks can come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A peerix node: the bulk block protocol.
    Peer(PeerId),
    /// Another IPFS node: bitswap.
    Bitswap(PeerId),
    /// `--fallback` number i.
    Fallback(usize),
}

impl Source {
    pub fn peer(&self) -> Option<PeerId> {
        match self {
            Source::Peer(p) | Source::Bitswap(p) => Some(*p),
            Source::Fallback(_) => None,
        }
    }

    pub fn is_fallback(&self) -> bool {
        matches!(self, Source::Fallback(_))
    }

    pub fn describe(&self, fallbacks: &[Fallback]) -> String {
        match self {
            Source::Peer(p) => p.to_string(),
            Source::Bitswap(p) => format!("{p} (bitswap)"),
            Source::Fallback(i) => fallbacks.get(*i).map(|f| f.url().to_owned()).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("source does not have block {0}")]
    Missing(Cid),
    #[error("source sent bytes that are not block {0}")]
    BadBlock(Cid),
    #[error("request failed: {0}")]
    Failed(String),
    /// A busy peerix peer named others that just received the blocks from it.
    #[error("source is busy and named {} others", .0.len())]
    Busy(Vec<PeerId>),
    /// A busy peerix peer asked us to ask again shortly.
    #[error("source is busy and asked us to ask again shortly")]
    Deferred,
}

/// The means to reach every kind of source.
pub struct Sources {
    pub node: Option<Node>,
    pub fallbacks: Vec<Fallback>,
    http: reqwest::Client,
}

impl Sources {
    pub fn new(node: Option<Node>, fallbacks: Vec<Fallback>) -> Result<Self, crate::remote::RemoteError> {
        Ok(Self { node, fallbacks, http: crate::remote::client(BLOCK_REQUEST)? })
    }

    /// `cids` from `source`, in order, each checked against its CID; what a busy peerix peer may
    /// answer instead ([`SourceError::Busy`], [`SourceError::Deferred`]) is `if_busy`.
    pub async fn fetch(&self, source: &Source, cids: &[Cid], if_busy: IfBusy) -> Result<Vec<Bytes>, SourceError> {
        match source {
            Source::Peer(peer) => {
                let node = self.node.as_ref().ok_or_else(|| SourceError::Failed("no IPFS node".into()))?;
                // Every frame of the answer (blocks, "not here", "busy", "ask again") already
                // counted as the peer answering as it arrived (`Lanes::on_frame`, set in
                // `p2p::swarm`): a unit queued behind a crowd keeps a first-byte wait going.
                use p2p::blocks::FetchError::{Busy, Deferred, Mismatch, Missing};
                node.fetch_blocks(*peer, cids, if_busy).await.map_err(|e| match e {
                    Missing(c) => SourceError::Missing(c),
                    Mismatch(c) => SourceError::BadBlock(c),
                    Busy(others) => SourceError::Busy(others),
                    Deferred => SourceError::Deferred,
                    other => SourceError::Failed(crate::errors::chain(&other)),
                })
            }
            Source::Bitswap(peer) => {
                let node = self.node.as_ref().ok_or_else(|| SourceError::Failed("no IPFS node".into()))?;
                futures_util::stream::iter(cids.iter().copied())
                    .map(|cid| async move {
                        node.want_block(*peer, cid, BLOCK_REQUEST).await.map_err(|e| match e {
                            p2p::bitswap::client::WantError::DontHave => SourceError::Missing(cid),
                            other => SourceError::Failed(other.to_string()),
                        })
                    })
                    .buffered(PARALLEL)
                    .try_collect()
                    .await
            }
            Source::Fallback(i) => {
                let fallback = self.fallbacks.get(*i).ok_or_else(|| SourceError::Failed("no such fallback".into()))?;
                futures_util::stream::iter(cids.iter().copied())
                    .map(|cid| self.ask_fallback(fallback, cid))
                    .buffered(PARALLEL)
                    .try_collect()
                    .await
            }
        }
    }

    async fn ask_fallback(&self, fallback: &Fallback, cid: Cid) -> Result<Bytes, SourceError> {
        let request = match fallback {
            Fallback::Gateway(url) => self
                .http
                .get(format!("{url}/ipfs/{cid}?format=raw"))
                .header(reqwest::header::ACCEPT, "application/vnd.ipld.raw"),
            Fallback::Kubo(url) => self.http.post(format!("{url}/api/v0/block/get?arg={cid}")),
        };
        let failed = |e: reqwest::Error| SourceError::Failed(crate::errors::chain(&e));
        let resp = request.send().await.map_err(failed)?;
        match resp.status() {
            reqwest::StatusCode::OK => {}
            reqwest::StatusCode::NOT_FOUND => return Err(SourceError::Missing(cid)),
            // kubo answers a missing block with 500 and a JSON error.
            s => return Err(SourceError::Failed(format!("HTTP {s}"))),
        }
        let body = crate::remote::read_capped(resp, MAX_BLOCK).await.map_err(|e| match e {
            crate::remote::RemoteError::TooLarge(_) => SourceError::BadBlock(cid),
            other => SourceError::Failed(other.to_string()),
        })?;
        if !ipld::verify(&cid, &body) {
            return Err(SourceError::BadBlock(cid));
        }
        Ok(Bytes::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_urls() {
        assert_eq!(Fallback::parse("http://gw:8080/"), Some(Fallback::Gateway("http://gw:8080".into())));
        assert_eq!(Fallback::parse("kubo+http://127.0.0.1:5001"), Some(Fallback::Kubo("http://127.0.0.1:5001".into())));
        assert_eq!(Fallback::parse("kubo+ftp://x"), None);
        assert_eq!(Fallback::parse("gw:8080"), None);
    }
}
