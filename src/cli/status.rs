//! `peerix status`: what a running daemon reports (`/api/status`, `/api/paths/<hash>`).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};

use anyhow::Context;
use serde_json::Value;

use peerix::nix::store_path::StorePath;

/// A status answer at most (hundreds of peers and transfers are ~1 MiB of JSON).
const MAX_STATUS: usize = 16 << 20;

async fn fetch(url: &str) -> anyhow::Result<Value> {
    let http = peerix::remote::client(peerix::timeouts::CLI_REQUEST)?;
    let resp =
        http.get(url).send().await.with_context(|| format!("cannot reach {url} (is `peerix serve` running?)"))?;
    let status = resp.status();
    let text = String::from_utf8_lossy(&peerix::remote::read_capped(resp, MAX_STATUS).await?).into_owned();
    anyhow::ensure!(status.is_success(), "{url}: HTTP {status}: {}", text.trim());
    Ok(serde_json::from_str(&text)?)
}

/// Prints the daemon's status (or one path's) once, or with `watch` every 2 s in place. Once, it
/// fails (after printing) when the daemon reports itself degraded, as `/health` does: scripts and
/// eyes see the same verdict.
pub async fn show(base: &str, path: Option<&str>, json: bool, watch: bool) -> anyhow::Result<()> {
    if !watch {
        let (text, problems) = render(base, path, json).await?;
        print!("{text}");
        anyhow::ensure!(problems.is_empty(), "the daemon reports itself degraded: {}", problems.join("; "));
        return Ok(());
    }
    anyhow::ensure!(std::io::stdout().is_terminal(), "--watch refreshes a terminal; stdout is not one");
    loop {
        let text = render(base, path, json).await.map(|(t, _)| t).unwrap_or_else(|e| format!("{e:#}\n"));
        // Home, the new text, then clear what is left of an earlier, longer one.
        print!("\x1b[H{}\x1b[J", text.replace('\n', "\x1b[K\n"));
        std::io::stdout().flush()?;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// The text to print, and the daemon's health problems (none when healthy or for one path).
async fn render(base: &str, path: Option<&str>, json: bool) -> anyhow::Result<(String, Vec<String>)> {
    let mut out = String::new();
    let base = base.trim_end_matches('/');
    let v = match path {
        Some(p) => {
            let p = StorePath::parse(p.trim_end_matches('/')).context("--path must be /nix/store/<hash>-<name>")?;
            fetch(&format!("{base}/api/paths/{}", p.hash())).await?
        }
        None => fetch(&format!("{base}/api/status")).await?,
    };
    let problems: Vec<String> = v
        .pointer("/health/problems")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok((out, problems));
    }
    let g = |p: &str| match v.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(x) => x.to_string(),
    };
    if path.is_some() {
        writeln!(out, "{}", g("/store_path"))?;
        writeln!(out, "  NarHash  {}  NarSize {}", g("/nar_hash"), g("/nar_size"))?;
        writeln!(
            out,
            "  shared   {} ({}{})",
            g("/gate/shared"),
            g("/gate/verdict"),
            match g("/gate/reason").as_str() {
                "-" => String::new(),
                r => format!(": {r}"),
            }
        )?;
        writeln!(
            out,
            "  index    {}  root {}  chunks {}",
            g("/index/status"),
            g("/index/root_cid"),
            g("/index/chunk_count")
        )?;
        return Ok((out, problems));
    }
    // Health first, then what another machine needs, then what it did.
    match problems.as_slice() {
        [] => writeln!(out, "health     ok")?,
        p => writeln!(out, "health     DEGRADED: {}", p.join("; "))?,
    }
    writeln!(
        out,
        "peerix {}  {}  listening on {}  up {}s",
        g("/version"),
        g("/peer_id"),
        g("/listen"),
        g("/uptime_secs")
    )?;
    let addrs: Vec<&str> =
        v.pointer("/listen_addrs").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    if !addrs.is_empty() {
        writeln!(out, "reach me   (another machine's --peer)")?;
        for a in addrs {
            writeln!(out, "  {a}")?;
        }
    }
    if let Some(key) = v.pointer("/trust/signing_public_key").and_then(Value::as_str) {
        writeln!(out, "signing    {key}  (what other machines' trusted-public-keys need)")?;
    }
    writeln!(
        out,
        "store      {} ({} valid paths, {} NAR bytes)",
        g("/store_root"),
        g("/nix_db/valid_paths"),
        g("/nix_db/nar_bytes")
    )?;
    writeln!(
        out,
        "index      {} published, {} private, {} failed; {} chunks ({} unique), {} bytes deduplicated",
        g("/index/published_paths"),
        g("/index/private_paths"),
        g("/index/failed_paths"),
        g("/index/chunks"),
        g("/index/unique_chunks"),
        g("/index/bytes_deduplicated")
    )?;
    writeln!(
        out,
        "scan       running {}: {}/{} paths, {}/{} bytes, {} B/s, ETA {} s",
        g("/scan/running"),
        g("/scan/done_paths"),
        g("/scan/total_paths"),
        g("/scan/done_bytes"),
        g("/scan/total_bytes"),
        g("/scan/bytes_per_sec"),
        g("/scan/eta_secs")
    )?;
    writeln!(
        out,
        "trust      keys {}  upstream {}  serve-private {}",
        g("/trust/trusted_keys"),
        g("/trust/upstream"),
        g("/trust/serve_private")
    )?;
    writeln!(
        out,
        "served     to nix: narinfos {} (+{} not here, {} private), NARs {} ({})",
        g("/requests/narinfo_hits"),
        g("/requests/narinfo_misses"),
        g("/requests/narinfo_private"),
        g("/requests/nars_served"),
        human(n(&v, "/requests/nar_bytes_served"))
    )?;
    writeln!(
        out,
        "           to peers: narinfos {}, blocks {} ({})",
        g("/requests/peer_narinfos_served"),
        g("/requests/peer_blocks_served"),
        human(n(&v, "/requests/peer_bytes_served"))
    )?;
    print_peers(&mut out, &v)?;
    print_substitution(&mut out, &v)?;
    Ok((out, problems))
}

