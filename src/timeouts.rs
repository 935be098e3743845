//! Every timeout, deadline, interval and retention of the daemon and the tracker, in one table:
//! each line says why it is what it is, so a change to one is weighed against its neighbours.
//! (Defaults an operator can change live in [`crate::config`]; thresholds that are not waits stay
//! with their code.)

use std::time::Duration;

// ── Our HTTP server, and how long a stop takes: SIGTERM ends a daemon within 5 s — the HTTP
//    grace, then the tasks', then blocking work's.

/// Time to read a request head once its first byte has arrived (and a new connection's first).
pub const HTTP_HEADER_READ: Duration = Duration::from_secs(30);
/// How long a kept-alive connection may sit idle between requests (nginx's `keepalive_timeout`).
pub const HTTP_KEEPALIVE_IDLE: Duration = Duration::from_secs(75);
/// A client that takes no byte of its response for this long is dropped (nginx's `send_timeout`):
/// a reader at 1 KiB/s makes progress every few seconds; one that stopped reading holds a
/// connection slot, and the socket's buffers, for a minute at most.
pub const HTTP_SEND: Duration = Duration::from_secs(60);
/// How long shutdown waits for in-flight responses (a NAR download) before dropping them.
pub const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long the other tasks get after the HTTP server's own grace period (SIGTERM ends a daemon
/// within 5 s: 3 s for responses in flight, this, then 1 s for blocking work).
pub const TASKS_GRACE: Duration = Duration::from_millis(500);
/// What blocking work may still take after a command is done (SIGTERM must end a daemon within 5 s,
/// of which the HTTP server's own grace period is the larger part).
pub const BLOCKING_GRACE: Duration = Duration::from_secs(1);
/// A refusal written before routing (a malformed request, a client over its cap) gets this long:
/// the client may not be reading, and the connection slot is what the refusal protects.
pub const HTTP_REFUSAL_WRITE: Duration = Duration::from_secs(5);
/// A client over its connection cap gets its one-line 503 within this, then the socket is closed.
pub const HTTP_TOO_MANY_WRITE: Duration = Duration::from_secs(1);
/// After a failed `accept` (EMFILE and friends), back off this long instead of spinning.
pub const HTTP_ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

// ── Requests to other machines ([`crate::remote`]).

/// A TCP connection to anything we ask: LAN or internet, 3 s is many round trips.
pub const HTTP_CONNECT: Duration = Duration::from_secs(3);
/// cache.nixos.org answers a narinfo in ~20–100 ms from most places; 5 s covers a slow link without
/// holding a narinfo request (and the local `nix` waiting on it) for long.
pub const UPSTREAM_REQUEST: Duration = Duration::from_secs(5);
/// One request at most: an announcement of 100 000 paths is ~4 MB.
pub const TRACKER_REQUEST: Duration = Duration::from_secs(30);
/// A one-shot command (`peerix status`, `peerix publish` beside a daemon) asking the local daemon:
/// its answer is a few KB from loopback, but a scan's progress may be slow to come.
pub const CLI_REQUEST: Duration = Duration::from_secs(30);

// ── Answering a narinfo: nix waits on every lookup of a closure.

/// A lookup's deadline at most, however slow the matching peers' links (the deadline grows with
/// their round trips: `substitute::lookup`). Nix waits on it for every path of a closure.
pub const MAX_LOOKUP_STRETCH: Duration = Duration::from_secs(3);
/// A narinfo a peer sent with its answer for a path's closure waits this long for nix to ask for
/// it (nix asks a closure's narinfos level by level, within a second of the top's; a dry run, then
/// the build, may be further apart).
pub const CLOSURE_OFFER_AGE: Duration = Duration::from_secs(60);
/// A narinfo answer a node gave is given again to the same question this long (a crowd asks at
/// once: `p2p::narinfo::Answers`); a path withdrawn meanwhile is named at most this much longer.
pub const NARINFO_ANSWER_REUSE: Duration = Duration::from_secs(1);
/// An unreachable upstream is asked again after this long (a flapping link should not turn every
/// narinfo request into a 5 s wait, nor keep a path private for an hour).
pub const UPSTREAM_UNREACHABLE_RETRY: Duration = Duration::from_secs(60);
/// A peer that opens a stream of our protocols and sends no request holds it at most this long; a
/// narinfo answer (a lookup in SQLite and ≤ 64 KiB written) that takes longer is abandoned with
/// its stream.
pub const PEER_REQUEST_WAIT: Duration = Duration::from_secs(5);

