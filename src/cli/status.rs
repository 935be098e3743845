//! `peerix status`: what a running daemon reports (`/api/status`, `/api/paths/<hash>`).

use anyhow::Context;
use serde_json::Value;

use peerix::nix::store_path::StorePath;

async fn fetch(url: &str) -> anyhow::Result<Value> {
    let resp = reqwest::get(url).await.with_context(|| format!("cannot reach {url} (is `peerix serve` running?)"))?;
    let status = resp.status();
    let text = resp.text().await?;
    anyhow::ensure!(status.is_success(), "{url}: HTTP {status}: {}", text.trim());
    Ok(serde_json::from_str(&text)?)
}

pub async fn show(base: &str, path: Option<&str>, json: bool) -> anyhow::Result<()> {
    let base = base.trim_end_matches('/');
    let v = match path {
        Some(p) => {
            let p = StorePath::parse(p.trim_end_matches('/')).context("--path must be /nix/store/<hash>-<name>")?;
            fetch(&format!("{base}/api/paths/{}", p.hash())).await?
        }
        None => fetch(&format!("{base}/api/status")).await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let g = |p: &str| match v.pointer(p) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(x) => x.to_string(),
    };
    if path.is_some() {
        println!("{}", g("/store_path"));
        println!("  NarHash  {}  NarSize {}", g("/nar_hash"), g("/nar_size"));
        println!(
            "  shared   {} ({}{})",
            g("/gate/shared"),
            g("/gate/verdict"),
            match g("/gate/reason").as_str() {
                "-" => String::new(),
                r => format!(": {r}"),
            }
        );
        println!(
            "  index    {}  root {}  chunks {}",
            g("/index/status"),
            g("/index/root_cid"),
            g("/index/chunk_count")
        );
        return Ok(());
    }
    println!("peerix {}  {}  listening on {}  up {}s", g("/version"), g("/peer_id"), g("/listen"), g("/uptime_secs"));
    println!(
        "store      {} ({} valid paths, {} NAR bytes)",
        g("/store_root"),
        g("/nix_db/valid_paths"),
        g("/nix_db/nar_bytes")
    );
    println!(
        "index      {} published, {} private, {} failed; {} chunks ({} unique), {} bytes deduplicated",
        g("/index/published_paths"),
        g("/index/private_paths"),
        g("/index/failed_paths"),
        g("/index/chunks"),
        g("/index/unique_chunks"),
        g("/index/bytes_deduplicated")
    );
    println!(
        "scan       running {}: {}/{} paths, {}/{} bytes, {} B/s, ETA {} s",
        g("/scan/running"),
        g("/scan/done_paths"),
        g("/scan/total_paths"),
        g("/scan/done_bytes"),
        g("/scan/total_bytes"),
        g("/scan/bytes_per_sec"),
        g("/scan/eta_secs")
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
    print_peers(&v);
    print_substitution(&v);
    Ok(())
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

fn print_peers(v: &Value) {
    let Some(peers) = v.pointer("/p2p/peers").and_then(Value::as_array) else { return };
    let connected: Vec<&Value> = peers.iter().filter(|p| p["connected"] == true).collect();
    let peerix = connected.iter().filter(|p| p["peerix"] == true).count();
    println!(
        "peers      {} connected ({peerix} peerix), {} remembered",
        connected.len(),
        peers.len() - connected.len()
    );
    for p in peers.iter().take(20) {
        let s = &p["stats"];
        println!(
            "  {:<16} {:<8} {:<7} {:<9} summary {:>7}  rx {:>9}  tx {:>9}  lookups {}/{}  untrusted {}  bad blocks {}{}",
            short(p["peer_id"].as_str().unwrap_or("?")),
            p["found"].as_str().unwrap_or("-"),
            if p["peerix"] == true { "peerix" } else { "ipfs" },
            if p["connected"] == true { "connected" } else { "gone" },
            p["summary_paths"].as_u64().map(|x| format!("{x} paths")).unwrap_or_else(|| "-".into()),
            human(n(s, "/bytes_received")),
            human(n(s, "/bytes_sent")),
            n(s, "/lookups_answered"),
            n(s, "/lookups_asked"),
            n(s, "/untrusted_answers"),
            n(s, "/bad_blocks"),
            if p["dishonest"] == true { "  DISHONEST" } else { "" },
        );
    }
}

fn print_substitution(v: &Value) {
    let Some(sub) = v.get("substitution") else { return };
    println!(
        "lookups    from peers {}  misses {} (no summary matched) + {} (asked, no trusted answer)",
        n(sub, "/counters/peer_hits"),
        n(sub, "/counters/misses_unasked"),
        n(sub, "/counters/misses_asked")
    );
    for l in sub["lookups"].as_array().into_iter().flatten().take(5) {
        println!(
            "  {}  {:<4}  {:>8.1} ms  asked {}  {}",
            l["hash"].as_str().unwrap_or("?"),
            l["outcome"].as_str().unwrap_or("?"),
            n(l, "/micros") as f64 / 1000.0,
            n(l, "/asked"),
            l["peer"].as_str().map(short).unwrap_or_default()
        );
    }
    println!(
        "transfers  {} done, {} failed; {} from peers, {} from fallbacks, {} duplicate",
        n(sub, "/counters/transfers_done"),
        n(sub, "/counters/transfers_failed"),
        human(n(sub, "/counters/bytes_from_peers")),
        human(n(sub, "/counters/bytes_from_fallbacks")),
        human(n(sub, "/counters/duplicate_bytes"))
    );
    for t in sub["transfers"].as_array().into_iter().flatten().take(5) {
        let from: Vec<String> = t["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| format!("{}={}", short(s["source"].as_str().unwrap_or("?")), human(n(s, "/bytes"))))
            .collect();
        println!(
            "  {}  {}/{}  {:.1} MB/s  {}  from {}",
            t["store_path"].as_str().unwrap_or("?"),
            human(n(t, "/bytes_done")),
            human(n(t, "/bytes_total")),
            t["mb_per_s"].as_f64().unwrap_or(0.0),
            t["outcome"].as_str().unwrap_or("?"),
            if from.is_empty() { "-".into() } else { from.join(" ") }
        );
    }
}
