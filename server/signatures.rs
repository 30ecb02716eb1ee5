//! Ed25519 signatures checked in batches. Every upload's header and every
//! receipt is signed; the daemon checks each before it stores anything.
//! Calls that ask at about the same time (the uploads of a busy minute, the
//! receipts of one `AcknowledgeMany`) are checked together, in one batch
//! equation (`ed25519_dalek::verify_batch`), which costs about half as much
//! a signature as checking them one by one. A batch that fails is checked
//! again one signature at a time, so one bad signature fails only its own
//! call, with the same answer as before.
//!
//! What the batch equation accepts that a check alone would not: a
//! signature whose nonce point carries a small-order component or a
//! non-canonical encoding, which only the holder of the signing key can
//! make (it needs the key's secret). Such a pack is refused by its
//! receivers, who check every signature alone; its sender could as well
//! have sealed garbage. No one else's signature passes.

use std::sync::Arc;

use baton::keys::PublicKey;
use baton::pack::PackError;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use tokio::sync::{mpsc, oneshot};

/// The most signatures checked in one batch.
const MAX_BATCH: usize = 64;

/// Checks waiting for the checker; a full queue makes callers wait.
const QUEUE: usize = 1024;

/// One signature to check, and where its verdict goes.
struct Job {
    key: VerifyingKey,
    message: Arc<[u8]>,
    signature: Signature,
    verdict: oneshot::Sender<bool>,
}

/// A handle on the checker task (see the module documentation).
#[derive(Debug, Clone)]
pub struct Signatures {
    jobs: mpsc::Sender<Job>,
}

impl Signatures {
    /// Starts the checker task; it ends when every handle is dropped.
    pub fn start() -> Self {
        let (jobs, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(serve(waiting));
        Self { jobs }
    }

    /// Checks what a header's or receipt's `signed_by` gave for `key`:
    /// the same answer as its `verify`.
    pub async fn check(
        &self,
        key: &PublicKey,
        signed: Result<(Vec<u8>, &[u8; 64]), PackError>,
    ) -> Result<(), PackError> {
        let (message, signature) = signed?;
        if self.verify(key.verifying_key(), message, signature).await {
            Ok(())
        } else {
            Err(PackError::BadSignature)
        }
    }

    /// Whether `signature` is `key`'s over `message`.
    pub async fn verify(&self, key: &VerifyingKey, message: Vec<u8>, signature: &[u8; 64]) -> bool {
        let signature = Signature::from_bytes(signature);
        let message: Arc<[u8]> = message.into();
        let (verdict, answer) = oneshot::channel();
        let job = Job {
            key: *key,
            message: message.clone(),
            signature,
            verdict,
        };
        if self.jobs.send(job).await.is_ok()
            && let Ok(ok) = answer.await
        {
            return ok;
        }
        // The checker has stopped (the daemon is shutting down): alone.
        key.verify(&message, &signature).is_ok()
    }
}

/// The checker: whatever has queued since the last batch, checked together.
async fn serve(mut waiting: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Let the calls already running reach their own checks first: on
        // a busy daemon they join this batch; on an idle one this returns
        // at once.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH
            && let Ok(job) = waiting.try_recv()
        {
            batch.push(job);
        }
        let verdicts = check(&batch);
        for (job, ok) in batch.drain(..).zip(verdicts) {
            // The caller may have gone away.
            let _ = job.verdict.send(ok);
        }
    }
}

/// Each job's verdict: the batch equation first, each alone if it fails.
fn check(batch: &[Job]) -> Vec<bool> {
    if batch.len() > 1 {
        let messages: Vec<&[u8]> = batch.iter().map(|j| &*j.message).collect();
        let signatures: Vec<Signature> = batch.iter().map(|j| j.signature).collect();
        let keys: Vec<VerifyingKey> = batch.iter().map(|j| j.key).collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            return vec![true; batch.len()];
        }
    }
    batch
        .iter()
        .map(|j| j.key.verify(&j.message, &j.signature).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ed25519_dalek::{Signer as _, SigningKey};

    use super::*;

    fn signed(i: u8) -> (VerifyingKey, Vec<u8>, [u8; 64]) {
        let key = SigningKey::from_bytes(&[i; 32]);
        let message = vec![i; 100 + usize::from(i)];
        let signature = key.sign(&message).to_bytes();
        (key.verifying_key(), message, signature)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_signature_among_good_ones_fails_alone() {
        let signatures = Signatures::start();
        let mut calls = Vec::new();
        for i in 0..40u8 {
            let (key, mut message, mut signature) = signed(i);
            match i % 10 {
                // Another message than the one signed.
                3 => message[0] ^= 1,
                // A signature changed.
                7 => signature[5] ^= 1,
                // Another key's signature.
                9 => signature = signed(i + 100).2,
                _ => {}
            }
            let signatures = signatures.clone();
            calls.push(tokio::spawn(async move {
                signatures.verify(&key, message, &signature).await
            }));
        }
        for (i, call) in calls.into_iter().enumerate() {
            let ok = call.await.unwrap();
            assert_eq!(ok, ![3, 7, 9].contains(&(i % 10)), "signature {i}");
        }
    }

    #[test]
    fn a_batch_answers_as_each_check_alone() {
        let jobs: Vec<Job> = (0..8u8)
            .map(|i| {
                let (key, message, mut signature) = signed(i);
                if i == 5 {
                    signature[40] ^= 0x10;
                }
                Job {
                    key,
                    message: message.into(),
                    signature: Signature::from_bytes(&signature),
                    verdict: oneshot::channel().0,
                }
            })
            .collect();
        let verdicts = check(&jobs);
        assert_eq!(verdicts, [true, true, true, true, true, false, true, true]);
        assert_eq!(check(&jobs[..5]), [true; 5]);
        assert_eq!(check(&jobs[5..6]), [false]);
    }
}
