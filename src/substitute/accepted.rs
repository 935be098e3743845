//! Narinfos accepted from peers: what the local nix was told, and where the NAR's blocks are.
//!
//! Nix asks for a narinfo and, moments later, for the NAR it names; it keeps the narinfo for 30
//! days and may ask for the NAR again long after (or after our restart). So an accepted narinfo is
//! kept in memory (bounded, [`MAX_ENTRIES`], least recently used out first) with every root CID peers named for
//! it and who named each, and written to the state DB (origin `peer`) so its `nar/<NarHash>.nar`
//! URL resolves after the first peer has left and after a restart.
//!
//! A root CID is the one field of a peer's answer no signature covers: honest peerix nodes all
//! derive the same root from the same NAR (same chunker, same DAG), so candidates are ordered by
//! how many peers named them, and a root whose DAG proves wrong is marked failed and never used
//! again for this NAR.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cid::Cid;
use libp2p::PeerId;
use tracing::warn;

use crate::bounded::Lru;
use crate::nix::hash::NarHash;
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::{StoreHash, StorePath};
use crate::store::StateDb;

/// Accepted narinfos kept in memory (~1 KiB each).
pub const MAX_ENTRIES: usize = 16 * 1024;
/// Peers remembered per root.
const MAX_PEERS_PER_ROOT: usize = 32;
/// Roots remembered per NAR (one, normally).
const MAX_ROOTS: usize = 8;

/// A root CID some peers named for a NAR.
#[derive(Debug, Clone)]
pub struct Root {
    pub cid: Cid,
    pub peers: Vec<PeerId>,
    pub failed: bool,
    /// The root's node as a peer sent it with the narinfo, checked against `cid`: the plan then
    /// needs no round trip for it. Dropped once a plan used it.
    pub node: Option<Bytes>,
}

/// A narinfo accepted from peers.
#[derive(Debug)]
pub struct AcceptedNar {
    pub hash: StoreHash,
    pub store_path: StorePath,
    pub nar_hash: NarHash,
    pub nar_size: u64,
    /// The narinfo we serve (URL `nar/<NarHash>.nar`, Compression none, Sig lines as accepted).
    pub narinfo: Bytes,
    roots: Mutex<Vec<Root>>,
}

