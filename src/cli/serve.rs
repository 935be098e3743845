//! `peerix serve`: the HTTP server plus the background indexer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use peerix::blocks::Blocks;
use peerix::config::ServeConfig;
use peerix::http::{self, AppState, Inner};
use peerix::httpd;
use peerix::identity::Identity;
use peerix::publish::Publisher;
use peerix::substitute::Substituter;
use peerix::substitute::tracker::{TrackerClient, announce_forever};
use peerix::timeouts::{STORE_POLL, STORE_POLL_MAX, TASKS_GRACE};

/// The background indexer reads at most this many bytes per second unless told otherwise: a
/// first scan of a 100 GB store then takes ~7 min and leaves most of an SSD's bandwidth to the user.
const DEFAULT_SERVE_INDEX_RATE: u64 = 256 << 20;

pub async fn run(mut cfg: ServeConfig) -> anyhow::Result<()> {
    let mut owner = match super::owner::Owner::take(&cfg.state_dir, "serve")? {
        Ok(owner) => owner,
        Err(held) => anyhow::bail!("{} is in use by {held}", cfg.state_dir.display()),
    };
    // What one-shot commands on this state directory will run with (flags, variables, file and
    // defaults merged): written before anything is taken from `cfg`.
    let last = cfg.state_dir.join(super::LAST_SERVE_CONFIG);
    let text = toml::to_string(&cfg.effective()).context("cannot write the configuration as TOML")?;
    std::fs::write(&last, text).with_context(|| format!("cannot write {}", last.display()))?;
    let identity = Identity::load_or_create(&cfg.state_dir)?;
    let signing_key = cfg.signer.as_ref().map(|k| k.name.clone());
    let cache = super::open_cache(&mut cfg)?;
    if !cache.store_db().exists() {
        warn!(db = %cache.store_db().db_path().display(), "no Nix database yet; serving nothing until it appears");
    }
    httpd::connections::raise_fd_limit();
    let blocks = Arc::new(Blocks::new(cache.clone(), cfg.cache_size));
    let publisher = Publisher::new(cache.clone(), cfg.index_jobs, cfg.index_rate.unwrap_or(DEFAULT_SERVE_INDEX_RATE))?;
    let shutdown = CancellationToken::new();
    info!("{}", what_leaves_the_machine(&cfg));
    let p2p = match cfg.p2p.take() {
        Some(p2p_cfg) => Some(
            peerix::p2p::start(p2p_cfg, &identity, blocks.clone(), cache.clone(), &cfg.state_dir, shutdown.clone())
                .context("cannot start the IPFS node")?,
        ),
        None => None,
    };
    let tracker = match (&cfg.tracker, &p2p) {
        (Some(url), Some(_)) => {
            let key = identity.keypair();
            Some(Arc::new(TrackerClient::new(url, key).context("cannot set up the tracker client")?))
        }
        _ => None,
    };
    let substituter = Substituter::new(
        cache.clone(),
        p2p.clone(),
        cfg.lookup_timeout,
        cfg.fallbacks.clone(),
        tracker.clone(),
        cfg.prefetch,
    )
    .context("cannot set up the HTTP client for fallbacks")?;
    if let (Some(tracker), Some(node)) = (tracker, &p2p) {
        info!(tracker = tracker.url(), "announcing to the tracker");
        peerix::tasks::spawn(module_path!(), announce_forever(tracker, cache.clone(), node.clone(), shutdown.clone()));
    }
    let listener = httpd::bind(cfg.listen).with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let listen = listener.local_addr()?;
    // One-shot commands find us here and ask us instead of writing our index under other flags.
    owner.say(&format!("serve http://{listen}"))?;
    let peer_id = identity.peer_id();
    let app = http::router(AppState::new(Inner {
        cache,
        substituter,
        blocks,
        identity,
        p2p,
        cache_info: http::render_cache_info(cfg.priority),
        started: Instant::now(),
        listen,
        upstream: cfg.upstream,
        serve_private: cfg.serve_private,
        signing_key,
        metrics: Default::default(),
        status_memo: Default::default(),
        index: publisher.control(),
    }));
    info!(state_dir = %cfg.state_dir.display(), store_root = %cfg.store_root.display(), %peer_id, "listening on http://{listen}");
    peerix::tasks::spawn(module_path!(), stop_on_signal(shutdown.clone()));
    peerix::tasks::spawn(module_path!(), index_forever(publisher, shutdown.clone()));
    httpd::serve(listener, app, shutdown, httpd::conn::MAX_BODY).await;
    // The loops watching the token end within moments; what still runs after this (idle lanes,
    // a request's lookup) is dropped with the runtime.
    peerix::tasks::shutdown(TASKS_GRACE).await;
    info!("stopped");
    Ok(())
}

