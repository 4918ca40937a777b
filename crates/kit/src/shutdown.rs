//! Graceful shutdown: one token cancelled on SIGINT/SIGTERM, and a tracker of the background
//! tasks (consumers, relays) that must finish their current item before the process exits.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

/// Background tasks did not finish within the grace period.
#[derive(Debug, thiserror::Error)]
#[error("{remaining} background task(s) still running after the {grace:?} grace period")]
pub struct DrainTimeout {
    pub remaining: usize,
    pub grace: Duration,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the token on the first SIGINT or SIGTERM.
    pub fn listen_for_signals(&self) {
        let token = self.token.clone();
        tokio::spawn(async move {
            let signal = wait_for_signal().await;
            tracing::info!(signal, "Shutdown requested, draining.");
            token.cancel();
        });
    }

    /// The token background loops select on: cancelled means "finish what you hold and stop".
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Spawns a task that shutdown waits for.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Waits for every tracked task, at most `grace`.
    pub async fn drain(&self, grace: Duration) -> Result<(), DrainTimeout> {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .map_err(|_| DrainTimeout {
                remaining: self.tracker.len(),
                grace,
            })
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = sigterm.recv() => "SIGTERM",
        },
        Err(error) => {
            tracing::warn!(%error, "Cannot listen for SIGTERM; only SIGINT stops the process.");
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

/// Waits `wait` unless `stop` comes first: `true` when the wait ran out, `false` when the
/// process is stopping (the caller returns rather than retrying).
pub async fn pause(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_ends_early_when_stopping() {
        let stop = CancellationToken::new();
        assert!(pause(&stop, Duration::from_millis(10)).await);
        stop.cancel();
        assert!(!pause(&stop, Duration::from_secs(3600)).await);
    }

    #[tokio::test]
    async fn drain_waits_for_tracked_tasks_to_finish_their_item() {
        let shutdown = Shutdown::new();
        let token = shutdown.token();
        let task = shutdown.spawn(async move {
            token.cancelled().await;
            // The item in hand is finished after cancellation.
            tokio::time::sleep(Duration::from_millis(50)).await;
            "finished"
        });
        shutdown.trigger();
        shutdown
            .drain(Duration::from_secs(2))
            .await
            .expect("drained");
        assert_eq!(task.await.expect("joined"), "finished");
    }

    #[tokio::test]
    async fn drain_gives_up_after_the_grace_period() {
        let shutdown = Shutdown::new();
        shutdown.spawn(futures::future::pending::<()>());
        shutdown.trigger();
        let err = shutdown
            .drain(Duration::from_millis(20))
            .await
            .expect_err("stuck task");
        assert_eq!(err.remaining, 1);
    }
}
