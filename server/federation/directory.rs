//! Peers' directories: checking what a peer answers to `PeerSchools`
//! before it is stored ([`checked`]), and merging the stored schools with
//! this daemon's own for `Directory.ListSchools` and `GetSchool`
//! ([`merge`]). A LAESTAB (or former LAESTAB) that two sources claim is a
//! conflict: a school enrolled here always wins over a peer's claim, and
//! a number two peers both claim is listed by neither, so a pack is never
//! sealed to the wrong trust's school. Conflicts are what the operators
//! see in `batond admin peer list` and the daemon's log.
//!
//! A peer's escrow (`XXXXXXX`) is kept apart ([`peer_escrow`]): every
//! trust's escrow has that number, so it is never listed to schools nor a
//! destination; its keys only verify the packs that escrow re-addresses to
//! a school here.

use std::collections::{BTreeMap, BTreeSet};

use baton::Laestab;
use baton::api::v1;
use baton::keys::SchoolKey;
use prost::Message as _;

use crate::store::PeerSchool;

/// Most schools one peer may list.
pub const MAX_PEER_SCHOOLS: usize = 20_000;
/// Most keys kept of one school a peer lists (its active ones first, then
/// the most recently made).
pub const MAX_KEYS_PER_SCHOOL: usize = 64;
/// The largest `PeerSchools` answer a daemon sends or reads: a directory
/// of [`MAX_PEER_SCHOOLS`] schools with a few keys each (revoked ones
/// included) fits; a larger one fails the sync, saying so in `peer list`.
pub const MAX_DIRECTORY_BYTES: usize = 64 * 1024 * 1024;

/// A peer's answer, checked: each school's LAESTAB, name, aliases and
/// active keys, encoded again for the store; and what was left out, and
/// why, naming the school. With `la_codes`, only schools whose numbers
/// (former ones too) are in those local authorities are kept.
pub fn checked(
    schools: &[v1::School],
    la_codes: &[String],
) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let mut kept = BTreeMap::new();
    let mut problems = Vec::new();
    if schools.len() > MAX_PEER_SCHOOLS {
        problems.push(format!(
            "{} schools listed; only the first {MAX_PEER_SCHOOLS} are kept",
            schools.len()
        ));
    }
    for school in schools.iter().take(MAX_PEER_SCHOOLS) {
        match check_one(school).and_then(|(laestab, clean)| {
            let outside = std::iter::once(&clean.laestab)
                .chain(&clean.aliases)
                .filter(|n| !is_escrow(n))
                .find(|n| !la_codes.is_empty() && !la_codes.iter().any(|c| n.starts_with(c.as_str())));
            match outside {
                Some(n) => Err(format!(
                    "school {laestab}: {n} is in local authority {}, which this peer is not agreed for (`batond admin peer add --la`)",
                    &n[..3]
                )),
                None => Ok((laestab, clean)),
            }
        }) {
            Ok((laestab, clean)) => {
                if kept.insert(laestab.clone(), clean).is_some() {
                    problems.push(format!("school {laestab}: listed twice"));
                    kept.remove(&laestab);
                }
            }
            Err(e) => problems.push(e),
        }
    }
    // A number (current or former) two of its schools both claim: neither.
    let mut claims: BTreeMap<String, usize> = BTreeMap::new();
    for school in kept.values().filter(|s| !is_escrow(&s.laestab)) {
        for number in std::iter::once(&school.laestab).chain(&school.aliases) {
            *claims.entry(number.clone()).or_default() += 1;
        }
    }
    kept.retain(|laestab, school| {
        let twice = std::iter::once(&school.laestab)
            .chain(&school.aliases)
            .find(|n| claims.get(*n).is_some_and(|c| *c > 1));
        if let Some(n) = twice {
            problems.push(format!(
                "school {laestab}: {n} is claimed by another of its schools too"
            ));
        }
        twice.is_none()
    });
    let kept = kept
        .into_iter()
        .map(|(laestab, school)| (laestab, v1::School::encode_to_vec(&school)))
        .collect();
    (kept, problems)
}

