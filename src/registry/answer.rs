//! Reading the bodies of answers kvpush keeps in memory (manifests,
//! configs, error bodies, tokens) so that a hostile or broken server can
//! neither exhaust memory nor hang a run: every body is read under a size
//! cap ([`Cap`]), and a body that trickles is cut as a stall: fewer than
//! [`MIN_PROGRESS`] bytes in a `--stall-timeout` window ([`Trickle`], also
//! used by blob downloads streamed elsewhere). Knows no operation and no
//! authentication; the callers turn a [`ReadFailure`] into their error.

use std::time::{Duration, Instant};

use reqwest::Response;

/// Bytes that must arrive within each `--stall-timeout` window for a body
/// to count as moving: a server sending a byte a second is stalled.
pub const MIN_PROGRESS: u64 = 1024;

/// The most kvpush reads of one kind of answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// 4 MiB, as containerd and docker-registry refuse larger manifests.
    Manifest,
    /// An image config read whole (16 MiB).
    Config,
    /// A token service's answer (1 MiB: tokens are a few KiB).
    Token,
    /// An error body read for its message (64 KiB).
    ErrorBody,
}

impl Cap {
    pub fn bytes(self) -> u64 {
        match self {
            Cap::Manifest => 4 << 20,
            Cap::Config => 16 << 20,
            Cap::Token => 1 << 20,
            Cap::ErrorBody => 64 << 10,
        }
    }

    /// Why a body over the cap is refused, for the error message.
    pub fn refusal(self, seen: u64) -> String {
        let what = match self {
            Cap::Manifest => "a manifest over 4 MiB is refused, as containerd does",
            Cap::Config => "an image config over 16 MiB is refused",
            Cap::Token => "a token answer over 1 MiB is refused",
            Cap::ErrorBody => "an error body over 64 KiB is refused",
        };
        format!("the answer is {seen} bytes or more: {what}")
    }
}

/// Why a body was not read whole.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// Over the cap: the text says which cap.
    TooLarge(String),
    /// The connection broke or the body stalled or trickled.
    Broken(String),
}

/// Watches a body for progress: each window of `limit` must bring at
/// least [`MIN_PROGRESS`] bytes (or the end of the body).
#[derive(Debug)]
pub struct Trickle {
    limit: Duration,
    window_start: Instant,
    moved: u64,
}

impl Trickle {
    pub fn new(limit: Duration) -> Trickle {
        Trickle {
            limit,
            window_start: Instant::now(),
            moved: 0,
        }
    }

    /// When the current window ends, stalled unless enough arrives first.
    pub fn deadline(&self) -> Instant {
        self.window_start + self.limit
    }

    /// `n` more bytes arrived; enough of them open a new window.
    pub fn arrived(&mut self, n: u64) {
        self.moved += n;
        if self.moved >= MIN_PROGRESS {
            self.window_start = Instant::now();
            self.moved = 0;
        }
    }

    /// Why the body was cut.
    pub fn reason(&self) -> String {
        format!(
            "{} bytes arrived in {:.0}s, less than {MIN_PROGRESS} (stalled; see --stall-timeout)",
            self.moved,
            self.limit.as_secs_f64()
        )
    }

    /// The next item of `next`, or `None` once the window ran out first.
    pub async fn within<F: std::future::Future>(&self, next: F) -> Option<F::Output> {
        tokio::time::timeout_at(self.deadline().into(), next)
            .await
            .ok()
    }
}

/// The body of `resp`, at most `cap` bytes (a `Content-Length` over it is
/// refused before reading), cut when it trickles ([`Trickle`]).
pub async fn read_capped(
    mut resp: Response,
    cap: Cap,
    stall: Duration,
) -> Result<Vec<u8>, ReadFailure> {
    let max = cap.bytes();
    if let Some(n) = resp.content_length().filter(|n| *n > max) {
        return Err(ReadFailure::TooLarge(cap.refusal(n)));
    }
    let mut watch = Trickle::new(stall);
    let mut body = Vec::new();
    loop {
        match watch.within(resp.chunk()).await {
            None => return Err(ReadFailure::Broken(watch.reason())),
            Some(Err(e)) => return Err(ReadFailure::Broken(super::errors::transport_reason(e))),
            Some(Ok(None)) => return Ok(body),
            Some(Ok(Some(chunk))) => {
                body.extend_from_slice(&chunk);
                if body.len() as u64 > max {
                    return Err(ReadFailure::TooLarge(cap.refusal(body.len() as u64)));
                }
                watch.arrived(chunk.len() as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trickle_is_a_stall_and_a_steady_flow_is_not() {
        let mut watch = Trickle::new(Duration::from_millis(300));
        let start = watch.deadline();
        // A few bytes now and then never open a new window.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            watch.arrived(1);
        }
        assert_eq!(watch.deadline(), start);
        assert!(
            watch.reason().contains("3 bytes arrived in 0s"),
            "{}",
            watch.reason()
        );
        // Enough bytes move the window on.
        watch.arrived(MIN_PROGRESS);
        assert!(watch.deadline() > start);
        // Nothing more arrives: the wait ends at the deadline.
        let never = std::future::pending::<()>();
        assert_eq!(watch.within(never).await, None);
        assert!(Instant::now() >= watch.deadline());
    }

    #[test]
    fn caps_say_what_they_refuse() {
        assert_eq!(Cap::Manifest.bytes(), 4 << 20);
        assert!(Cap::Manifest
            .refusal(5 << 20)
            .contains("manifest over 4 MiB is refused, as containerd does"));
        assert!(Cap::Token.bytes() < Cap::Config.bytes());
    }
}
