//! NARs made by peerix are byte-identical to `nix-store --dump`, for awkward trees and large files,
//! both from the library writer and as served over HTTP; and our NAR validator accepts what nix
//! dumps, with the same hash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use peerix::fuzzing::nar_reader;
use peerix::nix::nar;
use sha2::{Digest, Sha256};

fn write(p: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every kind of node and name ordering nix has rules for.
fn zoo(root: &Path) -> PathBuf {
    let z = root.join("zoo");
    write(&z.join("plain"), b"plain file\n", 0o644);
    write(&z.join("bin/tool"), b"#!/bin/sh\necho tool\n", 0o755);
    write(&z.join("empty"), b"", 0o644);
    write(&z.join("empty-exec"), b"", 0o755);
    for n in 1..=17 {
        // Every padding length, 0 to 7, several times.
        write(&z.join(format!("pad/{n:02}")), &vec![b'x'; n], 0o644);
    }
    // Bytewise order: "B" < "Z" < "_" < "a" < "a-b" < "a.b" < "ä" < "é"; digits sort as text.
    for name in ["a", "B", "_", "Z", "a.b", "a-b", "ä", "é", "10", "9", "日本"] {
        write(&z.join("names").join(name), name.as_bytes(), 0o644);
    }
    write(&z.join("names").join(OsStr::from_bytes(b"raw\xff\xfebytes")), b"not utf-8", 0o644);
    fs::create_dir_all(z.join("empty-dir")).unwrap();
    write(&z.join("n/e/s/t/e/d/deep"), b"deep", 0o644);
    fs::create_dir_all(z.join("n/e/s/t/empty")).unwrap();
    symlink("/nonexistent/dangling/target", z.join("dangling")).unwrap();
    symlink("../plain", z.join("bin/relative")).unwrap();
    symlink("bin", z.join("dir-link")).unwrap();
    // Files the daemon sends with sendfile (≥ 64 KiB) around and between small ones, and one each
    // side of that threshold.
    write(&z.join("bin/big-tool"), &pseudo_random(300_001, 1), 0o755);
    write(&z.join("n/e/s/t/blob"), &pseudo_random(1 << 20, 2), 0o644);
    write(&z.join("threshold/at"), &pseudo_random(64 << 10, 3), 0o644);
    write(&z.join("threshold/below"), &pseudo_random((64 << 10) - 1, 4), 0o644);
    z
}

#[test]
fn writer_matches_nix_store_dump_for_awkward_trees() {
    let w = Work::new();
    let z = zoo(w.dir.path());
    let single = w.path("single");
    write(&single, b"a single top-level file", 0o755);
    let link = w.path("toplink");
    symlink("/nix/store/does-not-exist", &link).unwrap();
    let empty = w.path("empty-top");
    fs::create_dir(&empty).unwrap();
    for root in [&z, &single, &link, &empty, &z.join("n")] {
        let ours = nar::dump_to_vec(root).unwrap();
        let theirs = nix_dump(root);
        assert!(
            ours == theirs,
            "{} differs from nix-store --dump ({} vs {} bytes)",
            root.display(),
            ours.len(),
            theirs.len()
        );
        let summary = nar_reader::validate(&theirs[..]).unwrap();
        assert_eq!(summary.nar_size, theirs.len() as u64);
        assert_eq!(summary.nar_hash.0, <[u8; 32]>::from(Sha256::digest(&theirs)));
    }
}

/// sha256 and length of `nix-store --dump`, streamed (the NAR can be large).
fn nix_dump_digest(path: &Path) -> ([u8; 32], u64) {
    let mut child = nix("nix-store", Path::new("/tmp")).arg("--dump").arg(path).stdout(Stdio::piped()).spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let (mut h, mut n, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let k = out.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    assert!(child.wait().unwrap().success());
    (h.finalize().into(), n)
}

async fn served_nar_digest(d: &Daemon, store_path: &str) -> ([u8; 32], u64, Resp) {
    let info = get(&format!("{}/{}.narinfo", d.url, hash_part(store_path))).await;
    assert_eq!(info.status, 200, "{}", d.log());
    let url = info.text().lines().find_map(|l| l.strip_prefix("URL: ").map(str::to_owned)).unwrap();
    let mut resp = client().get(format!("{}/{url}", d.url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (mut h, mut n) = (Sha256::new(), 0u64);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        h.update(&chunk);
        n += chunk.len() as u64;
    }
    (h.finalize().into(), n, info)
}

/// The zoo and a file over 100 MB go through `nix-store --add` into a chroot store and come back
/// over HTTP byte-identical to `nix-store --dump`, with `NarSize`/`NarHash` to match; and
/// `nix-store --realise` substitutes both from the daemon into an empty store.
#[tokio::test(flavor = "multi_thread")]
async fn served_nars_match_nix_store_dump() {
    let w = Work::new();
    let z = zoo(w.dir.path());
    let big = w.path("big.bin");
    fs::write(&big, pseudo_random(100_000_003, 0x9E37_79B9_7F4A_7C15)).unwrap();
    let store = w.path("store");
    let add = |p: &Path| run(w.nix("nix-store").arg("--store").arg(&store).arg("--add").arg(p));
    let zoo_path = add(&z);
    let big_path = add(&big);
    let (sk, pk) = w.keypair("roundtrip-1");
    let args = ["--store-root", store.to_str().unwrap(), "--serve-private", "--private-key-file", sk.to_str().unwrap()];
    let d = Daemon::start(&w.path("state"), &args);

    for (store_path, source) in [(&zoo_path, &z), (&big_path, &big)] {
        let (ours, n, info) = served_nar_digest(&d, store_path).await;
        let (theirs, m) = nix_dump_digest(source);
        assert_eq!(n, m, "{store_path}: length");
        assert!(ours == theirs, "{store_path}: NAR bytes differ from nix-store --dump");
        assert!(info.text().contains(&format!("NarSize: {m}\n")));
        let nix32 =
            run(w.nix("nix-hash").args(["--type", "sha256", "--to-base32", &data_encoding::HEXLOWER.encode(&theirs)]));
        assert!(info.text().contains(&format!("NarHash: sha256:{nix32}\n")), "{}", info.text());

        // nix checks NarHash as it unpacks; the copy in the new store dumps to the same bytes.
        let out = w.substitute("client", store_path, &d.url, &pk);
        assert!(out.status.success(), "{store_path}: {}", String::from_utf8_lossy(&out.stderr));
        let copy = w.path("client").join(&store_path[1..]);
        assert!(nix_dump_digest(&copy).0 == theirs, "{store_path}: the substituted copy differs");
    }
}
