//! `GET /metrics`: Prometheus text for scrapers (as harmonia and ncps offer), with the crate
//! `prometheus-client`. Two kinds of metric: those recorded where they happen (HTTP requests by
//! route and status, narinfo lookup latency by outcome), and those the daemon already counts
//! (bytes served, bitswap, blockstore, peers, index progress), read at scrape time by a collector.
//! A scrape reads atomics and one row of the state DB: no table scans, so scraping often costs
//! nothing a transfer would notice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use crate::p2p::lanes::LaneCounters;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::error::ApiError;
use super::{AppState, Inner};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Where a narinfo answer came from.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Local,
    Peer,
    Miss,
}

/// Metrics recorded as requests happen; the rest is read from the daemon by [`Daemon`].
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    lookups: Family<OutcomeLabels, Histogram>,
    /// The app the collector reads, set once the router exists (weak: the app holds these metrics).
    app: Arc<OnceLock<Weak<Inner>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("peerix");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered, by route and status", requests.clone());
        // 100 µs (a local hit) to ~6 s (past every lookup deadline), ×3 per bucket.
        let lookups = Family::<OutcomeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 3.0, 11))
        });
        registry.register("narinfo_lookup_seconds", "narinfo answer latency by outcome", lookups.clone());
        let app = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(Daemon(app.clone())));
        Self { registry, requests, lookups, app }
    }
}

impl Metrics {
    pub fn lookup(&self, outcome: Outcome, started: Instant) {
        let outcome = match outcome {
            Outcome::Local => "local",
            Outcome::Peer => "peer",
            Outcome::Miss => "miss",
        };
        self.lookups.get_or_create(&OutcomeLabels { outcome }).observe(started.elapsed().as_secs_f64());
    }

    pub(super) fn attach(&self, app: &AppState) {
        let _ = self.app.set(Arc::downgrade(&app.0));
    }
}

/// A bounded route label for a request path.
fn route(path: &str) -> &'static str {
    match path {
        "/nix-cache-info" => "nix-cache-info",
        "/health" => "health",
        "/metrics" => "metrics",
        p if p.starts_with("/nar/") => "nar",
        p if p.starts_with("/ipfs/") => "ipfs",
        p if p.starts_with("/api/v0/") => "rpc",
        p if p.starts_with("/api/") => "api",
        p if p.ends_with(".narinfo") && !p[1..].contains('/') => "narinfo",
        _ => "other",
    }
}

/// Counts every answered request by route and status.
pub async fn count(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let route = route(req.uri().path());
    let resp = next.run(req).await;
    app.metrics.requests.get_or_create(&RequestLabels { route, status: resp.status().as_u16() }).inc();
    resp
}

pub async fn get(State(app): State<AppState>) -> Result<Response, ApiError> {
    let mut text = String::with_capacity(8192);
    prometheus_client::encoding::text::encode(&mut text, &app.metrics.registry)?;
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(resp)
}

