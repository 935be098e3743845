//! The one token bucket: per key (a peer id, a client address), refilled continuously at
//! `per_sec` up to `burst`. Two ways to spend, for two kinds of caller: [`Buckets::try_take`]
//! refuses when the tokens are not there (the tracker answers 429), [`Buckets::charge`] takes them
//! anyway and says how long to wait (bitswap paces a peer's wants; later wants queue behind).
//!
//! The map of buckets is bounded: when it is full, buckets idle long enough to be full again are
//! dropped (forgetting them loses nothing); if none is, [`Buckets::try_take`] refuses the new key,
//! so a flood of new keys cannot grow memory. Time is tokio's, so a test with a paused clock
//! controls it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

pub struct Buckets<K> {
    per_sec: f64,
    burst: f64,
    max_keys: usize,
    map: Mutex<HashMap<K, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(per_sec: f64, burst: f64, max_keys: usize) -> Self {
        Self { per_sec, burst, max_keys, map: Mutex::new(HashMap::new()) }
    }

    /// Takes `n` tokens from `key`'s bucket if it holds them; `false` (nothing taken) otherwise,
    /// or when the map is full of buckets in use.
    pub fn try_take(&self, key: &K, n: f64, now: Instant) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if !self.room_for(&mut map, key, now) {
            return false;
        }
        let bucket = self.refilled(&mut map, key, now);
        if bucket.tokens >= n {
            bucket.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens from `key`'s bucket, into debt if need be (later callers then wait behind
    /// this one), and returns how long the caller must wait before it goes on. A key is admitted
    /// even when the map is full (the caller's own limits bound its keys: connected peers).
    pub fn charge(&self, key: &K, n: f64, now: Instant) -> Duration {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        self.room_for(&mut map, key, now);
        let per_sec = self.per_sec;
        let bucket = self.refilled(&mut map, key, now);
        bucket.tokens -= n;
        if bucket.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-bucket.tokens / per_sec) }
    }

    /// Keys with a bucket now.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes room for a new key by forgetting idle buckets; false if there is still none.
    fn room_for(&self, map: &mut HashMap<K, Bucket>, key: &K, now: Instant) -> bool {
        if map.len() < self.max_keys || map.contains_key(key) {
            return true;
        }
        map.retain(|_, b| b.level(self.per_sec, self.burst, now) < self.burst);
        map.len() < self.max_keys
    }

    fn refilled<'m>(&self, map: &'m mut HashMap<K, Bucket>, key: &K, now: Instant) -> &'m mut Bucket {
        let bucket = map.entry(key.clone()).or_insert(Bucket { tokens: self.burst, at: now });
        bucket.tokens = bucket.level(self.per_sec, self.burst, now);
        bucket.at = now;
        bucket
    }
}

impl Bucket {
    fn level(&self, per_sec: f64, burst: f64, now: Instant) -> f64 {
        (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_sec).min(burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_a_bounded_map() {
        let rate = Buckets::new(1.0, 3.0, 2);
        let t = Instant::now();
        assert!((0..3).all(|_| rate.try_take(&"a", 1.0, t)));
        assert!(!rate.try_take(&"a", 1.0, t), "the burst is spent");
        assert!(rate.try_take(&"a", 1.0, t + Duration::from_millis(1000)), "one token a second");
        assert!(rate.try_take(&"b", 1.0, t));
        assert!(!rate.try_take(&"c", 1.0, t), "two keys at most while both are in use");
        assert!(rate.try_take(&"c", 1.0, t + Duration::from_secs(10)), "idle buckets make room");
    }

    #[test]
    fn a_charge_goes_into_debt_and_says_how_long_to_wait() {
        let rate = Buckets::new(100.0, 100.0, 10);
        let t = Instant::now();
        assert_eq!(rate.charge(&1, 100.0, t), Duration::ZERO, "the burst is free");
        assert_eq!(rate.charge(&1, 50.0, t), Duration::from_millis(500));
        assert_eq!(rate.charge(&1, 50.0, t), Duration::from_secs(1), "queued behind the first");
        assert_eq!(
            rate.charge(&1, 100.0, t + Duration::from_secs(1)),
            Duration::from_secs(1),
            "the debt was paid back"
        );
    }
}
