//! The background task that removes expired sessions from a store, shared by the stores that
//! need one (memory, SQL): started once, on the Tokio runtime that first writes, and stopped when
//! the store is dropped.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use tokio::sync::oneshot;

/// A store's sweeper: whether it started, and the handle whose drop stops it.
#[derive(Debug, Default)]
pub(crate) struct Sweeper {
    started: AtomicBool,
    /// Dropped with the store, which tells the task to stop.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Sweeper {
    /// Starts the task once: every `interval`, `sweep` runs on the store behind `store` until
    /// the store is gone. Outside a Tokio runtime nothing starts (the store's own method to
    /// remove expired sessions still works).
    pub(crate) fn start_once<S, F, Fut>(&self, store: Weak<S>, interval: Duration, sweep: F)
    where
        S: Send + Sync + 'static,
        F: Fn(Arc<S>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        if self.started.load(Ordering::Relaxed) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (stop_tx, mut stop) = oneshot::channel::<()>();
        *self
            .stop
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(stop_tx);
        runtime.spawn(async move {
            loop {
                // The sender lives in the store: once the store is dropped, `stop` resolves.
                if tokio::time::timeout(interval, &mut stop).await.is_ok() {
                    return;
                }
                let Some(store) = store.upgrade() else { return };
                sweep(store).await;
            }
        });
    }
}
