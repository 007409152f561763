//! Supervision of a service's background loops. Every loop runs under [`Supervisor::spawn`]: a panic, an error
//! or an unexpected end is logged at ERROR with its cause and the loop is started again after a backoff (0.5 s,
//! doubling to 30 s). From the failure until the restarted loop reports that an iteration went through
//! ([`Heartbeat::ok`]), the loop counts as down: [`Supervisor::down`] lists it with its cause, the gRPC health
//! service of the process answers NOT_SERVING (see [`crate::grpc::GrpcServer::supervised`]), and whoever watches
//! [`Supervisor::changes`] (the monitoring service's health alert) hears of it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The first pause before a failed loop starts again.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest pause between restarts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long a loop may take to end after shutdown before it is aborted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Why a loop is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopFailure {
    /// The loop's name (`pull`, `follower`, `distribution`, …).
    pub name: &'static str,
    /// What made it fail: the panic message or the error, with its causes.
    pub cause: String,
    /// Failures in a row, without an iteration that went through in between.
    pub failures: u32,
    /// When it failed, ms since the epoch.
    pub since_ms: i64,
}

/// The supervisor of one process's loops: cheap to clone, shared by every loop and by health.
#[derive(Debug, Clone)]
pub struct Supervisor {
    down: Arc<Mutex<BTreeMap<&'static str, LoopFailure>>>,
    changes: watch::Sender<u64>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

/// What a supervised loop holds to report that it works.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    name: &'static str,
    supervisor: Supervisor,
}

impl Heartbeat {
    /// An iteration of the loop went through: if the loop was down, it is up again.
    pub fn ok(&self) {
        self.supervisor.mark_up(self.name);
    }
}

impl Supervisor {
    /// A supervisor with no loop down.
    pub fn new() -> Self {
        let (changes, _) = watch::channel(0);
        Self {
            down: Arc::default(),
            changes,
        }
    }

    /// The loops that are down now, by name.
    pub fn down(&self) -> Vec<LoopFailure> {
        self.lock().values().cloned().collect()
    }

    /// A receiver that changes every time a loop goes down or comes back.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Runs the loop that `start` makes, under supervision, until `shutdown`: whenever it panics, fails or
    /// ends while the service is not shutting down, the failure is logged and recorded, and after the backoff
    /// `start` makes a new one. `start` is given the loop's [`Heartbeat`].
    pub fn spawn<Start, Loop>(
        &self,
        name: &'static str,
        shutdown: CancellationToken,
        start: Start,
    ) -> JoinHandle<()>
    where
        Start: Fn(Heartbeat) -> Loop + Send + 'static,
        Loop: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let supervisor = self.clone();
        tokio::spawn(async move {
            let mut backoff = BACKOFF_MIN;
            loop {
                let heartbeat = Heartbeat {
                    name,
                    supervisor: supervisor.clone(),
                };
                let mut running = tokio::spawn(start(heartbeat));
                let outcome = tokio::select! {
                    outcome = &mut running => outcome,
                    () = shutdown.cancelled() => {
                        // The loop sees the same token; it gets a moment to end on its own.
                        if tokio::time::timeout(SHUTDOWN_GRACE, &mut running).await.is_err() {
                            running.abort();
                        }
                        return;
                    }
                };
                if shutdown.is_cancelled() {
                    return;
                }
                let cause = match outcome {
                    Ok(Ok(())) => "the loop ended while the service is running".to_owned(),
                    Ok(Err(error)) => format!("{error:#}"),
                    Err(join) => match join.try_into_panic() {
                        Ok(panic) => format!("panicked: {}", panic_text(panic.as_ref())),
                        Err(_) => "the loop was cancelled".to_owned(),
                    },
                };
                if !supervisor.is_down(name) {
                    backoff = BACKOFF_MIN;
                }
                let failures = supervisor.mark_down(name, &cause);
                tracing::error!(
                    task = name,
                    %cause,
                    failures,
                    restart_in = ?backoff,
                    "a background loop failed; restarting it"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, LoopFailure>> {
        self.down.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_down(&self, name: &'static str) -> bool {
        self.lock().contains_key(name)
    }

    fn mark_down(&self, name: &'static str, cause: &str) -> u32 {
        let failures = {
            let mut down = self.lock();
            let failures = down.get(name).map_or(1, |failure| failure.failures + 1);
            down.insert(
                name,
                LoopFailure {
                    name,
                    cause: cause.to_owned(),
                    failures,
                    since_ms: crate::clock::now_ms(),
                },
            );
            failures
        };
        self.changes.send_modify(|generation| *generation += 1);
        failures
    }

    fn mark_up(&self, name: &'static str) {
        let was_down = self.lock().remove(name).is_some();
        if was_down {
            tracing::info!(task = name, "a background loop runs again");
            self.changes.send_modify(|generation| *generation += 1);
        }
    }
}

/// Turns on the failure injection points that `FAILPOINTS` names (`pull=3*panic;distribution=return`, the `fail`
/// crate's syntax), in builds with the `failpoints` feature only (the end-to-end tests' builds); elsewhere, and
/// when `FAILPOINTS` is not set, nothing. Keep what it returns for the life of the process.
pub fn failpoints_from_env() -> Option<fail::FailScenario<'static>> {
    let names = std::env::var("FAILPOINTS").ok()?;
    if !cfg!(feature = "failpoints") {
        tracing::warn!(%names, "FAILPOINTS is ignored: this build has no failure injection points");
        return None;
    }
    tracing::warn!(%names, "failure injection points are on");
    Some(fail::FailScenario::setup())
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_panicking_loop_is_down_until_it_runs_again() {
        let supervisor = Supervisor::new();
        let shutdown = CancellationToken::new();
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        let mut changes = supervisor.changes();
        let task = supervisor.spawn("test", shutdown.clone(), move |heartbeat| {
            let start = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(start >= 2, "injected failure {start}");
                heartbeat.ok();
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        changes.changed().await.unwrap();
        let down = supervisor.down();
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].name, "test");
        assert!(down[0].cause.contains("injected failure 0"), "{down:?}");
        // Two failures, then the third start runs: up again.
        while !supervisor.down().is_empty() || starts.load(Ordering::SeqCst) < 3 {
            changes.changed().await.unwrap();
        }
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_and_an_early_end_are_failures_too() {
        let supervisor = Supervisor::new();
        let shutdown = CancellationToken::new();
        let mut changes = supervisor.changes();
        let task = supervisor.spawn("erring", shutdown.clone(), |_| async {
            Err(anyhow::anyhow!("the database is gone"))
        });
        changes.changed().await.unwrap();
        assert_eq!(supervisor.down()[0].cause, "the database is gone");
        changes.changed().await.unwrap();
        assert_eq!(supervisor.down()[0].failures, 2);
        shutdown.cancel();
        task.await.unwrap();

        let ending = Supervisor::new();
        let mut changes = ending.changes();
        let shutdown = CancellationToken::new();
        let task = ending.spawn("ending", shutdown.clone(), |_| async { Ok(()) });
        changes.changed().await.unwrap();
        assert!(ending.down()[0].cause.contains("ended"));
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_stopped_by_shutdown_is_not_a_failure() {
        let supervisor = Supervisor::new();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = supervisor.spawn("quiet", shutdown.clone(), move |_| {
            let stop = stop.clone();
            async move {
                stop.cancelled().await;
                Ok(())
            }
        });
        shutdown.cancel();
        task.await.unwrap();
        assert!(supervisor.down().is_empty());
    }
}
