//! The `peerix` binary: `serve` (the daemon), `publish`, `verify`, `status`, `keygen`.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than glibc's malloc: ~10 % less CPU per narinfo hit (Cargo.toml says why).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What an operator sees without `RUST_LOG`: our own info lines, and of libp2p only what one can act
/// on (Kademlia warns about every bootstrap with no peers, which `--bootstrap none` and a quiet LAN
/// are by design; the swarm repeats our peer id).
const DEFAULT_LOG: &str = "info,libp2p_kad=error,libp2p_swarm=warn";

fn main() -> ExitCode {
    // No transparent huge pages for this process. mimalloc asks for them on its arenas
    // (MADV_HUGEPAGE), so the first touch of memory it has purged or not used yet zeroes 2 MiB,
    // however small the block: a seeder serving a closure spent 49 % of its CPU samples in
    // `clear_page_erms` under `do_huge_pmd_anonymous_page` (benches/closure.sh, loopback); without
    // THP the seeders took 3.5–3.8 CPU-s per GiB instead of 4.8–5.0, and C 7.3–7.4 instead of
    // 9.2–10.2. Best effort: a kernel without the flag keeps its default.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(|| LogSink)
        // A span's end is a line with its duration (request, narinfo, nar, ask_peers, transfer:
        // debug spans, so only when asked for: `RUST_LOG=peerix=debug`).
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .init();
    match cli::Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "peerix: {}", peerix::errors::chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Standard error for log lines, where a line that cannot be written is dropped: when whoever
/// reads our stderr goes away (a pipe closed, a log shipper restarting), the daemon keeps serving
/// and still stops on SIGTERM. tracing's default would report the failed write with `eprintln!`,
/// which panics on a broken stderr, on whichever task was logging.
struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
