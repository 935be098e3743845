//! Every task the process spawns goes through here: [`spawn`] and [`spawn_blocking`] track it (so
//! shutdown can wait for what is in flight: [`shutdown`]), name it after the module that spawned
//! it, count it while it runs, and catch a panic in it — logged with the task's name, counted
//! (`peerix_task_panics_total{task}`), then passed on to whoever awaits the task, exactly as tokio
//! would have. A panic in a detached task used to go to stderr and nowhere else.
//!
//! [`thread`] does the same for the two long-lived OS threads (the provider and block writers).

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, warn};

struct Registry {
    tracker: TaskTracker,
    /// Per task name: (running now, panics so far).
    counts: Mutex<BTreeMap<&'static str, (u64, u64)>>,
}

static TASKS: LazyLock<Registry> =
    LazyLock::new(|| Registry { tracker: TaskTracker::new(), counts: Mutex::new(BTreeMap::new()) });

/// Counts a task as running until dropped (when it ends, panics or is aborted).
struct Running(&'static str);

impl Running {
    fn start(name: &'static str) -> Self {
        if let Ok(mut c) = TASKS.counts.lock() {
            c.entry(name).or_default().0 += 1;
        }
        Running(name)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut c) = TASKS.counts.lock() {
            c.entry(self.0).or_default().0 -= 1;
        }
    }
}

fn panicked(name: &'static str, payload: &(dyn std::any::Any + Send)) {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    if let Ok(mut c) = TASKS.counts.lock() {
        c.entry(name).or_default().1 += 1;
    }
    error!(task = name, panic = %message, "a task panicked");
}

/// `tokio::spawn`, tracked, counted and named (`module_path!()` at the call).
pub fn spawn<F>(name: &'static str, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let running = Running::start(name);
    let span = tracing::debug_span!("task", name);
    TASKS.tracker.spawn(
        async move {
            let _running = running;
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(v) => v,
                Err(payload) => {
                    panicked(name, payload.as_ref());
                    std::panic::resume_unwind(payload)
                }
            }
        }
        .instrument(span),
    )
}

/// `tokio::task::spawn_blocking`, tracked, counted and named.
pub fn spawn_blocking<F, T>(name: &'static str, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let running = Running::start(name);
    TASKS.tracker.spawn_blocking(move || {
        let _running = running;
        match std::panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => v,
            Err(payload) => {
                panicked(name, payload.as_ref());
                std::panic::resume_unwind(payload)
            }
        }
    })
}

/// A named OS thread whose panic is logged and counted.
pub fn thread<F>(name: &'static str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new().name(name.rsplit("::").next().unwrap_or(name).to_owned()).spawn(move || {
        let _running = Running::start(name);
        if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
            panicked(name, payload.as_ref());
        }
    })
}

/// Per task name: how many run now, and how many panicked since the start.
pub fn counts() -> BTreeMap<&'static str, (u64, u64)> {
    TASKS.counts.lock().map(|c| c.clone()).unwrap_or_default()
}

/// Stops taking part in new work and waits up to `grace` for the tasks in flight (the loops watch
/// the shutdown token and end within moments); what is left is dropped with the runtime. Returns
/// how many were left.
pub async fn shutdown(grace: Duration) -> usize {
    TASKS.tracker.close();
    if tokio::time::timeout(grace, TASKS.tracker.wait()).await.is_err() {
        let left: Vec<String> =
            counts().into_iter().filter(|(_, (n, _))| *n > 0).map(|(name, (n, _))| format!("{name}={n}")).collect();
        warn!(left = %left.join(" "), "tasks still running at shutdown; dropping them");
        return TASKS.tracker.len();
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panicking task is counted under its name and its awaiter still sees the panic.
    #[tokio::test]
    async fn a_panic_is_counted_and_passed_on() {
        let name = "peerix::tasks::tests::panicking";
        let before = counts().get(name).map_or(0, |c| c.1);
        let handle = spawn(name, async { panic!("on purpose") });
        assert!(handle.await.unwrap_err().is_panic());
        let blocking = spawn_blocking(name, || panic!("on purpose"));
        assert!(blocking.await.unwrap_err().is_panic());
        assert_eq!(counts()[name], (0, before + 2));
        assert_eq!(spawn(name, async { 7 }).await.unwrap(), 7);
    }
}
