//! Brute force: failed attempts (wrong enrolment codes, unknown or revoked
//! tokens) counted per client address over a sliding window. An address
//! that reaches the limit is refused with `ResourceExhausted`, saying when
//! to try again, until its oldest failure leaves the window; the right code
//! or token is refused too meanwhile, so guessing gains nothing.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tonic::Status;

/// Addresses remembered at most; beyond it, those with no failure left in
/// the window are forgotten (a flood of addresses must not grow the daemon).
const MAX_ADDRESSES: usize = 16_384;

/// Failed attempts per address.
#[derive(Debug)]
pub struct Attempts {
    what: &'static str,
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Attempts {
    /// At most `max` failed `what` (e.g. "enrolment attempts") per address
    /// in any `window`.
    pub fn new(what: &'static str, max: usize, window: Duration) -> Self {
        Self {
            what,
            max,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses `addr` while it has `max` failures in the window. A call
    /// with no address (not over TCP) is not limited.
    pub fn check(&self, addr: Option<IpAddr>) -> Result<(), Status> {
        let Some(addr) = addr else { return Ok(()) };
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(times) = failures.get_mut(&addr) else {
            return Ok(());
        };
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() < self.max {
            return Ok(());
        }
        let wait = times.front().map_or(self.window, |oldest| {
            self.window.saturating_sub(now.duration_since(*oldest))
        });
        Err(Status::resource_exhausted(format!(
            "too many failed {} from your address: try again in {} s",
            self.what,
            wait.as_secs().max(1)
        )))
    }

    /// Counts a failure from `addr`.
    pub fn failed(&self, addr: Option<IpAddr>) {
        let Some(addr) = addr else { return };
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&addr) {
            let window = self.window;
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
            if failures.len() >= MAX_ADDRESSES {
                failures.clear();
            }
        }
        let times = failures.entry(addr).or_default();
        times.push_back(now);
        while times.len() > self.max {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_max_and_forgets_after_the_window() {
        let a = Attempts::new("attempts", 3, Duration::from_millis(50));
        let addr = Some(IpAddr::from([10, 0, 0, 1]));
        let other = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..3 {
            assert!(a.check(addr).is_ok());
            a.failed(addr);
        }
        let refused = a.check(addr).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("too many failed attempts"));
        assert!(a.check(other).is_ok());
        assert!(a.check(None).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert!(a.check(addr).is_ok());
    }
}