// ── Fetching a NAR's blocks: how long one source gets before another is asked. The same
//    decision at three grains: a bitswap want at one peer of `peerix fetch` (5 s), a unit of our
//    block protocol in flight (8 s: up to 1 MiB), one block request to a fallback or a bitswap
//    peer during a transfer (10 s: a block from the internet). A transfer nix waits on is bounded
//    first by FIRST_BYTES_WAIT and hedged after HEDGE_AFTER, so these only bound a slow source.

/// One bitswap or HTTP block request may take this long.
pub const BLOCK_REQUEST: Duration = Duration::from_secs(10);
/// A unit in flight this long marks its source as stalled (dropped, its units re-queued).
pub const UNIT_STALLED: Duration = Duration::from_secs(8);
/// The unit nix waits for is asked of a second source when it is this late (or 4× its source's
/// usual time, whichever is longer).
pub const HEDGE_AFTER: Duration = Duration::from_secs(1);
/// A peer that answered "busy, ask again shortly" is asked again after this (one driver tick):
/// 50 askers with 4 lanes each re-ask a busy seeder at most ~800 times a second, each a few
/// hundred bytes, answered without a disk read.
pub const DEFERRED_REST: Duration = Duration::from_millis(250);
/// Fallbacks join once the unit nix waits for is this late.
pub const FALLBACK_AFTER: Duration = Duration::from_secs(2);
/// With no source left for this long, the transfer fails.
pub const NO_SOURCE_WAIT: Duration = Duration::from_secs(5);
/// From a NAR request to its first bytes ready (DAG planned, first unit verified) at most: past
/// it nix gets a 404 and asks its next substituter. A live LAN or WAN peer delivers a first 1 MiB
/// unit in well under a second; a peer that vanished without a word is only closed by the ping
/// check after ~6 s, and nix should not wait that long on it unless it answered lately
/// ([`ANSWERING_WITHIN`]).
pub const FIRST_BYTES_WAIT: Duration = Duration::from_secs(3);
/// The first-byte deadline moves on by [`FIRST_BYTES_WAIT`] while the NAR's peers keep answering
/// other requests of ours (busy, not gone), up to this: nix 2.8 waits 300 s on a download that
/// sends nothing (`stalled-download-timeout`), and a crowd of 19 on one seeder of 20 MB took ~8 s.
pub const FIRST_BYTES_BUSY_MAX: Duration = Duration::from_secs(30);
/// A source that answered us (a block, "busy") within this, and is still connected, counts as
/// busy rather than gone at a first-byte deadline: with 51 nodes and 50 nix on 2 cores, one
/// seeder's answers to one asker came 3.2 s apart, and a 3 s window failed NARs that were
/// queued at a live seeder. A peer that vanished is closed by the ping check within ~6 s and
/// stops counting then, so it costs nix at most ~9 s before the 404.
pub const ANSWERING_WITHIN: Duration = Duration::from_secs(6);
/// One attempt to fetch DAG nodes from one source while planning (the whole plan is also bounded
/// by the transfer's first-byte deadline).
pub const PLAN_ATTEMPT: Duration = Duration::from_secs(3);
/// How long one peer gets to answer a want before the session asks elsewhere.
pub const BITSWAP_ATTEMPT: Duration = Duration::from_secs(5);
/// A block nobody delivers within this is a failure.
pub const BITSWAP_BLOCK_DEADLINE: Duration = Duration::from_secs(60);
/// A block nobody can be asked for (no connected peer but those that said DONT_HAVE, no DHT
/// provider) fails after this, rather than at [`BITSWAP_BLOCK_DEADLINE`]: `peerix fetch` of a CID nobody
/// has ends in seconds with "no provider". The wait lets a peer that is connecting right now
/// (an mDNS neighbour, a re-dial) join.
pub const BITSWAP_NO_PROVIDER_WAIT: Duration = Duration::from_secs(2);

// ── Serving our own protocols and bitswap to peers.

