//! Sealing and opening packs with real age encryption and Ed25519
//! signatures: round trips to 1, 3 and 10 recipients, empty attachments,
//! safeguarding packs sealed to DSL keys only, and every refusal.

use crate::common::sealing;

use baton::crypto::{self, Identity, MemorySink, OpenError, SealError};
use baton::keys::{Role, SchoolKey};
use baton::pack::{Kind, Manifest};
use proptest::prelude::*;
use sealing::{draft, manifest, school_key, seal};

fn open(
    header: &baton::pack::SignedHeader,
    sender: &Identity,
    me: &Identity,
    ciphertext: &[u8],
) -> Result<(Manifest, Vec<Vec<u8>>), OpenError> {
    let mut sink = MemorySink::default();
    let manifest = crypto::open(header, &[sender.public()], me, ciphertext, &mut sink)?;
    Ok((manifest, sink.files))
}

#[test]
fn every_recipient_opens_for_1_3_and_10_keys() {
    let sender = Identity::generate();
    for n in [1usize, 3, 10] {
        let ids: Vec<Identity> = (0..n).map(|_| Identity::generate()).collect();
        let keys: Vec<SchoolKey> = ids.iter().map(|i| school_key(i, &[Role::Staff])).collect();
        let files = vec![
            ("profile.pdf".to_string(), vec![1u8; 5000]),
            ("empty-note.txt".to_string(), Vec::new()),
        ];
        let m = manifest(
            &files,
            Some("<Pupil>\n  <UPN>H801200001001</UPN>\n</Pupil>"),
        );
        let d = draft(Kind::Transfer);
        let (header, ciphertext) = seal(&d, &m, &files, &keys, &sender);
        assert_eq!(header.header().recipient_key_ids.len(), n);
        assert_eq!(header.header().ciphertext_len, ciphertext.len() as u64);
        for id in &ids {
            let (opened, bytes) = open(&header, &sender, id, &ciphertext).unwrap();
            assert!(opened == m);
            assert_eq!(bytes, vec![files[0].1.clone(), Vec::new()]);
        }
        let stranger = Identity::generate();
        assert!(matches!(
            open(&header, &sender, &stranger, &ciphertext),
            Err(OpenError::NotForUs)
        ));
    }
}

#[test]
fn safeguarding_packs_are_sealed_to_dsl_keys_only() {
    let sender = Identity::generate();
    let dsl = Identity::generate();
    let staff = Identity::generate();
    let keys = vec![
        school_key(&dsl, &[Role::Dsl, Role::Staff]),
        school_key(&staff, &[Role::Staff]),
    ];
    let files = vec![("cp-file.pdf".to_string(), b"chronology".to_vec())];
    let m = manifest(&files, None);
    let (header, ciphertext) = seal(&draft(Kind::Safeguarding), &m, &files, &keys, &sender);
    assert_eq!(header.header().recipient_key_ids, vec![dsl.key_id()]);
    assert!(open(&header, &sender, &dsl, &ciphertext).is_ok());
    assert!(matches!(
        open(&header, &sender, &staff, &ciphertext),
        Err(OpenError::NotForUs)
    ));

    let no_dsl = vec![school_key(&staff, &[Role::Staff, Role::Senco])];
    let err = crypto::seal(
        &draft(Kind::Safeguarding),
        &mut m.clone(),
        |i| Ok(files[i].1.as_slice()),
        &no_dsl,
        &sender,
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, SealError::NoRecipients(Kind::Safeguarding)));
    assert!(err.to_string().contains("role dsl"), "{err}");
}

#[test]
fn revoked_keys_are_not_recipients() {
    let sender = Identity::generate();
    let active = Identity::generate();
    let revoked = Identity::generate();
    let mut gone = school_key(&revoked, &[Role::Staff]);
    gone.revoked_at_ms = Some(1);
    let keys = vec![school_key(&active, &[Role::Staff]), gone];
    let m = manifest(&[], None);
    let (header, ciphertext) = seal(&draft(Kind::Transfer), &m, &[], &keys, &sender);
    assert_eq!(header.header().recipient_key_ids, vec![active.key_id()]);
    assert!(matches!(
        open(&header, &sender, &revoked, &ciphertext),
        Err(OpenError::NotForUs)
    ));
}

