//! The pinned directory (`pins.json`), like SSH's known_hosts: the keys of
//! each school as first seen, and the trust's directory key if one was
//! pinned at `baton init`.
//!
//! Any change to a pinned school's keys (a key added, no longer listed,
//! revoked, reactivated, or with other roles or label) is a change that must
//! be confirmed with `baton schools trust` before anything is sealed to the
//! school or verified with its keys: otherwise whoever runs the server could
//! add a key of their own and read every pack, or slip in a key "revoked
//! long ago" that still verifies what it "signed before". Two changes need
//! no confirmation because the client checks them itself: a revocation
//! signed by the key, a DSL key of its school or the directory key; and,
//! with a directory key pinned, a key the directory key endorsed. With a
//! directory key pinned, a key it has not endorsed is never pinned at all.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use baton::Laestab;
use baton::api::v1;
use baton::keys::{KeyId, PublicKey, Role, SchoolKey};
use baton::trust::{DirectoryKey, RevokedBy, revocation_statement};
use serde::{Deserialize, Serialize};

use crate::home::{Home, read_json, write_json};

mod refresh;
pub use refresh::{KeysChanged, NotEnrolled, refresh, refresh_escrow_of, refresh_once};

/// Every pinned school.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pins {
    /// The trust's directory key (`batondir1…`), pinned at `baton init`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    directory_key: Option<String>,
    schools: BTreeMap<String, PinnedSchool>,
    /// Former numbers of pinned schools (an academy conversion), as the
    /// directory listed them: former LAESTAB → current LAESTAB.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    aliases: BTreeMap<String, String>,
    /// Schools refreshed from the directory in this run (not saved).
    #[serde(skip)]
    fresh: std::collections::HashSet<Laestab>,
    /// Other trusts' escrows refreshed in this run (not saved).
    #[serde(skip)]
    fresh_escrows: std::collections::HashSet<String>,
}

/// The name under which another trust's escrow (`peer`'s) is pinned: apart
/// from this trust's own escrow, which has the same number.
pub fn escrow_pin(peer: &str) -> String {
    format!("{}@{peer}", Laestab::ESCROW)
}

/// The name under which a school the directory lists is pinned: its
/// LAESTAB, or for a peer's escrow [`escrow_pin`].
fn pin_name(school: &v1::School) -> String {
    if school.peer.is_empty() || school.laestab != Laestab::ESCROW.as_str() {
        school.laestab.clone()
    } else {
        escrow_pin(&school.peer)
    }
}

/// One school as pinned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinnedSchool {
    /// Name as the directory gave it.
    pub name: String,
    /// Every key ever pinned, revoked ones included (they still verify old signatures).
    pub keys: Vec<PinnedKey>,
    /// The other trust's daemon that serves it, as the directory last said
    /// (empty: this trust's own school).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
}

/// One pinned key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinnedKey {
    /// Fingerprint.
    pub key_id: String,
    /// age recipient.
    pub age_recipient: String,
    /// Ed25519 key, hex.
    pub signing_key: String,
    /// Holder's label.
    pub label: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Revoked (ms since epoch), if so.
    pub revoked_at_ms: Option<i64>,
}

/// What comparing the directory with the pins found.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// First contact: pinned now.
    New,
    /// Unchanged, or changed only in ways the client verified itself.
    Same,
    /// Changes that must be confirmed: nothing is pinned until then.
    Changed(Vec<String>),
}

/// A school's keys as the directory listed them, split by whether the
/// pinned directory key endorses them.
pub struct Listed {
    /// Keys that may be pinned: all of them without a directory key.
    pub keys: Vec<SchoolKey>,
    /// Keys the directory key has not endorsed (awaiting the operator's approval).
    pub unapproved: Vec<SchoolKey>,
}

impl PinnedKey {
    fn from_key(k: &SchoolKey) -> Self {
        Self {
            key_id: k.key_id().to_string(),
            age_recipient: k.public.age_recipient().to_string(),
            signing_key: hex::encode(k.public.signing_key_bytes()),
            label: k.label.clone(),
            roles: k.roles.clone(),
            revoked_at_ms: k.revoked_at_ms,
        }
    }

