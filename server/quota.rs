//! How much ciphertext a sender has waiting (sent, not yet acknowledged),
//! for the quota checked on each upload: a school's own, or a peer trust's
//! for the packs it relays here. Summing every waiting pack of the sender
//! on every upload cost time in proportion to what it had waiting (a local
//! authority with thousands of packs out paid for all of them on each new
//! one), so the sum read from the store stands for [`FRESH`], with every
//! pack admitted since counted on top at once (so uploads running
//! together see each other). A pack that does not fit that estimate is
//! checked against a fresh sum: a refusal is always made on the store's
//! own figure, and the estimate only ever errs high on this node (a pack
//! counted that was then not stored, or one acknowledged since). Several
//! nodes over one PostgreSQL do not see each other's last second; a
//! sender can then overshoot its quota by at most what the other nodes
//! admit for it in that second.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a sum read from the store stands.
pub const FRESH: Duration = Duration::from_secs(1);

/// Each sender's waiting bytes as last read, plus what was admitted since.
pub struct Waiting<K> {
    readings: Mutex<HashMap<K, Reading>>,
}

/// One sender's estimate.
struct Reading {
    /// Bytes waiting when read, plus every pack admitted since.
    bytes: u64,
    /// When the store was read.
    at: Instant,
}

impl<K: Hash + Eq + Clone> Default for Waiting<K> {
    fn default() -> Self {
        Self {
            readings: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone> Waiting<K> {
    /// Whether `len` more bytes from `sender` fit within `quota`: `Ok(())`
    /// (the bytes are counted), or `Err(waiting)` with the store's sum of
    /// what it has waiting. `read` sums that from the store; it is called
    /// only when this node's estimate is older than [`FRESH`] or the pack
    /// does not fit it.
    pub async fn admit<E>(
        &self,
        sender: &K,
        len: u64,
        quota: u64,
        read: impl Future<Output = Result<u64, E>>,
    ) -> Result<Result<(), u64>, E> {
        {
            let mut readings = self.readings.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(r) = readings.get_mut(sender)
                && r.at.elapsed() < FRESH
                && r.bytes.saturating_add(len) <= quota
            {
                r.bytes = r.bytes.saturating_add(len);
                return Ok(Ok(()));
            }
        }
        let at = Instant::now();
        let waiting = read.await?;
        let fits = waiting.saturating_add(len) <= quota;
        let bytes = if fits {
            waiting.saturating_add(len)
        } else {
            waiting
        };
        self.readings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sender.clone(), Reading { bytes, at });
        Ok(if fits { Ok(()) } else { Err(waiting) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sum(reads: &mut u32, bytes: u64) -> Result<u64, ()> {
        *reads += 1;
        Ok(bytes)
    }

    #[tokio::test]
    async fn a_fresh_estimate_admits_and_a_refusal_reads_the_store() {
        let w = Waiting::<&str>::default();
        let mut reads = 0;
        // First upload: the store is read.
        assert_eq!(
            w.admit(&"a", 10, 100, sum(&mut reads, 50)).await,
            Ok(Ok(()))
        );
        assert_eq!(reads, 1);
        // Within FRESH and fitting 60 + 30: no read.
        assert_eq!(w.admit(&"a", 30, 100, sum(&mut reads, 0)).await, Ok(Ok(())));
        assert_eq!(reads, 1);
        // 90 + 20 does not fit the estimate: the store is read, and its
        // figure (say 95, another node's pack) refuses it.
        assert_eq!(
            w.admit(&"a", 20, 100, sum(&mut reads, 95)).await,
            Ok(Err(95))
        );
        assert_eq!(reads, 2);
        // The store says less is waiting now (packs acknowledged): admitted.
        assert_eq!(
            w.admit(&"a", 20, 100, sum(&mut reads, 10)).await,
            Ok(Ok(()))
        );
        assert_eq!(reads, 3);
        // Another sender has its own reading.
        assert_eq!(w.admit(&"b", 90, 100, sum(&mut reads, 0)).await, Ok(Ok(())));
        assert_eq!(reads, 4);
        // A store error is passed on and counts nothing.
        let failed: Result<u64, ()> = Err(());
        assert_eq!(w.admit(&"c", 1, 100, async { failed }).await, Err(()));
    }

    #[tokio::test]
    async fn an_old_estimate_is_read_again() {
        let w = Waiting::<&str>::default();
        let mut reads = 0;
        assert_eq!(w.admit(&"a", 10, 100, sum(&mut reads, 0)).await, Ok(Ok(())));
        if let Some(r) = w.readings.lock().unwrap().get_mut(&"a") {
            r.at -= FRESH;
        }
        assert_eq!(w.admit(&"a", 10, 100, sum(&mut reads, 0)).await, Ok(Ok(())));
        assert_eq!(reads, 2);
    }
}
