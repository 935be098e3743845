//! The NixOS modules agree with the binary they run. Nixpkgs cannot be fetched here, so the modules
//! (`nix/module.nix`, `nix/tracker-module.nix`) are evaluated by Debian's nix against a stand-in
//! for nixpkgs' lib (`tests/nixos/stub.nix`), and what they build is checked with real tools: every
//! command line they can emit goes through the real parser (`peerix serve|tracker
//! --print-config`), their units through `systemd-analyze verify` and `security --offline`. (The
//! README's configuration table is checked in `tests/configuration.rs`.) The NixOS VM tests in
//! `nix/tests/` need nixpkgs and run under `nix flake check` elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::nixos::{effective, evaluate, evaluate_file};
use common::*;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            nix_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "nix") {
            out.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let mut files = vec![Path::new(ROOT).join("flake.nix")];
    nix_files(&Path::new(ROOT).join("nix"), &mut files);
    nix_files(&Path::new(ROOT).join("tests/nixos"), &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for f in files {
        let out =
            Command::new("nix-instantiate").env("NIX_CONFIG", NIX_CONFIG).arg("--parse").arg(&f).output().unwrap();
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
    // No IPFS daemon of its own: peerix embeds its node.
    for f in ["flake.nix", "nix/module.nix", "nix/tests/common.nix"] {
        let text = std::fs::read_to_string(Path::new(ROOT).join(f)).unwrap();
        assert!(!text.lines().any(|l| l.contains("services.kubo") && !l.trim_start().starts_with('#')), "{f}");
    }
}

#[test]
fn options_are_the_documented_ones_with_their_defaults() {
    let eval = evaluate("{ }");
    let options = eval["options"].as_object().unwrap();
    let mut names: Vec<&str> = options.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "enable",
            "extraArgs",
            "fallback",
            "mode",
            "openFirewall",
            "p2pPort",
            "peers",
            "port",
            "privateKeyFile",
            "publicKey",
            "settings",
            "trackerUrl",
            "trustedPublicKeys",
            "upstream"
        ]
    );
    let default = |name: &str| options[name]["default"].clone();
    assert_eq!(default("enable"), false);
    assert_eq!(default("mode"), "ipfs");
    assert_eq!(options["mode"]["values"], serde_json::json!(["ipfs", "lan"]));
    assert_eq!(default("port"), 12304);
    assert_eq!(default("p2pPort"), 12306);
    assert_eq!(default("openFirewall"), true);
    for nothing in ["trackerUrl", "privateKeyFile", "publicKey", "upstream"] {
        assert_eq!(default(nothing), Value::Null, "{nothing}");
    }
    assert_eq!(options["privateKeyFile"]["type"], "null or str or path");
    // Nothing runs unless enabled.
    assert_eq!(eval["condition"], false);
}

/// The module's defaults are the daemon's: its unit runs exactly what a bare `peerix serve` as root
/// would (the state dir is systemd's StateDirectory, which is also root's default).
#[test]
fn the_default_unit_runs_the_daemon_on_its_own_defaults() {
    let w = Work::new();
    let module = effective(&evaluate("{ enable = true; }"), &w).unwrap();
    let bare = Command::new(env!("CARGO_BIN_EXE_peerix"))
        .args(["serve", "--print-config", "--state-dir", "/var/lib/peerix"])
        .output()
        .unwrap();
    assert!(bare.status.success());
    let bare: toml::Table = toml::from_str(&String::from_utf8_lossy(&bare.stdout)).unwrap();
    assert_eq!(module, bare);
    assert_eq!(module["listen"].as_str(), Some("127.0.0.1:12304"));
}

