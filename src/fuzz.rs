//! Entry points for the fuzz targets in `fuzz/` and for replaying their
//! corpora in the ordinary test suite: each takes arbitrary bytes, feeds a
//! reader that faces untrusted input, and checks the properties that must
//! hold (no panic; what parses re-encodes to itself). Not part of the API.

use prost::Message as _;

use crate::api::v1;
use crate::pack::{SignedHeader, SignedReceipt};

/// UPN parsing: anything accepted re-parses to itself.
pub fn upn(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(upn) = crate::Upn::parse(&text) {
        assert_eq!(crate::Upn::parse(upn.as_str()).ok().as_ref(), Some(&upn));
    }
    if let Ok(l) = crate::Laestab::parse(&text) {
        assert_eq!(crate::Laestab::parse(l.as_str()).ok(), Some(l));
    }
}

/// Record JSON: anything accepted can be checked and round-trips.
pub fn record_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(record) = crate::record::TransitionRecord::from_json(&text) {
        let _ = record.problems(time::macros::date!(2026 - 07 - 20));
        let again = crate::record::TransitionRecord::from_json(&record.to_json()).ok();
        assert!(
            again.as_ref() == Some(&record),
            "record JSON does not round-trip"
        );
    }
}

/// CTF reader: every pupil element read back alone gives the same record.
pub fn ctf(data: &[u8]) {
    let Ok(reader) = crate::ctf::CtfReader::new(data) else {
        return;
    };
    for pupil in reader {
        let Ok(pupil) = pupil else { return };
        if let Ok(again) = crate::ctf::CtfPupil::from_xml(&pupil.raw_xml, pupil.position) {
            assert!(
                again.record == pupil.record,
                "a pupil element reads differently alone"
            );
        }
    }
}

/// Class spreadsheet reader: never panics.
pub fn csv(data: &[u8]) {
    let _ = crate::csv::read(data, time::macros::date!(2026 - 07 - 20));
}

/// Header and receipt decoding: what converts converts back to the same message.
pub fn header(data: &[u8]) {
    if let Ok(wire) = v1::PackHeader::decode(data)
        && let Ok(signed) = SignedHeader::try_from(&wire)
    {
        let back = v1::PackHeader::from(&signed);
        assert_eq!(SignedHeader::try_from(&back).ok().as_ref(), Some(&signed));
    }
    if let Ok(wire) = v1::Receipt::decode(data)
        && let Ok(signed) = SignedReceipt::try_from(&wire)
    {
        assert_eq!(
            SignedReceipt::try_from(&v1::Receipt::from(&signed))
                .ok()
                .as_ref(),
            Some(&signed)
        );
    }
    for version in crate::pack::contents::VERSIONS {
        read_contents(data, version);
    }
}

/// Reads `data` as a pack's plaintext, every attachment into a sink, as far
/// as it goes.
fn read_contents(data: &[u8], version: u32) {
    let Ok(mut contents) = crate::pack::contents::ContentsReader::new(data, version) else {
        return;
    };
    while contents.next_index().is_some() {
        if contents.copy_next(&mut std::io::sink()).is_err() {
            return;
        }
    }
    let _ = contents.finish();
}

/// Opening arbitrary bytes as a pack never panics and never succeeds: the
/// header is signed over a hash these bytes do not have.
#[cfg(feature = "client")]
pub fn open_pack(data: &[u8]) {
    use std::sync::OnceLock;
    static KEYS: OnceLock<(crate::crypto::Identity, crate::crypto::Identity)> = OnceLock::new();
    let (sender, me) = KEYS.get_or_init(|| {
        (
            crate::crypto::Identity::generate(),
            crate::crypto::Identity::generate(),
        )
    });
    let header = crate::pack::Header {
        format_version: crate::pack::FORMAT_VERSION,
        pack_id: crate::pack::PackId::new(),
        from: crate::Laestab::from_parts("861", "2001").unwrap_or_else(|_| unreachable!()),
        to: crate::Laestab::from_parts("861", "4001").unwrap_or_else(|_| unreachable!()),
        kind: crate::pack::Kind::Transfer,
        created_at_ms: 0,
        ciphertext_len: data.len() as u64,
        ciphertext_sha256: [0; 32],
        sender_key_id: sender.key_id(),
        recipient_key_ids: vec![me.key_id()],
        left_on: Some(time::macros::date!(2026 - 07 - 22)),
        supersedes: None,
        forwarded: None,
    };
    let Ok(signed) = sender.sign_header(header) else {
        return;
    };
    let mut sink = crate::crypto::MemorySink::default();
    let opened = crate::crypto::open(&signed, &[sender.public()], me, data, &mut sink);
    assert!(opened.is_err(), "arbitrary bytes opened as a pack");
}
