//! `pull --ctf-dir`: one CTF per sending school for the MIS to import, with
//! exactly one `<Pupil>` per pupil. When several packs for the same pupil
//! from the same school are pulled, the newest (by the sender's sealing
//! time) goes into the CTF and the others stay folders only, saying so; a
//! pupil already written into a CTF by an earlier pull is not written again
//! unless a newer pack for them arrived, so the MIS never imports a pupil
//! twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use baton::Laestab;
use baton::pack::Kind;

use super::{PackJson, Pulled};
use crate::home::read_json;
use crate::pins::Pins;

/// A pupil's entry for the CTF, from one pulled pack.
struct Candidate {
    id: String,
    upn: String,
    created_at_ms: i64,
}

/// Writes the CTFs for the transfer packs among `ids` that are not in a CTF
/// yet, marks each pack with the file it went into, and returns what to tell
/// the user.
pub fn write(
    dir: &Path,
    school: Laestab,
    pins: &Pins,
    pulled: &mut Pulled,
    ids: &[String],
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    // Newest pack per (sending school, pupil) among those to write.
    let mut chosen: BTreeMap<(String, String), Candidate> = BTreeMap::new();
    let mut not_written = Vec::new();
    for id in ids {
        let Some(p) = pulled.packs.get(id) else {
            continue;
        };
        if p.kind != Kind::Transfer {
            continue;
        }
        if let Some(file) = &p.ctf {
            not_written.push(format!("{id}: already in {file}"));
            continue;
        }
        let upn = if p.upn.is_empty() {
            upn_of(Path::new(&p.folder)).unwrap_or_default()
        } else {
            p.upn.clone()
        };
        let candidate = Candidate {
            id: id.clone(),
            upn: upn.clone(),
            created_at_ms: p.created_at_ms,
        };
        // A pack without a UPN is its own entry.
        let key = (
            p.from.clone(),
            if upn.is_empty() { id.clone() } else { upn },
        );
        // Of two packs for one pupil the newer goes into the CTF; the
        // other is a folder only, and the user is told which.
        let (kept, left) = match chosen.remove(&key) {
            None => (candidate, None),
            Some(c) if c.created_at_ms >= candidate.created_at_ms => (c, Some(candidate)),
            Some(c) => (candidate, Some(c)),
        };
        if let Some(left) = left {
            lines.push(format!(
                "{}: pupil {} has a newer pack from {} ({}); this one is a folder only, not in the CTF",
                left.id, left.upn, key.0, kept.id
            ));
        }
        chosen.insert(key, kept);
    }
    // A pupil whose newer pack went into a CTF before keeps that entry.
    chosen.retain(|(from, upn), c| {
        let newer = pulled.packs.iter().find(|(other, p)| {
            *other != &c.id
                && p.ctf.is_some()
                && &p.from == from
                && !upn.is_empty()
                && &p.upn == upn
                && p.created_at_ms > c.created_at_ms
        });
        match newer {
            Some((other, p)) => {
                lines.push(format!(
                    "{}: pupil {upn} already has a newer pack ({other}) in {}; not written again",
                    c.id,
                    p.ctf.as_deref().unwrap_or_default()
                ));
                false
            }
            None => true,
        }
    });
    // One CTF per sending school and the number it addressed (a school
    // renumbered receives under its former number too, and the CTF says so).
    let mut by_school: BTreeMap<(String, Laestab), Vec<String>> = BTreeMap::new();
    for ((from, _), c) in chosen {
        let to = pulled
            .packs
            .get(&c.id)
            .and_then(|p| Laestab::parse(&p.to).ok())
            .unwrap_or(school);
        by_school.entry((from, to)).or_default().push(c.id);
    }
    for ((from, to), ids) in by_school {
        let Ok(from_laestab) = Laestab::parse(&from) else {
            continue;
        };
        let mut pupils = Vec::new();
        let mut written = Vec::new();
        for id in ids {
            let Some(p) = pulled.packs.get(&id) else {
                continue;
            };
            match pupil_xml(Path::new(&p.folder)) {
                Ok(xml) => {
                    pupils.push(xml);
                    written.push(id);
                }
                Err(e) => lines.push(format!("{id}: left out of the CTF: {e:#}")),
            }
        }
        if pupils.is_empty() {
            continue;
        }
        let name = pins
            .get(&from_laestab)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        let path = match write_ctf(dir, from_laestab, &name, to, &pupils) {
            Ok(path) => path,
            Err(e) => {
                // The other schools' CTFs (and their marks) still count.
                lines.push(format!("no CTF written for {from}: {e:#}"));
                continue;
            }
        };
        let shown = path.display().to_string();
        for id in &written {
            if let Some(p) = pulled.packs.get_mut(id) {
                p.ctf = Some(shown.clone());
            }
        }
        lines.push(format!("{} pupil(s) from {from} -> {shown}", pupils.len()));
    }
    if !not_written.is_empty() {
        lines.push(format!(
            "{} pupil(s) were written to a CTF by an earlier pull and are not written again",
            not_written.len()
        ));
    }
    Ok(lines)
}

