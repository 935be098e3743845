//! The flags of `peerix serve` as clap parses them (with their `PEERIX_*` environment variables):
//! every field optional, so "not given" can be told from a default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Flags of `peerix serve`. Every one can also be set by its `PEERIX_*` variable or the config file.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file; keys are the long flag names (`listen`, `trusted-public-keys`, …).
    #[arg(long, env = "PEERIX_CONFIG", value_name = "FILE", help_heading = "Basics")]
    pub config: Option<PathBuf>,

    /// Address of the binary-cache HTTP server [default: 127.0.0.1:12304]. Port 0 picks a free port
    /// (the chosen address is logged as "listening on http://…").
    #[arg(long, env = "PEERIX_LISTEN", value_name = "ADDR", help_heading = "Basics")]
    pub listen: Option<SocketAddr>,

    /// Directory for peerix's SQLite state [default: /var/lib/peerix as root, else
    /// $XDG_STATE_HOME/peerix or ~/.local/state/peerix].
    #[arg(long, env = "PEERIX_STATE_DIR", value_name = "DIR", help_heading = "Basics")]
    pub state_dir: Option<PathBuf>,

    /// Root of the Nix store to serve [default: /]: files under DIR/nix/store, Nix's database at
    /// DIR/nix/var/nix/db/db.sqlite (the layout of `nix --store DIR`). Paths are still named /nix/store/….
    #[arg(long, env = "PEERIX_STORE_ROOT", value_name = "DIR", help_heading = "Basics")]
    pub store_root: Option<PathBuf>,

    /// `Priority` in nix-cache-info; lower is preferred, cache.nixos.org is 40 [default: 30].
    #[arg(long, env = "PEERIX_PRIORITY", help_heading = "Basics", hide_short_help = true)]
    pub priority: Option<u32>,

    /// A key (name:base64) whose signatures make a local path shareable; repeatable
    /// [default: cache.nixos.org-1's key]. Giving any replaces the default.
    #[arg(
        long = "trusted-public-key",
        env = "PEERIX_TRUSTED_PUBLIC_KEYS",
        value_delimiter = ' ',
        value_name = "KEY",
        help_heading = "What is shared"
    )]
    pub trusted_public_keys: Vec<String>,

    /// Binary cache asked whether it has a local path with the same NarHash (then it is shareable),
    /// or "none" [default: https://cache.nixos.org].
    #[arg(long, env = "PEERIX_UPSTREAM", value_name = "URL", help_heading = "What is shared")]
    pub upstream: Option<String>,

    /// Seconds before asking upstream again about a path it did not have [default: 3600].
    #[arg(
        long,
        env = "PEERIX_UPSTREAM_NEGATIVE_TTL",
        value_name = "SECS",
        help_heading = "What is shared",
        hide_short_help = true
    )]
    pub upstream_negative_ttl: Option<u64>,

    /// Serve every valid local path, signed or not. Exposes private builds: use only on a trusted network.
    #[arg(long, env = "PEERIX_SERVE_PRIVATE", help_heading = "What is shared")]
    pub serve_private: bool,

    /// Secret key (Nix's name:base64 format, e.g. from `peerix keygen`) to add our signature to every
    /// narinfo, next to the signatures Nix's DB holds.
    #[arg(long, env = "PEERIX_PRIVATE_KEY_FILE", value_name = "FILE", help_heading = "What is shared")]
    pub private_key_file: Option<PathBuf>,

    /// Store paths chunked at once by the background indexer; each uses one core while it runs
    /// [default: 1, so a first scan of a big store leaves the machine usable].
    #[arg(
        long,
        env = "PEERIX_INDEX_JOBS",
        value_name = "N",
        help_heading = "Indexing and memory",
        hide_short_help = true
    )]
    pub index_jobs: Option<usize>,

    /// Read rate cap of the indexer in bytes per second, e.g. 100M, or 0 for none [default for
    /// `serve`: 256M, so background indexing leaves the disk to the user; for `publish`: none].
    #[arg(
        long,
        env = "PEERIX_INDEX_RATE",
        value_name = "BYTES",
        help_heading = "Indexing and memory",
        hide_short_help = true
    )]
    pub index_rate: Option<String>,

    /// Cap on blocks kept from peers and fallbacks, e.g. 10G [default: 10G]. Local paths are never
    /// copied and do not count.
    #[arg(
        long,
        env = "PEERIX_CACHE_SIZE",
        value_name = "BYTES",
        help_heading = "Indexing and memory",
        hide_short_help = true
    )]
    pub cache_size: Option<String>,

    /// Address for the IPFS node to listen on; repeatable [default: /ip4/0.0.0.0/tcp/12306 and
    /// /ip4/0.0.0.0/udp/12306/quic-v1].
    #[arg(
        long = "p2p-listen",
        env = "PEERIX_P2P_LISTEN",
        value_delimiter = ' ',
        value_name = "MULTIADDR",
        help_heading = "Peers",
        hide_short_help = true
    )]
    pub p2p_listen: Vec<String>,

    /// Peer to join the DHT through (/…/p2p/<id>); repeatable. The public IPFS bootstrap peers are
    /// used only when none is given; `none` means no bootstrap at all.
    #[arg(long, env = "PEERIX_BOOTSTRAP", value_delimiter = ' ', value_name = "MULTIADDR", help_heading = "Peers")]
    pub bootstrap: Vec<String>,

    /// `ipfs`: Kademlia DHT + mDNS; `lan`: mDNS only, nothing leaves the local network [default: ipfs].
    #[arg(long, env = "PEERIX_MODE", value_enum, help_heading = "Peers")]
    pub mode: Option<crate::p2p::Mode>,

    /// Do not look for peers with mDNS (multicast on every interface).
    #[arg(long, env = "PEERIX_NO_MDNS", help_heading = "Peers", hide_short_help = true)]
    pub no_mdns: bool,

    /// An address other peers can reach us at (announced in provider records); repeatable.
    #[arg(
        long = "external-address",
        env = "PEERIX_EXTERNAL_ADDRESSES",
        value_delimiter = ' ',
        value_name = "MULTIADDR",
        help_heading = "Networking (advanced)",
        hide_short_help = true
    )]
    pub external_addresses: Vec<String>,

    /// Act as a DHT server from the start and announce our listen addresses as reachable, as kubo's
    /// `dhtserver` routing does. For LANs and labs where no peer can confirm our address (AutoNAT).
    #[arg(long, env = "PEERIX_DHT_SERVER", help_heading = "Networking (advanced)", hide_short_help = true)]
    pub dht_server: bool,

    /// Published paths announced to the DHT per second at most (each is a DHT walk) [default: 10].
    #[arg(
        long,
        env = "PEERIX_PROVIDE_RATE",
        value_name = "N",
        help_heading = "Networking (advanced)",
        hide_short_help = true
    )]
    pub provide_rate: Option<u32>,

    /// Run no IPFS node: serve the local store over HTTP only.
    #[arg(long, env = "PEERIX_NO_P2P", help_heading = "Peers")]
    pub no_p2p: bool,

    /// A peerix node to stay connected to (/…/p2p/<id>), dialled at start and again with backoff
    /// whenever the connection drops; repeatable. For machines that know each other (a desktop and
    /// a laptop, CI runners); works in both modes.
    #[arg(
        long = "peer",
        env = "PEERIX_PEERS",
        value_delimiter = ' ',
        value_name = "MULTIADDR",
        help_heading = "Peers"
    )]
    pub peers: Vec<String>,

    /// How long a narinfo lookup may ask peers before answering "not found", e.g. 250ms or 1s
    /// [default: 250ms]. Nix caches that answer for an hour and asks about every path of a closure,
    /// so this bounds what a miss costs every build.
    #[arg(
        long,
        env = "PEERIX_LOOKUP_TIMEOUT",
        value_name = "DURATION",
        help_heading = "Peers",
        hide_short_help = true
    )]
    pub lookup_timeout: Option<String>,

    /// Memory for NARs fetched from peers before nix asks for them, e.g. 64M, or 0 to turn
    /// prefetch off [default: 64M]. nix asks a closure's narinfos before its NARs: each accepted
    /// narinfo's NAR (up to a quarter of this, at most 8M) is fetched and verified at once.
    #[arg(
        long,
        env = "PEERIX_PREFETCH_SIZE",
        value_name = "BYTES",
        help_heading = "Indexing and memory",
        hide_short_help = true
    )]
    pub prefetch_size: Option<String>,

    /// A prefetched NAR nix has not asked for within this is dropped, e.g. 30s [default: 30s].
    #[arg(
        long,
        env = "PEERIX_PREFETCH_AGE",
        value_name = "DURATION",
        help_heading = "Indexing and memory",
        hide_short_help = true
    )]
    pub prefetch_age: Option<String>,

    /// Where to get blocks no peer delivers in time: a trustless gateway (http(s)://host:port, asked
    /// `/ipfs/<cid>?format=raw`) or a kubo RPC API (kubo+http://host:5001); repeatable, tried in
    /// order. Every block is checked against its CID.
    #[arg(
        long = "fallback",
        env = "PEERIX_FALLBACKS",
        value_delimiter = ' ',
        value_name = "URL",
        help_heading = "Peers",
        hide_short_help = true
    )]
    pub fallbacks: Vec<String>,

    /// A `peerix tracker` (http(s)://host:12305) to announce our published paths to and to ask for
    /// peers that have a path (under `--lookup-timeout`). Ignored in lan mode.
    #[arg(long, env = "PEERIX_TRACKER", value_name = "URL", help_heading = "Peers")]
    pub tracker: Option<String>,

    /// A libp2p relay (v2) to hold a reservation on (/…/p2p/<id>), so peers can reach us through it
    /// when we are behind NAT; repeatable. The tracker's node is used as one without this flag.
    #[arg(
        long = "relay",
        env = "PEERIX_RELAYS",
        value_delimiter = ' ',
        value_name = "MULTIADDR",
        help_heading = "Networking (advanced)",
        hide_short_help = true
    )]
    pub relays: Vec<String>,

    /// Map our p2p port on the router by UPnP (IGD), so peers can dial us directly.
    #[arg(long, env = "PEERIX_UPNP", help_heading = "Networking (advanced)", hide_short_help = true)]
    pub upnp: bool,
}
