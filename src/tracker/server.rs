//! The tracker's server: its state ([`Tracker`]), routes, metrics, the expiry sweeper, and
//! [`run`], which `peerix tracker` calls.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::db::{self, TrackerDb};
use super::{api, node};
use crate::dashboard;
use crate::rate::Buckets;
use crate::timeouts::TRACKER_SWEEP_EVERY;

pub struct TrackerConfig {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// Records live this long after their peer's last announcement.
    pub ttl: Duration,
    /// A reverse proxy whose `X-Forwarded-For` is believed; everyone else's is ignored.
    pub trust_proxy: Option<IpAddr>,
    /// The libp2p node (kad bootstrap, relay, AutoNAT); `None` with `--no-p2p`.
    pub node: Option<node::NodeConfig>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Found {
    found: &'static str,
}

pub struct Tracker {
    pub(super) db: TrackerDb,
    pub(super) ttl_secs: i64,
    pub(super) trust_proxy: Option<IpAddr>,
    /// Announcements per peer: 1/s, bursts of 10 (a delta after every scan, heartbeats).
    pub(super) per_peer: Buckets<String>,
    /// Requests per client address: 10/s, bursts of 100 (a NAT with many peers behind it).
    pub(super) per_address: Buckets<IpAddr>,
    pub(super) started: Instant,
    /// The libp2p node's addresses, for `/v1/status`.
    pub(super) node_addrs: node::Addrs,
    /// Peers the node saw leave: left out of `/v1/providers`.
    pub(super) presence: Arc<super::presence::Presence>,
    registry: Registry,
    announces: Family<Outcome, Counter>,
    lookups: Family<Found, Counter>,
    peers_gauge: Gauge,
    paths_gauge: Gauge,
}

impl Tracker {
    pub fn open(cfg: &TrackerConfig) -> Result<Self, db::DbError> {
        let mut registry = Registry::with_prefix("peerix_tracker");
        let (announces, lookups) = (Family::default(), Family::default());
        let (peers_gauge, paths_gauge) = (Gauge::default(), Gauge::default());
        registry.register("announces", "announcements by outcome", announces.clone());
        registry.register("lookups", "provider lookups, by whether any provider was found", lookups.clone());
        registry.register("peers", "live peers", peers_gauge.clone());
        registry.register("paths", "paths shared by live peers (with repeats)", paths_gauge.clone());
        Ok(Self {
            db: TrackerDb::open(&cfg.state_dir)?,
            ttl_secs: cfg.ttl.as_secs().max(1) as i64,
            trust_proxy: cfg.trust_proxy,
            per_peer: Buckets::new(1.0, 10.0, 100_000),
            per_address: Buckets::new(10.0, 100.0, 100_000),
            started: Instant::now(),
            node_addrs: Default::default(),
            presence: Default::default(),
            registry,
            announces,
            lookups,
            peers_gauge,
            paths_gauge,
        })
    }

    /// The requester: the socket's address, or the proxy's `X-Forwarded-For` (its last entry, the
    /// one the proxy added) when the socket is the trusted proxy.
    pub(super) fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if self.trust_proxy == Some(peer.ip())
            && let Some(forwarded) = headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return forwarded;
        }
        peer.ip()
    }

    pub(super) fn count_announce(&self, outcome: &'static str) {
        self.announces.get_or_create(&Outcome { outcome }).inc();
    }

    pub(super) fn count_lookup(&self, found: bool) {
        self.lookups.get_or_create(&Found { found: if found { "yes" } else { "no" } }).inc();
    }
}

async fn metrics(axum::extract::State(t): axum::extract::State<Arc<Tracker>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (tracker, since) = (t.clone(), crate::store::now_secs() - t.ttl_secs);
    if let Ok(Ok((peers, paths))) = crate::tasks::spawn_blocking(module_path!(), move || tracker.db.counts(since)).await
    {
        t.peers_gauge.set(peers as i64);
        t.paths_gauge.set(paths as i64);
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &t.registry) {
        return api::TrackerError::Internal(e.to_string()).into_response();
    }
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response()
}

pub fn router(tracker: Arc<Tracker>) -> Router {
    Router::new()
        .route("/", get(dashboard::tracker_page))
        .route("/dashboard/tracker.js", get(dashboard::tracker_script))
        .route("/dashboard/app.css", get(dashboard::style))
        .route("/favicon.ico", get(dashboard::no_icon))
        .route("/v1/announce", post(api::announce))
        .route("/v1/providers/{hash}", get(api::providers))
        .route("/v1/peers", get(api::peers))
        .route("/v1/status", get(api::status))
        .route("/health", get(api::health))
        .route("/metrics", get(metrics))
        .fallback(|| async { api::TrackerError::NotFound("no such resource") })
        // axum's own default (2 MiB) refused announcements of more than ~56 000 paths while the
        // HTTP layer and the docs allowed 8 MiB: one limit, ours.
        .layer(axum::extract::DefaultBodyLimit::max(crate::tracker_wire::MAX_ANNOUNCEMENT_BYTES))
        .with_state(tracker)
}

/// Runs the tracker until `shutdown`.
/// Why the tracker could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open the tracker database")]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("cannot start the tracker's libp2p node")]
    Node(#[from] node::NodeError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub async fn run(cfg: TrackerConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    let mut tracker = Tracker::open(&cfg)?;
    if let Some(node_cfg) = cfg.node {
        let identity = crate::identity::Identity::load_or_create(&cfg.state_dir)?;
        let key = identity.keypair();
        tracker.node_addrs = node::start(node_cfg, key, tracker.presence.clone(), shutdown.clone())?;
    }
    let tracker = Arc::new(tracker);
    let listen_error = |source| RunError::Listen { addr: cfg.listen, source };
    let listener = crate::httpd::bind(cfg.listen).map_err(listen_error)?;
    let listen = listener.local_addr().map_err(listen_error)?;
    info!(state_dir = %cfg.state_dir.display(), ttl_secs = tracker.ttl_secs, "tracker listening on http://{listen}");
    let sweeper = tracker.clone();
    let stop = shutdown.clone();
    crate::tasks::spawn(module_path!(), async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TRACKER_SWEEP_EVERY) => {}
                _ = stop.cancelled() => return,
            }
            sweeper.presence.sweep(std::time::Duration::from_secs(sweeper.ttl_secs as u64));
            let (t, now) = (sweeper.clone(), crate::store::now_secs());
            let swept = crate::tasks::spawn_blocking(module_path!(), move || {
                t.db.expire(now - t.ttl_secs, now - 2 * api::CLOCK_SKEW_SECS)
            })
            .await;
            match swept {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => info!(peers = n, "expired peers"),
                Ok(Err(e)) => warn!(cause = %crate::errors::chain(&e), "expiry failed"),
                Err(e) => warn!(cause = %e, "expiry failed"),
            }
        }
    });
    crate::httpd::serve(listener, router(tracker), shutdown, crate::tracker_wire::MAX_ANNOUNCEMENT_BYTES).await;
    info!("tracker stopped");
    Ok(())
}
