//! The publish gate: a path that is neither signed by a trusted key nor upstream with the same NAR
//! is never served — not its narinfo, not its NAR URL. An upstream with the same NarHash makes it
//! servable (with upstream's signatures); an unreachable upstream or a different NarHash does not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn narinfo_url(d: &Daemon, path: &str) -> String {
    format!("{}/{}.narinfo", d.url, hash_part(path))
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_path_is_private_on_every_route() {
    let w = Work::new();
    let (sk, pk) = w.keypair("gate-1");
    let f = w.build_fixture();
    // Only the dependency is signed: it is shareable, the top path is not.
    run(w.nix("nix").args(["store", "sign", "--key-file"]).arg(&sk).arg(&f.dep));
    let srv = w.chroot_store("srv", &[&f.top]);
    let d = Daemon::start(&w.path("state"), &["--store-root", srv.to_str().unwrap(), "--trusted-public-key", &pk]);

    assert_eq!(get(&narinfo_url(&d, &f.dep)).await.status, 200);
    assert_eq!(get(&format!("{}/{}", d.url, nar_url_of(&w, &f.dep))).await.status, 200);

    let r = get(&narinfo_url(&d, &f.top)).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Private looks exactly like absent.
    let absent = get(&format!("{}/{}.narinfo", d.url, "0".repeat(32))).await;
    assert_eq!((absent.status, absent.body.clone()), (r.status, r.body.clone()));
    // The NAR URL of a private path is not served either, even by someone who guessed its hash.
    let nar = get(&format!("{}/{}", d.url, nar_url_of(&w, &f.top))).await;
    assert_eq!(nar.status, 404);
    assert_eq!(request(&client(), "HEAD", &narinfo_url(&d, &f.top), &[]).await.status, 404);

    // And a real nix cannot get it.
    let out = w.substitute("client", &f.top, &d.url, &pk);
    assert!(!out.status.success());

    // `--serve-private` is the explicit opt-in.
    let open = Daemon::start(
        &w.path("state-open"),
        &["--store-root", srv.to_str().unwrap(), "--trusted-public-key", &pk, "--serve-private"],
    );
    assert_eq!(get(&narinfo_url(&open, &f.top)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_with_same_nar_makes_a_path_servable() {
    let w = Work::new();
    let (up_sk, up_pk) = w.keypair("upstream-1");
    let (_, unrelated_pk) = w.keypair("unrelated-1");
    let f = w.build_fixture();
    let srv = w.chroot_store("srv", &[&f.top]);
    let up_dir = w.path("upstream");
    run(w
        .nix("nix")
        .args(["copy", "--to"])
        .arg(format!("file://{}?compression=none&secret-key={}", up_dir.display(), up_sk.display()))
        .arg(&f.top));
    let root = srv.to_str().unwrap();

    // Upstream down (nothing listens on port 1): not servable.
    let down = Daemon::start(
        &w.path("state-down"),
        &["--store-root", root, "--trusted-public-key", &unrelated_pk, "--upstream", "http://127.0.0.1:1"],
    );
    assert_eq!(get(&narinfo_url(&down, &f.top)).await.status, 404);
    assert!(down.log().contains("upstream check failed"), "{}", down.log());

    // Upstream up with the same NAR: servable, carrying upstream's signature, so a nix that trusts
    // only upstream's key substitutes the whole closure from us.
    let up = Upstream::start(&up_dir);
    let state = w.path("state-up");
    let d =
        Daemon::start(&state, &["--store-root", root, "--trusted-public-key", &unrelated_pk, "--upstream", &up.url]);
    let r = get(&narinfo_url(&d, &f.top)).await;
    assert_eq!(r.status, 200, "{}", d.log());
    assert!(r.text().contains("Sig: upstream-1:"), "{}", r.text());
    let out = w.substitute("client", &f.top, &d.url, &up_pk);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    drop(d);

    // A positive verdict is kept: with upstream gone, a restarted daemon still serves the path.
    drop(up);
    let again = Daemon::start(
        &state,
        &["--store-root", root, "--trusted-public-key", &unrelated_pk, "--upstream", "http://127.0.0.1:1"],
    );
    assert_eq!(get(&narinfo_url(&again, &f.top)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_with_a_different_nar_hash_does_not_count() {
    let w = Work::new();
    let (_, pk) = w.keypair("gate-3");
    let f = w.build_fixture();
    let srv = w.chroot_store("srv", &[&f.top]);
    let up_dir = w.path("upstream");
    run(w.nix("nix").args(["copy", "--to"]).arg(format!("file://{}?compression=none", up_dir.display())).arg(&f.top));
    // Upstream claims the same store path with another NAR.
    let file = up_dir.join(format!("{}.narinfo", hash_part(&f.top)));
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text.lines().find(|l| l.starts_with("NarHash: ")).unwrap().to_owned();
    let forged = format!("NarHash: sha256:{}", "1".repeat(52));
    assert_ne!(line, forged);
    std::fs::write(&file, text.replace(&line, &forged)).unwrap();

    let up = Upstream::start(&up_dir);
    let d = Daemon::start(
        &w.path("state"),
        &["--store-root", srv.to_str().unwrap(), "--trusted-public-key", &pk, "--upstream", &up.url],
    );
    assert_eq!(get(&narinfo_url(&d, &f.top)).await.status, 404);
    // The dependency's upstream narinfo is untouched, so it is servable.
    assert_eq!(get(&narinfo_url(&d, &f.dep)).await.status, 200);
}
