//! Load for `benches/tracker.sh`: announces `PEERS` simulated peers with `PATHS` paths each to a
//! tracker (signed as daemons sign them), then prints one `/v1/providers/<hash32>` path per line for
//! every hash announced, for wrk to ask. Usage: tracker_load URL PEERS PATHS > paths.txt

use peerix::tracker_wire::{Announcement, Signed};

fn hash(i: u64) -> String {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..32)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            NIX32[(x >> 59) as usize] as char
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (url, peers, paths): (&str, u64, u64) = (&args[1], args[2].parse()?, args[3].parse()?);
    let http = reqwest::Client::new();
    // Ten peers share each path, so a lookup finds ten providers.
    let distinct = (peers * paths / 10).max(1);
    for p in 0..peers {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let a = Announcement {
            peer_id: key.public().to_peer_id().to_string(),
            addrs: vec![format!("/ip4/198.51.100.{}/tcp/12306", p % 250 + 1)],
            timestamp: peerix::store::now_secs(),
            nonce: format!("{p:032x}"),
            generation: 1,
            full: Some((0..paths).map(|i| hash((p * paths + i) % distinct)).collect()),
            base: None,
            add: vec![],
            remove: vec![],
        };
        let body = serde_json::to_vec(&Signed::sign(&a, &key).map_err(anyhow::Error::msg)?)?;
        let resp = http
            .post(format!("{url}/v1/announce"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "announce: {}", resp.text().await?);
    }
    for i in 0..distinct {
        println!("/v1/providers/{}", hash(i));
    }
    Ok(())
}
