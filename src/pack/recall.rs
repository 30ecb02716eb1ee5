//! Recalls: the sending school's signed statement that it withdraws a pack
//! (sent to the wrong school, or before the record was complete). The
//! server deletes the ciphertext and shows the statement to the
//! destination, which verifies it against the sender's pinned keys, so the
//! server can neither make up a recall nor change its reason.

use super::{PackError, PackId, put_bytes};
use crate::keys::{KeyId, PublicKey};

/// Domain separation for recall signatures. Signed bytes: do not change.
const RECALL_CONTEXT: &[u8] = b"baton-recall-v1\n";

/// The longest reason a recall may give, in characters. The server sees
/// it: a reason says what went wrong, never who the pupil is.
pub const REASON_MAX_CHARS: usize = 300;

/// What a recall states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recall {
    /// The pack withdrawn.
    pub pack_id: PackId,
    /// SHA-256 of its ciphertext (equals the header's).
    pub ciphertext_sha256: [u8; 32],
    /// When the sender recalled it, ms since the Unix epoch.
    pub recalled_at_ms: i64,
    /// The sending school's key that signs the recall.
    pub signer_key_id: KeyId,
    /// Why, in the sender's words (may be empty).
    pub reason: String,
}

/// A recall with the sender's Ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecall {
    recall: Recall,
    signature: [u8; 64],
}

impl Recall {
    /// The canonical encoding that is signed. Signed bytes: do not reorder.
    pub fn to_signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(112 + self.reason.len());
        out.extend_from_slice(RECALL_CONTEXT);
        out.extend_from_slice(&self.pack_id.to_bytes());
        out.extend_from_slice(&self.ciphertext_sha256);
        out.extend_from_slice(&self.recalled_at_ms.to_be_bytes());
        out.extend_from_slice(&self.signer_key_id.to_bytes());
        put_bytes(&mut out, self.reason.as_bytes());
        out
    }

    /// Checks the reason: at most [`REASON_MAX_CHARS`] characters, one
    /// line, no control characters.
    pub fn check_reason(reason: &str) -> Result<(), PackError> {
        if reason.chars().count() > REASON_MAX_CHARS {
            return Err(PackError::Reason("is longer than 300 characters"));
        }
        if reason.chars().any(char::is_control) {
            return Err(PackError::Reason(
                "must be one line without control characters",
            ));
        }
        Ok(())
    }
}

impl SignedRecall {
    /// Joins a recall and its signature, checking the reason; use
    /// [`SignedRecall::verify`] before trusting it.
    pub fn from_parts(recall: Recall, signature: [u8; 64]) -> Result<Self, PackError> {
        Recall::check_reason(&recall.reason)?;
        Ok(Self { recall, signature })
    }

    /// The recall.
    pub fn recall(&self) -> &Recall {
        &self.recall
    }

    /// The signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// Checks the signature against `key`, which must be the key the
    /// recall names as its signer.
    pub fn verify(&self, key: &PublicKey) -> Result<(), PackError> {
        let found = key.key_id();
        if found != self.recall.signer_key_id {
            return Err(PackError::WrongSigner {
                expected: self.recall.signer_key_id,
                found,
            });
        }
        key.verify(&self.recall.to_signed_bytes(), &self.signature)
            .map_err(|_| PackError::BadSignature)
    }
}
