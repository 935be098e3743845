//! `peerix tracker`: flags, and the run until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use peerix::tracker::{TrackerConfig, run};

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
    #[arg(long, env = "PEERIX_TRACKER_TTL", value_name = "SECS", default_value_t = 300)]
    ttl: u64,
    /// The address of a reverse proxy in front of the tracker: its `X-Forwarded-For` names the
    /// client. Anyone else's `X-Forwarded-For` is ignored.
    #[arg(long, env = "PEERIX_TRACKER_TRUST_PROXY", value_name = "IP")]
    trust_proxy: Option<IpAddr>,
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
    if args.print_config {
        let mut t = toml::Table::new();
        t.insert("listen".into(), args.listen.to_string().into());
        t.insert("state-dir".into(), state_dir.display().to_string().into());
        t.insert("ttl".into(), toml::Value::Integer(args.ttl as i64));
        if let Some(p) = args.trust_proxy {
            t.insert("trust-proxy".into(), p.to_string().into());
        }
        print!("{t}");
        return Ok(());
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(super::serve::stop_on_signal(shutdown.clone()));
    let cfg = TrackerConfig {
        listen: args.listen,
        state_dir,
        ttl: Duration::from_secs(args.ttl),
        trust_proxy: args.trust_proxy,
    };
    run(cfg, shutdown).await
}
