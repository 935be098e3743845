//! Command-line interface: one module per subcommand.

mod fetch;
mod keygen;
mod owner;
mod publish;
mod serve;
mod status;
mod tracker;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use peerix::config::{ServeArgs, ServeConfig};
use peerix::local_cache::LocalCache;
use peerix::store::StateDb;
use peerix::timeouts::BLOCKING_GRACE;
use peerix::trust::Gate;
use peerix::upstream::Upstream;

#[derive(Parser)]
#[command(name = "peerix", version, about = "Peer-to-peer binary cache for Nix")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: serve the local Nix store as a binary cache and as IPFS blocks.
    #[command(after_help = "-h shows the common flags, --help all of them. Every flag is also a PEERIX_* variable \
                            and a key of the --config file; --print-config shows what they amount to.")]
    Serve {
        /// Print the configuration these flags, variables and file amount to (as a TOML config file
        /// with every key) and exit; a bad value stops it as it would stop the start.
        #[arg(long, help_heading = "Basics")]
        print_config: bool,
        #[command(flatten)]
        config: ServeArgs,
    },
    /// Index store paths now (all new ones, or the given ones), with progress. With a daemon
    /// running on the state directory, asks it to scan (under its own flags) instead.
    Publish {
        /// Store paths to index; all valid paths when none are given.
        paths: Vec<String>,
        /// Paths chunked at once [default: number of cores].
        #[arg(long)]
        jobs: Option<usize>,
        #[command(flatten)]
        config: ServeArgs,
    },
    /// Re-read every indexed chunk and every stored block and check them against their CIDs.
    Verify {
        /// Drop what is bad (a bad path is re-indexed by the next scan).
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        config: ServeArgs,
    },
    /// Get a file (e.g. a NAR) by its root CID through the running daemon: from its store, or from
    /// the IPFS network by bitswap (every block verified, and kept for the gateway).
    Fetch {
        cid: String,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Base URL of the daemon.
        #[arg(long, env = "PEERIX_URL", default_value = "http://127.0.0.1:12304")]
        url: String,
    },
    /// Show what a running daemon reports, or what it holds for one store path.
    Status {
        /// Base URL of the daemon.
        #[arg(long, env = "PEERIX_URL", default_value = "http://127.0.0.1:12304")]
        url: String,
        /// A store path (/nix/store/…) to show instead.
        #[arg(long)]
        path: Option<String>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        /// Refresh every 2 s, in place (on a terminal).
        #[arg(long)]
        watch: bool,
    },
    /// Run a tracker: which peer shares which path, for peers on different networks.
    Tracker(tracker::TrackerArgs),
    /// Write a new signing key pair in Nix's format (as `nix-store --generate-binary-cache-key`).
    Keygen {
        /// Key name, e.g. `peerix.myhost-1`.
        name: String,
        /// Where to write the secret key (mode 0600; never overwritten).
        secret_file: PathBuf,
        /// Where to write the public key.
        public_file: PathBuf,
    },
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve { print_config: true, config } => {
                let cfg = ServeConfig::resolve(config)?;
                print!("{}", toml::to_string(&cfg.effective()).context("cannot write the configuration as TOML")?);
                for line in cfg.unset_keys() {
                    println!("{line}");
                }
                Ok(())
            }
            Command::Serve { print_config: false, config } => block_on(serve::run(ServeConfig::resolve(config)?)),
            Command::Publish { paths, jobs, config } => {
                block_on(publish::publish(ServeConfig::resolve(as_the_daemon_ran(config))?, &paths, jobs))
            }
            Command::Verify { repair, config } => {
                block_on(publish::verify(ServeConfig::resolve(as_the_daemon_ran(config))?, repair))
            }
            Command::Fetch { cid, output, url } => block_on(fetch::fetch(&url, &cid, output.as_deref())),
            Command::Status { url, path, json, watch } => block_on(status::show(&url, path.as_deref(), json, watch)),
            Command::Tracker(args) => block_on(tracker::tracker(args)),
            Command::Keygen { name, secret_file, public_file } => keygen::run(&name, &secret_file, &public_file),
        }
    }
}

/// The configuration a daemon last ran with on a state directory, written at its start: one-shot
/// commands read it when given no `--config`, so an operator never repeats serve's flags (flags
/// given still win over it).
pub const LAST_SERVE_CONFIG: &str = "serve.toml";

/// `args` with the state directory's [`LAST_SERVE_CONFIG`] as the config file, when none is named.
fn as_the_daemon_ran(mut args: ServeArgs) -> ServeArgs {
    let Some(state_dir) = args.state_dir.clone().or_else(peerix::config::default_state_dir) else { return args };
    let last = state_dir.join(LAST_SERVE_CONFIG);
    if args.config.is_none() && last.is_file() {
        eprintln!("using the configuration the daemon last ran with ({})", last.display());
        args.config = Some(last);
    }
    args
}

/// Runs a command on a fresh runtime. When it returns (a daemon after SIGTERM), blocking work still
/// running — an indexer thread reading a large file at its rate limit, a SQLite write — gets
/// [`BLOCKING_GRACE`] and is then abandoned: dropping the runtime would wait for it, however long.
fn block_on<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let out = runtime.block_on(work);
    runtime.shutdown_timeout(BLOCKING_GRACE);
    out
}

/// The local cache every subcommand that reads the store builds the same way.
pub fn open_cache(cfg: &mut ServeConfig) -> anyhow::Result<Arc<LocalCache>> {
    let state = Arc::new(StateDb::open(&cfg.state_dir)?);
    let upstream = cfg.upstream.as_deref().map(Upstream::new).transpose()?;
    let gate =
        Gate::new(cfg.trusted_keys.clone(), upstream, cfg.serve_private, cfg.upstream_negative_ttl, state.clone());
    Ok(Arc::new(LocalCache::new(&cfg.store_root, state, gate, peerix::trust::Served::new(cfg.signer.take()))))
}