/// One school of a peer's answer, checked and rebuilt from what was
/// understood.
fn check_one(school: &v1::School) -> Result<(String, v1::School), String> {
    let escrow = is_escrow(&school.laestab);
    let laestab = if escrow {
        Laestab::ESCROW
    } else {
        Laestab::parse(&school.laestab).map_err(|e| {
            format!(
                "a school with LAESTAB {:?}: {e}",
                truncated(&school.laestab)
            )
        })?
    };
    let bad = |what: &str| format!("school {laestab}: {what}");
    let text_ok = |t: &str| t.chars().count() <= 200 && !t.chars().any(char::is_control);
    if !text_ok(&school.name) || !text_ok(&school.phase) || !text_ok(&school.urn) {
        return Err(bad(
            "name, phase or URN too long or with control characters",
        ));
    }
    let mut aliases = Vec::new();
    // The escrow's one alias (`MMMMMMM`) is the same for every trust: not kept.
    for alias in school.aliases.iter().filter(|_| !escrow) {
        let alias = Laestab::parse(alias).map_err(|e| bad(&format!("former LAESTAB: {e}")))?;
        aliases.push(alias.to_string());
    }
    // Every key, revoked ones too (they verify what they signed before),
    // the newest first up to a bound; at least one active.
    let mut keys = Vec::new();
    for key in &school.keys {
        keys.push(SchoolKey::try_from(key).map_err(|e| bad(&e.to_string()))?);
    }
    if !keys.iter().any(SchoolKey::is_active) {
        return Err(bad("no active key"));
    }
    keys.sort_by_key(|k| (!k.is_active(), std::cmp::Reverse(k.created_at_ms)));
    keys.truncate(MAX_KEYS_PER_SCHOOL);
    let keys: Vec<v1::Key> = keys.iter().map(v1::Key::from).collect();
    let laestab = laestab.to_string();
    Ok((
        laestab.clone(),
        v1::School {
            laestab,
            name: school.name.clone(),
            phase: school.phase.clone(),
            urn: school.urn.clone(),
            keys,
            aliases,
            peer: String::new(),
        },
    ))
}

/// Whether a stored or listed number is the escrow's (`XXXXXXX`).
fn is_escrow(number: &str) -> bool {
    number == Laestab::ESCROW.as_str()
}

/// At most 20 characters of `text`, for an error message.
fn truncated(text: &str) -> String {
    text.chars().take(20).collect()
}

/// The school a peer serves under `laestab` (its number or a former
/// one), as schools see it listed: `None` if no peer does, or if the
/// number is in conflict.
pub async fn peer_school<S: crate::store::Store>(
    store: &S,
    laestab: &Laestab,
) -> crate::store::Result<Option<v1::School>> {
    let stored = store.peer_schools().await?;
    if stored.is_empty() {
        return Ok(None);
    }
    let local = store.list_schools().await?;
    let number = laestab.to_string();
    Ok(merge(&local_numbers(&local), &stored)
        .0
        .into_iter()
        .find(|s| s.laestab == number || s.aliases.contains(&number)))
}

/// `peer`'s escrow as that peer lists it (`peer` set): `None` if it lists
/// none (a peer without an escrow, or of a version before escrows were
/// offered).
pub async fn peer_escrow<S: crate::store::Store>(
    store: &S,
    peer: &str,
) -> crate::store::Result<Option<v1::School>> {
    Ok(store
        .peer_schools()
        .await?
        .into_iter()
        .filter(|row| row.peer == peer && is_escrow(&row.laestab))
        .find_map(|row| decoded(&row)))
}

/// A stored row's school with `peer` set; `None` (logged) if it no longer
/// decodes.
fn decoded(row: &PeerSchool) -> Option<v1::School> {
    match v1::School::decode(row.school.as_slice()) {
        Ok(mut school) => {
            school.peer = row.peer.clone();
            Some(school)
        }
        Err(e) => {
            tracing::error!(
                peer = %row.peer,
                laestab = %row.laestab,
                error = %e,
                "a stored peer school does not decode; left out"
            );
            None
        }
    }
}

/// A peer school's keys, revoked ones included (checked when stored; any
/// that no longer parse are left out).
pub fn keys_of(school: &v1::School) -> Vec<SchoolKey> {
    school
        .keys
        .iter()
        .filter_map(|k| SchoolKey::try_from(k).ok())
        .collect()
}

/// Every LAESTAB and former LAESTAB of the schools enrolled here.
pub fn local_numbers(local: &[crate::store::School]) -> BTreeSet<String> {
    local
        .iter()
        .flat_map(|s| std::iter::once(&s.info.laestab).chain(&s.aliases))
        .map(ToString::to_string)
        .collect()
}

