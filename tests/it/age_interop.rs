//! Interoperability with the reference `age` CLI: it decrypts what Baton
//! seals with a Baton identity file, and Baton opens what it encrypts to a
//! Baton recipient. Needs `age` on the PATH (Debian package `age`); the test
//! fails, rather than skips, without it.

use crate::common::sealing;

use std::process::{Command, Stdio};

use age::secrecy::ExposeSecret as _;
use baton::crypto::{self, Identity, MemorySink};
use baton::keys::Role;
use baton::pack::contents::{ContentsReader, ContentsWriter};
use baton::pack::{FORMAT_VERSION, Header, Kind};
use sealing::{draft, manifest, school_key, seal};
use sha2::{Digest, Sha256};

fn age_cli() -> Command {
    let probe = Command::new("age").arg("--version").output();
    assert!(
        probe.is_ok_and(|o| o.status.success()),
        "the reference age CLI is needed for this test: apt-get install age"
    );
    Command::new("age")
}

#[test]
fn reference_cli_decrypts_a_sealed_pack_with_a_baton_identity_file() {
    let dir = tempfile::tempdir().unwrap();
    let sender = Identity::generate();
    let to = Identity::generate();
    let identity_file = dir.path().join("identity.txt");
    std::fs::write(&identity_file, to.to_file_text("now").expose_secret()).unwrap();
    let files = vec![
        ("profile.pdf".to_string(), vec![0x25u8; 300_000]),
        ("note.txt".to_string(), b"hi".to_vec()),
    ];
    let m = manifest(&files, Some("<Pupil/>"));
    let (_, ciphertext) = seal(
        &draft(Kind::Transfer),
        &m,
        &files,
        &[school_key(&to, &[Role::Staff])],
        &sender,
    );
    let pack = dir.path().join("pack.age");
    std::fs::write(&pack, &ciphertext).unwrap();

    let out = age_cli()
        .arg("-d")
        .arg("-i")
        .arg(&identity_file)
        .arg(&pack)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut plain = ContentsReader::new(out.stdout.as_slice(), FORMAT_VERSION).unwrap();
    for (_, bytes) in &files {
        let mut got = Vec::new();
        plain.copy_next(&mut got).unwrap();
        assert_eq!(&got, bytes);
    }
    assert!(plain.finish().unwrap() == m);
}

#[test]
fn baton_opens_what_the_reference_cli_encrypts_to_a_baton_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let sender = Identity::generate();
    let to = Identity::generate();
    let files = vec![("plan.txt".to_string(), b"SEN support plan".to_vec())];
    let m = manifest(&files, None);
    let mut framed = ContentsWriter::new(Vec::new(), &m, FORMAT_VERSION).unwrap();
    framed.attachment(&mut files[0].1.as_slice()).unwrap();
    let (framed, _) = framed.finish().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, &framed).unwrap();
    let sealed = dir.path().join("sealed.age");

    let status = age_cli()
        .arg("-r")
        .arg(to.public().age_recipient())
        .arg("-o")
        .arg(&sealed)
        .arg(&plain)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let ciphertext = std::fs::read(&sealed).unwrap();

    let d = draft(Kind::Transfer);
    let header = Header {
        format_version: FORMAT_VERSION,
        pack_id: d.pack_id,
        from: d.from,
        to: d.to,
        kind: d.kind,
        created_at_ms: d.created_at_ms,
        ciphertext_len: ciphertext.len() as u64,
        ciphertext_sha256: Sha256::digest(&ciphertext).into(),
        sender_key_id: sender.key_id(),
        recipient_key_ids: vec![to.key_id()],
        left_on: Some(time::macros::date!(2026 - 07 - 22)),
        supersedes: None,
        forwarded: None,
    };
    let signed = sender.sign_header(header).unwrap();
    let mut sink = MemorySink::default();
    let opened = crypto::open(
        &signed,
        &[sender.public()],
        &to,
        ciphertext.as_slice(),
        &mut sink,
    )
    .unwrap();
    assert!(opened == m);
    assert_eq!(sink.files, vec![files[0].1.clone()]);
}

#[test]
fn reference_cli_decrypts_the_frozen_vectors() {
    for version in [1, 2] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/vectors/v{version}"));
        let out = age_cli()
            .arg("-d")
            .arg("-i")
            .arg(dir.join("identity.txt"))
            .arg(dir.join("pack.age"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut read = ContentsReader::new(out.stdout.as_slice(), version).unwrap();
        assert_eq!(read.manifest().attachments.len(), 2);
        for _ in 0..2 {
            read.copy_next(&mut std::io::sink()).unwrap();
        }
        read.finish().unwrap();
        let bad = age_cli()
            .arg("-d")
            .arg("-i")
            .arg(dir.join("identity.txt"))
            .arg(dir.join("fail_flipped_payload.age"))
            .output()
            .unwrap();
        assert!(!bad.status.success(), "age accepted a flipped byte");
    }
}

/// Issue 19: a pack the escrow re-wraps for a school (a new age header
/// written by Baton, the payload untouched) is a standard age file: the
/// reference CLI decrypts it with the school's identity to exactly what the
/// original decrypts to with the escrow's, for one recipient or several.
#[test]
fn reference_cli_decrypts_a_rewrapped_pack() {
    let dir = tempfile::tempdir().unwrap();
    let (sender, escrow) = (Identity::generate(), Identity::generate());
    let schools = [
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    ];
    let files = vec![("profile.pdf".to_string(), vec![0x33u8; 150_000])];
    let m = manifest(&files, None);
    let (_, original) = seal(
        &draft(Kind::Transfer),
        &m,
        &files,
        &[school_key(&escrow, &[Role::Staff])],
        &sender,
    );
    let decrypt = |identity: &Identity, file: &[u8], name: &str| {
        let id_file = dir.path().join(format!("{name}.txt"));
        std::fs::write(&id_file, identity.to_file_text("now").expose_secret()).unwrap();
        let pack = dir.path().join(format!("{name}.age"));
        std::fs::write(&pack, file).unwrap();
        let out = age_cli()
            .arg("-d")
            .arg("-i")
            .arg(&id_file)
            .arg(&pack)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "age -d {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let expected = decrypt(&escrow, &original, "original");
    let keys: Vec<_> = schools
        .iter()
        .map(|s| school_key(s, &[Role::Staff]))
        .collect();
    for n in 1..=keys.len() {
        let chosen: Vec<_> = keys[..n].iter().collect();
        let split = crypto::forward::header_len(&original).unwrap();
        let mut forwarded =
            crypto::forward::rewrap(&original[..split + 16], &escrow, &chosen).unwrap();
        forwarded.extend_from_slice(&original[split..]);
        for (i, school) in schools[..n].iter().enumerate() {
            assert_eq!(
                decrypt(school, &forwarded, &format!("fwd{n}-{i}")),
                expected
            );
        }
    }
}
