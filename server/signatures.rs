//! Ed25519 signatures of pack headers checked in batches. The daemon
//! checks every upload's header signature before it stores anything;
//! uploads that ask at about the same time (a busy minute's) are checked
//! together, in one batch equation (`ed25519_dalek::verify_batch`), which
//! costs about half as much a signature as checking them one by one. A
//! batch that fails is checked again one signature at a time, so a bad
//! signature fails only its own upload, with the answer it gets alone.
//!
//! What the batch equation accepts that a check alone would not: a
//! signature whose nonce point (or whose key, which registration checks
//! only for being of small order itself) carries a small-order component,
//! in some batches (the equation's coefficients make such a term vanish
//! with a probability of 1/2 to 1/8). Only the holder of the signing key
//! can make one: it needs the key's secret. Nonce points encoded non-canonically,
//! which the equation would also accept, are never batched. So headers
//! only: a header that passes here but not alone is refused by the pack's
//! receivers, who check every header alone, and harms only its own sender,
//! who could as well have sealed garbage. Receipts are checked alone
//! (`services::exchange::receipts`): a receipt accepted marks its pack
//! acknowledged and due for purging, and its sender checks it alone, so a
//! receipt that does not verify alone must never be accepted.

use std::sync::Arc;

use baton::keys::PublicKey;
use baton::pack::{PackError, SignedHeader};
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

    /// Checks `header`'s signature against `key`, which must be the key it
    /// names as its signer: the answer `SignedHeader::verify` gives, but
    /// for what the module documentation says.
    pub async fn check(&self, header: &SignedHeader, key: &PublicKey) -> Result<(), PackError> {
        let (message, signature) = header.signed_by(key)?;
        if self.verify(key.verifying_key(), message, signature).await {
            Ok(())
        } else {
            Err(PackError::BadSignature)
        }
    }

    /// Whether `signature` is `key`'s over `message`.
    async fn verify(&self, key: &VerifyingKey, message: Vec<u8>, signature: &[u8; 64]) -> bool {
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

/// Each job's verdict: those whose nonce point is canonically encoded in
/// one batch equation (each alone if it fails), the rest alone.
fn check(batch: &[Job]) -> Vec<bool> {
    let alone = |j: &Job| j.key.verify(&j.message, &j.signature).is_ok();
    let batched: Vec<&Job> = batch
        .iter()
        .filter(|j| canonical(j.signature.r_bytes()))
        .collect();
    let passed = batched.len() > 1 && {
        let messages: Vec<&[u8]> = batched.iter().map(|j| &*j.message).collect();
        let signatures: Vec<Signature> = batched.iter().map(|j| j.signature).collect();
        let keys: Vec<VerifyingKey> = batched.iter().map(|j| j.key).collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    };
    batch
        .iter()
        .map(|j| (passed && canonical(j.signature.r_bytes())) || alone(j))
        .collect()
}

/// Whether `point` is the one encoding of the point it names: `y` below
/// the field's prime 2^255 - 19, and no sign bit for `x` = 0 (`y` = 1 or
/// -1). A check alone compares encodings byte for byte and refuses the
/// others; the batch equation decodes them leniently and would not.
fn canonical(point: &[u8; 32]) -> bool {
    let sign = point[31] & 0x80 != 0;
    let top = point[31] & 0x7f;
    let middle_all = |b: u8| point[1..31].iter().all(|&x| x == b);
    // y >= 2^255 - 19: every byte 0xff but the first, which is >= 0xed.
    let high = top == 0x7f && middle_all(0xff);
    if high && point[0] >= 0xed {
        return false;
    }
    // x = 0 when y = 1 or y = 2^255 - 20 (-1); a sign bit there is not canonical.
    let one = top == 0 && middle_all(0) && point[0] == 1;
    let minus_one = high && point[0] == 0xec;
    !(sign && (one || minus_one))
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

    /// A key holder's signature whose nonce point is a non-canonical
    /// encoding of the identity: the batch equation alone would accept it.
    fn lenient(i: u8, r: [u8; 32]) -> Job {
        use curve25519_dalek::scalar::Scalar;
        use sha2::{Digest as _, Sha512};
        let key = SigningKey::from_bytes(&[i; 32]);
        let message = vec![i; 64];
        let digest = Sha512::new()
            .chain_update(r)
            .chain_update(key.verifying_key().as_bytes())
            .chain_update(&message)
            .finalize();
        let mut wide = [0u8; 64];
        wide.copy_from_slice(&digest);
        let s = Scalar::from_bytes_mod_order_wide(&wide) * key.to_scalar();
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&r);
        signature[32..].copy_from_slice(s.as_bytes());
        Job {
            key: key.verifying_key(),
            message: message.into(),
            signature: Signature::from_bytes(&signature),
            verdict: oneshot::channel().0,
        }
    }

    #[test]
    fn a_non_canonical_nonce_is_refused_even_among_good_signatures() {
        // y = 1 with the sign bit set; y = 2^255 - 18 (p + 1).
        let mut sign_of_zero = [0u8; 32];
        sign_of_zero[0] = 1;
        sign_of_zero[31] = 0x80;
        let mut above_p = [0xffu8; 32];
        above_p[0] = 0xee;
        above_p[31] = 0x7f;
        for r in [sign_of_zero, above_p] {
            assert!(!canonical(&r));
            let crafted = lenient(50, r);
            let good = |i: u8| {
                let (key, message, signature) = signed(i);
                Job {
                    key,
                    message: message.into(),
                    signature: Signature::from_bytes(&signature),
                    verdict: oneshot::channel().0,
                }
            };
            // What this module guards against: the equation accepts it.
            let (m, sigs, keys) = (
                [&*crafted.message, &*good(1).message],
                [crafted.signature, good(1).signature],
                [crafted.key, good(1).key],
            );
            assert!(ed25519_dalek::verify_batch(&m, &sigs, &keys).is_ok());
            let jobs = [good(1), crafted, good(2), good(3)];
            assert_eq!(check(&jobs), [true, false, true, true]);
        }
        // Canonical encodings pass the test, the identity's own included.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(canonical(&identity));
        assert!(canonical(&signed(4).2[..32].try_into().unwrap()));
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
