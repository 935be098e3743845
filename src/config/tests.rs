//! Unit tests of the configuration's merge rules.

use super::*;

#[test]
fn flags_win_over_file_and_file_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("peerix.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:9999\"\npriority = 7\nupstream = \"none\"\n").unwrap();
    let args = ServeArgs {
        config: Some(cfg.clone()),
        priority: Some(3),
        state_dir: Some(dir.path().into()),
        ..Default::default()
    };
    let c = ServeConfig::resolve(args).unwrap();
    assert_eq!(c.priority, 3);
    assert_eq!(c.listen.port(), 9999);
    assert!(c.upstream.is_none());
    assert_eq!(c.trusted_keys.len(), 1);
    assert_eq!(c.trusted_keys[0].name, "cache.nixos.org-1");
}

#[test]
fn lan_mode_never_bootstraps_and_peers_need_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let base = || ServeArgs { state_dir: Some(dir.path().into()), ..Default::default() };
    let lan = ServeConfig::resolve(ServeArgs { mode: Some(crate::p2p::Mode::Lan), ..base() }).unwrap();
    assert!(lan.p2p.unwrap().bootstrap.is_empty(), "lan mode must not get the public bootstrap peers");
    let lan = ServeConfig::resolve(ServeArgs {
        mode: Some(crate::p2p::Mode::Lan),
        bootstrap: vec!["/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ".into()],
        ..base()
    })
    .unwrap();
    assert!(lan.p2p.unwrap().bootstrap.is_empty(), "an explicit bootstrap peer is ignored in lan mode");
    let ipfs = ServeConfig::resolve(base()).unwrap();
    assert_eq!(ipfs.p2p.unwrap().bootstrap.len(), crate::p2p::PUBLIC_BOOTSTRAP.len());
    let bad = ServeArgs { peers: vec!["/ip4/127.0.0.1/tcp/1".into()], ..base() };
    assert!(matches!(ServeConfig::resolve(bad), Err(ConfigError::Peer(_))));
    let bad = ServeArgs { fallbacks: vec!["ftp://x".into()], ..base() };
    assert!(matches!(ServeConfig::resolve(bad), Err(ConfigError::Fallback(_))));
}

#[test]
fn unknown_key_and_bad_key_files_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("peerix.toml");
    std::fs::write(&cfg, "listne = \"127.0.0.1:1\"\n").unwrap();
    let err = ServeConfig::resolve(ServeArgs { config: Some(cfg), ..Default::default() }).err().unwrap();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let missing = ServeArgs {
        private_key_file: Some(dir.path().join("nope")),
        state_dir: Some(dir.path().into()),
        ..Default::default()
    };
    assert!(matches!(ServeConfig::resolve(missing), Err(ConfigError::PrivateKey { .. })));
    let bad = ServeArgs {
        trusted_public_keys: vec!["garbage".into()],
        state_dir: Some(dir.path().into()),
        ..Default::default()
    };
    assert!(matches!(ServeConfig::resolve(bad), Err(ConfigError::TrustedKey { .. })));
}

#[test]
fn numbers_out_of_range_and_endless_config_files_are_refused_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = || ServeArgs { state_dir: Some(dir.path().into()), ..Default::default() };
    for jobs in [0, MAX_INDEX_JOBS + 1, 1 << 61] {
        let e = ServeConfig::resolve(ServeArgs { index_jobs: Some(jobs), ..base() }).err().unwrap();
        assert!(e.to_string().starts_with("index-jobs = "), "{e}");
    }
    assert_eq!(ServeConfig::resolve(ServeArgs { index_jobs: Some(MAX_INDEX_JOBS), ..base() }).unwrap().index_jobs, 256);
    let e = ServeConfig::resolve(ServeArgs { upstream_negative_ttl: Some(u64::MAX), ..base() }).err().unwrap();
    assert!(e.to_string().contains("upstream-negative-ttl"), "{e}");
    // /dev/zero never ends: read up to the cap, then refused.
    let e = ServeConfig::resolve(ServeArgs { config: Some("/dev/zero".into()), ..base() }).err().unwrap();
    assert!(matches!(e, ConfigError::TooLarge { .. }), "{e}");
}
