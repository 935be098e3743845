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
    // 5: a seeder checks a chunk's hash only when its files may have changed since indexing.
    "ALTER TABLE paths ADD COLUMN fingerprint BLOB;         -- NarLayout::fingerprint when its chunks were hashed",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of every released migration, as released. A released migration is never edited (a
    /// database created in between would silently differ from one made from scratch): change the
    /// schema by adding a migration.
    const RELEASED: &[&str] = &[
        "fc47e171f749ed9a71315583ff7169c80a3f20facaccb7de3b21b1cd8faad733",
        "5b6b7732bf82489431ac00c0afc135b45a08eed07af3348408ed93258615fcfd",
        "7608354081720af0528c3ee4ab0ec798cb53de97ff9f50c03f016d366f04c1eb",
        "dc48ff3a1d685e797ef7039c658cef9421069f05b83886efeb02039e58f454ed",
    ];

    fn sha(text: &str) -> String {
        use sha2::Digest;
        data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(text.as_bytes()))
    }

    #[test]
    fn released_migrations_are_never_edited() {
        let now: Vec<String> = MIGRATIONS.iter().map(|m| sha(m)).collect();
        assert!(now.len() >= RELEASED.len(), "a released migration was removed");
        for (i, (have, released)) in now.iter().zip(RELEASED).enumerate() {
            assert_eq!(have, released, "migration {} was edited after its release (hashes now: {now:?})", i + 1);
        }
    }

    /// A database left at any earlier version (made from the released SQL, with a row in it) is
    /// brought to the current one by opening it, keeping its rows.
    #[test]
    fn every_earlier_version_upgrades_and_keeps_its_rows() {
        for version in 0..MIGRATIONS.len() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(super::super::STATE_DB_FILE);
            {
                let conn = Connection::open(&path).unwrap();
                for sql in &MIGRATIONS[..version] {
                    conn.execute_batch(sql).unwrap();
                }
                conn.pragma_update(None, "user_version", version as i64).unwrap();
                if version >= 1 {
                    conn.execute(
                        "INSERT INTO paths (hash32, store_path, nar_hash, nar_size, origin, updated_at) \
                         VALUES ('qxkmhhvi8i3pc831vvw023h4mhzpfflr', '/nix/store/qxkmhhvi8i3pc831vvw023h4mhzpfflr-x', \
                         '1fchakpf46v0jbbnjwz9qlka85ga08idb2483db55k38z4l8yk0f', 792, 'local', 0)",
                        [],
                    )
                    .unwrap();
                }
            }
            let db = super::super::StateDb::open(dir.path()).unwrap_or_else(|e| panic!("from version {version}: {e}"));
            let conn = Connection::open(&path).unwrap();
            let now: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(now, MIGRATIONS.len() as i64, "from version {version}");
            assert_eq!(db.counts().unwrap().0, u64::from(version >= 1), "rows kept from version {version}");
        }
    }

    #[test]
    fn a_corrupt_state_db_stops_the_start_naming_the_file_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(super::super::STATE_DB_FILE);
        std::fs::write(&path, b"this is not a database, and it is the operator's to look at").unwrap();
        let err = super::super::StateDb::open(dir.path()).err().expect("must not open");
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"this is not a database, and it is the operator's to look at");
        // A newer schema than this peerix knows also stops the start.
        let newer = tempfile::tempdir().unwrap();
        let conn = Connection::open(newer.path().join(super::super::STATE_DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        assert!(matches!(super::super::StateDb::open(newer.path()), Err(StateError::TooNew { .. })));
    }
}
