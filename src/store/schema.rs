//! Versioned schema of the state database. `PRAGMA user_version` holds the version; each migration
//! runs once, in one transaction, in order. Never edit a released migration: add the next one.

use std::path::Path;

use rusqlite::Connection;

use super::StateError;

/// Migration `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the local cache (issue: foundation).
    "CREATE TABLE paths (
        hash32      TEXT PRIMARY KEY NOT NULL,
        store_path  TEXT NOT NULL,
        nar_hash    TEXT NOT NULL,          -- nix32
        nar_size    INTEGER NOT NULL,
        origin      TEXT NOT NULL CHECK (origin IN ('local', 'peer', 'upstream')),
        updated_at  INTEGER NOT NULL
    );
    CREATE INDEX paths_by_nar_hash ON paths (nar_hash);
    CREATE TABLE verdicts (
        store_path  TEXT PRIMARY KEY NOT NULL,
        nar_hash    TEXT NOT NULL,          -- nix32; a verdict is only about this NAR
        verdict     INTEGER NOT NULL,       -- 1 same, 0 absent/different, 2 unreachable
        upstream_sigs TEXT NOT NULL DEFAULT '', -- upstream's Sig values (space-separated) when same
        checked_at  INTEGER NOT NULL
    );",
];

pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StateError> {
    let supported = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > supported {
        return Err(StateError::TooNew { path: path.to_owned(), found, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