    /// The directory key this pin describes.
    pub fn to_school_key(&self) -> Result<SchoolKey> {
        let signing =
            hex::decode(&self.signing_key).context("pins.json: a signing key is not hex")?;
        Ok(SchoolKey {
            public: PublicKey::new(&self.age_recipient, &signing)
                .context("pins.json: a key is malformed")?,
            label: self.label.clone(),
            roles: self.roles.clone(),
            created_at_ms: 0,
            revoked_at_ms: self.revoked_at_ms,
            endorsement: None,
            revocation: None,
        })
    }
}

impl Pins {
    /// Loads the home's pins (empty if none yet).
    pub fn load(home: &Home) -> Result<Self> {
        let path = home.path("pins.json");
        if !path.exists() {
            return Ok(Self::default());
        }
        read_json(&path)
    }

    /// Saves them.
    pub fn save(&self, home: &Home) -> Result<()> {
        write_json(&home.path("pins.json"), self)
    }

    /// Pins the trust's directory key (at `baton init`).
    pub fn set_directory_key(&mut self, key: DirectoryKey) {
        self.directory_key = Some(key.to_string());
    }

    /// The pinned directory key, if any.
    pub fn directory_key(&self) -> Result<Option<DirectoryKey>> {
        self.directory_key
            .as_deref()
            .map(|k| {
                k.parse()
                    .context("pins.json: the directory key is malformed")
            })
            .transpose()
    }

    /// The LAESTABs of every pinned school.
    pub fn pinned(&self) -> Vec<Laestab> {
        self.schools.keys().filter_map(|k| k.parse().ok()).collect()
    }

    /// The pinned school, if any, by its LAESTAB or a former one.
    pub fn get(&self, laestab: &Laestab) -> Option<&PinnedSchool> {
        self.get_pin(laestab.as_str())
    }

    /// The pin by its name ([`escrow_pin`], or a LAESTAB or former one).
    pub fn get_pin(&self, name: &str) -> Option<&PinnedSchool> {
        self.schools
            .get(name)
            .or_else(|| self.aliases.get(name).and_then(|now| self.schools.get(now)))
    }

    /// The pin of the school as the directory lists it ([`escrow_pin`] for
    /// a peer's escrow).
    pub fn get_listed(&self, school: &v1::School) -> Option<&PinnedSchool> {
        self.schools.get(&pin_name(school))
    }

    /// Follows a renumbering the directory reports: a school pinned under
    /// one of `school`'s former numbers carries its pin over to the current
    /// number. Its keys are then compared with the pin as always, so a
    /// "renumbering" that brings other keys is a change to confirm.
    fn follow_renumbering(&mut self, school: &v1::School) {
        for alias in school.aliases.iter().filter(|a| **a != school.laestab) {
            if !self.schools.contains_key(&school.laestab)
                && let Some(pin) = self.schools.remove(alias)
            {
                self.schools.insert(school.laestab.clone(), pin);
            }
            self.aliases.insert(alias.clone(), school.laestab.clone());
        }
    }

    /// The directory key that vouches for `school`'s keys: the pinned one,
    /// except for a school another trust's daemon serves (`peer` set),
    /// whose keys that trust endorses, not this one: those are checked
    /// first-hand (see [`Pins::check`]).
    fn directory_key_for(&self, school: &v1::School) -> Result<Option<DirectoryKey>> {
        if school.peer.is_empty() {
            self.directory_key()
        } else {
            Ok(None)
        }
    }

    /// The directory's keys for a school, split by endorsement.
    pub fn listed(&self, school: &v1::School) -> Result<Listed> {
        let laestab: Laestab = school.laestab.parse().with_context(|| {
            format!(
                "the directory sent a malformed LAESTAB {:?}",
                school.laestab
            )
        })?;
        let all = parse_keys(school)?;
        let Some(directory) = self.directory_key_for(school)? else {
            return Ok(Listed {
                keys: all,
                unapproved: Vec::new(),
            });
        };
        let (keys, unapproved) = all.into_iter().partition(|k| {
            k.endorsement
                .is_some_and(|e| directory.endorses(&laestab, k, &e))
        });
        Ok(Listed { keys, unapproved })
    }