/// The UPN a pulled folder's record states, for `pulled.json` files written
/// before it kept one.
fn upn_of(folder: &Path) -> Option<String> {
    let text = std::fs::read_to_string(folder.join("record.json")).ok()?;
    let record = baton::record::TransitionRecord::from_json(&text).ok()?;
    record.upn().map(|u| u.to_string())
}

/// The `<Pupil>` element for a pulled folder: as the sender's MIS wrote it,
/// or generated from the record for packs that came from a spreadsheet or
/// a pack folder.
fn pupil_xml(folder: &Path) -> Result<String> {
    let pack: PackJson = read_json(&folder.join("pack.json"))?;
    let path = folder.join("record.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let record = baton::record::TransitionRecord::from_json(&text)
        .with_context(|| format!("{} is not valid", path.display()))?;
    match pack.ctf_pupil_xml {
        Some(xml) => checked_fragment(&xml, &record),
        None => Ok(baton::ctf::pupil_xml_from_record(&record)),
    }
}

/// The sender's `<Pupil>` element, if it is exactly one well-formed pupil
/// who is the pupil of the signed record (UPN, names, date of birth): the
/// MIS imports the element, not the record, so an element that says more
/// (another pupil) or something else must not reach it.
fn checked_fragment(xml: &str, record: &baton::record::TransitionRecord) -> Result<String> {
    let pupil = baton::ctf::CtfPupil::from_xml(xml, 1).map_err(|e| {
        anyhow::anyhow!("its CTF <Pupil> element is not one well-formed pupil ({e})")
    })?;
    let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
    let found = &pupil.record;
    for (field, theirs, ours) in [
        ("UPN", &found.upn, &record.upn),
        ("surname", &found.surname, &record.surname),
        ("forename", &found.forename, &record.forename),
        ("date of birth", &found.dob, &record.dob),
    ] {
        if !same(theirs, ours) {
            anyhow::bail!(
                "its CTF <Pupil> element does not match its record ({field} differs); the folder has the record"
            );
        }
    }
    Ok(pupil.raw_xml)
}

/// Writes one CTF for one sending school, numbered after any already there.
fn write_ctf(
    dir: &Path,
    from: Laestab,
    name: &str,
    to: Laestab,
    pupils: &[String],
) -> Result<PathBuf> {
    crate::home::create_private_dir_all(dir)?;
    let path = (1..1000)
        .map(|n| dir.join(baton::ctf::file_name(from, to, n)))
        .find(|p| !p.exists())
        .with_context(|| format!("{} already holds 999 CTFs from {from}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let mut header = baton::ctf::CtfHeader::new(
        from,
        baton::Destination::School(to),
        time::PrimitiveDateTime::new(now.date(), now.time()),
    );
    header.source.name = name.to_string();
    let mut bytes = Vec::new();
    baton::ctf::write_ctf(&mut bytes, &header, pupils).context("writing the CTF")?;
    crate::home::write_atomic(&path, &bytes, true)?;
    Ok(path)
}