/// An answer (≤ 16 MiB) not taken by the asker within this long ends its stream: 16 MiB in 60 s is
/// ~2 Mbit/s, below any link peers substitute over.
pub const BLOCKS_ANSWER: Duration = Duration::from_secs(60);
/// One block (≤ 256 KiB) of an answer not taken by the asker within this long ends its stream:
/// 256 KiB in 10 s is ~200 kbit/s. A peer that asks and stops reading frees its slot after this.
pub const BLOCK_WRITE_STALL: Duration = Duration::from_secs(10);
/// An answer nobody waits for any more is still read for this long before its lane is given up.
pub const LANE_DRAIN: Duration = Duration::from_secs(2);
/// A lane with nothing to do for this long is closed by the asker.
pub const LANE_IDLE: Duration = Duration::from_secs(30);
/// The serving side closes a stream that brings no request for this long (longer than
/// [`LANE_IDLE`], so the asker, which knows, closes first).
pub const LANE_SERVE_IDLE: Duration = Duration::from_secs(45);
/// How long a response waits for room in a full queue before it is dropped.
pub const BITSWAP_RESPONSE_WAIT: Duration = Duration::from_secs(10);
/// A writer with nothing to send for this long closes its stream and exits.
pub const BITSWAP_OUTBOX_IDLE: Duration = Duration::from_secs(60);

// ── Connections, liveness and back-off.

/// A connection's transport handshake (TCP + noise + yamux, or QUIC) at most: a LAN or WAN peer
/// needs a few round trips; an idle socket holds its pending slot no longer than this (libp2p's
/// default is 10 s).
pub const P2P_HANDSHAKE: Duration = Duration::from_secs(5);
/// A connection with no stream open for this long is closed (libp2p's default is 0: a peer we
/// only asked a narinfo of would be re-dialled for its NAR a moment later). Not shorter: a fleet's
/// DHT walks (each node refreshed its routing tables every 5 min then) ask most peers again within
/// a minute, and a new connection costs ~6-8 KB on the wire (handshakes, identify, a FIND_NODE)
/// where an idle one costs ~176 B/s with a heartbeat, far less without: at 10 s a fleet of 100
/// re-dialled ~1.2 times a second per node and its control traffic rose to 7.3 KB/s a node.
pub const P2P_CONNECTION_IDLE: Duration = Duration::from_secs(60);
/// The tracker's node keeps idle connections longer: NAT'd peers hold a relay reservation on it.
pub const TRACKER_NODE_IDLE: Duration = Duration::from_secs(120);
/// Liveness (`p2p::liveness`): between two peerix nodes one heartbeat every 2 s
/// (`p2p::heartbeat`), so a connection that stops answering is closed within ~6 s, not after the
/// minutes a TCP timeout takes (ARCHITECTURE §4, "never worse than no peerix"); daemons beat the
/// tracker's node as often. ~170 bytes/s on the wire per connection (one exchange; libp2p's ping
/// at this rate from both ends was ~340), on the connections of peers we watch only.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A peer that named a root of a narinfo we accepted is watched (heartbeats) this long after: nix
/// asks for the NAR within seconds of its narinfo, and a closure of hundreds of paths is done in
/// a minute or two; after that, nix holds the narinfo and asks only for NARs, which a peer gone
/// unnoticed answers with a quick 404 anyway (no live source).
pub const WATCH_NAMED_FOR: Duration = Duration::from_secs(600);
/// libp2p's ping on a daemon's connections: it judges only peers that do not beat (IPFS nodes,
/// peerix before the heartbeat), and measures the round trip of the others now and then.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// A ping unanswered this long is a failure (a WAN round trip is ~0.3 s; a queued ping on a busy
/// link may wait behind a block or two).
pub const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// A connection silent this long is closed: two missed beats and a second of slack for one
/// queued behind bulk data on a busy link.
pub const SILENT_AFTER: Duration = Duration::from_secs(2 * HEARTBEAT_EVERY.as_secs() + 1);
/// The same for a peer that does not beat, judged by libp2p's pings.
pub const PING_SILENT_AFTER: Duration = Duration::from_secs(2 * PING_INTERVAL.as_secs() + 1);
/// A kept peer (`--peer`, mDNS) that cannot be reached is dialled again after this, doubling.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait after failures: re-dialling a kept peer, re-announcing to a tracker.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest wait before the presence stream to the tracker's node is reopened (`p2p::presence`):
/// shorter than [`MAX_BACKOFF`] because while we are not connected the tracker leaves our paths
/// out of its answers, and a tracker that judged us gone by mistake (both starved of CPU) must
/// see us back within seconds; one dial every few seconds to one host costs nothing.
pub const PRESENCE_MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Opening the presence stream (a dial, when not connected, and a protocol negotiation) that has
/// not succeeded by then is given up and tried again: libp2p-stream leaves the open pending while
/// a dial it asked for is not made (another dial to the tracker in flight: `DialPeerConditionFalse`,
/// which it does not report); a fleet of 50 daemons timed out 229 such opens in one run.
pub const PRESENCE_OPEN: Duration = Duration::from_secs(10);
/// How long a relayed connection stays open after a hole punch: a request that was on it when the
/// direct connection came (a narinfo lookup, ~1 ms on a LAN, a WAN round trip or two) finishes.
pub const RELAY_GRACE: Duration = Duration::from_secs(3);
/// How long a peer dropped for misbehaving (a bitswap flood, malformed messages) stays refused:
/// reconnecting at once would let it start over (libp2p-stream re-dials by itself).
pub const BAN: Duration = Duration::from_secs(600);
/// How often each DHT walks its routing table again (one FIND_NODE walk per bucket). kubo does
/// every 10 min; libp2p's default, 5 min, made a fleet of 100 (two DHTs each) open ~40
/// connections a minute per node at rest, most of its control traffic.
pub const DHT_REFRESH_EVERY: Duration = Duration::from_secs(600);
/// A DHT query (providers, bootstrap) that has not answered by then answers "none".
pub const KAD_QUERY: Duration = Duration::from_secs(30);

