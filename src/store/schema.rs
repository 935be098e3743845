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
    // 2: the block index (issue: NARs as content-defined IPLD blocks).
    "ALTER TABLE paths ADD COLUMN nix_id INTEGER;           -- ValidPaths.id when indexed
    ALTER TABLE paths ADD COLUMN status TEXT;               -- published | private | failed | recheck | NULL
    ALTER TABLE paths ADD COLUMN reason TEXT;               -- why private or failed
    ALTER TABLE paths ADD COLUMN verdict TEXT;              -- signed | upstream | serve-private
    ALTER TABLE paths ADD COLUMN root_cid BLOB;
    ALTER TABLE paths ADD COLUMN chunk_count INTEGER;
    ALTER TABLE paths ADD COLUMN checked_at INTEGER;
    CREATE INDEX paths_by_status ON paths (status);
    CREATE INDEX paths_by_root ON paths (root_cid);
    -- Chunks of local NARs: produced on demand from /nix/store, never copied.
    CREATE TABLE local_chunks (
        hash32      TEXT NOT NULL,
        nar_offset  INTEGER NOT NULL,
        length      INTEGER NOT NULL,
        cid         BLOB NOT NULL,
        PRIMARY KEY (hash32, nar_offset)
    ) WITHOUT ROWID;
    CREATE INDEX local_chunks_by_cid ON local_chunks (cid);
    -- dag-pb nodes (UnixFS roots and interior nodes) of local NARs.
    CREATE TABLE local_nodes (
        cid         BLOB NOT NULL,
        hash32      TEXT NOT NULL,
        data        BLOB NOT NULL,
        PRIMARY KEY (cid, hash32)
    ) WITHOUT ROWID;
    CREATE INDEX local_nodes_by_path ON local_nodes (hash32);
    -- Blocks from peers and fallbacks, verified on insert, evicted least-recently-used first.
    -- `size` and `last_used` come before `data`: SQLite keeps a large blob in overflow pages, and a
    -- column stored after it can only be reached by walking them.
    CREATE TABLE blocks (
        cid         BLOB PRIMARY KEY NOT NULL,
        size        INTEGER NOT NULL,
        last_used   INTEGER NOT NULL,
        data        BLOB NOT NULL
    );
    CREATE INDEX blocks_lru ON blocks (last_used);
    CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
    CREATE TABLE scan_progress (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        running     INTEGER NOT NULL,
        started_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        total_paths INTEGER NOT NULL,
        done_paths  INTEGER NOT NULL,
        total_bytes INTEGER NOT NULL,
        done_bytes  INTEGER NOT NULL
    );",
    // 3: the embedded IPFS node (issue: libp2p swarm, bitswap, Kademlia, mDNS).
    "ALTER TABLE paths ADD COLUMN announced_at INTEGER;     -- last DHT announcement of root + store key
    CREATE TABLE kad_providers (
        dht         TEXT NOT NULL,              -- 'wan' (/ipfs/kad/1.0.0) or 'lan' (/ipfs/lan/kad/1.0.0)
        key         BLOB NOT NULL,
        provider    BLOB NOT NULL,              -- peer id bytes
        addrs       TEXT NOT NULL,              -- space-separated multiaddrs
        expires_at  INTEGER NOT NULL,           -- unix seconds, 0 = never
        PRIMARY KEY (dht, key, provider)
    ) WITHOUT ROWID;
    CREATE INDEX kad_providers_by_provider ON kad_providers (provider);",
    // 4: substitution from peers (issue: peer-to-peer substitution).
    "ALTER TABLE paths ADD COLUMN narinfo TEXT;            -- origin 'peer': the narinfo we serve for it
    CREATE INDEX paths_by_origin ON paths (origin, updated_at);
    CREATE INDEX kad_providers_by_expiry ON kad_providers (expires_at);",
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
