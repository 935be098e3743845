//! The JavaScript side of interop tests: scripts in `tests/helia` run under Node 20 with the
//! pinned Helia, js-libp2p and kubo-rpc-client (`./test.sh` runs `npm ci` there).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helia");
    assert!(dir.join("node_modules").exists(), "run `npm ci` in tests/helia (./test.sh does)");
    dir
}

fn node(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("node");
    cmd.current_dir(dir()).args(["--import", "./polyfill.mjs", script]).args(args);
    cmd
}

/// Runs `script` to the end; its stdout, or a panic with its output if it fails.
pub fn run(script: &str, args: &[&str]) -> String {
    let out = node(script, args).output().expect("spawn node");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A script left running, talked to over stdin/stdout; killed when dropped (a failing test must
/// not leave a Helia node behind).
pub struct Script(pub std::process::Child);

impl Script {
    pub fn spawn(script: &str, args: &[&str]) -> Self {
        Self(node(script, args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn node"))
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