// ── Telling others what we have.

/// Changes are sent at most this often (a scan that publishes 10 000 paths is one message).
pub const SUMMARY_SEND_EVERY: Duration = Duration::from_secs(1);
/// Provider records live 48 h on other nodes; announce again well before (kubo uses 22 h).
pub const REPROVIDE_AFTER: Duration = Duration::from_secs(22 * 3600);
/// How often the state DB is asked for due paths while nothing else is queued.
pub const REPROVIDE_SCAN_EVERY: Duration = Duration::from_secs(60);
/// How often pending changes go out (and the announcer looks at the time).
pub const TRACKER_TICK: Duration = Duration::from_secs(2);
/// A heartbeat to the tracker at least this often; sooner when its TTL asks (a third of it,
/// 5 s to 2 min), so a record never expires while we live.
pub const TRACKER_HEARTBEAT: Duration = Duration::from_secs(60);
/// How often expired records are deleted (lookups already skip them).
pub const TRACKER_SWEEP_EVERY: Duration = Duration::from_secs(30);

// ── How long we remember.

/// A peer that sent a wrong narinfo or wrong blocks is asked last for this long.
pub const DISHONEST_PENALTY: Duration = Duration::from_secs(3600);
/// How long a narinfo accepted from a peer is remembered after its last acceptance: nix keeps a
/// positive narinfo 30 days (`narinfo-cache-positive-ttl`) and may ask for its NAR until then.
pub const PEER_PATH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

// ── Local work: databases, the indexer, the store.

/// Every SQLite connection (Nix's DB, ours, the tracker's) waits this long for a lock: Nix holds its
/// write lock for the length of one transaction; readers in WAL mode are not blocked, but a
/// rollback-journal DB can be locked for a moment, and our writers take turns.
pub const SQLITE_BUSY: Duration = Duration::from_secs(5);
/// How often the indexer looks for a changed Nix DB (two `stat`s; a scan only when it changed).
/// It is most of the time a path a node gains takes to reach the others: at 5 s that was 4–9 s in
/// a fleet of 50–100 (the goal is 5 s); at 1 s, ≤ 1.5 s in a fleet of 20.
pub const STORE_POLL: Duration = Duration::from_secs(1);
/// The poll's interval at most, when scans of a big Nix DB are slow (see `cli::serve`).
pub const STORE_POLL_MAX: Duration = Duration::from_secs(5);
/// Progress is written to SQLite at most this often (and at the end).
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often a scan reports the bytes read within the paths it is chunking (to `publish`'s bar;
/// the state DB still gets at most one write per [`PROGRESS_EVERY`]).
pub const PROGRESS_TICK: Duration = Duration::from_millis(250);
/// How often a paused chunking job (on a blocking thread) looks whether it may go on.
pub const PAUSE_POLL: Duration = Duration::from_millis(100);
/// A daemon whose configuration names peers (`--peer`, a tracker, bootstrap peers) and has none
/// connected this long after its start is degraded: dials take a few seconds, a tracker's first
/// answer a tick (2 s).
pub const NO_PEERS_GRACE: Duration = Duration::from_secs(30);

// ── Retries (counts, not waits, but the same trade-off).

/// A narinfo request dropped unanswered (its lane ended) is sent again this many times: a lookup
/// has 250 ms, and a third attempt would not fit.
pub const NARINFO_RETRIES: usize = 2;
/// A block request dropped unanswered is sent again this many times: a transfer has seconds, and
/// a unit re-asked on a fresh lane is cheaper than a failed source.
pub const BLOCK_RETRIES: usize = 3;