    /// Replaces the pin with what the directory says now (only endorsed
    /// keys when a directory key is pinned).
    pub fn trust(&mut self, school: &v1::School) -> Result<()> {
        self.follow_renumbering(school);
        self.aliases.remove(&school.laestab);
        let keys = self.listed(school)?.keys;
        let name = pin_name(school);
        let mut pinned: Vec<PinnedKey> = keys.iter().map(PinnedKey::from_key).collect();
        if let Some(old) = self.schools.get(&name) {
            // A revocation pinned before keeps its time: the server cannot
            // move it earlier and so disown what the key signed.
            for p in &mut pinned {
                if let Some(at) = old
                    .keys
                    .iter()
                    .find(|k| k.key_id == p.key_id)
                    .and_then(|k| k.revoked_at_ms)
                {
                    p.revoked_at_ms = Some(at);
                }
            }
            // Keys we knew that the directory no longer lists still verify
            // what they signed until now, and nothing after.
            for k in &old.keys {
                if !pinned.iter().any(|p| p.key_id == k.key_id) {
                    let mut gone = k.clone();
                    gone.revoked_at_ms.get_or_insert_with(crate::output::now_ms);
                    pinned.push(gone);
                }
            }
        }
        self.schools.insert(
            name,
            PinnedSchool {
                name: school.name.clone(),
                keys: pinned,
                peer: school.peer.clone(),
            },
        );
        Ok(())
    }

    /// Compares the directory's view of a school with the pin, and pins
    /// it unless something changed that needs confirming.
    pub fn check(&mut self, school: &v1::School) -> Result<Check> {
        // A renumbering is applied to the pins only if the keys then check.
        let before = (self.schools.clone(), self.aliases.clone());
        let check = self.check_renumbered(school);
        if !matches!(check, Ok(Check::Same | Check::New)) {
            (self.schools, self.aliases) = before;
        }
        check
    }

    fn check_renumbered(&mut self, school: &v1::School) -> Result<Check> {
        // A number pinned as a former one, listed as a school again.
        if let Some(now) = self.aliases.get(&school.laestab)
            && !self.schools.contains_key(&school.laestab)
        {
            return Ok(Check::Changed(vec![format!(
                "{} was renumbered to {now}, and the directory now lists {} as a school again",
                school.laestab, school.laestab
            )]));
        }
        self.follow_renumbering(school);
        let Some(old) = self.schools.get(&pin_name(school)) else {
            // With a directory key pinned, no key is taken on the server's
            // word: a peer's school, which this trust's key cannot vouch
            // for, is confirmed by phone first, as a change is.
            if !school.peer.is_empty() && self.directory_key()?.is_some() {
                let show = if pin_name(school) == school.laestab {
                    school.laestab.clone()
                } else {
                    format!("{} --peer {}", school.laestab, school.peer)
                };
                return Ok(Check::Changed(vec![format!(
                    "{} is served by another trust ({}), whose keys your trust's directory key does not endorse: compare its key fingerprints (`baton schools show {show}`) with the school by phone",
                    school.laestab, school.peer
                )]));
            }
            self.trust(school)?;
            return Ok(Check::New);
        };
        let laestab: Laestab = school.laestab.parse().with_context(|| {
            format!(
                "the directory sent a malformed LAESTAB {:?}",
                school.laestab
            )
        })?;
        let directory = self.directory_key_for(school)?;
        let endorsed = directory.is_some();
        let listed = self.listed(school)?.keys;
        let mut changes = Vec::new();
        for k in &listed {
            let id = k.key_id().to_string();
            let grouped = k.key_id().grouped();
            let Some(p) = old.keys.iter().find(|p| p.key_id == id) else {
                // A key never seen, even one listed as revoked (it would
                // still verify what it "signed before"), is as new as any
                // other, unless the directory key vouches for it.
                if !endorsed {
                    let revoked = if k.is_active() {
                        ""
                    } else {
                        ", listed as already revoked"
                    };
                    changes.push(format!("new key {grouped} ({}){revoked}", k.label));
                }
                continue;
            };
            match (p.revoked_at_ms, k.revoked_at_ms) {
                (Some(_), None) => changes.push(format!("revoked key {grouped} is active again")),
                (None, Some(_)) if !revocation_verified(old, &laestab, k, directory) => {
                    changes.push(format!(
                        "key {grouped} ({}) is listed as revoked, without a revocation signed by the key, a DSL key of the school or the trust's directory key",
                        k.label
                    ))
                }
                (None, None) if !endorsed => {
                    for r in k.roles.iter().filter(|r| !p.roles.contains(r)) {
                        changes.push(format!("key {grouped} gained role {r}"));
                    }
                    if k.label != p.label {
                        changes.push(format!(
                            "key {grouped} is now labelled {:?} (was {:?})",
                            k.label, p.label
                        ));
                    }
                }
                _ => {}
            }
        }
        for p in old.keys.iter().filter(|p| p.revoked_at_ms.is_none()) {
            if !listed.iter().any(|k| k.key_id().to_string() == p.key_id) {
                changes.push(format!(
                    "key {} ({}) is no longer listed",
                    grouped_id(&p.key_id),
                    p.label
                ));
            }
        }
        if !changes.is_empty() {
            return Ok(Check::Changed(changes));
        }
        self.trust(school)?;
        Ok(Check::Same)
    }

