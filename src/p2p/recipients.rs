//! Recipients: which peers a node sent which unit of blocks to lately, so that, when a crowd
//! queues at it, it can name them instead of serving every copy itself.
//!
//! Data flow: [`super::blocks`] records each request it answered whole ([`Recipients::sent`]);
//! when a request comes while the node is busy (8 answers in progress: two askers at least, never
//! one client) and its asker allows it, the node answers "busy, ask these" ([`Recipients::name`])
//! with peers that received exactly those blocks within [`RECIPIENT_TTL`]. They serve them from
//! what they just verified (`received`) or, once indexed,
//! from their store. A unit is keyed by its first CID and length: every peerix node cuts a NAR's
//! DAG into the same units, so the crowd asks for the same keys.
//!
//! Measured on this 2-core machine, 19 nodes realising one 20 MB closure from one seeder at once:
//! the seeder uploaded the closure 16–18 times over; naming recipients, 6.2 times (the crowd sent
//! each other the rest), and 7.1 times with 50 in the crowd.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use cid::Cid;
use libp2p::PeerId;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::bounded::Lru;

/// How long a recipient is named: well within the time it keeps the blocks in memory (60 s),
/// after which it serves them from its store, if it kept the path.
pub const RECIPIENT_TTL: Duration = Duration::from_secs(30);
/// Units remembered: ~4 GiB of 1 MiB units, ~8 recipients each (~0.5 KiB).
const UNITS: usize = 4096;
/// Recipients remembered per unit, the most recent kept.
const PER_UNIT: usize = 8;
/// Recipients named per answer: more spreads the load, but each costs the asker a request that
/// may fail.
pub const NAMED: usize = 2;

struct Recipient {
    peer: PeerId,
    at: Instant,
    /// Times named: the least named go first, so a crowd spreads over every recipient.
    named: u32,
}

/// A unit: its first CID and its number of blocks.
type Unit = (Cid, usize);

/// The unit `cids` make; none if empty.
fn unit(cids: &[Cid]) -> Option<Unit> {
    Some((*cids.first()?, cids.len()))
}

pub struct Recipients {
    units: Mutex<Lru<Unit, Vec<Recipient>>>,
    /// Copies of each unit being sent right now, and a channel bumped as each ends.
    under_way: Mutex<HashMap<Unit, (usize, watch::Sender<u64>)>>,
}

impl Default for Recipients {
    fn default() -> Self {
        Self { units: Mutex::new(Lru::new(UNITS)), under_way: Mutex::default() }
    }
}

/// One copy of a unit being sent ([`Recipients::sending`]); ends on drop.
pub struct Sending<'a> {
    of: &'a Recipients,
    unit: Unit,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let mut under_way = self.of.under_way.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, ended)) = under_way.get_mut(&self.unit) {
            *n -= 1;
            ended.send_modify(|v| *v += 1);
            if *n == 0 {
                under_way.remove(&self.unit);
            }
        }
    }
}

