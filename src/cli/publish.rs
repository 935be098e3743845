//! `peerix publish` (index now, with progress) and `peerix verify` (check the index against the
//! store and the blockstore against CIDs).

use std::io::{IsTerminal, Read};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use peerix::config::ServeConfig;
use peerix::ipld;
use peerix::nix::nar_layout::NarLayout;
use peerix::nix::store_path::StorePath;
use peerix::publish::Publisher;
use peerix::store::ScanProgress;

use super::owner::{Held, Owner};

pub async fn publish(mut cfg: ServeConfig, paths: &[String], jobs: Option<usize>) -> anyhow::Result<()> {
    let _owner = match Owner::take(&cfg.state_dir, "publish")? {
        Ok(owner) => owner,
        Err(Held::Daemon(url)) => return ask_daemon(&url, paths).await,
        Err(held) => anyhow::bail!("{} is in use by {held}; try again when it is done", cfg.state_dir.display()),
    };
    let cache = super::open_cache(&mut cfg)?;
    let only = paths
        .iter()
        .map(|p| StorePath::parse(p.trim_end_matches('/')).with_context(|| format!("{p} is not a store path")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // A path the store does not hold is an operator's mistake (a typo, the wrong --store-root):
    // said and failed, not "published 0".
    for path in &only {
        let held = cache.store_db().query_by_hash(&path.hash()).context("cannot read the Nix database")?;
        anyhow::ensure!(held.is_some(), "{path} is not a valid path in the Nix store at {}", cfg.store_root.display());
    }
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let publisher = Publisher::new(cache, jobs, cfg.index_rate.unwrap_or(0))?;

    let bar = byte_bar();
    // Quiet when stderr is no terminal (a log, a pipe): the summary line says what was done.
    let on_progress = |p: &ScanProgress| {
        if let Some(b) = &bar {
            b.set_length(p.total_bytes);
            b.set_position(p.done_bytes);
            b.set_message(format!("{}/{} paths", p.done_paths, p.total_paths));
        }
    };
    let only = (!only.is_empty()).then_some(only.as_slice());
    let report = publisher.scan(only, &on_progress).await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    println!(
        "published {}, private {}, failed {}, removed {}, rechecked {}, unchanged {}; {} NAR bytes indexed",
        report.published,
        report.private,
        report.failed,
        report.removed,
        report.rechecked,
        report.unchanged,
        report.bytes_indexed
    );
    Ok(())
}

pub async fn verify(mut cfg: ServeConfig, repair: bool) -> anyhow::Result<()> {
    // Checking reads (SQLite lets it beside a daemon); repairing writes the index, so it needs the
    // state directory to itself.
    let _owner = match Owner::take(&cfg.state_dir, "verify")? {
        Ok(owner) => Some(owner),
        Err(held) if repair => {
            anyhow::bail!(
                "{} is in use by {held}; stop it to repair (checking alone works beside it)",
                cfg.state_dir.display()
            )
        }
        Err(_) => None,
    };
    let cache = super::open_cache(&mut cfg)?;
    let cache2 = cache.clone();
    // Re-reading a store takes a while: bytes, rate and ETA on a terminal, nothing in a log.
    let bar = byte_bar();
    if let Some(b) = &bar {
        b.set_message("verifying");
    }
    let bar2 = bar.clone();
    let (bad, checked) =
        peerix::tasks::spawn_blocking(module_path!(), move || -> anyhow::Result<(Vec<String>, String)> {
            let (cache, bar) = (cache2, bar2);
            let state = cache.state();
            let mut bad: Vec<String> = state.quick_check()?.into_iter().map(|e| format!("state DB: {e}")).collect();
            let (mut paths, mut chunks, mut blocks) = (0u64, 0u64, 0u64);
            let published = state.published_paths()?;
            if let Some(b) = &bar {
                let total =
                    published.iter().filter_map(|h| state.path_entry(h).ok().flatten()).map(|e| e.nar_size).sum();
                b.set_length(total);
            }
            for hash32 in published {
                paths += 1;
                let Some(entry) = state.path_entry(&hash32)? else { continue };
                let store_path = StorePath::parse(&entry.store_path)?;
                let index = state.chunks_of(&hash32)?;
                let problem = match NarLayout::of(&cache.fs_path(&store_path)) {
                    Err(e) => Some(format!("{}: unreadable ({e})", entry.store_path)),
                    Ok(_) if entry.root_cid.is_none() => {
                        Some(format!("{}: published without a root", entry.store_path))
                    }
                    Ok(_) if !covers(&index, entry.nar_size) => {
                        Some(format!("{}: chunks do not cover its {} NAR bytes", entry.store_path, entry.nar_size))
                    }
                    Ok(layout) => {
                        let mut reader = layout.reader();
                        let mut problem = None;
                        for (offset, len, cid) in index {
                            chunks += 1;
                            if let Some(b) = &bar {
                                b.inc(len.into());
                            }
                            let mut buf = vec![0u8; len as usize];
                            if let Err(e) = reader.read_exact(&mut buf) {
                                problem = Some(format!("{}: chunk at {offset} unreadable ({e})", entry.store_path));
                                break;
                            }
                            if !ipld::verify(&cid, &buf) {
                                problem = Some(format!("{}: chunk {cid} at {offset} does not match", entry.store_path));
                                break;
                            }
                        }
                        problem
                    }
                };
                if let Some(p) = problem {
                    if repair {
                        cache.unpublish_broken(&store_path.hash(), "verify found chunks that do not match")?;
                    }
                    bad.push(p);
                }
            }
            for cid in state.block_cids()? {
                blocks += 1;
                let ok = state.get_block(&cid)?.is_some_and(|d| ipld::verify(&cid, &d));
                if !ok {
                    if repair {
                        state.delete_block(&cid)?;
                    }
                    bad.push(format!("block {cid} does not match its CID"));
                }
            }
            Ok((bad, format!("{paths} paths ({chunks} chunks), {blocks} stored blocks")))
        })
        .await??;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for b in &bad {
        println!("BAD {b}");
    }
    println!("verified {checked}: {} bad{}", bad.len(), if repair && !bad.is_empty() { " (repaired)" } else { "" });
    anyhow::ensure!(bad.is_empty() || repair, "{} bad entries (run with --repair to drop them)", bad.len());
    Ok(())
}

/// `peerix publish` beside a running daemon: asks it to scan now (its flags decide what is shared),
/// shows its progress, then reports its index and, for each path named, what it decided.
async fn ask_daemon(url: &str, paths: &[String]) -> anyhow::Result<()> {
    let http = peerix::remote::client(peerix::timeouts::CLI_REQUEST)?;
    let base = url.trim_end_matches('/');
    eprintln!("a daemon runs on this state directory ({base}): asking it to scan under its own configuration");
    let asked_at = peerix::store::now_secs();
    let resp = http
        .post(format!("{base}/api/index/scan"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {base}"))?;
    anyhow::ensure!(resp.status().is_success(), "the daemon at {base} refused the scan: HTTP {}", resp.status());
    let status = |http: reqwest::Client| async move {
        let resp = http.get(format!("{base}/api/status")).send().await?;
        let body = peerix::remote::read_capped(resp, 16 << 20).await?;
        anyhow::Ok(serde_json::from_slice::<serde_json::Value>(&body)?)
    };
    let bar = byte_bar();
    // Done once a scan that began after the request has ended (a scan already running when it
    // came is followed by the one it asked for).
    let v = loop {
        let v = status(http.clone()).await?;
        let scan = &v["scan"];
        let n = |k: &str| scan[k].as_u64().unwrap_or(0);
        if let Some(b) = &bar {
            b.set_length(n("total_bytes"));
            b.set_position(n("done_bytes"));
            b.set_message(format!("{}/{} paths", n("done_paths"), n("total_paths")));
        }
        if scan["running"] == false && scan["started_at"].as_i64().unwrap_or(0) >= asked_at {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let index = &v["index"];
    println!(
        "the daemon's index: published {}, private {}, failed {}",
        index["published_paths"], index["private_paths"], index["failed_paths"]
    );
    for p in paths {
        let path = StorePath::parse(p.trim_end_matches('/')).with_context(|| format!("{p} is not a store path"))?;
        let resp = http.get(format!("{base}/api/paths/{}", path.hash())).send().await?;
        let entry: serde_json::Value = serde_json::from_slice(&peerix::remote::read_capped(resp, 1 << 20).await?)?;
        let status = entry.pointer("/index/status").and_then(|s| s.as_str()).unwrap_or("not in its store");
        println!("{path}: {status}");
    }
    Ok(())
}

/// A progress bar in bytes with rate and ETA, on a terminal only (a log or a pipe gets none).
fn byte_bar() -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    })
}

/// True when `chunks` (offset, length, CID), in order, tile `0..nar_size` with no gap or overlap.
fn covers(chunks: &[(u64, u32, cid::Cid)], nar_size: u64) -> bool {
    let mut next = 0;
    for (offset, len, _) in chunks {
        if *offset != next {
            return false;
        }
        next += u64::from(*len);
    }
    next == nar_size
}
