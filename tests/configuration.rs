//! Configuration: flags win over `PEERIX_*` variables, which win over the TOML file; a bad config
//! key or an unusable key file stops the start with a clear message; `peerix keygen` writes keys
//! that nix itself reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::nixos::evaluate;
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

    // Numbers out of range are refused with the key and what is allowed, never a panic or a wrap.
    let err = Daemon::try_start(&w.path("s"), &["--index-jobs", "2305843009213693952"]).err().unwrap();
    assert!(err.contains("index-jobs = 2305843009213693952 is out of range: allowed 1 to 256"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peerix"))
        .args(["tracker", "--ttl", "18446744073709551615", "--print-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--ttl") && err.contains("1..=604800"), "{err}");

    // Every value is checked at the door, and the error names the flag and what is allowed.
    for (args, says) in [
        (&["--tracker", "v1"][..], "tracker \"v1\" must be an http:// or https:// URL"),
        (&["--tracker", "http://"][..], "tracker \"http://\" is not usable"),
        (&["--tracker", "http://a b:12305"][..], "it contains white space"),
        (&["--upstream", "http://:80/nix"][..], "upstream \"http://:80/nix\" is not usable"),
        (&["--fallback", "http://"][..], "fallback \"http://\" must be an http(s):// gateway URL"),
        (&["--fallback", "kubo+http://:1"][..], "fallback \"http://:1\" is not usable"),
        (&["--cache-size", "0"][..], "cache-size = 0 is out of range: allowed 16M or more"),
        (&["--cache-size", "lots"][..], "cache-size \"lots\" is not a number of bytes"),
        (&["--index-jobs", "0"][..], "index-jobs = 0 is out of range: allowed 1 to 256"),
        (&["--lookup-timeout", "soon"][..], "lookup-timeout \"soon\" is not a duration"),
        (&["--prefetch-size", "1Q"][..], "prefetch-size \"1Q\" is not a number of bytes"),
    ] {
        let err = Daemon::try_start(&w.path("s"), args).err().unwrap_or_else(|| panic!("{args:?} was accepted"));
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.matches("peerix:").count(), 1, "said once: {err}");
    }
    // And the edges that are allowed start.
    let ok = Daemon::try_start(
        &w.path("edges"),
        &["--cache-size", "16M", "--index-jobs", "256", "--tracker", "http://[::1]:1"],
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
    drop(ok);
    // A config file's error names the file and the line.
    let bad = w.path("line.toml");
    std::fs::write(&bad, "listen = \"127.0.0.1:0\"\n\ncache-size = 16M\n").unwrap();
    let err = Daemon::try_start(&w.path("s"), &["--config", bad.to_str().unwrap()]).err().unwrap();
    assert!(err.contains(&format!("{}:3:", bad.display())), "{err}");
    let value = w.path("value.toml");
    std::fs::write(&value, "cache-size = \"1K\"\n").unwrap();
    let err = Daemon::try_start(&w.path("s"), &["--config", value.to_str().unwrap()]).err().unwrap();
    assert!(err.contains("cache-size = 1024 is out of range"), "{err}");

    // A corrupt state DB stops the start, names the file, and is left as it was.
    let state = w.path("corrupt");
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("peerix.sqlite");
    std::fs::write(&db, b"not a database").unwrap();
    let err = Daemon::try_start(&state, &[]).err().expect("must not start");
    assert!(err.contains(&format!("cannot open the state database {}", db.display())), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), b"not a database");
}