/// `1234567` → `1.2 MB`.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

fn n(v: &Value, p: &str) -> u64 {
    v.pointer(p).and_then(Value::as_u64).unwrap_or(0)
}

/// Short form of a peer id for tables: `12D3…wxyz`.
fn short(id: &str) -> String {
    if id.len() > 16 { format!("{}…{}", &id[..8], &id[id.len() - 6..]) } else { id.to_owned() }
}

fn print_peers(out: &mut String, v: &Value) -> std::fmt::Result {
    let Some(peers) = v.pointer("/p2p/peers").and_then(Value::as_array) else { return Ok(()) };
    let connected: Vec<&Value> = peers.iter().filter(|p| p["connected"] == true).collect();
    let peerix = connected.iter().filter(|p| p["peerix"] == true).count();
    writeln!(
        out,
        "peers      {} connected ({peerix} peerix), {} remembered",
        connected.len(),
        peers.len() - connected.len()
    )?;
    for p in peers.iter().take(20) {
        let s = &p["stats"];
        writeln!(
            out,
            "  {:<16} {:<8} {:<7} {:<12} summary {:>7}  rx {:>9}  tx {:>9}  lookups {}/{}  untrusted {}  bad blocks {}{}",
            short(p["peer_id"].as_str().unwrap_or("?")),
            p["found"].as_str().unwrap_or("-"),
            match (p["peerix"] == true, p["connected"] == true) {
                (true, _) => "peerix",
                (false, true) => "ipfs",
                (false, false) => "-",
            },
            if p["connected"] == true { "connected" } else { "disconnected" },
            p["summary_paths"].as_u64().map(|x| format!("{x} paths")).unwrap_or_else(|| "-".into()),
            human(n(s, "/bytes_received")),
            human(n(s, "/bytes_sent")),
            n(s, "/lookups_answered"),
            n(s, "/lookups_asked"),
            n(s, "/untrusted_answers"),
            n(s, "/bad_blocks"),
            if p["dishonest"] == true { "  DISHONEST" } else { "" },
        )?;
    }
    Ok(())
}

fn print_substitution(out: &mut String, v: &Value) -> std::fmt::Result {
    let Some(sub) = v.get("substitution") else { return Ok(()) };
    writeln!(
        out,
        "lookups    from peers {} ({} sent with a closure)  misses {} (no summary matched) + {} (asked, no trusted answer)",
        n(sub, "/counters/peer_hits"),
        n(sub, "/counters/closure_hits"),
        n(sub, "/counters/misses_unasked"),
        n(sub, "/counters/misses_asked")
    )?;
    for l in sub["lookups"].as_array().into_iter().flatten().take(5) {
        writeln!(
            out,
            "  {}  {:<4}  {:>8.1} ms  asked {}  {}",
            l["hash"].as_str().unwrap_or("?"),
            l["outcome"].as_str().unwrap_or("?"),
            n(l, "/micros") as f64 / 1000.0,
            n(l, "/asked"),
            l["peer"].as_str().map(short).unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "transfers  {} done, {} failed; {} from peers, {} from fallbacks, {} duplicate",
        n(sub, "/counters/transfers_done"),
        n(sub, "/counters/transfers_failed"),
        human(n(sub, "/counters/bytes_from_peers")),
        human(n(sub, "/counters/bytes_from_fallbacks")),
        human(n(sub, "/counters/duplicate_bytes"))
    )?;
    for t in sub["transfers"].as_array().into_iter().flatten().take(5) {
        let from: Vec<String> = t["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{}={}", short(s["source"].as_str().unwrap_or("?")), human(n(s, "/bytes"))))
            .collect();
        writeln!(
            out,
            "  {}  {}/{}  {:.1} MB/s  {}  from {}",
            t["store_path"].as_str().unwrap_or("?"),
            human(n(t, "/bytes_done")),
            human(n(t, "/bytes_total")),
            t["mb_per_s"].as_f64().unwrap_or(0.0),
            t["outcome"].as_str().unwrap_or("?"),
            if from.is_empty() { "-".into() } else { from.join(" ") }
        )?;
    }
    Ok(())
}
