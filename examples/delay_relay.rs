//! A TCP relay that adds a fixed one-way delay, for `benches/closure.sh`: this kernel has no
//! `netem`, so a link's round-trip time is emulated by relaying every connection through this
//! program (the link's rate is shaped by `tc tbf`). Each chunk read from one side is written to
//! the other `DELAY_MS` milliseconds after it arrived, in order and pipelined, so throughput is
//! kept and only latency is added: a round trip through it takes 2 × `DELAY_MS` more.
//!
//! Usage: delay_relay LISTEN_ADDR TARGET_ADDR DELAY_MS — prints "listening on ADDR" when ready.
//! At most 64 MiB per direction per connection are in flight (then reading waits).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks in flight per direction: 1 024 × ≤ 64 KiB.
const IN_FLIGHT: usize = 1024;

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: delay_relay LISTEN_ADDR TARGET_ADDR DELAY_MS");
    let listener = TcpListener::bind(&args[1]).await?;
    let target = args[2].clone();
    let delay = Duration::from_micros((args[3].parse::<f64>()? * 1000.0) as u64);
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (client, _) = listener.accept().await?;
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&target).await else { return };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(pump(cr, sw, delay), pump(sr, cw, delay));
        });
    }
}
