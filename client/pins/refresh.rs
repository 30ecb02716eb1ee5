//! Reading a school's keys from the directory and checking them against
//! the pins before anything is sealed to them or verified with them
//! ([`refresh`], [`refresh_once`]), and another trust's escrow's keys, which
//! verify a pack it re-addressed to this school ([`refresh_escrow_of`]).

use anyhow::{Result, bail};
use baton::Laestab;
use baton::api::v1;

use super::{Check, Pins, escrow_pin};
use crate::connect::{Clients, explain};
use crate::home::Home;

/// [`refresh`] once per run for each school: a pinned key revoked since
/// the last run is known before anything it signed is believed.
pub async fn refresh_once(
    home: &Home,
    clients: &mut Clients,
    pins: &mut Pins,
    laestab: &Laestab,
) -> Result<()> {
    if !pins.fresh.contains(laestab) {
        refresh(home, clients, pins, laestab).await?;
        pins.fresh.insert(*laestab);
    }
    Ok(())
}

/// Says, loudly, that a school's keys (or its number) changed and how to
/// check and confirm; `school` is what `baton schools show|trust` take to
/// name it.
fn warn_changed(school: &str, changes: &[String]) {
    eprintln!("@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@");
    eprintln!("@  WARNING: THE KEYS OF SCHOOL {school} HAVE CHANGED");
    eprintln!("@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@");
    for c in changes {
        eprintln!("  - {c}");
    }
    eprintln!("Someone may be trying to read or forge packs of {school}. Check the fingerprints");
    eprintln!("with the school by phone (`baton schools show {school}`), then run");
    eprintln!("`baton schools trust {school}` to accept them.");
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
/// Returns how many of its keys await the directory key's approval.
pub async fn refresh(
    home: &Home,
    clients: &mut Clients,
    pins: &mut Pins,
    laestab: &Laestab,
) -> Result<usize> {
    let school = match clients
        .directory
        .get_school(v1::GetSchoolRequest {
            laestab: laestab.to_string(),
            peer: String::new(),
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Err(NotEnrolled(*laestab).into()),
        Err(s) => bail!("looking up school {laestab}: {}", explain(&s)),
    };
    // Asked for a former number, the directory answers with the school it
    // now belongs to, which must say so. The escrow answers for both of its
    // codes; no other school may answer for them, nor they for a school.
    if school.laestab != laestab.as_str() {
        let escrow_pair =
            *laestab == Laestab::ESCROW_ABROAD && school.laestab == Laestab::ESCROW.as_str();
        let listed = school.aliases.iter().any(|a| a == laestab.as_str());
        let escrow_mixup = !escrow_pair
            && (laestab.is_escrow()
                || school.laestab == Laestab::ESCROW.as_str()
                || school.laestab == Laestab::ESCROW_ABROAD.as_str());
        if !listed || escrow_mixup {
            bail!(
                "asked for school {laestab}, the directory answered with {} instead: not believed",
                school.laestab
            );
        }
        // A renumbering of a school never pinned cannot be checked against
        // a pin: it is a change to confirm, like a key change.
        if !escrow_pair && pins.get(laestab).is_none() {
            warn_changed(
                laestab.as_str(),
                &[format!(
                    "the directory says {laestab} is now {} ({}), a school this home has not pinned",
                    school.laestab, school.name
                )],
            );
            return Err(KeysChanged(*laestab).into());
        }
        if !escrow_pair && pins.aliases.get(laestab.as_str()) != Some(&school.laestab) {
            eprintln!(
                "note: {laestab} is now {} ({}): packs addressed to {laestab} reach it",
                school.laestab, school.name
            );
        }
    }
    let unapproved = pins.listed(&school)?.unapproved;
    for k in &unapproved {
        eprintln!(
            "note: key {} ({}) of {laestab} is not approved by the trust's directory key, so nothing is sealed to it or verified with it (the operator approves it with `batond admin key approve`)",
            k.key_id().grouped(),
            k.label
        );
    }
    match pins.check(&school)? {
        Check::New if pins.directory_key()?.is_some() => pins.save(home)?,
        Check::New => {
            eprintln!(
                "pinned the keys of {laestab} ({}) on first use, unverified (no directory key was pinned at `baton init`); compare them with the school: `baton schools show {laestab}`",
                school.name
            );
            pins.save(home)?;
        }
        Check::Same => pins.save(home)?,
        Check::Changed(changes) => {
            warn_changed(laestab.as_str(), &changes);
            return Err(KeysChanged(*laestab).into());
        }
    }
    Ok(unapproved.len())
}

/// [`refresh`] for `peer`'s escrow (another trust's), once a run: the
/// keys that sign what that escrow re-addressed to this school, pinned
/// apart from this trust's own escrow (`XXXXXXX --peer PEER`). Returns the
/// pin's name for [`Pins::verifying_keys_of`].
pub async fn refresh_escrow_of(
    home: &Home,
    clients: &mut Clients,
    pins: &mut Pins,
    peer: &str,
) -> Result<String> {
    let pin = escrow_pin(peer);
    if pins.fresh_escrows.contains(&pin) {
        return Ok(pin);
    }
    let school = match clients
        .directory
        .get_school(v1::GetSchoolRequest {
            laestab: Laestab::ESCROW.to_string(),
            peer: peer.to_string(),
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) => bail!(
            "looking up the escrow of {peer} (the other trust that re-addressed this pack): {}",
            explain(&s)
        ),
    };
    // An escrow has no former numbers (its renumbering would move pins).
    if school.laestab != Laestab::ESCROW.as_str()
        || school.peer != peer
        || !school.aliases.is_empty()
    {
        bail!(
            "asked for the escrow of {peer}, the directory answered with {} ({}{}): not believed",
            school.laestab,
            if school.peer.is_empty() {
                "this trust's"
            } else {
                &school.peer
            },
            if school.aliases.is_empty() {
                ""
            } else {
                ", with former numbers"
            }
        );
    }
    let named = format!("{} --peer {peer}", Laestab::ESCROW);
    match pins.check(&school)? {
        Check::New if pins.directory_key()?.is_none() => {
            eprintln!(
                "pinned the keys of the escrow of {peer} ({}) on first use, unverified: compare them with that trust: `baton schools show {named}`",
                school.name
            );
            pins.save(home)?;
        }
        Check::New | Check::Same => pins.save(home)?,
        Check::Changed(changes) => {
            warn_changed(&named, &changes);
            bail!(
                "the keys of the escrow of {peer} changed since they were pinned (or need confirming first); not pulled"
            );
        }
    }
    pins.fresh_escrows.insert(pin.clone());
    Ok(pin)
}