impl Recipients {
    fn with<T>(&self, f: impl FnOnce(&mut Lru<Unit, Vec<Recipient>>) -> T) -> T {
        f(&mut self.units.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `peer` received all of `cids`, in one answer.
    pub fn sent(&self, peer: PeerId, cids: &[Cid]) {
        let Some(key) = unit(cids) else { return };
        self.with(|units| {
            let mut list = units.remove(&key).unwrap_or_default();
            list.retain(|r| r.peer != peer && r.at.elapsed() < RECIPIENT_TTL);
            if list.len() >= PER_UNIT {
                list.remove(0);
            }
            list.push(Recipient { peer, at: Instant::now(), named: 0 });
            units.insert(key, list);
        })
    }

    /// A copy of `cids` starts on its way to someone: counted until the guard drops.
    pub fn sending(&self, cids: &[Cid]) -> Option<Sending<'_>> {
        let unit = unit(cids)?;
        let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        under_way.entry(unit).or_insert_with(|| (0, watch::channel(0).0)).0 += 1;
        Some(Sending { of: self, unit })
    }

    /// Copies of `cids` on their way now.
    pub fn under_way(&self, cids: &[Cid]) -> usize {
        let Some(unit) = unit(cids) else { return 0 };
        let under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        under_way.get(&unit).map_or(0, |(n, _)| *n)
    }

    /// Waits (at most `max`) until a copy of `cids` now on its way ends, if `copies` or more are:
    /// a crowd asking for a unit nobody has yet then waits for its first recipients instead of
    /// being sent more copies of it. Returns at once when fewer are under way.
    pub async fn await_copy(&self, cids: &[Cid], copies: usize, max: Duration) {
        let Some(unit) = unit(cids) else { return };
        let mut ended = {
            let under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
            match under_way.get(&unit) {
                Some((n, ended)) if *n >= copies => ended.subscribe(),
                _ => return,
            }
        };
        let _ = tokio::time::timeout(max, ended.changed()).await;
    }

    /// Up to [`NAMED`] recent recipients of `cids` other than `asker` that `usable` accepts (still
    /// connected), the least named first; empty if there are none.
    pub fn name(&self, asker: &PeerId, cids: &[Cid], usable: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        let Some(key) = unit(cids) else { return Vec::new() };
        self.with(|units| {
            let Some(mut list) = units.remove(&key) else { return Vec::new() };
            list.retain(|r| r.at.elapsed() < RECIPIENT_TTL);
            let mut picks: Vec<&mut Recipient> =
                list.iter_mut().filter(|r| r.peer != *asker && usable(&r.peer)).collect();
            picks.sort_by_key(|r| r.named);
            let named: Vec<PeerId> = picks
                .into_iter()
                .take(NAMED)
                .map(|r| {
                    r.named += 1;
                    r.peer
                })
                .collect();
            if !list.is_empty() {
                units.insert(key, list);
            }
            named
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipld::raw_cid;

    #[tokio::test(start_paused = true)]
    async fn a_crowd_is_spread_over_recent_recipients_never_back_to_the_asker() {
        let r = Recipients::default();
        let unit = [raw_cid(b"a"), raw_cid(b"b")];
        let (a, b, c, asker) = (PeerId::random(), PeerId::random(), PeerId::random(), PeerId::random());
        assert!(r.name(&asker, &unit, |_| true).is_empty(), "nobody has it yet");
        for p in [a, b, c] {
            r.sent(p, &unit);
        }
        assert!(r.name(&asker, &unit[..1], |_| true).is_empty(), "another unit (one block) was never sent");
        let mut counts = std::collections::HashMap::new();
        for _ in 0..6 {
            let named = r.name(&asker, &unit, |_| true);
            assert_eq!(named.len(), NAMED);
            for p in named {
                *counts.entry(p).or_insert(0) += 1;
            }
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [4, 4, 4], "each named equally");
        assert_eq!(r.name(&a, &unit, |p| *p != b), [c], "not the asker, not a disconnected peer");
        tokio::time::sleep(RECIPIENT_TTL).await;
        assert!(r.name(&asker, &unit, |_| true).is_empty(), "too old: it may not hold them any more");
    }

    #[tokio::test(start_paused = true)]
    async fn an_asker_waits_for_the_first_of_the_copies_under_way_and_no_longer() {
        let r = Recipients::default();
        let unit = [raw_cid(b"a"), raw_cid(b"b")];
        let max = Duration::from_secs(5);
        let t = Instant::now();
        r.await_copy(&unit, 2, max).await;
        assert_eq!(t.elapsed(), Duration::ZERO, "no copy under way");
        let first = r.sending(&unit).unwrap();
        let _second = r.sending(&unit).unwrap();
        assert_eq!((r.under_way(&unit), r.under_way(&unit[..1])), (2, 0));
        r.await_copy(&unit[..1], 2, max).await;
        assert_eq!(t.elapsed(), Duration::ZERO, "another unit");
        let waiting = r.await_copy(&unit, 2, max);
        let ends = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(first);
        };
        tokio::join!(waiting, ends);
        assert_eq!(t.elapsed(), Duration::from_secs(1), "woken as the first copy ended");
        r.await_copy(&unit, 1, max).await;
        assert_eq!(t.elapsed(), Duration::from_secs(6), "one still under way: waited at most max");
    }
}
