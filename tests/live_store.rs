//! The daemon sees changes to Nix's store without a restart: a path copied in is served on the next
//! request, a signature added later shows up, and a deleted path is gone from every route at once
//! (the rendered-narinfo cache is dropped whenever Nix's DB changes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn new_signed_and_deleted_paths_are_seen_without_restart() {
    let w = Work::new();
    let (sk, pk) = w.keypair("live-1");
    let (sk2, _) = w.keypair("live-2");
    let first = w.build_fixture();
    let second = w.build_fixture();
    w.sign(&first.top, &sk);
    w.sign(&second.top, &sk);
    let store = w.chroot_store("srv", &[&first.top]);
    let d = Daemon::start(&w.path("state"), &["--store-root", store.to_str().unwrap(), "--trusted-public-key", &pk]);
    let narinfo = |p: &str| format!("{}/{}.narinfo", d.url, hash_part(p));

    let before = get(&narinfo(&first.top)).await;
    assert_eq!(before.status, 200);
    assert_eq!(get(&narinfo(&second.top)).await.status, 404);

    // A new path appears.
    run(w.nix("nix").args(["copy", "--no-check-sigs", "--to"]).arg(&store).arg(&second.top));
    assert_eq!(get(&narinfo(&second.top)).await.status, 200);

    // A second signature is added to an already served (and cached) path.
    run(w.nix("nix").args(["store", "sign", "--store"]).arg(&store).arg("--key-file").arg(&sk2).arg(&first.top));
    let after = get(&narinfo(&first.top)).await;
    assert!(!before.text().contains("Sig: live-2:"));
    assert!(after.text().contains("Sig: live-2:"), "{}", after.text());

    // The path is deleted: narinfo and NAR are gone.
    let nar = format!("{}/{}", d.url, nar_url_of(&w, &second.top));
    assert_eq!(get(&nar).await.status, 200);
    run(w.nix("nix-store").arg("--store").arg(&store).args(["--delete", &second.top]));
    assert_eq!(get(&narinfo(&second.top)).await.status, 404);
    assert_eq!(get(&nar).await.status, 404);
}
