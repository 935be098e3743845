//! The operator's hold on the background indexer ([`crate::publish`]), used by the dashboard's
//! controls: a pause flag the indexer waits on before each path, and a nudge that makes it scan at
//! once (after a path was checked again) instead of at its next poll of Nix's DB.

use std::sync::Arc;

use tokio::sync::{Notify, watch};

#[derive(Clone)]
pub struct IndexControl {
    paused: Arc<watch::Sender<bool>>,
    nudge: Arc<Notify>,
}

impl Default for IndexControl {
    fn default() -> Self {
        Self { paused: Arc::new(watch::Sender::new(false)), nudge: Arc::new(Notify::new()) }
    }
}

impl IndexControl {
    /// Paths being chunked finish; no new one starts until [`Self::resume`].
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// Returns at once unless paused, else when resumed.
    pub async fn resumed(&self) {
        let mut rx = self.paused.subscribe();
        // The sender lives as long as `self`: this cannot fail while we wait.
        let _ = rx.wait_for(|paused| !paused).await;
    }

    /// Asks the indexer to scan now (a stored nudge wakes the next wait if none is waiting).
    pub fn scan_now(&self) {
        self.nudge.notify_one();
    }

    pub async fn scan_requested(&self) {
        self.nudge.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paused_indexer_waits_until_resumed() {
        let control = IndexControl::default();
        control.resumed().await;
        control.pause();
        let waiting = crate::tasks::spawn(module_path!(), {
            let c = control.clone();
            async move { c.resumed().await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        assert!(!waiting.is_finished(), "resumed while paused");
        control.resume();
        waiting.await.unwrap();
        // A nudge given while nobody waits is kept for the next wait.
        control.scan_now();
        tokio::time::timeout(std::time::Duration::from_secs(1), control.scan_requested()).await.unwrap();
    }
}
