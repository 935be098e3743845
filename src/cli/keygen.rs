//! `peerix keygen`: a Nix signing key pair, written so that a failure leaves neither half behind.

use std::path::Path;

use anyhow::Context;
use peerix::nix::signing::SecretKey;

pub(super) fn run(name: &str, secret_file: &Path, public_file: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = SecretKey::generate(name)?;
    anyhow::ensure!(
        std::fs::symlink_metadata(secret_file).is_err(),
        "{} exists already; it is not overwritten",
        secret_file.display()
    );
    // Both halves are written under temporary names and renamed into place, the public half first:
    // a failure at any step leaves neither file behind (never a secret without its public half).
    let tmp = |p: &Path| p.with_file_name(format!(".{}.tmp", p.file_name().and_then(|n| n.to_str()).unwrap_or("key")));
    let (secret_tmp, public_tmp) = (tmp(secret_file), tmp(public_file));
    let mut public_placed = false;
    let mut write = || -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret_tmp)
            .with_context(|| format!("cannot create {}", secret_file.display()))?;
        // No trailing newline, exactly as nix writes it.
        f.write_all(key.to_nix_string().as_bytes())?;
        f.sync_all()?;
        std::fs::write(&public_tmp, key.public().to_string())
            .with_context(|| format!("cannot write {}", public_file.display()))?;
        std::fs::rename(&public_tmp, public_file).with_context(|| format!("cannot write {}", public_file.display()))?;
        public_placed = true;
        std::fs::rename(&secret_tmp, secret_file).with_context(|| format!("cannot write {}", secret_file.display()))
    };
    let written = write();
    if written.is_err() {
        let _ = std::fs::remove_file(&secret_tmp);
        let _ = std::fs::remove_file(&public_tmp);
        if public_placed {
            let _ = std::fs::remove_file(public_file);
        }
    }
    written?;
    println!("{}", key.public());
    Ok(())
}
