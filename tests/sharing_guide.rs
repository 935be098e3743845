//! The README's guide "Share what you build yourself", step by step with real processes: A makes a
//! key with `peerix keygen`, builds a path cache.nixos.org never saw and signs it with
//! `nix store sign -r --key-file`; A's daemon trusts its own key next to cache.nixos.org's; B's
//! daemon names A with `--peer` and trusts the same two keys; B's nix realises the path through B,
//! byte-exact, while a path A built and did not sign stays private. The guide's commands are
//! checked to be the ones in the README, so the two cannot drift apart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use peerix::trust::CACHE_NIXOS_ORG_KEY;

#[tokio::test(flavor = "multi_thread")]
async fn a_build_signed_on_a_is_substituted_on_b_as_the_readme_says() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for step in [
        "peerix keygen a-1 /var/lib/peerix/a.sk a.pub",
        "nix store sign -r --key-file /var/lib/peerix/a.sk ./result",
        &format!("peerix serve --trusted-public-key \"$(cat a.pub)\" --trusted-public-key {CACHE_NIXOS_ORG_KEY}"),
        "peerix serve --peer /ip4/",
        &format!("--trusted-public-key \"a-1:…\" --trusted-public-key {CACHE_NIXOS_ORG_KEY}"),
        "--option extra-substituters http://127.0.0.1:12304 --option extra-trusted-public-keys \"a-1:…\"",
    ] {
        assert!(readme.contains(step), "the README's guide no longer says: {step}");
    }

    let w = Work::new();
    // peerix keygen a-1 SECRET PUBLIC: prints the public half, which is what PUBLIC holds.
    let (sk, pk_file) = (w.path("a.sk"), w.path("a.pub"));
    let out =
        Command::new(env!("CARGO_BIN_EXE_peerix")).arg("keygen").arg("a-1").arg(&sk).arg(&pk_file).output().unwrap();
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let pk = std::fs::read_to_string(&pk_file).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pk);
    assert!(pk.starts_with("a-1:"), "{pk}");

    // A builds two paths and signs one of them with the key.
    let shared = w.build_fixture();
    let private = w.build_fixture();
    run(w.nix("nix").args(["store", "sign", "-r", "--key-file"]).arg(&sk).arg(&shared.top));
    let store_a = w.chroot_store("a", &[&shared.top, &private.top]);
    let keys = ["--trusted-public-key", &pk, "--trusted-public-key", CACHE_NIXOS_ORG_KEY];
    let a = Daemon::start(
        &w.path("state-a"),
        &[&["--store-root", store_a.to_str().unwrap()][..], &keys, &LOOPBACK_LAN].concat(),
    );
    a.wait_log("index scan finished");
    let b = Daemon::start(
        &w.path("state-b"),
        &[&["--store-root", w.path("b-store").to_str().unwrap(), "--peer", &a.p2p_addr()][..], &keys, &LOOPBACK_LAN]
            .concat(),
    );
    b.wait_log("have-summary applied");

    // B's nix, trusting a-1 (and nothing else), realises the signed path through B.
    let out = w.substitute("client", &shared.top, &b.url, &pk);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), b.log());
    let got = nix_dump(&w.path("client").join(&shared.top[1..]));
    assert!(got == nix_dump(std::path::Path::new(&shared.top)), "the substituted path differs");
    // The path A did not sign is not shared: not by A, not through B.
    for d in [&a, &b] {
        let narinfo = get(&format!("{}/{}.narinfo", d.url, hash_part(&private.top))).await;
        assert_eq!(narinfo.status, 404, "an unsigned build of A is served");
    }
}
