//! Ctrl-C (SIGINT) and SIGTERM during a push. The push stops at once:
//! requests in flight are dropped and no manifest or tag is written after
//! the signal; since an image's tags are written only after its manifest,
//! and its manifest only after all its blobs, no tag can point at an
//! incomplete image. The caller then reports what landed and what did not.

use std::future::Future;

use tokio::sync::watch;

/// The signal that stopped the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    pub name: &'static str,
    /// 128 + the signal number, as shells report a death by signal.
    pub exit_code: u8,
}

/// Whether, and by which signal, the run was asked to stop.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<Option<Interrupt>>);

impl Stop {
    /// Listen for SIGINT and SIGTERM from now on; call inside the runtime,
    /// before the work starts.
    pub fn listen() -> std::io::Result<Stop> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let received = tokio::select! {
                _ = int.recv() => Interrupt { name: "SIGINT", exit_code: 130 },
                _ = term.recv() => Interrupt { name: "SIGTERM", exit_code: 143 },
            };
            let _ = tx.send(Some(received));
        });
        Ok(Stop(rx))
    }

    /// The signal received so far, if any: checked before every manifest
    /// or tag is written, in case it came in the middle of the work.
    pub fn received(&self) -> Option<Interrupt> {
        *self.0.borrow()
    }

    /// Resolves on the first signal (at once if one came already).
    async fn wait(&self) -> Interrupt {
        let mut rx = self.0.clone();
        let received = rx.wait_for(Option::is_some).await.map(|r| *r);
        match received {
            Ok(signal) => signal.expect("waited for a signal"),
            // The listener is gone (the runtime is shutting down).
            Err(_) => std::future::pending().await,
        }
    }

    /// Run `work` unless a signal comes first: then `work` is dropped at
    /// once, wherever it is, and the signal returned.
    pub async fn or<T>(&self, work: impl Future<Output = T>) -> Result<T, Interrupt> {
        tokio::select! {
            biased;
            signal = self.wait() => Err(signal),
            done = work => Ok(done),
        }
    }
}