/// Every flag of `peerix serve`, derived from clap's own definition (a new flag cannot be missed),
/// with the TOML key and a sample value: each has a `PEERIX_*` variable, is in `--help`, and its
/// key is one the config loader accepts (it denies unknown keys).
#[test]
fn every_serve_flag_has_a_variable_a_toml_key_and_help() {
    use clap::CommandFactory;
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: peerix::config::ServeArgs,
    }
    let keys: &[(&str, &str, &str)] = &[
        ("config", "", ""),
        ("listen", "listen", "\"127.0.0.1:1\""),
        ("state-dir", "state-dir", "\"/tmp/x\""),
        ("store-root", "store-root", "\"/\""),
        ("priority", "priority", "30"),
        ("trusted-public-key", "trusted-public-keys", "[]"),
        ("upstream", "upstream", "\"none\""),
        ("upstream-negative-ttl", "upstream-negative-ttl", "60"),
        ("serve-private", "serve-private", "false"),
        ("private-key-file", "private-key-file", "\"/k\""),
        ("index-jobs", "index-jobs", "1"),
        ("index-rate", "index-rate", "\"1M\""),
        ("cache-size", "cache-size", "\"1G\""),
        ("p2p-listen", "p2p-listen", "[]"),
        ("bootstrap", "bootstrap", "[\"none\"]"),
        ("mode", "mode", "\"lan\""),
        ("no-mdns", "mdns", "true"),
        ("external-address", "external-addresses", "[]"),
        ("dht-server", "dht-server", "false"),
        ("provide-rate", "provide-rate", "10"),
        ("no-p2p", "p2p", "true"),
        ("peer", "peers", "[]"),
        ("lookup-timeout", "lookup-timeout", "\"250ms\""),
        ("prefetch-size", "prefetch-size", "\"64M\""),
        ("prefetch-age", "prefetch-age", "\"30s\""),
        ("fallback", "fallbacks", "[]"),
        ("tracker", "tracker", "\"http://127.0.0.1:12305\""),
        ("relay", "relays", "[]"),
        ("upnp", "upnp", "false"),
    ];
    let help = run(Command::new(env!("CARGO_BIN_EXE_peerix")).args(["serve", "--help"]));
    let cmd = Serve::command();
    let flags: Vec<&clap::Arg> = cmd.get_arguments().filter(|a| a.get_long().is_some()).collect();
    assert!(flags.len() >= 24, "clap lists {} flags", flags.len());
    let mut toml = String::new();
    for arg in flags {
        let long = arg.get_long().unwrap();
        assert!(help.contains(&format!("--{long}")), "--{long} missing from --help");
        let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_else(|| panic!("--{long} has no PEERIX_* variable"));
        assert!(env.starts_with("PEERIX_") && help.contains(env), "--{long}: {env}");
        let (_, key, value) = keys
            .iter()
            .find(|(flag, _, _)| *flag == long)
            .unwrap_or_else(|| panic!("--{long} has no TOML key in this test's table"));
        if !key.is_empty() {
            toml.push_str(&format!("{key} = {value}\n"));
        }
    }
    let w = Work::new();
    let file = w.path("all.toml");
    std::fs::write(&file, &toml).unwrap();
    peerix::config::FileConfig::load(&file).unwrap_or_else(|e| panic!("{e}\n{toml}"));
}

/// The README's example configuration is one the loader takes.
#[test]
fn the_readme_configuration_example_parses() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme.split("```toml\n").nth(1).and_then(|b| b.split("```").next()).expect("a ```toml block");
    let w = Work::new();
    let file = w.path("readme.toml");
    std::fs::write(&file, block).unwrap();
    let cfg = peerix::config::FileConfig::load(&file).unwrap_or_else(|e| panic!("{e}\n{block}"));
    assert!(cfg.listen.is_some() && cfg.trusted_public_keys.is_some());
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
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    // A keygen that cannot write its public half leaves no secret behind.
    let (sk2, nowhere) = (w.path("k2.sk"), w.path("no-such-dir/k2.pk"));
    let failed =
        Command::new(env!("CARGO_BIN_EXE_peerix")).args(["keygen", "y"]).arg(&sk2).arg(&nowhere).output().unwrap();
    assert!(!failed.status.success());
    assert!(!sk2.exists(), "a secret key was left behind by a failed keygen");
    let leftovers: Vec<_> = std::fs::read_dir(w.path(""))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `peerix publish` of a path the store does not hold fails and says so (a typo is not "0 published").
#[test]
fn publishing_a_path_the_store_lacks_fails() {
    let w = Work::new();
    let f = w.build_fixture();
    let store = w.chroot_store("s", &[&f.dep]);
    let args = ["--store-root", store.to_str().unwrap(), "--serve-private"];
    let out = peerix_cmd("publish", &w.path("state"), &args).arg(&f.top).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&format!("{} is not a valid path in the Nix store", f.top)), "{err}");
    let out = peerix_cmd("publish", &w.path("state"), &args).arg(&f.dep).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The README's configuration table: every flag of `peerix serve --help` with its variable, every
