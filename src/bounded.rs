//! The one bounded cache type: [`Lru`], least recently used out first, bounded by entries and,
//! when its values have a weight (bytes), by their total. Every in-memory cache of the daemon is
//! one (rendered narinfos, verified signatures, chunk locations, NAR layouts, accepted narinfos,
//! arrival DAGs), so "how much memory can this take" has one answer per cache, at its definition.
//!
//! Exact LRU over hashlink's ordered map (rusqlite's dependency already): O(1) per operation,
//! no background work, deterministic — what is evicted is what a test can predict. A cache that
//! is only written and taken from (never [`Lru::get`]) is a FIFO.

use std::borrow::Borrow;
use std::hash::Hash;

use hashlink::LruCache;

pub struct Lru<K: Hash + Eq, V> {
    map: LruCache<K, V>,
    max_entries: usize,
    max_weight: usize,
    weight: fn(&V) -> usize,
    total: usize,
}

fn no_weight<V>(_: &V) -> usize {
    0
}

impl<K: Hash + Eq, V> Lru<K, V> {
    /// At most `max_entries` entries.
    pub fn new(max_entries: usize) -> Self {
        Self::weighted(max_entries, usize::MAX, no_weight)
    }

    /// At most `max_entries` entries whose `weight`s add up to at most `max_weight`.
    pub fn weighted(max_entries: usize, max_weight: usize, weight: fn(&V) -> usize) -> Self {
        Self { map: LruCache::new_unbounded(), max_entries: max_entries.max(1), max_weight, weight, total: 0 }
    }

    /// The value, now the most recently used.
    pub fn get<Q: Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.map.get(k)
    }

    /// The value, its place unchanged.
    pub fn peek<Q: Hash + Eq + ?Sized>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.map.peek(k)
    }

    /// Keeps `v` as the most recently used and evicts down to the bounds; returns how many entries
    /// were evicted. A value heavier than the whole bound is not kept (and counts as evicted).
    pub fn insert(&mut self, k: K, v: V) -> usize {
        let w = (self.weight)(&v);
        self.remove(&k);
        if w > self.max_weight {
            return 1;
        }
        self.total += w;
        self.map.insert(k, v);
        let mut evicted = 0;
        while self.map.len() > self.max_entries || self.total > self.max_weight {
            let Some((_, old)) = self.map.remove_lru() else { break };
            self.total -= (self.weight)(&old);
            evicted += 1;
        }
        evicted
    }

    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let v = self.map.remove(k)?;
        self.total -= (self.weight)(&v);
        Some(v)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let (weight, mut dropped) = (self.weight, 0);
        self.map.retain(|k, v| {
            let kept = keep(k, v);
            if !kept {
                dropped += weight(v);
            }
            kept
        });
        self.total -= dropped;
    }

    /// Evicts least recently used entries while `stale` says so of the oldest; returns how many.
    /// (With [`Lru::peek`] only, the oldest is the first inserted: an age bound costs O(evicted).)
    pub fn evict_while(&mut self, mut stale: impl FnMut(&V) -> bool) -> usize {
        let mut evicted = 0;
        while self.map.iter().next().is_some_and(|(_, v)| stale(v)) {
            let Some((_, old)) = self.map.remove_lru() else { break };
            self.total -= (self.weight)(&old);
            evicted += 1;
        }
        evicted
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.total = 0;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The total weight held.
    pub fn weight(&self) -> usize {
        self.total
    }

    /// Keys, least recently used first.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.map.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used_by_count_and_by_weight() {
        let mut lru = Lru::new(3);
        for k in 1..=3 {
            assert_eq!(lru.insert(k, ()), 0);
        }
        lru.get(&1);
        assert_eq!(lru.insert(4, ()), 1);
        assert_eq!(lru.keys().copied().collect::<Vec<_>>(), [3, 1, 4], "2 was the least recently used");

        let mut lru = Lru::weighted(10, 100, |v: &usize| *v);
        lru.insert("a", 40);
        lru.insert("b", 40);
        assert_eq!(lru.insert("c", 40), 1, "a goes: 120 > 100");
        assert_eq!((lru.len(), lru.weight()), (2, 80));
        assert_eq!(lru.insert("huge", 101), 1, "heavier than the bound: not kept");
        assert!(lru.peek("huge").is_none() && lru.weight() == 80);
        lru.insert("b", 10);
        assert_eq!(lru.weight(), 50, "a replaced value's weight is taken back");
        lru.retain(|k, _| *k != "c");
        assert_eq!((lru.len(), lru.weight()), (1, 10));
        lru.insert("d", 20);
        lru.insert("e", 30);
        assert_eq!(lru.evict_while(|v| *v < 25), 2, "b and d, oldest first; e stops it");
        assert_eq!((lru.len(), lru.weight()), (1, 30));
        lru.clear();
        assert_eq!((lru.len(), lru.weight()), (0, 0));
    }
}