/// Reads the daemon's own counters at scrape time.
struct Daemon(Arc<OnceLock<Weak<Inner>>>);

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Daemon")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Daemon {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(app) = self.0.get().and_then(Weak::upgrade) else { return Ok(()) };
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &app.cache.counters;
        counter(&mut e, "narinfo_hits", "narinfos answered from the local store", n(&c.narinfo_hits))?;
        counter(&mut e, "narinfo_misses", "narinfos not found locally", n(&c.narinfo_misses))?;
        counter(&mut e, "narinfo_private", "narinfos refused by the publish gate", n(&c.narinfo_denied))?;
        counter(&mut e, "nars_served", "local NARs served whole", n(&c.nars_served))?;
        counter(&mut e, "nar_served_bytes", "bytes of local NARs served", n(&c.nar_bytes_served))?;
        let a = &app.cache.arrivals.counters;
        counter(
            &mut e,
            "index_adopted_paths",
            "paths indexed from the DAG they arrived in (not read again)",
            n(&a.adopted),
        )?;
        counter(&mut e, "index_read_paths", "paths the indexer read, chunked and hashed from disk", n(&a.read_paths))?;
        counter(&mut e, "index_read_bytes", "NAR bytes the indexer read from disk", n(&a.read_bytes))?;
        counter(&mut e, "arrivals_evicted", "arrival DAGs dropped before the indexer took them", n(&a.evicted))?;
        gauge(
            &mut e,
            "arrivals_held_bytes",
            "metadata bytes of arrival DAGs waiting",
            app.cache.arrivals.held().1 as i64,
        )?;
        let r = &app.cache.received;
        counter(
            &mut e,
            "received_served_bytes",
            "bytes served on from blocks verified in transit, before their path was indexed",
            n(&r.counters.served_bytes),
        )?;
        gauge(
            &mut e,
            "received_held_bytes",
            "bytes of blocks verified in transit held to serve on",
            r.held().1 as i64,
        )?;
        let p = app.substituter.prefetch_counters();
        counter(&mut e, "prefetch_started", "NARs fetched from peers before nix asked", n(&p.started))?;
        counter(&mut e, "prefetch_hits", "NAR requests answered from the prefetch buffer", n(&p.hits))?;
        counter(&mut e, "prefetch_handed_over", "NARs nix asked for before their prefetch began", n(&p.handed_over))?;
        counter(&mut e, "prefetch_skipped_full", "prefetches not started: the buffer was full", n(&p.skipped_full))?;
        counter(&mut e, "prefetch_failed", "prefetches whose transfer failed", n(&p.failed))?;
        counter(&mut e, "prefetch_expired", "prefetched NARs dropped unasked after the age cap", n(&p.expired))?;
        gauge(
            &mut e,
            "prefetch_held_bytes",
            "bytes held and reserved by the prefetch buffer",
            n(&p.held_bytes) as i64,
        )?;
        let s = &app.substituter.activity.counters;
        counter(&mut e, "narinfo_peer_hits", "narinfos answered from peers", n(&s.peer_hits))?;
        counter(
            &mut e,
            "narinfo_closure_hits",
            "of those, sent with the answer for a path whose closure holds them",
            n(&s.closure_hits),
        )?;
        counter(&mut e, "fetched_from_peers_bytes", "NAR bytes received from peers", n(&s.bytes_from_peers))?;
        counter(
            &mut e,
            "fetched_from_fallbacks_bytes",
            "NAR bytes received from fallbacks",
            n(&s.bytes_from_fallbacks),
        )?;
        counter(&mut e, "peer_transfers_done", "NAR transfers from peers completed", n(&s.transfers_done))?;
        counter(&mut e, "peer_transfers_failed", "NAR transfers from peers failed", n(&s.transfers_failed))?;
        let b = &app.blocks;
        gauge(&mut e, "blockstore_bytes", "bytes of received blocks kept", b.stored_bytes() as i64)?;
        counter(&mut e, "blockstore_evicted_bytes", "bytes evicted from the blockstore", b.evicted_bytes())?;
        counter(
            &mut e,
            "local_chunk_read_bytes",
            "bytes of local chunks read to serve them",
            b.local_chunk_bytes_read(),
        )?;
        counter(
            &mut e,
            "local_chunk_hashed_bytes",
            "bytes of local chunks hashed before they left (files not provably unchanged since indexing)",
            b.local_chunk_bytes_hashed(),
        )?;
        if let Some(node) = &app.p2p {
            let st = node.bitswap_stats();
            counter(&mut e, "bitswap_blocks_sent", "blocks sent by bitswap", n(&st.blocks_sent))?;
            counter(&mut e, "bitswap_sent_bytes", "bytes sent by bitswap", n(&st.bytes_sent))?;
            counter(&mut e, "bitswap_blocks_received", "blocks received by bitswap", n(&st.blocks_received))?;
            counter(&mut e, "bitswap_received_bytes", "bytes received by bitswap", n(&st.bytes_received))?;
            counter(&mut e, "bitswap_unwanted_blocks", "blocks received that nobody wanted", n(&st.unwanted_blocks))?;
            counter(&mut e, "bitswap_wants_paced", "wants delayed by their peer's rate budget", n(&st.wants_paced))?;
            counter(&mut e, "bitswap_streams_refused", "inbound streams over a peer's share", n(&st.streams_refused))?;
            counter(&mut e, "bitswap_peers_dropped", "peers disconnected for misbehaving", n(&st.peers_dropped))?;
            type Field = fn(&LaneCounters) -> &AtomicU64;
            let fields: [(&str, &str, Field); 3] = [
                ("p2p_streams_opened", "long-lived request streams (lanes) opened to peers", |c| &c.streams_opened),
                ("p2p_requests", "requests sent to peers on lanes", |c| &c.requests),
                ("p2p_requests_dropped", "requests asked again: their lane ended first", |c| &c.requests_dropped),
            ];
            for (family, help, field) in fields {
                let mut f = e.encode_descriptor(family, help, None, MetricType::Counter)?;
                for (protocol, c) in node.lane_counters() {
                    ConstCounter::new(n(field(c))).encode(f.encode_family(&[("protocol", protocol)])?)?;
                }
            }
            // Connected peers by how they were found and whether the connection is relayed.
            let mut by: std::collections::BTreeMap<(String, &str), i64> = Default::default();
            for p in node.peers().view().iter().filter(|p| p.connected) {
                let found = serde_json::to_value(p.found).ok().and_then(|v| v.as_str().map(str::to_owned));
                let link = if p.relayed { "relayed" } else { "direct" };
                *by.entry((found.unwrap_or_default(), link)).or_default() += 1;
            }
            let help = "peers connected now, by discovery and link";
            let mut family = e.encode_descriptor("peers_connected", help, None, MetricType::Gauge)?;
            for ((found, link), n) in by {
                let labels = [("found", found.as_str()), ("link", link)];
                ConstGauge::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        // Tasks by the module that spawned them ([`crate::tasks`]): what runs now, what panicked.
        let tasks = crate::tasks::counts();
        let mut running = e.encode_descriptor(
            "tasks",
            "tasks running now, by the module that spawned them",
            None,
            MetricType::Gauge,
        )?;
        for (task, (n, _)) in &tasks {
            ConstGauge::new(*n as i64).encode(running.encode_family(&[("task", *task)])?)?;
        }
        let mut panics = e.encode_descriptor(
            "task_panics",
            "tasks that panicked, by the module that spawned them",
            None,
            MetricType::Counter,
        )?;
        for (task, (_, p)) in &tasks {
            ConstCounter::new(*p).encode(panics.encode_family(&[("task", *task)])?)?;
        }
        if let Ok(scan) = app.cache.state().scan_progress() {
            gauge(&mut e, "index_done_paths", "paths the current or last scan has indexed", scan.done_paths as i64)?;
            gauge(&mut e, "index_total_paths", "paths the current or last scan covers", scan.total_paths as i64)?;
            gauge(&mut e, "index_running", "1 while a scan runs", scan.running as i64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_a_small_fixed_set() {
        assert_eq!(route("/nar/abc.nar"), "nar");
        assert_eq!(route("/0123456789abcdfghijklmnpqrsvwxyz.narinfo"), "narinfo");
        assert_eq!(route("/x/y.narinfo"), "other");
        assert_eq!(route("/api/v0/cat"), "rpc");
        assert_eq!(route("/api/status"), "api");
        assert_eq!(route("/anything/else"), "other");
    }
}