#[test]
fn an_attachment_that_changes_size_while_sealing_is_refused() {
    let sender = Identity::generate();
    let to = Identity::generate();
    let keys = vec![school_key(&to, &[Role::Staff])];
    let files = vec![("a.pdf".to_string(), vec![9u8; 1000])];
    let m = manifest(&files, None);
    for changed in [vec![9u8; 1001], vec![9u8; 999]] {
        let err = crypto::seal(
            &draft(Kind::Transfer),
            &mut m.clone(),
            |_| Ok(changed.as_slice()),
            &keys,
            &sender,
            Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("attachment 1 changed"), "{err}");
    }
    // Bytes are read once, as they are sealed: the manifest carries the
    // hash of what was sealed, and the pack opens to exactly that.
    let other = vec![("a.pdf".to_string(), vec![8u8; 1000])];
    let mut sealed = m.clone();
    let (header, ciphertext) = crypto::seal(
        &draft(Kind::Transfer),
        &mut sealed,
        |_| Ok(other[0].1.as_slice()),
        &keys,
        &sender,
        Vec::new(),
    )
    .unwrap();
    assert!(sealed == manifest(&other, None));
    let (opened, bytes) = open(&header, &sender, &to, &ciphertext).unwrap();
    assert!(opened == sealed);
    assert_eq!(bytes, vec![other[0].1.clone()]);
}

#[test]
fn signer_must_be_pinned_and_signature_must_verify() {
    let sender = Identity::generate();
    let impostor = Identity::generate();
    let to = Identity::generate();
    let keys = vec![school_key(&to, &[Role::Staff])];
    let m = manifest(&[], None);
    let (header, ciphertext) = seal(&draft(Kind::Transfer), &m, &[], &keys, &impostor);
    // Pinned keys of the sending school do not include the impostor.
    assert!(matches!(
        open(&header, &sender, &to, &ciphertext),
        Err(OpenError::UnknownSigner(_))
    ));
}

#[test]
fn receipts_verify_against_the_recipient_key_only() {
    let to = Identity::generate();
    let other = Identity::generate();
    let receipt = baton::pack::Receipt {
        pack_id: baton::pack::PackId::new(),
        ciphertext_sha256: [3; 32],
        received_at_ms: 1_784_000_100_000,
        recipient_key_id: to.key_id(),
    };
    let signed = to.sign_receipt(receipt.clone()).unwrap();
    signed.verify(&to.public()).unwrap();
    assert!(signed.verify(&other.public()).is_err());
    let mut altered = receipt;
    altered.received_at_ms += 1;
    let forged = baton::pack::SignedReceipt::from_parts(altered, *signed.signature());
    assert!(forged.verify(&to.public()).is_err());
    assert!(other.sign_receipt(signed.receipt().clone()).is_err());
}

fn file_strategy() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..70_000), 0..4).prop_map(
        |blobs| {
            blobs
                .into_iter()
                .enumerate()
                .map(|(i, b)| (format!("attachment {i}.bin"), b))
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn seal_open_round_trip(
        files in file_strategy(),
        notes in ".{0,400}",
        ctf in proptest::option::of("[ -~]{0,300}"),
        recipients in 1usize..4,
        safeguarding in any::<bool>(),
    ) {
        let sender = Identity::generate();
        let ids: Vec<Identity> = (0..recipients).map(|_| Identity::generate()).collect();
        let keys: Vec<SchoolKey> = ids.iter().map(|i| school_key(i, &[Role::Dsl])).collect();
        let mut m = manifest(&files, ctf.as_deref());
        m.record.notes = notes;
        let kind = if safeguarding { Kind::Safeguarding } else { Kind::Transfer };
        let (header, ciphertext) = seal(&draft(kind), &m, &files, &keys, &sender);
        let last = &ids[recipients - 1];
        let (opened, bytes) = open(&header, &sender, last, &ciphertext).unwrap();
        prop_assert!(opened == m);
        let expected: Vec<Vec<u8>> = files.iter().map(|(_, b)| b.clone()).collect();
        prop_assert_eq!(bytes, expected);
    }
}
