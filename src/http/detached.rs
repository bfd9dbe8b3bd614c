//! Requests that run to the end whatever their connection does (DESIGN.md
//! decision 22).
//!
//! hyper runs a request's handler inside its connection's future: a client
//! that half-closes or resets the connection (an HTTP/2 RST_STREAM), and
//! the shutdown's cut, drop that future. A token job already handed to the
//! session pool runs on regardless, so a write could land on the token
//! with no audit record, no cache update and no announcement to the other
//! workers. So once a request is authenticated, its operation and its
//! record run in a task of their own that the connection only awaits, and
//! [`Detached`] counts those tasks, so that shutdown waits for them before
//! the token and the audit log close.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The requests running in tasks of their own.
#[derive(Default)]
pub struct Detached {
    running: AtomicUsize,
    /// Woken when `running` drops to zero.
    idle: Notify,
}

/// Counts one task for as long as it lives (also when it panics or is
/// dropped unpolled).
struct Running(Arc<Detached>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Detached {
    /// Runs `work` in a task of its own, counted until it ends.
    pub fn spawn<F>(self: &Arc<Self>, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.running.fetch_add(1, Ordering::AcqRel);
        let running = Running(self.clone());
        tokio::spawn(async move {
            let _running = running;
            work.await
        })
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Waits until no task runs, at most `limit`; whether none does.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.running() == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, idle).await.is_err() {
                return self.running() == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_runs_on_when_its_awaiting_future_is_dropped_and_is_waited_for() {
        let detached = Arc::new(Detached::default());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let handle = detached.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        drop(handle);
        assert_eq!(detached.running(), 1);
        assert!(detached.wait_idle(Duration::from_secs(5)).await);
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(detached.running(), 0);
        assert!(detached.wait_idle(Duration::from_millis(1)).await);
    }
}
