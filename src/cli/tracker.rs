//! `peerix tracker`: flags, and the run until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use libp2p::Multiaddr;
use peerix::tracker::node::NodeConfig;
use peerix::tracker::{TrackerConfig, run};

/// TCP and QUIC on 12307: next to the tracker's HTTP port and the daemons' 12306.
const DEFAULT_P2P_LISTEN: &[&str] = &["/ip4/0.0.0.0/tcp/12307", "/ip4/0.0.0.0/udp/12307/quic-v1"];

/// Flags of `peerix tracker` (each also a `PEERIX_TRACKER_*` variable).
#[derive(Debug, Args)]
pub struct TrackerArgs {
    /// Address to serve the tracker API on.
    #[arg(long, env = "PEERIX_TRACKER_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:12305")]
    listen: SocketAddr,
    /// Directory for the tracker's SQLite state [default: /var/lib/peerix-tracker as root, else
    /// $XDG_STATE_HOME/peerix-tracker or ~/.local/state/peerix-tracker].
    #[arg(long, env = "PEERIX_TRACKER_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Seconds a peer's record lives after its last announcement (peers heartbeat at a third of it).
    #[arg(long, env = "PEERIX_TRACKER_TTL", value_name = "SECS", default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=604_800))]
    ttl: u64,
    /// The address of a reverse proxy in front of the tracker: its `X-Forwarded-For` names the
    /// client. Anyone else's `X-Forwarded-For` is ignored.
    #[arg(long, env = "PEERIX_TRACKER_TRUST_PROXY", value_name = "IP")]
    trust_proxy: Option<IpAddr>,
    /// Address for the tracker's libp2p node (Kademlia bootstrap, relay v2, AutoNAT) to listen on;
    /// repeatable [default: /ip4/0.0.0.0/tcp/12307 and /ip4/0.0.0.0/udp/12307/quic-v1].
    #[arg(long = "p2p-listen", env = "PEERIX_TRACKER_P2P_LISTEN", value_delimiter = ' ', value_name = "MULTIADDR")]
    p2p_listen: Vec<Multiaddr>,
    /// An address peers reach the node at (a public IP, a port forward); repeatable. The relay
    /// hands these out in reservations.
    #[arg(
        long = "external-address",
        env = "PEERIX_TRACKER_EXTERNAL_ADDRESSES",
        value_delimiter = ' ',
        value_name = "MULTIADDR"
    )]
    external_addresses: Vec<Multiaddr>,
    /// Longest a relayed connection may last, in seconds (libp2p's default of 120 cannot carry a NAR).
    #[arg(long, env = "PEERIX_TRACKER_RELAY_MAX_CIRCUIT_SECS", value_name = "SECS", default_value_t = 3600)]
    #[arg(value_parser = clap::value_parser!(u64).range(1..=604_800))]
    relay_max_circuit_secs: u64,
    /// Most bytes a relayed connection may carry, e.g. 4G (libp2p's default is 128 KiB).
    #[arg(long, env = "PEERIX_TRACKER_RELAY_MAX_CIRCUIT_BYTES", value_name = "BYTES", default_value = "4G")]
    relay_max_circuit_bytes: String,
    /// Let AutoNAT test peers seen at private addresses (labs, private networks).
    #[arg(long, env = "PEERIX_TRACKER_AUTONAT_PRIVATE")]
    autonat_private: bool,
    /// Run no libp2p node: the HTTP API only.
    #[arg(long, env = "PEERIX_TRACKER_NO_P2P")]
    no_p2p: bool,
    /// Print the configuration these flags and variables amount to (TOML) and exit.
    #[arg(long)]
    print_config: bool,
}

pub async fn tracker(args: TrackerArgs) -> anyhow::Result<()> {
    let state_dir = match args.state_dir {
        Some(d) => d,
        None => peerix::config::default_state_dir()
            .map(|d| d.with_file_name("peerix-tracker"))
            .ok_or_else(|| anyhow::anyhow!("no state directory: set --state-dir, $XDG_STATE_HOME or $HOME"))?,
    };
    let p2p_listen = if args.p2p_listen.is_empty() {
        DEFAULT_P2P_LISTEN.iter().filter_map(|a| a.parse().ok()).collect()
    } else {
        args.p2p_listen.clone()
    };
    let max_bytes = peerix::config::parse_size("relay-max-circuit-bytes", &args.relay_max_circuit_bytes)?;
    if args.print_config {
        let mut t = toml::Table::new();
        t.insert("listen".into(), args.listen.to_string().into());
        t.insert("state-dir".into(), state_dir.display().to_string().into());
        t.insert("ttl".into(), toml::Value::Integer(args.ttl as i64));
        if let Some(p) = args.trust_proxy {
            t.insert("trust-proxy".into(), p.to_string().into());
        }
        t.insert("p2p".into(), (!args.no_p2p).into());
        let strings = |v: &[Multiaddr]| toml::Value::Array(v.iter().map(|a| a.to_string().into()).collect());
        t.insert("p2p-listen".into(), strings(&p2p_listen));
        t.insert("external-addresses".into(), strings(&args.external_addresses));
        t.insert("relay-max-circuit-secs".into(), toml::Value::Integer(args.relay_max_circuit_secs as i64));
        t.insert("relay-max-circuit-bytes".into(), toml::Value::Integer(max_bytes as i64));
        t.insert("autonat-private".into(), args.autonat_private.into());
        print!("{t}");
        return Ok(());
    }
    let shutdown = CancellationToken::new();
    peerix::tasks::spawn(module_path!(), super::serve::stop_on_signal(shutdown.clone()));
    let node = (!args.no_p2p).then(|| NodeConfig {
        listen: p2p_listen,
        external: args.external_addresses,
        max_circuit_duration: Duration::from_secs(args.relay_max_circuit_secs),
        max_circuit_bytes: max_bytes,
        autonat_private: args.autonat_private,
    });
    let cfg = TrackerConfig {
        listen: args.listen,
        state_dir,
        ttl: Duration::from_secs(args.ttl),
        trust_proxy: args.trust_proxy,
        node,
    };
    run(cfg, shutdown).await?;
    peerix::tasks::shutdown(peerix::timeouts::TASKS_GRACE).await;
    Ok(())
}
