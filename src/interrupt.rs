//! Ctrl-C (SIGINT) and SIGTERM during a push. The push stops at once:
//! requests in flight are dropped and no manifest or tag is written after
//! the signal; since an image's tags are written only after its manifest,
//! and its manifest only after all its blobs, no tag can point at an
//! incomplete image. The caller then reports what landed and what did not.

use std::future::Future;

/// The signal that stopped the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    pub name: &'static str,
    /// 128 + the signal number, as shells report a death by signal.
    pub exit_code: u8,
}

/// Start listening for SIGINT and SIGTERM (call inside the runtime, before
/// the work starts); the future resolves on the first of them.
pub fn listen() -> std::io::Result<impl Future<Output = Interrupt>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => Interrupt { name: "SIGINT", exit_code: 130 },
            _ = term.recv() => Interrupt { name: "SIGTERM", exit_code: 143 },
        }
    })
}