/// One line at start that says, in an operator's words, which networks this configuration talks
/// to: the defaults join the public IPFS network, and that should never be a surprise.
fn what_leaves_the_machine(cfg: &ServeConfig) -> String {
    let upstream = match &cfg.upstream {
        Some(u) => format!("asks {u} which paths it has"),
        None => "asks no upstream cache".to_owned(),
    };
    let Some(p2p) = &cfg.p2p else {
        return format!("p2p off (--no-p2p): serves this machine's store only; {upstream}");
    };
    let listen = p2p.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
    let lan = if p2p.mdns { "finds LAN peers by mDNS" } else { "no mDNS" };
    match p2p.mode {
        peerix::p2p::Mode::Ipfs if p2p.bootstrap.is_empty() => format!(
            "ipfs mode: p2p on {listen}, {lan}, the DHT among the peers it meets (no bootstrap peers); {upstream}"
        ),
        peerix::p2p::Mode::Ipfs => format!(
            "ipfs mode: p2p on {listen}, {lan}, joins the public IPFS network ({} bootstrap peers, the DHT); {upstream}; \
             --mode lan keeps everything on the local network",
            p2p.bootstrap.len()
        ),
        peerix::p2p::Mode::Lan => {
            format!(
                "lan mode: p2p on {listen}, {lan}, {} --peer; nothing goes to the IPFS network; {upstream}",
                p2p.peers.len()
            )
        }
    }
}

/// Scans at start, again whenever Nix's DB changes, and when the operator asks (a path checked
/// again from the dashboard).
async fn index_forever(publisher: Publisher, shutdown: CancellationToken) {
    let mut last_version = None;
    let control = publisher.control();
    let mut asked = false;
    let mut pause = STORE_POLL;
    loop {
        let version = publisher.store_version();
        if asked || version.is_none() || version != last_version {
            let scanned = publisher.scan(None, &|_| {}).await;
            if let Ok(r) = &scanned {
                // A scan lists the whole Nix DB: while nix registers path after path, about a
                // twentieth of a core goes to noticing them (a big store is looked at less often,
                // at least every STORE_POLL_MAX). Indexing what it found is not counted here.
                pause = (Duration::from_micros(r.listing_micros) * 20).clamp(STORE_POLL, STORE_POLL_MAX);
            }
            match scanned {
                Ok(r) if r.published + r.private + r.failed + r.removed + r.rechecked > 0 => {
                    info!(?r, "index updated")
                }
                Ok(_) => {}
                Err(e) => warn!(cause = %peerix::errors::chain(&e), "index scan failed"),
            }
            last_version = version;
        }
        asked = tokio::select! {
            _ = tokio::time::sleep(pause) => false,
            _ = control.scan_requested() => true,
            _ = shutdown.cancelled() => return,
        };
    }
}

/// SIGINT or SIGTERM (systemd's stop) begins a graceful shutdown.
pub(super) async fn stop_on_signal(shutdown: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    info!("shutting down");
    shutdown.cancel();
}
