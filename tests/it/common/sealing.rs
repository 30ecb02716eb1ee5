//! Helpers shared by the library-level pack tests: sample records, school
//! keys for identities, and sealing from in-memory attachments.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use baton::Laestab;
use baton::crypto::{self, Draft, Identity};
use baton::keys::{Role, SchoolKey};
use baton::pack::{AttachmentMeta, Kind, Manifest, PackId, SignedHeader};
use baton::record::{Attendance, Ks2Results, TransitionRecord};

/// A valid record for a synthetic pupil.
pub fn record() -> TransitionRecord {
    TransitionRecord {
        upn: "H801200001001".into(),
        surname: "Mac Giolla Phádraig".into(),
        forename: "Zoë".into(),
        middle_names: "Rose".into(),
        dob: "2015-01-12".into(),
        sex: "F".into(),
        ethnicity: "WIRI".into(),
        first_language: "ENG".into(),
        sen_provision: "K".into(),
        sen_needs: vec!["ASD".into(), "SLCN".into()],
        attendance: Some(Attendance {
            year: 2025,
            possible: 380,
            attended: 367,
            authorised: 4,
            unauthorised: 9,
        }),
        ks2: Some(Ks2Results {
            reading: Some(114),
            maths: Some(86),
            gps: Some(92),
            writing_ta: "GDS".into(),
            mtc: Some(17),
        }),
        notes: "Line one of a note\nline two, with a comma, and \"quotes\"".into(),
        ..Default::default()
    }
}

/// A directory entry for an identity.
pub fn school_key(identity: &Identity, roles: &[Role]) -> SchoolKey {
    SchoolKey {
        public: identity.public(),
        label: "test key".into(),
        roles: roles.to_vec(),
        created_at_ms: 1_700_000_000_000,
        revoked_at_ms: None,
        endorsement: None,
        revocation: None,
    }
}

/// A draft from 8612001 to 8614001.
pub fn draft(kind: Kind) -> Draft {
    Draft {
        pack_id: PackId::new(),
        from: Laestab::parse("8612001").unwrap(),
        to: Laestab::parse("8614001").unwrap(),
        kind,
        created_at_ms: 1_784_000_000_000,
        left_on: Some(time::macros::date!(2026 - 07 - 22)),
        supersedes: None,
    }
}

/// A manifest for `files` (name, bytes).
pub fn manifest(files: &[(String, Vec<u8>)], ctf: Option<&str>) -> Manifest {
    Manifest {
        record: record(),
        ctf_pupil_xml: ctf.map(str::to_string),
        attachments: files
            .iter()
            .map(|(name, bytes)| AttachmentMeta::describe(name, &mut bytes.as_slice()).unwrap())
            .collect(),
    }
}

/// Seals `files` in memory to `recipients`, signed by `sender`; checks the
/// hashes sealing computed are the ones `manifest` describes.
pub fn seal(
    draft: &Draft,
    manifest: &Manifest,
    files: &[(String, Vec<u8>)],
    recipients: &[SchoolKey],
    sender: &Identity,
) -> (SignedHeader, Vec<u8>) {
    let mut sealed = manifest.clone();
    let out = crypto::seal(
        draft,
        &mut sealed,
        |i| Ok(files[i].1.as_slice()),
        recipients,
        sender,
        Vec::new(),
    )
    .unwrap();
    assert!(sealed == *manifest, "sealing hashed other bytes");
    out
}

/// Peak resident set size of this process so far, in bytes (Linux).
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}