    /// Every pinned key of a school (revoked included), for verifying signatures.
    pub fn verifying_keys(&self, laestab: &Laestab) -> Result<Vec<PublicKey>> {
        self.verifying_keys_of(laestab.as_str())
    }

    /// [`Pins::verifying_keys`] of a pin by its name ([`Pins::get_pin`]).
    pub fn verifying_keys_of(&self, name: &str) -> Result<Vec<PublicKey>> {
        let school = self
            .get_pin(name)
            .with_context(|| format!("school {name} is not pinned yet"))?;
        school
            .keys
            .iter()
            .map(|k| Ok(k.to_school_key()?.public))
            .collect()
    }

    /// Whether `school`'s pinned key `key_id` exists and `check` accepts it
    /// (e.g. a signature verifies with it).
    pub fn signed_by(
        &self,
        school: &Laestab,
        key_id: KeyId,
        check: impl Fn(&PublicKey) -> bool,
    ) -> bool {
        self.verifying_keys(school)
            .is_ok_and(|keys| keys.iter().any(|k| k.key_id() == key_id && check(k)))
    }

    /// When a pinned key of a school was revoked, if it was: it verifies
    /// nothing created after that.
    pub fn revoked_at(&self, laestab: &Laestab, key_id: KeyId) -> Option<i64> {
        self.revoked_at_of(laestab.as_str(), key_id)
    }

    /// [`Pins::revoked_at`] of a pin by its name ([`Pins::get_pin`]).
    pub fn revoked_at_of(&self, name: &str, key_id: KeyId) -> Option<i64> {
        let id = key_id.to_string();
        self.get_pin(name)?
            .keys
            .iter()
            .find(|k| k.key_id == id)?
            .revoked_at_ms
    }

    /// The pinned active keys of a school, for sealing.
    pub fn recipients(&self, laestab: &Laestab) -> Result<Vec<SchoolKey>> {
        let school = self
            .get(laestab)
            .with_context(|| format!("school {laestab} is not pinned yet"))?;
        school
            .keys
            .iter()
            .filter(|k| k.revoked_at_ms.is_none())
            .map(PinnedKey::to_school_key)
            .collect()
    }
}

/// A stored key id grouped in fours (as stored if it does not parse).
pub fn grouped_id(id: &str) -> String {
    id.parse::<KeyId>()
        .map_or_else(|_| id.to_string(), |k| k.grouped())
}

/// True if `key`'s revocation is signed by the key itself or a DSL key of
/// its school (pinned, and not itself revoked by then), or by the pinned
/// directory key.
fn revocation_verified(
    pinned: &PinnedSchool,
    laestab: &Laestab,
    key: &SchoolKey,
    directory: Option<DirectoryKey>,
) -> bool {
    let (Some(revocation), Some(at)) = (key.revocation, key.revoked_at_ms) else {
        return false;
    };
    let statement = revocation_statement(laestab, key.key_id(), at);
    match revocation.by {
        RevokedBy::Directory => {
            directory.is_some_and(|d| d.verifies(&statement, &revocation.signature))
        }
        RevokedBy::Key(by) => {
            let id = by.to_string();
            pinned.keys.iter().any(|p| {
                p.key_id == id
                    && (by == key.key_id() || p.roles.contains(&Role::Dsl))
                    && p.revoked_at_ms.is_none_or(|r| r > at)
                    && p.to_school_key()
                        .is_ok_and(|s| s.public.verify(&statement, &revocation.signature).is_ok())
            })
        }
    }
}

