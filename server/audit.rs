//! The audit log's hash chain: the canonical encoding of an entry, its
//! SHA-256 link to the entry before it, and the check that
//! `batond admin audit verify` runs over the whole log.
//!
//! Entries say who did what to which school, key or pack; they never carry a
//! token, a key's secret half or any ciphertext.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// Domain separation for the chain. Hashed bytes: never reorder.
const CONTEXT: &[u8] = b"baton-audit-v1";

/// Something to record: the store adds the sequence number, time and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Who acted: `school:LAESTAB`, `peer:NAME` or `admin`.
    pub actor: String,
    /// What was done, e.g. `pack.upload`.
    pub action: &'static str,
    /// What it was done to: a LAESTAB, key id or pack id.
    pub subject: String,
}

impl Event {
    /// An event by a school.
    pub fn by_school(
        school: &baton::Laestab,
        action: &'static str,
        subject: impl ToString,
    ) -> Self {
        Self {
            actor: format!("school:{school}"),
            action,
            subject: subject.to_string(),
        }
    }

    /// An event by whoever called from `addr` (a refused attempt, before
    /// any school is known).
    pub fn by_address(
        addr: Option<std::net::IpAddr>,
        action: &'static str,
        subject: impl ToString,
    ) -> Self {
        Self {
            actor: addr.map_or_else(|| "address:unknown".into(), |a| format!("address:{a}")),
            action,
            subject: subject.to_string(),
        }
    }

    /// An event by a peer daemon (federation), as `peer:NAME`.
    pub fn by_peer(peer: &str, action: &'static str, subject: impl ToString) -> Self {
        Self {
            actor: format!("peer:{peer}"),
            action,
            subject: subject.to_string(),
        }
    }

    /// An event by the operator, through `batond admin`.
    pub fn by_admin(action: &'static str, subject: impl ToString) -> Self {
        Self {
            actor: "admin".to_string(),
            action,
            subject: subject.to_string(),
        }
    }
}

/// A time in milliseconds since the Unix epoch as RFC 3339 (UTC), for
/// messages; the number itself if it is out of range.
pub fn time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// One stored entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Position in the log, from 1, without gaps.
    pub seq: i64,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub subject: String,
    /// Hash of the entry before (zeros for the first).
    #[serde(with = "hex_bytes")]
    pub prev_hash: Vec<u8>,
    /// Hash of this entry, see [`link`].
    #[serde(with = "hex_bytes")]
    pub hash: Vec<u8>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The hash of an entry: SHA-256 over a length-prefixed canonical encoding
/// of every field and the previous hash.
pub fn link(
    seq: i64,
    at_ms: i64,
    actor: &str,
    action: &str,
    subject: &str,
    prev: &[u8],
) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(128);
    bytes.extend_from_slice(CONTEXT);
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes.extend_from_slice(&at_ms.to_be_bytes());
    put(&mut bytes, actor.as_bytes());
    put(&mut bytes, action.as_bytes());
    put(&mut bytes, subject.as_bytes());
    put(&mut bytes, prev);
    Sha256::digest(&bytes).into()
}

/// Why the log does not verify, naming the first entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    /// An entry is missing: the sequence jumps.
    #[error("audit entry {seq}: sequence gap (expected {expected})")]
    Gap {
        /// The entry found.
        seq: i64,
        /// The sequence number expected there.
        expected: i64,
    },
    /// The entry does not link to the one before.
    #[error("audit entry {seq}: prev_hash does not match the entry before")]
    Link {
        /// The entry at fault.
        seq: i64,
    },
    /// The entry's fields do not hash to its stored hash: it was altered.
    #[error("audit entry {seq}: contents do not match its hash (altered)")]
    Hash {
        /// The entry at fault.
        seq: i64,
    },
}

/// Checks the chain entry by entry, from the first on, so a log of any
/// length is checked as it is read.
#[derive(Debug)]
pub struct Verifier {
    prev: Vec<u8>,
    count: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            prev: GENESIS.to_vec(),
            count: 0,
        }
    }
}

impl Verifier {
    /// Checks the next entry against the ones before it.
    pub fn push(&mut self, e: &Entry) -> Result<(), Broken> {
        let expected = i64::try_from(self.count).unwrap_or(i64::MAX) + 1;
        if e.seq != expected {
            return Err(Broken::Gap {
                seq: e.seq,
                expected,
            });
        }
        if e.prev_hash != self.prev {
            return Err(Broken::Link { seq: e.seq });
        }
        let hash = link(
            e.seq,
            e.at_ms,
            &e.actor,
            &e.action,
            &e.subject,
            &e.prev_hash,
        );
        if e.hash != hash {
            return Err(Broken::Hash { seq: e.seq });
        }
        self.prev.clone_from(&e.hash);
        self.count += 1;
        Ok(())
    }

    /// How many entries were checked.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Checks the chain from the first entry on; returns the number of entries.
#[cfg(test)]
pub fn verify<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Result<u64, Broken> {
    let mut verifier = Verifier::default();
    for e in entries {
        verifier.push(e)?;
    }
    Ok(verifier.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Entry> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|seq| {
                let hash = link(seq, seq * 10, "admin", "school.add", "8612001", &prev);
                let e = Entry {
                    seq,
                    at_ms: seq * 10,
                    actor: "admin".into(),
                    action: "school.add".into(),
                    subject: "8612001".into(),
                    prev_hash: prev.clone(),
                    hash: hash.to_vec(),
                };
                prev = hash.to_vec();
                e
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&chain(5)), Ok(5));
        assert_eq!(verify(&[]), Ok(0));
    }

    #[test]
    fn any_altered_field_is_named() {
        let mut log = chain(4);
        log[2].subject = "8612002".into();
        assert_eq!(verify(&log), Err(Broken::Hash { seq: 3 }));
        let mut log = chain(4);
        log[1].prev_hash[0] ^= 1;
        assert_eq!(verify(&log), Err(Broken::Link { seq: 2 }));
        let mut log = chain(4);
        log.remove(1);
        assert_eq!(
            verify(&log),
            Err(Broken::Gap {
                seq: 3,
                expected: 2
            })
        );
    }
}