/// A number claimed by more than one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The LAESTAB (or former LAESTAB).
    pub laestab: String,
    /// Who claims it: "this daemon" and peers' names.
    pub claimed_by: Vec<String>,
}

/// The peers' schools that may be listed beside `local_numbers` (every
/// LAESTAB and former LAESTAB enrolled here), each with `peer` set (their
/// escrows left out), and
/// the conflicts that kept others out. Stored rows that no longer decode
/// are skipped (logged).
pub fn merge(
    local_numbers: &BTreeSet<String>,
    stored: &[PeerSchool],
) -> (Vec<v1::School>, Vec<Conflict>) {
    // Peers' escrows are never listed (see the module).
    let mut schools: Vec<v1::School> = stored
        .iter()
        .filter(|row| !is_escrow(&row.laestab))
        .filter_map(decoded)
        .collect();
    // Who claims each number.
    let mut claims: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for school in &schools {
        for number in std::iter::once(&school.laestab).chain(&school.aliases) {
            claims.entry(number).or_default().insert(&school.peer);
        }
    }
    let mut conflicts = Vec::new();
    let mut refused: BTreeSet<(String, String)> = BTreeSet::new();
    for (number, peers) in &claims {
        let here = local_numbers.contains(*number);
        if peers.len() > 1 || here {
            let mut claimed_by: Vec<String> = Vec::new();
            if here {
                claimed_by.push("this daemon".to_string());
            }
            claimed_by.extend(peers.iter().map(|p| (*p).to_string()));
            conflicts.push(Conflict {
                laestab: (*number).to_string(),
                claimed_by,
            });
            for school in schools.iter().filter(|s| {
                peers.contains(s.peer.as_str())
                    && (s.laestab == *number || s.aliases.iter().any(|a| a == number))
            }) {
                refused.insert((school.peer.clone(), school.laestab.clone()));
            }
        }
    }
    schools.retain(|s| !refused.contains(&(s.peer.clone(), s.laestab.clone())));
    (schools, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-formed key, a different one each call.
    fn key() -> v1::Key {
        static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        v1::Key::from(&crate::store::conformance::key(n))
    }

    fn school(laestab: &str, aliases: &[&str]) -> v1::School {
        v1::School {
            laestab: laestab.into(),
            name: format!("School {laestab}"),
            phase: "secondary".into(),
            urn: String::new(),
            keys: vec![key()],
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            peer: String::new(),
        }
    }

    fn stored(peer: &str, schools: &[v1::School]) -> Vec<PeerSchool> {
        let (kept, problems) = checked(schools, &[]);
        assert!(problems.is_empty(), "{problems:?}");
        kept.into_iter()
            .map(|(laestab, school)| PeerSchool {
                peer: peer.into(),
                laestab,
                school,
            })
            .collect()
    }

    #[test]
    fn a_peers_answer_is_checked_school_by_school() {
        let mut no_key = school("8881111", &[]);
        no_key.keys.clear();
        let mut bad_key = school("8882222", &[]);
        bad_key.keys[0].signing_key = vec![1; 5];
        let mut control = school("8883333", &[]);
        control.name = "a\u{7}b".into();
        let mut revoked = school("8884444", &[]);
        revoked.keys.push(v1::Key {
            revoked_at_ms: 5,
            ..key()
        });
        revoked.peer = "forged".into();
        let answer = [
            school("not-a-number", &[]),
            no_key,
            bad_key,
            control,
            revoked,
            school("8885555", &[]),
            school("8885555", &[]),
        ];
        let (kept, problems) = checked(&answer, &[]);
        assert_eq!(kept.len(), 1, "{problems:?}");
        assert_eq!(kept[0].0, "8884444");
        let school = v1::School::decode(kept[0].1.as_slice()).unwrap();
        assert_eq!(school.keys.len(), 2, "revoked keys are kept");
        assert!(school.keys[0].revoked_at_ms == 0, "active first");
        assert!(school.peer.is_empty(), "the peer's own label is dropped");
        assert_eq!(problems.len(), 5, "{problems:?}");
        for (problem, says) in problems.iter().zip([
            "not-a-number",
            "8881111: no active key",
            "8882222: field `key.signing_key`",
            "8883333: name",
            "8885555: listed twice",
        ]) {
            assert!(problem.contains(says), "{problem} / {says}");
        }
    }

    #[test]
    fn a_peer_agreed_for_some_authorities_lists_schools_there_only() {
        let answer = [
            school("9261111", &[]),
            school("9271111", &[]),
            school("9262222", &["8612222"]),
        ];
        let (kept, problems) = checked(&answer, &["926".to_string()]);
        let kept: Vec<&str> = kept.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(kept, ["9261111"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("9271111 is in local authority 927"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("8612222 is in local authority 861"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_number_two_schools_of_one_peer_claim_is_listed_for_neither() {
        let answer = [
            school("9261111", &[]),
            school("9262222", &["9261111"]),
            school("9263333", &[]),
        ];
        let (kept, problems) = checked(&answer, &[]);
        let kept: Vec<&str> = kept.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(kept, ["9263333"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    /// A national peer's directory (the most schools a peer may list,
    /// four keys each, one of them revoked with its signed revocation)
    /// fits in one answer.
    #[test]
    fn the_largest_directory_fits_in_one_answer() {
        let mut one = school("9261111", &["8611111"]);
        one.name = "N".repeat(60);
        for _ in 0..3 {
            one.keys.push(key());
        }
        one.keys[3].revoked_at_ms = 5;
        one.keys[3].revocation_signature = vec![7; 64];
        one.keys[3].revoked_by = "f".repeat(32);
        let answer = v1::PeerSchoolsResponse {
            schools: vec![one; MAX_PEER_SCHOOLS],
        };
        let bytes = answer.encoded_len();
        assert!(
            bytes < MAX_DIRECTORY_BYTES,
            "{bytes} bytes for {MAX_PEER_SCHOOLS} schools"
        );
        assert!(bytes > crate::services::MAX_MESSAGE_BYTES, "{bytes}");
    }

    #[test]
    fn a_peers_escrow_is_kept_apart_and_never_listed() {
        // Whatever authorities the peer is agreed for, its escrow is kept,
        // without the alias every trust's escrow has.
        let answer = [school("XXXXXXX", &["MMMMMMM"]), school("9261111", &[])];
        let (kept, problems) = checked(&answer, &["926".to_string()]);
        assert!(problems.is_empty(), "{problems:?}");
        let numbers: Vec<&str> = kept.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(numbers, ["9261111", "XXXXXXX"]);
        let escrow = v1::School::decode(kept[1].1.as_slice()).unwrap();
        assert!(escrow.aliases.is_empty(), "{escrow:?}");
        // Another number may not pass as the escrow's alias.
        let (kept, _) = checked(
            &[school("XXXXXXX", &["9261111"]), school("9261111", &[])],
            &[],
        );
        assert_eq!(kept.len(), 2, "the escrow claims no school's number");

        // Listed beside a local escrow and another peer's: no conflict,
        // and no escrow listed to schools.
        let local: BTreeSet<String> = ["XXXXXXX".to_string(), "MMMMMMM".to_string()].into();
        let mut rows = stored("north", &answer);
        rows.extend(stored("south", &[school("XXXXXXX", &[])]));
        let (schools, conflicts) = merge(&local, &rows);
        let listed: Vec<(&str, &str)> = schools
            .iter()
            .map(|s| (s.peer.as_str(), s.laestab.as_str()))
            .collect();
        assert_eq!(listed, [("north", "9261111")]);
        assert!(conflicts.is_empty(), "{conflicts:?}");
    }

    #[test]
    fn a_number_claimed_twice_is_listed_by_no_peer() {
        let local: BTreeSet<String> = ["1111111".to_string()].into();
        let mut rows = stored(
            "north",
            &[
                school("2222222", &[]),
                school("3333333", &["1111111"]),
                school("4444444", &[]),
            ],
        );
        rows.extend(stored("south", &[school("5555555", &["4444444"])]));
        let (schools, conflicts) = merge(&local, &rows);
        let listed: Vec<(&str, &str)> = schools
            .iter()
            .map(|s| (s.peer.as_str(), s.laestab.as_str()))
            .collect();
        assert_eq!(listed, [("north", "2222222")]);
        assert_eq!(
            conflicts,
            [
                Conflict {
                    laestab: "1111111".into(),
                    claimed_by: vec!["this daemon".into(), "north".into()],
                },
                Conflict {
                    laestab: "4444444".into(),
                    claimed_by: vec!["north".into(), "south".into()],
                },
            ]
        );
    }
}
