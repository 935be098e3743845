//! How many HTTP connections the daemon holds: a cap for the process, sized from its open-file
//! limit, and a smaller one per client address for clients that are not on this machine.
//!
//! Each connection is a socket, a task and a read buffer (~11 KiB in all, measured with 5 000
//! keep-alive connections in `tests/http_load.rs`); at the process cap the oldest connection that
//! waits for a request is closed to make room ([`Open`]), and a remote client over its own cap gets
//! a one-line 429 and a closed socket, so no client can hold every slot and a slow or hostile one
//! costs a buffer, never a thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tracing::{info, warn};

/// Connections at most, whatever the file limit allows.
const MAX_CONNECTIONS: usize = 8192;
/// File descriptors kept for everything but HTTP connections: SQLite, store files being read,
/// libp2p connections (the swarm caps those at 1 024), the listen sockets.
const RESERVED_FDS: u64 = 2048;
/// Open connections one remote address may hold. Loopback clients are this machine's `nix`
/// processes (every one of them is 127.0.0.1) and are bounded by the process cap only; a LAN
/// client opens ~25 at once for a closure's narinfos (nix-client-here.md §6).
pub const PER_REMOTE_CLIENT: usize = 256;

/// Raises the soft open-file limit to the hard one, as nginx's `worker_rlimit_nofile` and Go's
/// runtime do: systemd starts services with a soft limit of 1 024, which 1 000 connections and
/// a few NARs being read would exhaust (EMFILE). Returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let soft = current.unwrap_or(u64::MAX);
    // RLIM_INFINITY is not a valid NOFILE soft limit; the kernel caps it at fs.nr_open (2^20).
    let target = maximum.unwrap_or(1 << 20).min(1 << 20);
    if soft >= target {
        return soft;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum }) {
        Ok(()) => {
            info!(from = soft, to = target, "raised the open-file limit");
            target
        }
        Err(e) => {
            warn!(limit = soft, cause = %e, "cannot raise the open-file limit");
            soft
        }
    }
}

/// The connection cap for a process with `fd_limit` open files.
pub fn cap_for(fd_limit: u64) -> usize {
    (fd_limit.saturating_sub(RESERVED_FDS).max(64) as usize).min(MAX_CONNECTIONS)
}

/// Units held per client address — open connections, request-body bytes — each a count under a
/// cap; a [`Share`] gives its units back when dropped. The one counter behind [`Clients`] and
/// [`BodyBudget`].
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// Units one holder took from its address's count.
pub struct Share {
    of: PerAddress,
    ip: IpAddr,
    units: usize,
}

impl PerAddress {
    fn share(&self, ip: IpAddr) -> Share {
        Share { of: self.clone(), ip, units: 0 }
    }

    /// Takes `units` more for `share` unless its address would then hold more than `cap`.
    fn take(&self, share: &mut Share, units: usize, cap: usize) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(share.ip).or_default();
        if units > cap.saturating_sub(*n) {
            if *n == 0 {
                map.remove(&share.ip);
            }
            return false;
        }
        *n += units;
        share.units += units;
        true
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        if self.units == 0 {
            return;
        }
        let mut map = self.of.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(self.units);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Open connections per remote client address.
#[derive(Clone, Default)]
pub struct Clients(PerAddress);

/// One admitted connection; its client's count goes down when it is dropped.
pub type ClientSlot = Share;

impl Clients {
    /// Admits a connection from `ip` unless that client already holds `per_client` of them.
    /// Loopback clients are always admitted (and not counted).
    pub fn admit(&self, ip: IpAddr, per_client: usize) -> Option<Option<ClientSlot>> {
        if ip.is_loopback() {
            return Some(None);
        }
        let mut slot = self.0.share(ip);
        self.0.take(&mut slot, 1, per_client).then_some(Some(slot))
    }
}

/// Open connections in the order they were accepted, and which of them wait for a request: when
/// every slot is taken, the oldest waiting one is closed to admit the newcomer — nginx's
/// "reusable connections". So idle keep-alive sockets (8 300 of them from one local process
/// locked nix out) or heads that trickle in never keep a client that has a request to make out;
/// only connections being answered hold their slot.
#[derive(Clone, Default)]
pub struct Open(Arc<Mutex<OpenInner>>);

#[derive(Default)]
struct OpenInner {
    next: u64,
    conns: std::collections::BTreeMap<u64, (CancellationToken, Arc<AtomicBool>)>,
}

/// One open connection's entry; removed when dropped.
pub struct OpenSlot {
    open: Open,
    seq: u64,
    /// Cancelled when the connection is chosen to make room: it closes before its next request.
    pub evict: CancellationToken,
    /// True while the connection waits for (or reads) a request head.
    pub waiting: Arc<AtomicBool>,
}

impl Open {
    pub fn register(&self) -> OpenSlot {
        let mut o = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let seq = o.next;
        o.next += 1;
        let (evict, waiting) = (CancellationToken::new(), Arc::new(AtomicBool::new(true)));
        o.conns.insert(seq, (evict.clone(), waiting.clone()));
        OpenSlot { open: self.clone(), seq, evict, waiting }
    }

