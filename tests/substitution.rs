//! A real `nix` with an empty store substitutes a signed closure from peerix, and refuses it when
//! the signature does not match its trusted keys.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// The DB's own signature (made by `nix store sign`) is passed through; nix accepts it and
/// `nix store verify` passes on the result.
#[test]
fn empty_store_substitutes_signed_closure() {
    let w = Work::new();
    let (sk, pk) = w.keypair("fixture-1");
    let f = w.build_fixture();
    w.sign(&f.top, &sk);
    let srv = w.chroot_store("srv", &[&f.top]);
    let d = Daemon::start(&w.path("state"), &["--store-root", srv.to_str().unwrap(), "--trusted-public-key", &pk]);

    let out = w.substitute("client", &f.top, &d.url, &pk);
    assert!(out.status.success(), "substitution failed: {}\n{}", String::from_utf8_lossy(&out.stderr), d.log());
    let client = w.path("client");
    assert_eq!(std::fs::read_to_string(client.join(&f.dep[1..])).unwrap(), "hello-from-dep\n");
    let show = client.join(&f.top[1..]).join("bin/show");
    assert!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&show).unwrap().permissions()) & 0o100 != 0);
    assert_eq!(std::fs::read_link(client.join(&f.top[1..]).join("dep")).unwrap().to_str().unwrap(), f.dep);
    w.verify("client", &f.top, &pk);
    // The whole-server check: downloads every NAR and checks NarHash and signatures.
    run(w.nix("nix").args(["store", "verify", "--store", &d.url, "-r", &f.top, "--trusted-public-keys", &pk]));
}

/// With `--private-key-file` (from `peerix keygen`), narinfos carry our signature next to the DB's:
/// a client that trusts only our key substitutes; one that trusts neither key is refused.
#[test]
fn own_signature_is_added_and_wrong_key_fails() {
    let w = Work::new();
    let (fixture_sk, fixture_pk) = w.keypair("fixture-2");
    let f = w.build_fixture();
    w.sign(&f.top, &fixture_sk);
    let srv = w.chroot_store("srv", &[&f.top]);

    let ours_sk = w.path("peerix.sk");
    let ours_pk = w.path("peerix.pk");
    run(std::process::Command::new(env!("CARGO_BIN_EXE_peerix"))
        .args(["keygen", "peerix-test-1"])
        .arg(&ours_sk)
        .arg(&ours_pk));
    let ours_pk = std::fs::read_to_string(&ours_pk).unwrap();
    let d = Daemon::start(
        &w.path("state"),
        &[
            "--store-root",
            srv.to_str().unwrap(),
            "--trusted-public-key",
            &fixture_pk,
            "--private-key-file",
            ours_sk.to_str().unwrap(),
        ],
    );

    let out = w.substitute("client", &f.top, &d.url, &ours_pk);
    assert!(out.status.success(), "with our key: {}\n{}", String::from_utf8_lossy(&out.stderr), d.log());
    let sigs = run(w.nix("nix").args(["path-info", "--sigs", "--store"]).arg(w.path("client")).arg(&f.top));
    assert!(sigs.contains("peerix-test-1:") && sigs.contains("fixture-2:"), "both signatures kept: {sigs}");

    let (_, other_pk) = w.keypair("other-1");
    let out = w.substitute("client-wrong", &f.top, &d.url, &other_pk);
    assert!(!out.status.success(), "a key that signed nothing must not be accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not signed by any of the keys"), "{err}");
    assert!(!w.path("client-wrong").join(&f.top[1..]).exists());
}
