//! What a transfer reports: progress while it runs (per source), and its end — in the log, in
//! `/api/status` and in the counters — with the body aborted when it failed.

use std::io;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::driver::{Driver, TransferFailure};
use crate::substitute::activity::SourceBytes;

impl Driver {
    pub(super) fn progress(&self) {
        let done: u64 = self.slots.iter().map(|s| s.bytes).sum();
        let sources = self.source_bytes();
        self.sub.activity.transfer_progress(self.id, |v| {
            v.bytes_done = done;
            v.duplicate_bytes = self.duplicate;
            v.secs = self.started.elapsed().as_secs_f64();
            v.sources = sources;
        });
    }

    pub(super) fn source_bytes(&self) -> Vec<SourceBytes> {
        self.slots
            .iter()
            .filter(|s| s.bytes > 0)
            .map(|s| SourceBytes {
                source: s.source.describe(&self.sub.sources.fallbacks),
                bytes: s.bytes,
                blocks: s.blocks,
            })
            .collect()
    }

    pub(super) async fn finish(&mut self, out: &mpsc::Sender<io::Result<Bytes>>, outcome: Result<(), TransferFailure>) {
        let secs = self.started.elapsed().as_secs_f64();
        let mb_per_s = self.sent as f64 / secs.max(1e-6) / 1e6;
        let sources = self.source_bytes();
        let c = &self.sub.activity.counters;
        for s in &self.slots {
            if s.source.is_fallback() { &c.bytes_from_fallbacks } else { &c.bytes_from_peers }
                .fetch_add(s.bytes, Ordering::Relaxed);
        }
        let summary: Vec<String> = sources.iter().map(|s| format!("{}={}", s.source, s.bytes)).collect();
        self.sub.activity.transfer_progress(self.id, |v| {
            v.bytes_done = self.sent;
            v.duplicate_bytes = self.duplicate;
            v.secs = secs;
            v.mb_per_s = mb_per_s;
            v.sources = sources;
        });
        match outcome {
            Ok(()) => {
                info!(path = %self.nar.store_path, bytes = self.sent, secs, mb_per_s, duplicate = self.duplicate,
                    sources = %summary.join(" "), "NAR transfer done");
                self.sub.activity.transfer_ended(self.id, "done".into());
            }
            Err(why) => {
                warn!(path = %self.nar.store_path, bytes = self.sent, %why, sources = %summary.join(" "),
                    "NAR transfer failed; aborting the response");
                let _ = out.send(Err(io::Error::other(why.to_string()))).await;
                self.sub.activity.transfer_ended(self.id, format!("failed: {why}"));
            }
        }
    }
}