    /// Closes the oldest connection that waits for a request; false if every one is busy.
    pub fn evict_oldest_waiting(&self) -> bool {
        let o = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let found = o.conns.values().find(|(evict, waiting)| waiting.load(Ordering::Relaxed) && !evict.is_cancelled());
        found.map(|(evict, _)| evict.cancel()).is_some()
    }
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.open.0.lock().unwrap_or_else(|e| e.into_inner()).conns.remove(&self.seq);
    }
}

/// Request-body bytes held per client address (loopback included), across its connections: what
/// one address can make the server hold while it withholds the rest of the bodies it declared
/// (a stalled 8 MiB announcement pinned ~11 MiB on the tracker, ~2.8 GiB from one address).
#[derive(Clone)]
pub struct BodyBudget {
    held: PerAddress,
    per_client: usize,
}

/// Bytes reserved for one request's body; given back when dropped.
pub type Reserved = Share;

impl BodyBudget {
    pub fn new(per_client: usize) -> Self {
        Self { held: PerAddress::default(), per_client }
    }

    /// Reserves `bytes` more for `into`'s request; false (and nothing reserved) if the client
    /// would then hold more than its budget.
    pub fn reserve(&self, into: &mut Reserved, bytes: usize) -> bool {
        self.held.take(into, bytes, self.per_client)
    }

    /// An empty reservation for a request from `ip`.
    pub fn start(&self, ip: IpAddr) -> Reserved {
        self.held.share(ip)
    }
}

/// What a client over its cap reads before the socket closes.
pub const TOO_MANY: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 51\r\n\
Connection: close\r\n\r\ntoo many open connections from your address; retry\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_follows_the_file_limit() {
        assert_eq!(cap_for(1024), 64, "a tiny limit still serves");
        assert_eq!(cap_for(4096), 2048);
        assert_eq!(cap_for(1 << 20), MAX_CONNECTIONS);
    }

    #[test]
    fn a_remote_client_is_capped_and_loopback_is_not() {
        let clients = Clients::default();
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        let slots: Vec<_> = (0..3).map(|_| clients.admit(lan, 3).expect("under the cap")).collect();
        assert!(clients.admit(lan, 3).is_none(), "a fourth connection is refused");
        assert!(clients.admit("192.168.1.21".parse().unwrap(), 3).is_some(), "another client is not");
        for _ in 0..10 {
            assert!(matches!(clients.admit("127.0.0.1".parse().unwrap(), 3), Some(None)));
        }
        drop(slots);
        assert!(clients.admit(lan, 3).is_some(), "closing connections frees their slots");
        assert!(clients.0.0.lock().unwrap().len() <= 2, "entries go with their last connection");
    }

    #[test]
    fn the_oldest_waiting_connection_makes_room_and_busy_ones_keep_theirs() {
        let open = Open::default();
        let (a, b, c) = (open.register(), open.register(), open.register());
        a.waiting.store(false, Ordering::Relaxed);
        assert!(open.evict_oldest_waiting());
        assert!(!a.evict.is_cancelled() && b.evict.is_cancelled() && !c.evict.is_cancelled(), "b: oldest waiting");
        assert!(open.evict_oldest_waiting());
        assert!(c.evict.is_cancelled());
        assert!(!open.evict_oldest_waiting(), "a is busy: nothing left to close");
        drop((a, b, c));
        assert!(open.0.lock().unwrap().conns.is_empty());
    }

    #[test]
    fn one_address_holds_at_most_its_body_budget_and_gets_it_back() {
        let budget = BodyBudget::new(100);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (mut a, mut b) = (budget.start(ip), budget.start(ip));
        assert!(budget.reserve(&mut a, 60));
        assert!(!budget.reserve(&mut b, 50), "60 + 50 > 100");
        assert!(budget.reserve(&mut b, 40));
        assert!(budget.reserve(&mut budget.start("10.0.0.2".parse().unwrap()), 100), "others have their own");
        drop(a);
        assert!(budget.reserve(&mut b, 60), "a's 60 came back");
        drop(b);
        assert!(budget.held.0.lock().unwrap().is_empty());
    }

    #[test]
    fn the_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    }
}
