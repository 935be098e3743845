//! Rates the tracker allows per key (a peer id, a client address): a token bucket each, refilled
//! continuously. The map of buckets is bounded: when it is full, buckets idle long enough to be
//! full again are dropped (forgetting them loses nothing), and if none is, the key is refused, so
//! a flood of new keys cannot grow memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

pub struct Rate<K> {
    per_sec: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> Rate<K> {
    pub fn new(per_sec: f64, burst: f64, max_keys: usize) -> Self {
        Self { per_sec, burst, max_keys, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`; false when it has none left.
    pub fn allow(&self, key: &K) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &K, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else { return false };
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            let refill = self.burst / self.per_sec;
            buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < refill);
            if buckets.len() >= self.max_keys {
                return false;
            }
        }
        let (tokens, at) = buckets.entry(key.clone()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_sec).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_and_a_bounded_map() {
        let rate = Rate::new(1.0, 3.0, 2);
        let t = Instant::now();
        assert!((0..3).all(|_| rate.allow_at(&"a", t)));
        assert!(!rate.allow_at(&"a", t), "the burst is spent");
        assert!(rate.allow_at(&"a", t + Duration::from_millis(1000)), "one token a second");
        assert!(rate.allow_at(&"b", t));
        assert!(!rate.allow_at(&"c", t), "two keys at most while both are in use");
        assert!(rate.allow_at(&"c", t + Duration::from_secs(10)), "idle buckets make room");
    }
}