/// TOML key one the loader knows, every module option present, and nothing stale.
#[test]
fn the_readme_configuration_table_matches_the_binary_and_the_module() {
    use clap::CommandFactory;
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        args: peerix::config::ServeArgs,
    }
    let (rows, _) = readme_table_vs_help("| Flag |", "serve");
    assert!(rows.len() > 25, "{rows:?}");
    let code = |cell: &str| cell.split('`').nth(1).map(str::to_owned);

    let cmd = Serve::command();
    for row in &rows {
        let Some(flag) = code(&row[0]) else { continue };
        let long = flag.trim_start_matches("--").split(' ').next().unwrap();
        let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(long)) else {
            assert_eq!(long, "print-config");
            continue;
        };
        let env = arg.get_env().unwrap().to_str().unwrap();
        assert_eq!(code(&row[1]).as_deref(), Some(env), "--{long}'s variable");
        // A key the loader knows fails on a wrong type, if at all; an unknown one as unknown.
        if let Some(key) = code(&row[2]) {
            let err =
                peerix::config::FileConfig::parse(&format!("{key} = {{ x = 0 }}\n"), std::path::Path::new("t")).err();
            assert!(!format!("{err:?}").contains("unknown field"), "TOML key {key}: {err:?}");
        } else {
            assert_eq!(long, "config");
        }
    }

    let eval = evaluate("{ }");
    let named: Vec<String> = rows.iter().filter_map(|r| code(&r[3])).collect();
    for option in eval["options"].as_object().unwrap().keys().chain(["package".to_owned()].iter()) {
        assert!(named.contains(option), "services.peerix.{option} is not in the README table");
    }
    for name in &named {
        let known = match name.strip_prefix("settings.") {
            Some(key) => eval["settingsOptions"].get(key).is_some(),
            None => name == "package" || eval["options"].get(name).is_some(),
        };
        assert!(known || name.starts_with('/'), "README names services.peerix.{name}, which the module lacks");
    }
}

/// The README's `peerix tracker` table lists every flag of `peerix tracker --help` with its
/// variable, and nothing stale.
#[test]
fn the_readme_tracker_table_matches_the_binary() {
    let (rows, help) = readme_table_vs_help("| Tracker flag |", "tracker");
    let code = |cell: &str| cell.split('`').nth(1).map(str::to_owned);
    for row in &rows {
        if let Some(env) = code(&row[1]) {
            assert!(help.contains(&format!("{env}=")), "{env} is not in peerix tracker --help");
        }
    }
}

/// The rows (cells trimmed) of the README table whose header starts with `header`, after checking
/// that its first column names exactly the flags of `peerix SUBCOMMAND --help`; and that help.
fn readme_table_vs_help(header: &str, subcommand: &str) -> (Vec<Vec<String>>, String) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let rows: Vec<Vec<String>> = readme
        .lines()
        .skip_while(|l| !l.starts_with(header))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect())
        .collect();
    let help = run(Command::new(env!("CARGO_BIN_EXE_peerix")).args([subcommand, "--help"]));
    let mut in_help: Vec<String> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| format!("--{}", l.split([' ', '=']).next().unwrap()))
        .filter(|f| f != "--help")
        .collect();
    in_help.sort();
    let mut flags: Vec<String> =
        rows.iter().filter_map(|r| r[0].split('`').nth(1)).map(|f| f.split(' ').next().unwrap().to_owned()).collect();
    flags.sort();
    assert_eq!(flags, in_help, "README table {header} vs peerix {subcommand} --help");
    (rows, help)
}

/// `serve -h` fits a screen with the flags a newcomer needs, grouped; `--help` has every one; and
/// `--print-config` names every key (the unset ones as comments saying what unset means), sizes
/// and durations in the units the flags take.
#[test]
fn short_help_fits_a_screen_and_print_config_names_every_key() {
    let help = |flag: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_peerix")).args(["serve", flag]).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let short = help("-h");
    assert!(short.lines().count() <= 60, "{} lines:\n{short}", short.lines().count());
    for (heading, flag) in
        [("Basics:", "--state-dir"), ("What is shared:", "--trusted-public-key"), ("Peers:", "--peer")]
    {
        assert!(short.contains(heading) && short.contains(flag), "{heading} {flag}:\n{short}");
    }
    assert!(!short.contains("--upnp") && help("--help").contains("--upnp"), "advanced flags only in --help");

    let out = Command::new(env!("CARGO_BIN_EXE_peerix"))
        .args(["serve", "--print-config", "--state-dir", "/tmp/x"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for line in
        ["cache-size = \"10G\"", "prefetch-size = \"64M\"", "prefetch-age = \"30s\"", "lookup-timeout = \"250ms\""]
    {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    for key in ["# private-key-file = ", "# index-rate = ", "# tracker = "] {
        assert!(text.contains(key), "{key}:\n{text}");
    }
}
