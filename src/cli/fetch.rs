//! `peerix fetch CID [-o FILE]`: the daemon's `/api/v0/cat`, streamed to a file or stdout.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

pub async fn fetch(base: &str, cid: &str, output: Option<&Path>) -> anyhow::Result<()> {
    let cid: cid::Cid = cid.parse().with_context(|| format!("{cid} is not a CID"))?;
    let url = format!("{}/api/v0/cat?arg={cid}", base.trim_end_matches('/'));
    let started = Instant::now();
    // No whole-request deadline: a NAR may take minutes; the daemon bounds the wait for its first
    // bytes itself.
    let mut resp = peerix::remote::streaming_client()?
        .post(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url} (is `peerix serve` running?)"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = String::from_utf8_lossy(&peerix::remote::read_capped(resp, 64 << 10).await.unwrap_or_default())
            .into_owned();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["Message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        anyhow::bail!("{cid}: HTTP {status}: {}", message.trim());
    }
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut bytes = 0u64;
    // Progress on a terminal only (a log or a pipe gets the one line at the end).
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut shown = Instant::now();
    // A body that stops short (a block nobody had) is an error, not a short file.
    while let Some(chunk) =
        resp.chunk().await.with_context(|| format!("{cid}: transfer aborted after {bytes} bytes"))?
    {
        out.write_all(&chunk)?;
        bytes += chunk.len() as u64;
        if tty && shown.elapsed().as_millis() >= 250 {
            shown = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprint!("\r{cid}: {:.1} MB, {:.1} MB/s ", bytes as f64 / 1e6, bytes as f64 / secs.max(1e-9) / 1e6);
        }
    }
    out.flush()?;
    if tty {
        eprint!("\r");
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{cid}: {bytes} bytes in {secs:.2} s ({:.1} MB/s)", bytes as f64 / secs.max(1e-9) / 1e6);
    Ok(())
}