#[test]
fn every_option_reaches_the_daemon() {
    let w = Work::new();
    let peer = "/ip4/192.168.1.20/tcp/12306/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    let (_, key_a) = w.keypair("peerix-module-a");
    let (_, key_b) = w.keypair("peerix-module-b");
    let overrides = format!(
        r#"{{ enable = true; mode = "lan"; port = 12400; p2pPort = 12401; openFirewall = false;
             privateKeyFile = "/run/keys/peerix.sk"; publicKey = "{key_a}";
             trustedPublicKeys = [ "{key_a}" "{key_b}" ]; upstream = "none";
             peers = [ "{peer}" ]; fallback = [ "kubo+http://127.0.0.1:5001" "https://gw.example/" ];
             trackerUrl = "http://tracker.example:12305";
             extraArgs = [ "--lookup-timeout" "2s" "--priority" "7%" ];
             settings = {{ cache-size = "20G"; lookup-timeout = "500ms"; index-jobs = 3; index-rate = "100M";
                          mdns = false; serve-private = true; provide-rate = 4; upnp = true; }}; }}"#
    );
    let eval = evaluate(&overrides);
    assert_eq!(eval["badTypes"], serde_json::json!([]), "the sample must fit the options' types");
    for typed in eval["settingsOptions"].as_object().unwrap().keys() {
        assert!(eval["settings"].get(typed).is_some(), "the sample leaves settings.{typed} out");
    }
    // `%` in an argument is doubled for systemd; here the parser must reject "7%" as a priority.
    let err = effective(&eval, &w).unwrap_err();
    assert!(err.contains("--priority") && err.contains("7%"), "{err}");
    let eval = evaluate(&overrides.replace(r#""--priority" "7%""#, r#""--priority" "7""#));
    let cfg = effective(&eval, &w).unwrap();
    let s = |k: &str| cfg[k].as_str().unwrap().to_owned();
    let list = |k: &str| cfg[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(s("listen"), "127.0.0.1:12400");
    assert_eq!(s("mode"), "lan");
    assert_eq!(list("p2p-listen"), ["/ip4/0.0.0.0/tcp/12401", "/ip4/0.0.0.0/udp/12401/quic-v1"]);
    assert_eq!(s("private-key-file"), w.path("credentials/private-key").display().to_string());
    assert_eq!(list("trusted-public-keys"), [key_a.trim(), key_b.trim()]);
    assert_eq!(s("upstream"), "none");
    assert_eq!(list("peers"), [peer]);
    assert_eq!(list("fallbacks"), ["kubo+http://127.0.0.1:5001", "https://gw.example"]);
    assert_eq!(s("lookup-timeout"), "2s", "extraArgs are flags: they win over settings");
    assert_eq!(cfg["priority"].as_integer(), Some(7));
    assert_eq!(s("cache-size"), "20G");
    assert_eq!(cfg["index-jobs"].as_integer(), Some(3));
    assert_eq!(s("index-rate"), "100M");
    assert_eq!(cfg["mdns"].as_bool(), Some(false));
    assert_eq!(cfg["serve-private"].as_bool(), Some(true));
    assert_eq!(cfg["provide-rate"].as_integer(), Some(4), "a freeform settings key");
    assert_eq!(cfg["upnp"].as_bool(), Some(true));
    assert_eq!(cfg["state-dir"].as_str(), Some("/var/lib/peerix"));
    assert_eq!(eval["serviceConfig"]["LoadCredential"], serde_json::json!(["private-key:/run/keys/peerix.sk"]));
    assert_eq!(eval["firewall"], Value::Null);
    assert_eq!(eval["failedAssertions"], serde_json::json!([]));

    // The tracker (ipfs mode: lan mode ignores it, and the module warns).
    let cfg = effective(&evaluate(r#"{ enable = true; trackerUrl = "http://tracker.example:12305"; }"#), &w).unwrap();
    assert_eq!(cfg["tracker"].as_str(), Some("http://tracker.example:12305"));
    assert_eq!(
        evaluate(r#"{ enable = true; trackerUrl = "http://t:12305"; mode = "lan"; }"#)["warnings"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // An empty key list is the whole trusted set: no key, not cache.nixos.org's.
    let cfg = effective(&evaluate("{ enable = true; trustedPublicKeys = [ ]; }"), &w).unwrap();
    assert_eq!(cfg["trusted-public-keys"].as_array().map(Vec::len), Some(0));
}

#[test]
fn secret_keys_in_the_store_are_refused() {
    let refused = |overrides: &str, why: &str| {
        let failed = evaluate(overrides)["failedAssertions"].to_string().replace("\\n", " ");
        assert!(failed.contains(why), "{overrides}: {failed}");
    };
    refused("{ enable = true; privateKeyFile = ./Cargo.toml; }", "not a path literal");
    refused(r#"{ enable = true; privateKeyFile = "/nix/store/0000-key.sk"; }"#, "world-readable Nix store");
    let ok = evaluate(r#"{ enable = true; privateKeyFile = "/run/keys/peerix.sk"; }"#);
    assert_eq!(ok["failedAssertions"], serde_json::json!([]));
    assert_eq!(ok["environment"]["PEERIX_PRIVATE_KEY_FILE"], "%d/private-key");
}

#[test]
fn nix_gets_peerix_appended_and_the_firewall_opens_only_the_p2p_port() {
    let eval = evaluate(r#"{ enable = true; port = 12400; publicKey = "peerix-x-1:AAAA"; }"#);
    let settings = eval["nixSettings"].as_object().unwrap();
    assert!(!settings.contains_key("substituters"), "the module must append, never replace: {settings:?}");
    assert_eq!(settings["extra-substituters"], serde_json::json!(["http://127.0.0.1:12400"]));
    assert_eq!(settings["extra-trusted-public-keys"], serde_json::json!(["peerix-x-1:AAAA"]));
    assert_eq!(eval["firewall"]["allowedTCPPorts"], serde_json::json!([12306]));
    assert_eq!(eval["firewall"]["allowedUDPPorts"], serde_json::json!([12306, 5353]));
    let no_mdns = evaluate("{ enable = true; settings.mdns = false; }");
    assert_eq!(no_mdns["firewall"]["allowedUDPPorts"], serde_json::json!([12306]));
}

/// The unit as NixOS writes it (one `Key=value` line per list item), checked by systemd itself:
/// every key known (a misspelt `SystemCallFilters` would be ignored in silence by systemd, as the
/// original peerix's was) and the exposure score low.
#[test]
fn the_units_pass_systemd_analyze() {
    the_unit_passes_systemd_analyze(&evaluate(r#"{ enable = true; privateKeyFile = "/run/keys/peerix.sk"; }"#));
    the_unit_passes_systemd_analyze(&evaluate_file("tests/nixos/eval-tracker.nix", "{ enable = true; }"));
}

fn the_unit_passes_systemd_analyze(eval: &Value) {
    let mut unit = format!("[Unit]\nDescription={}\n", eval["unit"]["description"].as_str().unwrap());
    for dep in ["wants", "after"] {
        for target in eval["unit"][dep].as_array().unwrap() {
            unit.push_str(&format!(
                "{}={}\n",
                if dep == "wants" { "Wants" } else { "After" },
                target.as_str().unwrap()
            ));
        }
    }
    unit.push_str(&format!("\n[Service]\nExecStart={} serve\n", env!("CARGO_BIN_EXE_peerix")));
    for (k, v) in eval["environment"].as_object().unwrap() {
        unit.push_str(&format!("Environment=\"{k}={}\"\n", v.as_str().unwrap()));
    }
    for (key, value) in eval["serviceConfig"].as_object().unwrap() {
        let values = match value {
            Value::Array(items) => items.clone(),
            v => vec![v.clone()],
        };
        for v in values {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            unit.push_str(&format!("{key}={v}\n"));
        }
    }
    unit.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    let w = Work::new();
    let file = w.path("peerix.service");
    std::fs::write(&file, &unit).unwrap();

    let verify = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&file).output().unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(!complaints.contains(file.to_str().unwrap()), "systemd-analyze verify:\n{complaints}\n{unit}");

    // Exposure 0–10 (the threshold is ×10): 2.0 and below is hardened well into systemd's "OK".
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let score = report.lines().find(|l| l.contains("Overall exposure level")).unwrap_or("no score").to_owned();
    eprintln!("{score}");
    assert!(security.status.success(), "{score}\n{report}\n{unit}");
}

/// The NixOS service reads Nix's DB as a dynamic user that may not write `/nix/var/nix/db`: with
/// no `db.sqlite-shm` (nix idle), SQLite cannot open the WAL index, and peerix reads the DB file
/// alone; with one (nix busy), it reads through it and sees commits as they happen.
#[tokio::test(flavor = "multi_thread")]
async fn an_unprivileged_daemon_reads_a_nix_db_it_cannot_write() {
    use std::os::unix::fs::PermissionsExt;
    let w = Work::new();
    std::fs::set_permissions(w.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let a = w.build_fixture();
    let store = w.chroot_store("store", &[&a.top]);
    let db = store.join("nix/var/nix/db/db.sqlite");
    let shm = store.join("nix/var/nix/db/db.sqlite-shm");
    assert!(!shm.exists(), "nix left its WAL index behind; this test needs it gone");
    let state = w.path("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    let d = Daemon::start_in(&nobody, &state, &["--store-root", store.to_str().unwrap(), "--serve-private"]);
    let narinfo = |path: &str| format!("{}/{}.narinfo", d.url, hash_part(path));
    assert_eq!(get(&narinfo(&a.top)).await.status, 200, "{}", d.log());
    assert!(!shm.exists(), "the daemon must not have created the WAL index");

    // Nix busy: a connection holds the index open while a new path is committed to the WAL.
    let busy = rusqlite::Connection::open(&db).unwrap();
    busy.query_row("SELECT count(*) FROM ValidPaths", [], |r| r.get::<_, i64>(0)).unwrap();
    assert!(shm.exists());
    let b = w.build_fixture();
    run(w.nix("nix").args(["copy", "--no-check-sigs", "--to"]).arg(&store).arg(&b.top));
    assert!(store.join("nix/var/nix/db/db.sqlite-wal").metadata().unwrap().len() > 0, "the commit is in the WAL");
    assert_eq!(get(&narinfo(&b.top)).await.status, 200, "a commit still in the WAL is seen");
    assert_eq!(get(&narinfo(&a.top)).await.status, 200);
    drop(busy);
}

#[test]
fn the_tracker_unit_runs_the_tracker_its_options_say() {
    let w = Work::new();
    let tracker = |o: &str| evaluate_file("tests/nixos/eval-tracker.nix", o);
    let eval = tracker("{ enable = true; }");
    let mut names: Vec<&String> = eval["options"].as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["enable", "openFirewall", "p2pPort", "port", "settings"]);
    let cfg = effective(&eval, &w).unwrap();
    assert_eq!(cfg["listen"].as_str(), Some("0.0.0.0:12305"));
    assert_eq!(cfg["state-dir"].as_str(), Some("/var/lib/peerix-tracker"));
    assert_eq!(cfg["ttl"].as_integer(), Some(300));
    assert_eq!(eval["firewall"]["allowedTCPPorts"], serde_json::json!([12305, 12307]));
    assert_eq!(eval["firewall"]["allowedUDPPorts"], serde_json::json!([12307]));
    assert_eq!(
        cfg["p2p-listen"],
        toml::Value::Array(vec!["/ip4/0.0.0.0/tcp/12307".into(), "/ip4/0.0.0.0/udp/12307/quic-v1".into()])
    );

    let eval = tracker(
        r#"{ enable = true; port = 12400; settings = { ttl = 600; trust-proxy = "127.0.0.1"; autonat-private = true;
             external-address = "/ip4/203.0.113.1/tcp/12307"; relay-max-circuit-bytes = "1G"; }; }"#,
    );
    assert_eq!(eval["badTypes"], serde_json::json!([]));
    let cfg = effective(&eval, &w).unwrap();
    assert_eq!(cfg["listen"].as_str(), Some("0.0.0.0:12400"));
    assert_eq!(cfg["ttl"].as_integer(), Some(600));
    assert_eq!(cfg["trust-proxy"].as_str(), Some("127.0.0.1"));
    assert_eq!(cfg["autonat-private"].as_bool(), Some(true));
    assert_eq!(cfg["relay-max-circuit-bytes"].as_integer(), Some(1 << 30));
    assert_eq!(cfg["external-addresses"].as_array().map(Vec::len), Some(1));
    // A settings key that is no flag of `peerix tracker` stops the unit's command line in the parser.
    let err = effective(&tracker(r#"{ enable = true; settings.no-such-flag = 1; }"#), &w).unwrap_err();
    assert!(err.contains("no-such-flag"), "{err}");
}
