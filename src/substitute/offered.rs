//! Narinfos a peer sent along with a trusted answer: the rest of the path's closure
//! ([`crate::p2p::narinfo`]), kept until nix asks for them — it asks a closure's narinfos level by
//! level, right after the top's — and judged then like any answer ([`super::lookup`]). Nothing
//! here is trusted or served before that: an offer saves the question, not the checks. Bounded by
//! entries ([`MAX_OFFERS`]) and age ([`CLOSURE_OFFER_AGE`]); each is used once.

use std::sync::Mutex;
use std::time::Instant;

use libp2p::PeerId;

use crate::bounded::Lru;
use crate::nix::store_path::StoreHash;
use crate::p2p::narinfo::Answer;
use crate::timeouts::CLOSURE_OFFER_AGE;

/// Offers kept (~1 KiB each): a few closures of [`crate::p2p::narinfo::CLOSURE_PATHS`].
const MAX_OFFERS: usize = 4096;

struct Offer {
    peer: PeerId,
    answer: Answer,
    at: Instant,
}

pub struct Offered {
    offers: Mutex<Lru<StoreHash, Offer>>,
}

impl Default for Offered {
    fn default() -> Self {
        Self { offers: Mutex::new(Lru::new(MAX_OFFERS)) }
    }
}

impl Offered {
    fn with<T>(&self, f: impl FnOnce(&mut Lru<StoreHash, Offer>) -> T) -> T {
        let mut offers = self.offers.lock().unwrap_or_else(|e| e.into_inner());
        offers.evict_while(|o| o.at.elapsed() > CLOSURE_OFFER_AGE);
        f(&mut offers)
    }

    /// Keeps what `peer` sent of a closure, newest over older offers for the same path.
    pub fn keep(&self, peer: PeerId, closure: Vec<(StoreHash, Answer)>) {
        let at = Instant::now();
        self.with(|offers| {
            for (hash, answer) in closure {
                offers.insert(hash, Offer { peer, answer, at });
            }
        })
    }

    /// The offer for `hash`, if one is still fresh; it is gone from here either way.
    pub fn take(&self, hash: &StoreHash) -> Option<(PeerId, Answer)> {
        self.with(|offers| offers.remove(hash)).map(|o| (o.peer, o.answer))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.with(|offers| offers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_is_taken_once() {
        let offered = Offered::default();
        let hash = StoreHash::parse("qxkmhhvi8i3pc831vvw023h4mhzpfflr").unwrap();
        let answer =
            Answer { narinfo: "x".into(), root: crate::ipld::raw_cid(b"a"), root_node: None, closure: Vec::new() };
        let peer = PeerId::random();
        offered.keep(peer, vec![(hash, answer)]);
        assert_eq!(offered.len(), 1);
        assert_eq!(offered.take(&hash).map(|(p, _)| p), Some(peer));
        assert!(offered.take(&hash).is_none());
    }
}