impl AcceptedNar {
    pub fn new(info: &NarInfo, narinfo: Bytes) -> Self {
        Self {
            hash: info.store_path.hash(),
            store_path: info.store_path.clone(),
            nar_hash: info.nar_hash,
            nar_size: info.nar_size,
            narinfo,
            roots: Mutex::new(Vec::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Vec<Root>) -> T) -> T {
        f(&mut self.roots.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `peer` says the NAR's blocks are under `cid` (`None` for a root known from the state DB).
    pub fn add_root(&self, cid: Cid, peer: Option<PeerId>) {
        self.with(|roots| {
            let i = match roots.iter().position(|r| r.cid == cid) {
                Some(i) => i,
                None if roots.len() < MAX_ROOTS => {
                    roots.push(Root { cid, peers: Vec::new(), failed: false, node: None });
                    roots.len() - 1
                }
                None => return,
            };
            if let Some(p) = peer
                && !roots[i].peers.contains(&p)
                && roots[i].peers.len() < MAX_PEERS_PER_ROOT
            {
                roots[i].peers.push(p);
            }
        })
    }

    /// `node` is the block of root `cid` (kept if it is, and the root is known; else ignored: the
    /// plan then asks for it). Its size was bounded where the answer was decoded.
    pub fn add_root_node(&self, cid: &Cid, node: Bytes) {
        if !crate::ipld::verify(cid, &node) {
            return;
        }
        self.with(|roots| {
            if let Some(r) = roots.iter_mut().find(|r| r.cid == *cid && r.node.is_none()) {
                r.node = Some(node);
            }
        })
    }

    /// The node of root `cid`, if a peer sent it; given once.
    pub fn take_root_node(&self, cid: &Cid) -> Option<Bytes> {
        self.with(|roots| roots.iter_mut().find(|r| r.cid == *cid).and_then(|r| r.node.take()))
    }

    /// Roots not known to be wrong, the most widely named first.
    pub fn roots(&self) -> Vec<Root> {
        let mut r: Vec<Root> = self.with(|roots| roots.iter().filter(|r| !r.failed).cloned().collect());
        r.sort_by_key(|r| std::cmp::Reverse(r.peers.len()));
        r
    }

    /// The DAG under `cid` is not this NAR: never used again for it. Returns who named it.
    pub fn fail_root(&self, cid: &Cid) -> Vec<PeerId> {
        self.with(|roots| match roots.iter_mut().find(|r| r.cid == *cid) {
            Some(r) => {
                r.failed = true;
                r.peers.clone()
            }
            None => Vec::new(),
        })
    }
}

/// Two indexes of the same entries, each bounded (a narinfo reloaded from the state DB for a NAR
/// request enters by NarHash only).
struct Inner {
    by_hash: Lru<StoreHash, Arc<AcceptedNar>>,
    by_nar: Lru<NarHash, Arc<AcceptedNar>>,
}

pub struct Accepted {
    inner: Mutex<Inner>,
    state: Arc<StateDb>,
}

impl Accepted {
    pub fn new(state: Arc<StateDb>) -> Self {
        let inner = Inner { by_hash: Lru::new(MAX_ENTRIES), by_nar: Lru::new(MAX_ENTRIES) };
        Self { inner: Mutex::new(inner), state }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn get(&self, hash: &StoreHash) -> Option<Arc<AcceptedNar>> {
        self.with(|i| i.by_hash.get(hash).cloned())
    }

    /// Keeps `nar` (replacing an older entry for the path) and writes it to the state DB on a
    /// blocking thread.
    pub fn insert(&self, nar: Arc<AcceptedNar>) {
        self.with(|i| {
            if let Some(old) = i.by_hash.remove(&nar.hash) {
                i.by_nar.remove(&old.nar_hash);
            }
            i.by_hash.insert(nar.hash, nar.clone());
            i.by_nar.insert(nar.nar_hash, nar.clone());
        });
        let Some(root) = nar.roots().first().map(|r| r.cid) else { return };
        let state = self.state.clone();
        crate::tasks::spawn_blocking(module_path!(), move || {
            let text = String::from_utf8_lossy(&nar.narinfo);
            if let Err(e) = state.record_peer_path(&nar.store_path, &nar.nar_hash, nar.nar_size, &root, &text) {
                warn!(cause = %e, "cannot remember an accepted narinfo");
            }
        });
    }

    /// The accepted narinfo naming this NAR: from memory, else from the state DB.
    pub async fn by_nar_hash(&self, nar_hash: &NarHash) -> Option<Arc<AcceptedNar>> {
        if let Some(hit) = self.with(|i| i.by_nar.get(nar_hash).cloned()) {
            return Some(hit);
        }
        let (state, wanted) = (self.state.clone(), *nar_hash);
        let row =
            crate::tasks::spawn_blocking(module_path!(), move || state.peer_path_by_nar_hash(&wanted)).await.ok()?;
        let (text, root) = row.ok().flatten()?;
        let info = NarInfo::parse(&text).ok()?;
        let root = Cid::try_from(root.as_slice()).ok()?;
        if info.nar_hash != *nar_hash {
            return None;
        }
        let nar = Arc::new(AcceptedNar::new(&info, Bytes::from(text)));
        nar.add_root(root, None);
        self.with(|i| {
            i.by_nar.insert(nar.nar_hash, nar.clone());
        });
        Some(nar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn roots_are_ordered_by_votes_and_failed_ones_are_dropped() {
        let text = "StorePath: /nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-with-refs\nURL: nar/x.nar\n\
                    Compression: none\nNarHash: sha256:1fchakpf46v0jbbnjwz9qlka85ga08idb2483db55k38z4l8yk0f\n\
                    NarSize: 792\nReferences: \n";
        let info = NarInfo::parse(text).unwrap();
        let nar = AcceptedNar::new(&info, Bytes::from_static(b""));
        let (honest, hostile) = (crate::ipld::raw_cid(b"a"), crate::ipld::raw_cid(b"b"));
        let (p1, p2, p3) = (PeerId::random(), PeerId::random(), PeerId::random());
        nar.add_root(hostile, Some(p1));
        nar.add_root(honest, Some(p2));
        nar.add_root(honest, Some(p3));
        nar.add_root(honest, Some(p3));
        let roots = nar.roots();
        assert_eq!(roots[0].cid, honest);
        assert_eq!(roots[0].peers.len(), 2);
        assert_eq!(nar.fail_root(&hostile), vec![p1]);
        assert_eq!(nar.roots().len(), 1);

        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(StateDb::open(dir.path()).unwrap());
        let accepted = Accepted::new(state.clone());
        state.record_peer_path(&info.store_path, &info.nar_hash, 792, &honest, text).unwrap();
        // After a restart: resolvable by NAR hash from the state DB alone.
        let back = accepted.by_nar_hash(&info.nar_hash).await.unwrap();
        assert_eq!(back.nar_size, 792);
        assert_eq!(back.roots()[0].cid, honest);
        // A local path of the same hash replaces the peer row and is never overwritten by one.
        state.record_local_path(&info.store_path, &info.nar_hash, 792).unwrap();
        assert!(state.peer_path_by_nar_hash(&info.nar_hash).unwrap().is_none());
        state.record_peer_path(&info.store_path, &info.nar_hash, 792, &honest, text).unwrap();
        assert!(state.peer_path_by_nar_hash(&info.nar_hash).unwrap().is_none());
    }
}
