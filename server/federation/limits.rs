//! What one peer may relay here: packs a minute and relays at once
//! (`federation_peer_packs_per_minute`, `federation_peer_concurrent`),
//! counted per peer in this process. Refused with `ResourceExhausted`; the
//! peer's relay queue tries again later, so a busy peer is slowed, never
//! lost. Its bytes waiting here count against `federation_peer_quota_bytes`
//! (checked against the store, see [`super::inbound`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;

use crate::config::PeerLimits;

/// The window packs are counted over.
const WINDOW: Duration = Duration::from_secs(60);

/// One peer's count.
#[derive(Default)]
struct Count {
    window_start: Option<Instant>,
    packs: u32,
    open: u32,
}

/// Per-peer counts.
pub struct Limits {
    limits: PeerLimits,
    counts: Arc<Mutex<HashMap<String, Count>>>,
}

/// A relay in progress; its place is given back when dropped.
pub struct Permit {
    peer: String,
    counts: Arc<Mutex<HashMap<String, Count>>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = counts.get_mut(&self.peer) {
            c.open = c.open.saturating_sub(1);
        }
    }
}

impl Limits {
    /// Counts under `limits`.
    pub fn new(limits: PeerLimits) -> Self {
        Self {
            limits,
            counts: Arc::default(),
        }
    }

    /// Counts of their own at `rate` times the packs a minute and
    /// `concurrency` times the calls at once.
    pub fn scaled(&self, rate: u32, concurrency: u32) -> Self {
        Self::new(PeerLimits {
            packs_per_minute: self.limits.packs_per_minute.saturating_mul(rate),
            concurrent: self.limits.concurrent.saturating_mul(concurrency),
            quota_bytes: self.limits.quota_bytes,
        })
    }

    /// The largest ciphertext `peer`'s schools may have waiting here.
    pub fn quota_bytes(&self) -> u64 {
        self.limits.quota_bytes
    }

    /// A place for one more relay from `peer`, or why not.
    pub fn admit(&self, peer: &str) -> Result<Permit, Status> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(peer.to_string()).or_default();
        let now = Instant::now();
        if count
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW)
        {
            count.window_start = Some(now);
            count.packs = 0;
        }
        if count.open >= self.limits.concurrent {
            return Err(Status::resource_exhausted(format!(
                "{} relays from {peer} already in progress; try again shortly",
                count.open
            )));
        }
        if count.packs >= self.limits.packs_per_minute {
            return Err(Status::resource_exhausted(format!(
                "{peer} relayed {} packs this minute, its limit here; try again shortly",
                count.packs
            )));
        }
        count.packs += 1;
        count.open += 1;
        Ok(Permit {
            peer: peer.to_string(),
            counts: self.counts.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_held_to_its_rate_and_concurrency_alone() {
        let limits = Limits::new(PeerLimits {
            packs_per_minute: 3,
            concurrent: 2,
            quota_bytes: 1,
        });
        let first = limits.admit("north").unwrap();
        let _second = limits.admit("north").unwrap();
        let busy = limits.admit("north").err().unwrap();
        assert_eq!(busy.code(), tonic::Code::ResourceExhausted);
        assert!(busy.message().contains("in progress"));
        // Another peer is counted apart.
        let _other = limits.admit("south").unwrap();
        drop(first);
        drop(limits.admit("north").unwrap());
        // Three this minute: a fourth waits for the next, places or not.
        let fourth = limits.admit("north").err().unwrap();
        assert!(fourth.message().contains("this minute"), "{fourth:?}");
    }
}
