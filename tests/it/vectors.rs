//! Frozen test vectors for each pack format version (`tests/vectors/vN/`):
//! a sealed pack that must keep opening to the same contents in every
//! future build, and `fail_*` cases that must each fail with the right
//! error. The files are never edited; a new format version gets a new
//! folder. (`write_vectors` made each folder once, for the version it
//! wrote then; it refuses to overwrite.)

use crate::common::sealing;

use std::path::{Path, PathBuf};

use baton::api::v1;
use baton::crypto::{self, Identity, MemorySink, OpenError};
use baton::keys::{PublicKey, Role};
use baton::pack::{Kind, SignedHeader};
use baton::record::TransitionRecord;
use prost::Message as _;
use sha2::{Digest, Sha256};

/// The format versions with frozen vectors.
const VERSIONS: [u32; 4] = [1, 2, 3, 4];

fn dir(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/vectors/v{version}"))
}

fn read(version: u32, name: &str) -> Vec<u8> {
    std::fs::read(dir(version).join(name))
        .unwrap_or_else(|e| panic!("reading vector v{version}/{name}: {e}"))
}

fn identity(version: u32, name: &str) -> Identity {
    Identity::from_file_bytes(&read(version, name), None).unwrap()
}

fn header(version: u32, name: &str) -> SignedHeader {
    SignedHeader::try_from(&v1::PackHeader::decode(read(version, name).as_slice()).unwrap())
        .unwrap()
}

fn sender(version: u32) -> PublicKey {
    let json: serde_json::Value = serde_json::from_slice(&read(version, "sender.json")).unwrap();
    let signing = hex::decode(json["signing_key"].as_str().unwrap()).unwrap();
    let key = PublicKey::new(json["age_recipient"].as_str().unwrap(), &signing).unwrap();
    assert_eq!(key.key_id().to_string(), json["key_id"].as_str().unwrap());
    key
}

fn open(
    version: u32,
    header_file: &str,
    age_file: &str,
    identity_file: &str,
) -> Result<(baton::pack::Manifest, MemorySink), OpenError> {
    let mut sink = MemorySink::default();
    let manifest = crypto::open(
        &header(version, header_file),
        &[sender(version)],
        &identity(version, identity_file),
        read(version, age_file).as_slice(),
        &mut sink,
    )?;
    Ok((manifest, sink))
}

#[test]
fn the_frozen_pack_opens_to_its_expected_contents() {
    for version in VERSIONS {
        let read = |name: &str| read(version, name);
        let (manifest, sink) = open(version, "pack.header", "pack.age", "identity.txt").unwrap();
        let expected = TransitionRecord::from_json(
            std::str::from_utf8(&read("expected/record.json")).unwrap(),
        )
        .unwrap();
        assert!(manifest.record == expected);
        assert_eq!(
            manifest.ctf_pupil_xml.as_deref().map(str::as_bytes),
            Some(read("expected/ctf_pupil.xml").as_slice())
        );
        let names: Vec<&str> = manifest
            .attachments
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(names, ["one-page-profile.txt", "empty-note.txt"]);
        for (meta, bytes) in manifest.attachments.iter().zip(&sink.files) {
            let expected = read(&format!("expected/{}", meta.name));
            assert_eq!(bytes, &expected);
            assert_eq!(meta.sha256, <[u8; 32]>::from(Sha256::digest(&expected)));
        }
        let h = header(version, "pack.header");
        assert_eq!(h.header().format_version, version);
        assert_eq!(h.header().kind, Kind::Transfer);
        assert_eq!(
            (h.header().from.as_str(), h.header().to.as_str()),
            ("8612001", "8614001")
        );
    }
}

/// (what, header file, age file, identity file, is the expected error).
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    fn(&OpenError) -> bool,
);

#[test]
fn every_fail_vector_fails_with_its_error() {
    let cases: [Case; 6] = [
        (
            "flipped payload byte",
            "pack.header",
            "fail_flipped_payload.age",
            "identity.txt",
            |e| matches!(e, OpenError::Damaged(_)),
        ),
        (
            "flipped age header byte",
            "pack.header",
            "fail_flipped_age_header.age",
            "identity.txt",
            |e| matches!(e, OpenError::Damaged(_)),
        ),
        (
            "truncated ciphertext",
            "pack.header",
            "fail_truncated.age",
            "identity.txt",
            |e| matches!(e, OpenError::Damaged(_)),
        ),
        (
            "wrong identity",
            "pack.header",
            "pack.age",
            "fail_wrong_identity.txt",
            |e| matches!(e, OpenError::NotForUs),
        ),
        (
            "signed by a key that is not pinned",
            "fail_unpinned_signer.header",
            "pack.age",
            "identity.txt",
            |e| matches!(e, OpenError::UnknownSigner(_)),
        ),
        (
            "header altered after signing",
            "fail_header_altered.header",
            "pack.age",
            "identity.txt",
            |e| matches!(e, OpenError::BadSignature),
        ),
    ];
    for version in VERSIONS {
        for (what, h, age, id, expected) in cases {
            match open(version, h, age, id) {
                Ok(_) => panic!("v{version} {what}: opened"),
                Err(e) => assert!(expected(&e), "v{version} {what}: wrong error {e:?}"),
            }
        }
    }
}

