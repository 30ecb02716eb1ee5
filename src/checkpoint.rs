//! Signed audit checkpoints: the daemon's statement that its audit log
//! holds `entries` entries ending in `head`. Whoever owns the database can
//! rewrite the log and recompute its hash chain, but not the checkpoints it
//! already handed out: a school keeps the newest it saw, and the trust's
//! data protection officer checks any of them against the log (`batond
//! admin audit verify --checkpoint FILE`). A log that went backwards, or
//! that differs at a point a checkpoint fixed, is caught.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::api::convert::wire;
use crate::api::{WireError, v1};

/// Domain separation for checkpoints. Signed bytes: do not change.
const CONTEXT: &[u8] = b"baton-audit-checkpoint-v1\n";

/// A signed audit checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Entries in the log.
    pub entries: u64,
    /// Hash of the last entry, hex.
    #[serde(with = "hex32")]
    pub head_sha256: [u8; 32],
    /// When it was signed, ms since the Unix epoch.
    pub at_ms: i64,
    /// The daemon's audit key, hex.
    #[serde(with = "hex32")]
    pub signing_key: [u8; 32],
    /// The signature, hex.
    #[serde(with = "hex64")]
    pub signature: [u8; 64],
}

/// How a newer checkpoint relates to an older one from the same daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The log grew or stayed the same.
    Forward,
    /// The log has fewer entries than before: truncated.
    Truncated {
        /// Entries before.
        before: u64,
        /// Entries now.
        now: u64,
    },
    /// Same number of entries, different head: rewritten.
    Rewritten {
        /// The entry count both name.
        entries: u64,
    },
    /// Signed by another key.
    OtherKey,
}

/// The bytes a checkpoint signs.
pub fn statement(entries: u64, head: &[u8; 32], at_ms: i64) -> Vec<u8> {
    let mut out = CONTEXT.to_vec();
    out.extend_from_slice(&entries.to_be_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(&at_ms.to_be_bytes());
    out
}

impl Checkpoint {
    /// Signs the head of a log of `entries` entries.
    pub fn sign(key: &SigningKey, entries: u64, head: [u8; 32], at_ms: i64) -> Self {
        Self {
            entries,
            head_sha256: head,
            at_ms,
            signing_key: key.verifying_key().to_bytes(),
            signature: key.sign(&statement(entries, &head, at_ms)).to_bytes(),
        }
    }

    /// True if the signature verifies under the key it names.
    pub fn verifies(&self) -> bool {
        VerifyingKey::from_bytes(&self.signing_key).is_ok_and(|k| {
            !k.is_weak()
                && k.verify(
                    &statement(self.entries, &self.head_sha256, self.at_ms),
                    &Signature::from_bytes(&self.signature),
                )
                .is_ok()
        })
    }

    /// How this checkpoint relates to an `older` one.
    pub fn progress_from(&self, older: &Self) -> Progress {
        if self.signing_key != older.signing_key {
            Progress::OtherKey
        } else if self.entries < older.entries {
            Progress::Truncated {
                before: older.entries,
                now: self.entries,
            }
        } else if self.entries == older.entries && self.head_sha256 != older.head_sha256 {
            Progress::Rewritten {
                entries: self.entries,
            }
        } else {
            Progress::Forward
        }
    }
}

impl From<&Checkpoint> for v1::AuditCheckpoint {
    fn from(c: &Checkpoint) -> Self {
        Self {
            entries: c.entries,
            head_sha256: c.head_sha256.to_vec(),
            at_ms: c.at_ms,
            signing_key: c.signing_key.to_vec(),
            signature: c.signature.to_vec(),
        }
    }
}

impl TryFrom<&v1::AuditCheckpoint> for Checkpoint {
    type Error = WireError;
    fn try_from(c: &v1::AuditCheckpoint) -> Result<Self, WireError> {
        let checkpoint = Self {
            entries: c.entries,
            head_sha256: c
                .head_sha256
                .as_slice()
                .try_into()
                .map_err(|_| wire("checkpoint.head_sha256", "must be 32 bytes"))?,
            at_ms: c.at_ms,
            signing_key: c
                .signing_key
                .as_slice()
                .try_into()
                .map_err(|_| wire("checkpoint.signing_key", "must be 32 bytes"))?,
            signature: c
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| wire("checkpoint.signature", "must be 64 bytes"))?,
        };
        if !checkpoint.verifies() {
            return Err(wire("checkpoint.signature", "does not verify"));
        }
        Ok(checkpoint)
    }
}

macro_rules! hex_array {
    ($name:ident, $n:literal) => {
        mod $name {
            use serde::{Deserialize as _, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(bytes: &[u8; $n], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&hex::encode(bytes))
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; $n], D::Error> {
                let text = String::deserialize(d)?;
                let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
                bytes.try_into().map_err(|_| {
                    serde::de::Error::custom(concat!("expected ", $n, " bytes of hex"))
                })
            }
        }
    };
}
hex_array!(hex32, 32);
hex_array!(hex64, 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_verify_round_trip_and_compare() {
        let key = SigningKey::from_bytes(&[4; 32]);
        let a = Checkpoint::sign(&key, 10, [1; 32], 5);
        assert!(a.verifies());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Checkpoint>(&json).unwrap(), a);
        assert_eq!(
            Checkpoint::try_from(&v1::AuditCheckpoint::from(&a)).unwrap(),
            a
        );
        let mut forged = a.clone();
        forged.entries = 11;
        assert!(!forged.verifies());
        assert!(Checkpoint::try_from(&v1::AuditCheckpoint::from(&forged)).is_err());

        let later = Checkpoint::sign(&key, 12, [2; 32], 6);
        assert_eq!(later.progress_from(&a), Progress::Forward);
        assert_eq!(
            a.progress_from(&later),
            Progress::Truncated {
                before: 12,
                now: 10
            }
        );
        let fork = Checkpoint::sign(&key, 10, [3; 32], 7);
        assert_eq!(fork.progress_from(&a), Progress::Rewritten { entries: 10 });
        let other = Checkpoint::sign(&SigningKey::from_bytes(&[5; 32]), 10, [1; 32], 5);
        assert_eq!(other.progress_from(&a), Progress::OtherKey);
    }
}
