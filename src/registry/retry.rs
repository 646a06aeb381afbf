//! When and how long to wait before trying a request again: transient
//! statuses and transport errors, exponential back-off with full jitter,
//! `Retry-After` honoured, limits on tries and on total time, and one
//! back-off clock per registry host so that a burst of 429s slows every task
//! down instead of each hammering alone.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included (`--retries`).
    pub attempts: u32,
    /// No new try starts later than this after a request's first try
    /// (`--retry-time`); a try already under way is never cut by it.
    pub deadline: Duration,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Longest wait for a TCP (and TLS) connection (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// A try that sends and receives nothing for this long is abandoned and
    /// counts as a transport error (`--stall-timeout`). Measured from the
    /// last body bytes taken, so a slow upload that keeps moving is never
    /// cut, however long it takes.
    pub stall_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            deadline: Duration::from_secs(300),
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// Statuses peers (go-containerregistry, containers/image) retry.
pub fn retryable_status(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        408 | 429 | 499 | 500 | 502 | 503 | 504 | 522
    )
}

/// `Retry-After` in seconds (the form registries use), capped at 5 minutes.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(300)))
}

impl RetryPolicy {
    /// Delay before try number `attempt + 2` (attempt counts from 0): the
    /// registry's `Retry-After` when it gave one, else exponential with jitter.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d;
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        // Full jitter: uniformly between half and all of the exponential step.
        let half = exp / 2;
        half + Duration::from_millis(rand::random_range(0..=half.as_millis() as u64))
    }

    /// After `tries` tries begun `elapsed` ago, with the next one due in
    /// `delay`: `None` to try again, or why not (for the error message).
    pub fn give_up(&self, tries: u32, elapsed: Duration, delay: Duration) -> Option<String> {
        let spent = format!(
            "gave up after {tries} tries in {:.1}s",
            elapsed.as_secs_f64()
        );
        if tries >= self.attempts {
            return Some(format!(
                "{spent}, the most --retries {} allows",
                self.attempts
            ));
        }
        if elapsed + delay > self.deadline {
            return Some(format!(
                "{spent}: the next, due in {:.1}s, would start past --retry-time {}s",
                delay.as_secs_f64(),
                self.deadline.as_secs()
            ));
        }
        None
    }
}

/// A per-host "nobody sends before" instant, pushed forward by throttling,
/// and since when the host has not answered at all (an outage), so that
/// `--retry-time` bounds an outage for every request, not each one anew.
#[derive(Debug)]
pub struct HostBackoff {
    until: Mutex<Instant>,
    down_since: Mutex<Option<Instant>>,
}

impl Default for HostBackoff {
    fn default() -> Self {
        HostBackoff {
            until: Mutex::new(Instant::now()),
            down_since: Mutex::new(None),
        }
    }
}

impl HostBackoff {
    /// Wait until the host's back-off, if any, has passed.
    pub async fn wait(&self) {
        let until = *self.until.lock().expect("backoff poisoned");
        let now = Instant::now();
        if until > now {
            tokio::time::sleep(until - now).await;
        }
    }

    /// A try got no answer (refused, reset, stalled): the outage starts
    /// now unless it already had.
    pub fn mark_down(&self) {
        let mut since = self.down_since.lock().expect("backoff poisoned");
        since.get_or_insert_with(Instant::now);
    }

    /// The host answered: no outage.
    pub fn mark_up(&self) {
        *self.down_since.lock().expect("backoff poisoned") = None;
    }

    /// When the current outage began, if the host is not answering.
    pub fn down_since(&self) -> Option<Instant> {
        *self.down_since.lock().expect("backoff poisoned")
    }

    /// The host said "slow down": hold every request for `delay`.
    pub fn hold(&self, delay: Duration) {
        let mut until = self.until.lock().expect("backoff poisoned");
        *until = (*until).max(Instant::now() + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for s in [408, 429, 499, 500, 502, 503, 504, 522] {
            assert!(retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 405, 413, 501] {
            assert!(!retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn delays_grow_with_jitter_and_honour_retry_after() {
        let p = RetryPolicy::default();
        for attempt in 0..10 {
            let d = p.delay(attempt, None);
            let exp = p.base_delay.saturating_mul(1 << attempt).min(p.max_delay);
            assert!(
                d >= exp / 2 && d <= exp,
                "attempt {attempt}: {d:?} vs {exp:?}"
            );
        }
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, "86400".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(300)));
    }

    #[test]
    fn tries_and_total_time_are_both_limits() {
        let p = RetryPolicy {
            attempts: 3,
            deadline: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let s = Duration::from_secs;
        assert_eq!(p.give_up(1, s(0), s(1)), None);
        assert_eq!(p.give_up(2, s(5), s(4)), None);
        let why = p.give_up(3, s(1), s(1)).unwrap();
        assert!(
            why.contains("after 3 tries") && why.contains("--retries 3 allows"),
            "{why}"
        );
        let why = p.give_up(2, s(8), s(3)).unwrap();
        assert!(why.contains("past --retry-time 10s"), "{why}");
    }

    #[test]
    fn an_outage_is_dated_from_its_first_failure_until_an_answer() {
        let h = HostBackoff::default();
        assert_eq!(h.down_since(), None);
        h.mark_down();
        let since = h.down_since().unwrap();
        h.mark_down();
        assert_eq!(h.down_since(), Some(since), "the first failure dates it");
        h.mark_up();
        assert_eq!(h.down_since(), None);
    }
}
