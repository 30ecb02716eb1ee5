//! Receipts: the destination's signed statement that it received a pack,
//! which the sender verifies against the keys it pinned.

use super::{PackError, PackId};
use crate::keys::{KeyId, PublicKey};

/// Domain separation for receipt signatures. Signed bytes: do not change.
const RECEIPT_CONTEXT: &[u8] = b"baton-receipt-v1\n";

/// What a receipt states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The pack received.
    pub pack_id: PackId,
    /// SHA-256 of the ciphertext received (equals the header's).
    pub ciphertext_sha256: [u8; 32],
    /// When the recipient received it, ms since the Unix epoch.
    pub received_at_ms: i64,
    /// The recipient's key that signs the receipt.
    pub recipient_key_id: KeyId,
}

/// A receipt with the recipient's Ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    receipt: Receipt,
    signature: [u8; 64],
}

impl Receipt {
    /// The canonical encoding that is signed. Signed bytes: do not reorder.
    pub fn to_signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(RECEIPT_CONTEXT);
        out.extend_from_slice(&self.pack_id.to_bytes());
        out.extend_from_slice(&self.ciphertext_sha256);
        out.extend_from_slice(&self.received_at_ms.to_be_bytes());
        out.extend_from_slice(&self.recipient_key_id.to_bytes());
        out
    }
}

impl SignedReceipt {
    /// Joins a receipt and its signature; use [`SignedReceipt::verify`]
    /// before trusting it.
    pub fn from_parts(receipt: Receipt, signature: [u8; 64]) -> Self {
        Self { receipt, signature }
    }

    /// The receipt.
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// The signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// Checks the signature against `key`, which must be the key the
    /// receipt names.
    pub fn verify(&self, key: &PublicKey) -> Result<(), PackError> {
        let found = key.key_id();
        if found != self.receipt.recipient_key_id {
            return Err(PackError::WrongSigner {
                expected: self.receipt.recipient_key_id,
                found,
            });
        }
        key.verify(&self.receipt.to_signed_bytes(), &self.signature)
            .map_err(|_| PackError::BadSignature)
    }
}
