//! Configuration: flags win over `PEERIX_*` variables, which win over the TOML file; a bad config
//! key or an unusable key file stops the start with a clear message; `peerix keygen` writes keys
//! that nix itself reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

async fn priority(d: &Daemon) -> String {
    let r = get(&format!("{}/nix-cache-info", d.url)).await;
    assert_eq!(r.status, 200);
    r.text().lines().find_map(|l| l.strip_prefix("Priority: ").map(str::to_owned)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_beat_env_beat_file() {
    let w = Work::new();
    let cfg = w.path("peerix.toml");
    std::fs::write(&cfg, "priority = 13\nupstream = \"none\"\nserve-private = false\n").unwrap();
    let c = cfg.to_str().unwrap();
    let d = Daemon::try_start_env(&w.path("s1"), &["--config", c], &[]).unwrap();
    assert_eq!(priority(&d).await, "13");
    let d = Daemon::try_start_env(&w.path("s2"), &["--config", c], &[("PEERIX_PRIORITY", "11")]).unwrap();
    assert_eq!(priority(&d).await, "11");
    let d = Daemon::try_start_env(&w.path("s3"), &["--config", c, "--priority", "12"], &[("PEERIX_PRIORITY", "11")])
        .unwrap();
    assert_eq!(priority(&d).await, "12");
    // The state dir holds the SQLite file, in WAL mode.
    assert!(w.path("s3/peerix.sqlite").exists());
    let mode = rusqlite::Connection::open(w.path("s3/peerix.sqlite"))
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn bad_config_stops_the_start_with_a_clear_message() {
    let w = Work::new();
    let cfg = w.path("typo.toml");
    std::fs::write(&cfg, "listne = \"127.0.0.1:1\"\n").unwrap();
    let err = Daemon::try_start(&w.path("s"), &["--config", cfg.to_str().unwrap()]).err().expect("must not start");
    assert!(err.contains("unknown field `listne`"), "{err}");

    let missing = w.path("no-such-key");
    let err = Daemon::try_start(&w.path("s"), &["--private-key-file", missing.to_str().unwrap()]).err().unwrap();
    assert!(err.contains("private key file") && err.contains("no-such-key"), "{err}");

    std::fs::write(w.path("bad.sk"), "name:not-base64!").unwrap();
    let err =
        Daemon::try_start(&w.path("s"), &["--private-key-file", w.path("bad.sk").to_str().unwrap()]).err().unwrap();
    assert!(err.contains("not valid base64"), "{err}");

    let err = Daemon::try_start(&w.path("s"), &["--trusted-public-key", "nocolon"]).err().unwrap();
    assert!(err.contains("trusted public key"), "{err}");
}

#[test]
fn serve_help_documents_every_option() {
    let help = run(Command::new(env!("CARGO_BIN_EXE_peerix")).args(["serve", "--help"]));
    for flag in [
        "--config",
        "--listen",
        "--state-dir",
        "--store-root",
        "--priority",
        "--trusted-public-key",
        "--upstream",
        "--upstream-negative-ttl",
        "--serve-private",
        "--private-key-file",
        "PEERIX_LISTEN",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn keygen_writes_keys_nix_reads() {
    let w = Work::new();
    let (sk, pk) = (w.path("k.sk"), w.path("k.pk"));
    run(Command::new(env!("CARGO_BIN_EXE_peerix")).args(["keygen", "peerix-kg-1"]).arg(&sk).arg(&pk));
    let secret = std::fs::File::open(&sk).unwrap();
    let from_nix = run(w.nix("nix").args(["key", "convert-secret-to-public"]).stdin(secret));
    assert_eq!(from_nix, std::fs::read_to_string(&pk).unwrap());
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sk).unwrap().permissions()) & 0o777, 0o600);
    // An existing secret key is never overwritten.
    let again = Command::new(env!("CARGO_BIN_EXE_peerix")).args(["keygen", "x"]).arg(&sk).arg(&pk).output().unwrap();
    assert!(!again.status.success());
}
