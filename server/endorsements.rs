//! Endorsement checks, remembered. With a trust directory key, only keys
//! it endorsed count: every upload checks the endorsement of the key that
//! signed it and of each key of the destination it is sealed to, an
//! Ed25519 verification each, about as much CPU as the rest of a small
//! pack's upload. An endorsement is a signature over the school, the key
//! (both halves, label and roles) and nothing that changes, so a check
//! that passed once passes again: the checks that passed are remembered,
//! keyed by a SHA-256 of everything checked, and only those.
//!
//! What is remembered never makes an unendorsed key count: a key whose
//! label or roles changed, or another school's, is another statement and
//! is verified afresh; a failed check is never remembered. Revocation is
//! not decided here (a revoked key is no longer in the directory the
//! callers read).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use baton::Laestab;
use baton::keys::SchoolKey;
use baton::trust::{DirectoryKey, endorsement_statement};
use sha2::{Digest as _, Sha256};

/// Checks remembered beyond which they are forgotten rather than grown
/// (a trust's keys are a few per school).
const MAX_ENTRIES: usize = 16_384;

/// The trust's directory key, if any, and the endorsements it was seen to
/// make.
#[derive(Debug)]
pub struct Endorsements {
    key: Option<DirectoryKey>,
    passed: Mutex<HashSet<[u8; 32]>>,
}

impl Endorsements {
    /// Checks against `key` (`None`: no directory key, every key counts).
    pub fn new(key: Option<DirectoryKey>) -> Self {
        Self {
            key,
            passed: Mutex::default(),
        }
    }

    /// True without a directory key, or if it endorsed `key` for `school`.
    pub fn endorsed(&self, school: &Laestab, key: &SchoolKey) -> bool {
        let Some(directory) = &self.key else {
            return true;
        };
        let Some(signature) = key.endorsement else {
            return false;
        };
        let statement = endorsement_statement(school, key);
        let mut checked = Sha256::new();
        checked.update(&statement);
        checked.update(signature);
        let checked: [u8; 32] = checked.finalize().into();
        if self.passed().contains(&checked) {
            return true;
        }
        let passes = directory.verifies(&statement, &signature);
        if passes {
            let mut passed = self.passed();
            if passed.len() >= MAX_ENTRIES {
                passed.clear();
            }
            passed.insert(checked);
        }
        passes
    }

    fn passed(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        self.passed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use baton::crypto::Identity;
    use baton::keys::Role;
    use baton::trust::DirectorySigner;

    use super::*;

    fn key(label: &str) -> SchoolKey {
        SchoolKey {
            public: Identity::generate().public(),
            label: label.into(),
            roles: vec![Role::Staff],
            created_at_ms: 0,
            revoked_at_ms: None,
            endorsement: None,
            revocation: None,
        }
    }

    #[test]
    fn only_endorsed_keys_count_and_only_passing_checks_are_remembered() {
        let signer = DirectorySigner::generate().unwrap();
        let school = Laestab::parse("8612001").unwrap();
        let other = Laestab::parse("8612002").unwrap();
        let checks = Endorsements::new(Some(signer.public()));

        let mut endorsed = key("office");
        endorsed.endorsement = Some(signer.endorse(&school, &endorsed));
        assert!(checks.endorsed(&school, &endorsed));
        assert_eq!(checks.passed().len(), 1);
        // Remembered: the same check again passes without a new entry.
        assert!(checks.endorsed(&school, &endorsed));
        assert_eq!(checks.passed().len(), 1);

        // The same signature does not carry over to anything else it did
        // not sign: another school, another label, more roles, another key.
        assert!(!checks.endorsed(&other, &endorsed));
        let mut relabelled = endorsed.clone();
        relabelled.label = "office (DSL)".into();
        assert!(!checks.endorsed(&school, &relabelled));
        let mut promoted = endorsed.clone();
        promoted.roles.push(Role::Dsl);
        assert!(!checks.endorsed(&school, &promoted));
        let mut swapped = key("office");
        swapped.endorsement = endorsed.endorsement;
        assert!(!checks.endorsed(&school, &swapped));
        // Another directory key's endorsement, and none at all, fail.
        let mut foreign = key("office");
        foreign.endorsement = Some(
            DirectorySigner::generate()
                .unwrap()
                .endorse(&school, &foreign),
        );
        assert!(!checks.endorsed(&school, &foreign));
        assert!(!checks.endorsed(&school, &key("new")));
        // Failed checks are not remembered.
        assert_eq!(checks.passed().len(), 1);

        // Without a directory key every key counts.
        assert!(Endorsements::new(None).endorsed(&school, &key("any")));
    }
}
