//! The pinned directory (`pins.json`), like SSH's known_hosts: the keys of
//! each school as first seen. A key that appears later (or gains the `dsl`
//! role) is a change that must be confirmed with `baton schools trust`
//! before anything is sealed to it: otherwise whoever runs the server could
//! add a key of their own and read every pack. Keys that disappear (revoked)
//! only narrow who can read, and are followed automatically.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use baton::Laestab;
use baton::api::v1;
use baton::keys::{KeyId, PublicKey, Role, SchoolKey};
use serde::{Deserialize, Serialize};

use crate::connect::{Clients, explain};
use crate::home::{Home, read_json, write_json};

/// Every pinned school.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Pins {
    schools: BTreeMap<String, PinnedSchool>,
}

/// One school as pinned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinnedSchool {
    /// Name as the directory gave it.
    pub name: String,
    /// Every key ever pinned, revoked ones included (they still verify old signatures).
    pub keys: Vec<PinnedKey>,
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
    /// Unchanged, or only keys removed.
    Same,
    /// New keys or roles: refused until trusted.
    Changed(Vec<String>),
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

    /// The pinned school, if any.
    pub fn get(&self, laestab: &Laestab) -> Option<&PinnedSchool> {
        self.schools.get(laestab.as_str())
    }

    /// Replaces the pin with what the directory says now.
    pub fn trust(&mut self, school: &v1::School) -> Result<()> {
        let keys = parse_keys(school)?;
        let mut pinned: Vec<PinnedKey> = keys.iter().map(PinnedKey::from_key).collect();
        if let Some(old) = self.schools.get(&school.laestab) {
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
            school.laestab.clone(),
            PinnedSchool {
                name: school.name.clone(),
                keys: pinned,
            },
        );
        Ok(())
    }

    /// Compares the directory's view of a school with the pin.
    pub fn check(&mut self, school: &v1::School) -> Result<Check> {
        let Some(old) = self.schools.get(&school.laestab) else {
            self.trust(school)?;
            return Ok(Check::New);
        };
        let keys = parse_keys(school)?;
        let mut changes = Vec::new();
        for k in &keys {
            let id = k.key_id().to_string();
            match old.keys.iter().find(|p| p.key_id == id) {
                None if k.is_active() => {
                    changes.push(format!("new key {} ({})", k.key_id().grouped(), k.label))
                }
                // A key never seen, listed as revoked, would still verify
                // what it "signed before": it is as new as any other.
                None => changes.push(format!(
                    "new key {} ({}), listed as already revoked",
                    k.key_id().grouped(),
                    k.label
                )),
                Some(p) if p.revoked_at_ms.is_some() && k.is_active() => changes.push(format!(
                    "revoked key {} is active again",
                    k.key_id().grouped()
                )),
                Some(_) if !k.is_active() => {}
                Some(p) => {
                    for r in k.roles.iter().filter(|r| !p.roles.contains(r)) {
                        changes.push(format!("key {} gained role {r}", k.key_id().grouped()));
                    }
                }
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
        let school = self
            .get(laestab)
            .with_context(|| format!("school {laestab} is not pinned yet"))?;
        school
            .keys
            .iter()
            .map(|k| Ok(k.to_school_key()?.public))
            .collect()
    }

    /// When a pinned key of a school was revoked, if it was: it verifies
    /// nothing created after that.
    pub fn revoked_at(&self, laestab: &Laestab, key_id: KeyId) -> Option<i64> {
        let id = key_id.to_string();
        self.get(laestab)?
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

/// The directory does not list the school: it is not enrolled (yet).
#[derive(Debug, thiserror::Error)]
#[error(
    "school {0} is not enrolled in Baton on this server: check the LAESTAB, or ask the trust's operator to enrol it"
)]
pub struct NotEnrolled(pub Laestab);

/// The school's keys changed since they were pinned.
#[derive(Debug, thiserror::Error)]
#[error("the keys of {0} changed since they were pinned; nothing was sealed to them")]
pub struct KeysChanged(pub Laestab);

/// Fetches a school from the directory and checks it against the pins,
/// saving a first pin. Refuses, loudly, when its keys changed
/// ([`KeysChanged`]); [`NotEnrolled`] when the directory does not know it.
pub async fn refresh(
    home: &Home,
    clients: &mut Clients,
    pins: &mut Pins,
    laestab: &Laestab,
) -> Result<()> {
    let school = match clients
        .directory
        .get_school(v1::GetSchoolRequest {
            laestab: laestab.to_string(),
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Err(NotEnrolled(*laestab).into()),
        Err(s) => bail!("looking up school {laestab}: {}", explain(&s)),
    };
    match pins.check(&school)? {
        Check::New => {
            eprintln!(
                "pinned the keys of {laestab} ({}) on first use; compare them with `baton schools show {laestab}`",
                school.name
            );
            pins.save(home)?;
        }
        Check::Same => pins.save(home)?,
        Check::Changed(changes) => {
            eprintln!("@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@");
            eprintln!("@  WARNING: THE KEYS OF SCHOOL {laestab} HAVE CHANGED         @");
            eprintln!("@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@");
            for c in &changes {
                eprintln!("  - {c}");
            }
            eprintln!(
                "Someone may be trying to read packs meant for {laestab}. Check the fingerprints"
            );
            eprintln!("with the school by phone (`baton schools show {laestab}`), then run");
            eprintln!("`baton schools trust {laestab}` to accept them.");
            return Err(KeysChanged(*laestab).into());
        }
    }
    Ok(())
}