fn parse_keys(school: &v1::School) -> Result<Vec<SchoolKey>> {
    school
        .keys
        .iter()
        .map(|k| {
            SchoolKey::try_from(k).with_context(|| {
                format!("the directory sent a malformed key for {}", school.laestab)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton::crypto::Identity;
    use baton::keys::Role;

    fn school(laestab: &str, aliases: &[&str], keys: &[&Identity]) -> v1::School {
        v1::School {
            laestab: laestab.into(),
            name: "Hulton Park Academy".into(),
            phase: "secondary".into(),
            urn: String::new(),
            keys: keys
                .iter()
                .map(|i| {
                    v1::Key::from(&SchoolKey {
                        public: i.public(),
                        roles: vec![Role::Staff],
                        label: "office".into(),
                        created_at_ms: 1,
                        revoked_at_ms: None,
                        endorsement: None,
                        revocation: None,
                    })
                })
                .collect(),
            aliases: aliases.iter().map(ToString::to_string).collect(),
            peer: String::new(),
        }
    }

    /// Issue 23: another trust's escrow is pinned apart from this trust's
    /// own (both are `XXXXXXX`), each with its own keys, and a change of
    /// either is a change of that one only.
    #[test]
    fn another_trusts_escrow_is_pinned_apart() {
        let (own, theirs, other) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let mut pins = Pins::default();
        assert_eq!(
            pins.check(&school("XXXXXXX", &[], &[&own])).unwrap(),
            Check::New
        );
        let mut peer_escrow = school("XXXXXXX", &[], &[&theirs]);
        peer_escrow.peer = "trust-a".into();
        assert_eq!(pins.check(&peer_escrow).unwrap(), Check::New);
        let key_of = |pins: &Pins, name: &str| pins.verifying_keys_of(name).unwrap()[0].key_id();
        assert_eq!(key_of(&pins, "XXXXXXX"), own.key_id());
        assert_eq!(key_of(&pins, &escrow_pin("trust-a")), theirs.key_id());
        assert_eq!(pins.get_pin("XXXXXXX@trust-a").unwrap().peer, "trust-a");
        // Escrows are not schools to send to.
        assert_eq!(pins.pinned(), [Laestab::ESCROW]);

        let mut swapped = school("XXXXXXX", &[], &[&other]);
        swapped.peer = "trust-a".into();
        assert!(matches!(pins.check(&swapped).unwrap(), Check::Changed(_)));
        assert_eq!(
            pins.check(&school("XXXXXXX", &[], &[&own])).unwrap(),
            Check::Same
        );
        assert_eq!(key_of(&pins, &escrow_pin("trust-a")), theirs.key_id());
    }

    /// Issue 19: a school renumbered keeps its pin under the new number and
    /// is still found by the old one; a school that claims a pinned number
    /// as its former one but brings other keys is a change to confirm.
    #[test]
    fn a_renumbered_school_keeps_its_pin_and_a_swap_is_a_change() {
        let (key, other) = (Identity::generate(), Identity::generate());
        let old: Laestab = "8614001".parse().unwrap();
        let mut pins = Pins::default();
        assert_eq!(
            pins.check(&school("8614001", &[], &[&key])).unwrap(),
            Check::New
        );
        let renumbered = school("8614009", &["8614001"], &[&key]);
        assert_eq!(pins.check(&renumbered).unwrap(), Check::Same);
        assert_eq!(pins.verifying_keys(&old).unwrap()[0].key_id(), key.key_id());
        assert!(pins.get(&"8614009".parse().unwrap()).is_some());

        let mut pins = Pins::default();
        pins.check(&school("8614001", &[], &[&key])).unwrap();
        let swap = school("8614777", &["8614001"], &[&other]);
        assert!(matches!(pins.check(&swap).unwrap(), Check::Changed(_)));
        // The refused "renumbering" left the pin where it was.
        assert_eq!(pins.verifying_keys(&old).unwrap()[0].key_id(), key.key_id());
        assert!(pins.get(&"8614777".parse().unwrap()).is_none());

        // Renumbered, then the old number listed as a school again (with
        // other keys): a change, not a first contact.
        let mut pins = Pins::default();
        pins.check(&school("8614001", &[], &[&key])).unwrap();
        pins.check(&school("8614009", &["8614001"], &[&key]))
            .unwrap();
        let again = school("8614001", &[], &[&other]);
        assert!(matches!(pins.check(&again).unwrap(), Check::Changed(_)));
    }
}
