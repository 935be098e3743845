//! The daemon runs without transparent huge pages: mimalloc asks for them on its arenas, and a
//! first touch then zeroes 2 MiB however small the block (half of a seeder's CPU in
//! `benches/closure.sh` before `main` turned them off). The kernel says so in the process's status.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn the_daemon_opts_out_of_transparent_huge_pages() {
    let w = Work::new();
    let d = Daemon::start(&w.path("state"), &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let thp = status.lines().find(|l| l.starts_with("THP_enabled:")).expect("a kernel that reports THP_enabled");
    assert_eq!(thp.split_whitespace().nth(1), Some("0"), "{thp}");
}
