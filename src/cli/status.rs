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
    Ok(())
}
