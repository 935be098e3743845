//! Who works on a state directory: one `peerix serve`, or one one-shot command that writes the
//! index (`publish`, `verify --repair`), never two at once.
//!
//! A one-shot command run next to a running daemon, without the daemon's own flags, used to
//! re-index the daemon's store under other trust settings (814 paths turned private under it).
//! Now `serve` holds an exclusive `flock` on `STATE_DIR/owner` for its life and writes its URL
//! there; `publish` finding it held by a daemon asks that daemon to scan (its `/api`, on loopback)
//! and reports what it did, so an operator never repeats serve's flags. The lock goes with the
//! process, however it ends (a crash or SIGKILL included), so a stale file blocks nothing.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::Context;

/// The lock held while its holder lives.
pub struct Owner {
    file: File,
}

/// Who holds the state directory, as its lock file says.
pub enum Held {
    /// A daemon, serving at this URL.
    Daemon(String),
    /// Another command (its name).
    Command(String),
}

impl Owner {
    /// Takes `state_dir` for `what` (`serve` or a command's name), or says who holds it.
    pub fn take(state_dir: &Path, what: &str) -> anyhow::Result<Result<Self, Held>> {
        std::fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
        let path = state_dir.join("owner");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let mut owner = Self { file };
                owner.say(what)?;
                Ok(Ok(owner))
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut said = String::new();
                // Bounded: the holder writes one short line.
                let _ = (&mut file).take(4096).read_to_string(&mut said);
                let said = said.trim();
                Ok(Err(match said.strip_prefix("serve ") {
                    Some(url) => Held::Daemon(url.to_owned()),
                    None => Held::Command(if said.is_empty() { "another peerix".into() } else { said.to_owned() }),
                }))
            }
            Err(e) => Err(std::io::Error::from(e)).with_context(|| format!("cannot lock {}", path.display())),
        }
    }

    /// Replaces what the lock file says about its holder (a daemon's URL, once it listens).
    pub fn say(&mut self, what: &str) -> anyhow::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(format!("{what}\n").as_bytes())?;
        Ok(())
    }
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Held::Daemon(url) => write!(f, "a running `peerix serve` ({url})"),
            Held::Command(what) => write!(f, "a running `peerix {what}`"),
        }
    }
}
