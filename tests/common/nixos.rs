//! The NixOS modules evaluated without nixpkgs (against `tests/nixos/stub.nix`), and what the
//! units they build would run: for `tests/nixos_module.rs` and the README table check.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::{NIX_CONFIG, Work, nonce, run};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The module evaluated on `overrides`, a Nix attribute set of `services.peerix` values.
pub fn evaluate(overrides: &str) -> Value {
    evaluate_file("tests/nixos/eval.nix", overrides)
}

/// `file` (one of `tests/nixos/eval*.nix`) evaluated on `overrides`.
pub fn evaluate_file(file: &str, overrides: &str) -> Value {
    let out = Command::new("nix-instantiate")
        .env("NIX_CONFIG", NIX_CONFIG)
        .env_remove("NIX_REMOTE")
        .args(["--eval", "--strict", "--json", file, "--arg", "overrides", overrides])
        .current_dir(ROOT)
        .output()
        .unwrap();
    assert!(out.status.success(), "evaluating {overrides}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Undoes what systemd undoes in `ExecStart=` and `Environment=`: `%%` and `$$` (the module's
/// escaping), `%d` (the credentials directory).
pub fn systemd_expand(s: &str, credentials: &Path) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('%')) | ('$', Some('$')) => out.push(chars.next().unwrap()),
            ('%', Some('d')) => {
                chars.next();
                out.push_str(&credentials.display().to_string());
            }
            ('%', other) => panic!("specifier %{other:?} the module should not emit in {s}"),
            _ => out.push(c),
        }
    }
    out
}

/// What the daemon the module's unit starts would run with: the unit's arguments (as systemd splits
/// and expands them), its environment, and the `settings` file, through `peerix serve --print-config`.
pub fn effective(eval: &Value, w: &Work) -> Result<toml::Table, String> {
    let credentials = w.path("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    let key = credentials.join("private-key");
    if !key.exists() {
        run(Command::new(env!("CARGO_BIN_EXE_peerix")).args(["keygen", "peerix-module-1"]).arg(&key).arg(w.path("pk")));
    }
    let settings = w.path(&format!("settings-{}.toml", nonce()));
    std::fs::write(&settings, toml::to_string(&eval["settings"]).unwrap()).unwrap();
    let exec = eval["execStart"].as_str().unwrap();
    let (exe, args) = exec.split_once(' ').unwrap();
    assert!(exe.ends_with("/bin/peerix"), "{exe}");
    let argv: Vec<String> = serde_json::Deserializer::from_str(&systemd_expand(args, &credentials))
        .into_iter::<String>()
        .map(|a| a.unwrap())
        .map(|a| if a == "@settings.toml@" { settings.display().to_string() } else { a })
        .collect();
    assert!(argv[0] == "serve" || argv[0] == "tracker", "{argv:?}");
    let env: Vec<(String, String)> = eval["environment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), systemd_expand(v.as_str().unwrap(), &credentials)))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_peerix")).args(&argv).arg("--print-config").envs(env).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap())
}
