//! The `peerix` binary: `serve` (the daemon), `keygen`, `status`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use peerix::config::{ServeArgs, ServeConfig};
use peerix::http::{self, AppState, Inner};
use peerix::local_cache::LocalCache;
use peerix::nix::signing::SecretKey;
use peerix::store::StateDb;
use peerix::trust::Gate;
use peerix::upstream::Upstream;

#[derive(Parser)]
#[command(name = "peerix", version, about = "Peer-to-peer binary cache for Nix")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: serve the local Nix store as a binary cache.
    Serve(ServeArgs),
    /// Write a new signing key pair in Nix's format (as `nix-store --generate-binary-cache-key`).
    Keygen {
        /// Key name, e.g. `peerix.myhost-1`.
        name: String,
        /// Where to write the secret key (mode 0600).
        secret_file: PathBuf,
        /// Where to write the public key.
        public_file: PathBuf,
    },
    /// Show what a running daemon reports.
    Status {
        /// Base URL of the daemon.
        #[arg(long, env = "PEERIX_URL", default_value = concat!("http://", "127.0.0.1:12304"))]
        url: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Keygen { name, secret_file, public_file } => keygen(&name, &secret_file, &public_file),
        Command::Status { url, json } => status(&url, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerix: {}", http::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = ServeConfig::resolve(args)?;
    runtime()?.block_on(serve(cfg))
}

async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let state = Arc::new(StateDb::open(&cfg.state_dir)?);
    let upstream = cfg.upstream.as_deref().map(Upstream::new).transpose()?;
    let gate = Gate::new(cfg.trusted_keys, upstream, cfg.serve_private, cfg.upstream_negative_ttl, state.clone());
    let signing_key = cfg.signer.as_ref().map(|k| k.name.clone());
    let cache = LocalCache::new(&cfg.store_root, state, gate, cfg.signer);
    if !cache.store_db().exists() {
        warn!(db = %cache.store_db().db_path().display(), "no Nix database yet; serving nothing until it appears");
    }
    let listener = http::bind(cfg.listen).with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let listen = listener.local_addr()?;
    let app = http::router(AppState::new(Inner {
        cache,
        cache_info: http::render_cache_info(cfg.priority),
        started: Instant::now(),
        listen,
        upstream: cfg.upstream,
        serve_private: cfg.serve_private,
        signing_key,
    }));
    info!(state_dir = %cfg.state_dir.display(), store_root = %cfg.store_root.display(), "listening on http://{listen}");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    http::serve(listener, app, shutdown).await;
    info!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM (systemd's stop) begins a graceful shutdown.
async fn stop_on_signal(shutdown: CancellationToken) {
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

fn keygen(name: &str, secret_file: &std::path::Path, public_file: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = SecretKey::generate(name)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(secret_file)
        .with_context(|| format!("cannot create {}", secret_file.display()))?;
    // No trailing newline, exactly as nix writes it.
    f.write_all(key.to_nix_string().as_bytes())?;
    std::fs::write(public_file, key.public().to_string())
        .with_context(|| format!("cannot write {}", public_file.display()))?;
    println!("{}", key.public());
    Ok(())
}

fn status(url: &str, json: bool) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let url = format!("{}/api/status", url.trim_end_matches('/'));
        let resp =
            reqwest::get(&url).await.with_context(|| format!("cannot reach {url} (is `peerix serve` running?)"))?;
        let v: serde_json::Value = serde_json::from_str(&resp.error_for_status()?.text().await?)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        let g = |p: &str| v.pointer(p).map(|x| x.to_string()).unwrap_or_else(|| "?".into());
        println!("peerix {}  listening on {}  up {}s", g("/version"), g("/listen"), g("/uptime_secs"));
        println!(
            "store      {} ({} valid paths, {} NAR bytes)",
            g("/store_root"),
            g("/nix_db/valid_paths"),
            g("/nix_db/nar_bytes")
        );
        println!(
            "trust      keys {}  upstream {}  serve-private {}",
            g("/trust/trusted_keys"),
            g("/trust/upstream"),
            g("/trust/serve_private")
        );
        println!(
            "requests   narinfo hits {}  misses {}  private {}  NARs {} ({} bytes)",
            g("/requests/narinfo_hits"),
            g("/requests/narinfo_misses"),
            g("/requests/narinfo_private"),
            g("/requests/nars_served"),
            g("/requests/nar_bytes_served")
        );
        Ok(())
    })
}