#[test]
#[ignore = "writes the frozen vectors once; never run it over existing files"]
fn write_vectors() {
    use sealing::{draft, manifest, school_key, seal};
    let out = dir(baton::pack::FORMAT_VERSION);
    assert!(
        !out.join("pack.age").exists(),
        "vectors are frozen: make a new version folder instead"
    );
    std::fs::create_dir_all(out.join("expected")).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).unwrap();
    let secret = |id: &Identity| id.to_file_text("2026-11-25T00:00:00Z");

    let sender = Identity::generate();
    let impostor = Identity::generate();
    let to = Identity::generate();
    let stranger = Identity::generate();
    use age::secrecy::ExposeSecret as _;
    write("identity.txt", secret(&to).expose_secret().as_bytes());
    write(
        "fail_wrong_identity.txt",
        secret(&stranger).expose_secret().as_bytes(),
    );
    let public = sender.public();
    let json = serde_json::json!({
        "age_recipient": public.age_recipient(),
        "signing_key": hex::encode(public.signing_key_bytes()),
        "key_id": public.key_id().to_string(),
    });
    write(
        "sender.json",
        serde_json::to_string_pretty(&json).unwrap().as_bytes(),
    );

    let files = vec![
        (
            "one-page-profile.txt".to_string(),
            "All about me: I like maths and football.\n"
                .as_bytes()
                .to_vec(),
        ),
        ("empty-note.txt".to_string(), Vec::new()),
    ];
    let ctf = "<Pupil>\n      <UPN>H801200001001</UPN>\n      <Surname>Mac Giolla Phádraig</Surname>\n    </Pupil>";
    let m = manifest(&files, Some(ctf));
    let keys = vec![school_key(&to, &[Role::Staff, Role::Dsl])];
    let mut draft = draft(Kind::Transfer);
    // From version 4: the pack corrects an earlier one, signed.
    draft.supersedes = Some("01900000-0000-7000-8000-000000000001".parse().unwrap());
    let (signed, ciphertext) = seal(&draft, &m, &files, &keys, &sender);
    write("pack.age", &ciphertext);
    write(
        "pack.header",
        &v1::PackHeader::from(&signed).encode_to_vec(),
    );
    write("expected/record.json", m.record.to_json().as_bytes());
    write("expected/ctf_pupil.xml", ctf.as_bytes());
    for (name, bytes) in &files {
        write(&format!("expected/{name}"), bytes);
    }

    let mut flipped = ciphertext.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 0x01;
    write("fail_flipped_payload.age", &flipped);
    let mut flipped = ciphertext.clone();
    let mac = flipped.windows(4).position(|w| w == b"--- ").unwrap() + 6;
    flipped[mac] = if flipped[mac] == b'A' { b'B' } else { b'A' };
    write("fail_flipped_age_header.age", &flipped);
    write("fail_truncated.age", &ciphertext[..ciphertext.len() - 100]);

    let mut forged = signed.header().clone();
    forged.sender_key_id = impostor.key_id();
    let forged = impostor.sign_header(forged).unwrap();
    write(
        "fail_unpinned_signer.header",
        &v1::PackHeader::from(&forged).encode_to_vec(),
    );
    let mut altered = signed.header().clone();
    altered.to = baton::Laestab::parse("8614002").unwrap();
    let altered = SignedHeader::from_parts(altered, *signed.signature()).unwrap();
    write(
        "fail_header_altered.header",
        &v1::PackHeader::from(&altered).encode_to_vec(),
    );
    // From version 3: the leaving date moved on the server.
    let mut moved = signed.header().clone();
    moved.left_on = Some(time::macros::date!(2026 - 09 - 01));
    let moved = SignedHeader::from_parts(moved, *signed.signature()).unwrap();
    write(
        "fail_left_on_altered.header",
        &v1::PackHeader::from(&moved).encode_to_vec(),
    );
    // From version 4: the link to the pack it corrects removed on the server.
    let mut unlinked = signed.header().clone();
    unlinked.supersedes = None;
    let unlinked = SignedHeader::from_parts(unlinked, *signed.signature()).unwrap();
    write(
        "fail_supersedes_altered.header",
        &v1::PackHeader::from(&unlinked).encode_to_vec(),
    );
}

/// Version 4's header may name the pack it corrects, under the signature:
/// the link removed (or changed) by the server, the pack does not open.
#[test]
fn the_supersedes_link_is_signed() {
    assert_eq!(
        header(4, "pack.header")
            .header()
            .supersedes
            .map(|id| id.to_string())
            .as_deref(),
        Some("01900000-0000-7000-8000-000000000001")
    );
    assert!(matches!(
        open(
            4,
            "fail_supersedes_altered.header",
            "pack.age",
            "identity.txt"
        ),
        Err(OpenError::BadSignature)
    ));
    // Earlier versions name none, and a v3 header naming one is refused.
    assert_eq!(header(3, "pack.header").header().supersedes, None);
    let mut wire = v1::PackHeader::decode(read(3, "pack.header").as_slice()).unwrap();
    wire.supersedes = "01900000-0000-7000-8000-000000000001".into();
    let refused = SignedHeader::try_from(&wire).unwrap_err().to_string();
    assert!(refused.contains("supersedes"), "{refused}");
}

/// Version 3's header carries the leaving date under the signature: moved
/// by the server, the pack does not open.
#[test]
fn the_leaving_date_is_signed() {
    assert_eq!(
        header(3, "pack.header").header().left_on,
        Some(time::macros::date!(2026 - 07 - 22))
    );
    assert!(matches!(
        open(3, "fail_left_on_altered.header", "pack.age", "identity.txt"),
        Err(OpenError::BadSignature)
    ));
    // Earlier versions carry none, and a v3 header without one is refused.
    assert_eq!(header(2, "pack.header").header().left_on, None);
    let mut wire = v1::PackHeader::decode(read(3, "pack.header").as_slice()).unwrap();
    wire.left_on.clear();
    let refused = SignedHeader::try_from(&wire).unwrap_err().to_string();
    assert!(refused.contains("left_on"), "{refused}");
}
