//! A closure nix substituted through C is re-shared by C from the DAGs it arrived in: C's indexer
//! reads none of its bytes from disk again, and a third machine then substitutes the closure from
//! C alone, byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_substituted_closure_is_published_from_its_arrival_dags_and_served_onwards() {
    let w = Work::new();
    let (sk, pk) = w.keypair("reshare-1");
    let f = w.build_big_fixture(3_000_000);
    w.sign(&f.top, &sk);
    let a = seeder(&w, "a", &[&f.top], &pk);
    let c = peer_client(&w, "c", "client", &pk, &[&a.p2p_addr()], &[]);
    c.wait_log("have-summary applied");
    let out = w.substitute("client", &f.top, &c.url, &pk);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), c.log());

    // C publishes both paths; the indexer adopted their DAGs and read nothing from disk.
    let s =
        c.wait_status("both substituted paths published", |s| s["index"]["published_paths"].as_u64() == Some(2)).await;
    let arrivals = &s["arrivals"];
    assert_eq!(arrivals["adopted"], 2, "{arrivals}");
    assert_eq!(arrivals["read_paths"], 0, "{arrivals}");
    assert_eq!(arrivals["read_bytes"], 0, "{arrivals}");
    let metrics = parse_openmetrics(&get(&format!("{}/metrics", c.url)).await.body);
    assert_eq!(metrics.get("peerix_index_read_bytes_total{}"), Some(&0.0), "{metrics:?}");
    assert_eq!(metrics.get("peerix_index_adopted_paths_total{}"), Some(&2.0));

    // D knows only C: it gets the closure from C's re-share, verified by nix.
    let d = peer_client(&w, "d", "client2", &pk, &[&c.p2p_addr()], &[]);
    d.wait_log("have-summary applied");
    let out = w.substitute("client2", &f.top, &d.url, &pk);
    assert!(out.status.success(), "{}\n{}\n{}", String::from_utf8_lossy(&out.stderr), d.log(), c.log());
    for p in [&f.top, &f.dep] {
        let got = nix_dump(&w.path("client2").join(p.trim_start_matches('/')));
        assert!(got == nix_dump(std::path::Path::new(p)), "{p} differs");
    }
    let from = d.wait_log("narinfo from peer");
    assert!(from.contains(&c.peer_id()), "{from}");
}
