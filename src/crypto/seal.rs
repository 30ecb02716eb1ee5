//! Sealing: frame the plaintext, encrypt it as one binary age file to the
//! destination's keys while hashing the ciphertext, then sign the header.

use std::io::{self, Read, Write};
use std::str::FromStr;

use super::{HashingWriter, Identity};
use crate::Laestab;
use crate::keys::SchoolKey;
use crate::pack::contents::{ContentsError, ContentsWriter};
use crate::pack::{
    FORMAT_VERSION, Header, Kind, LEFT_ON_SINCE, Manifest, PackError, PackId, SignedHeader,
    recipients_for,
};

/// Everything about a pack except its contents and its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The pack id (reuse it when retrying the same pack).
    pub pack_id: PackId,
    /// The sending school.
    pub from: Laestab,
    /// The destination school.
    pub to: Laestab,
    /// Transfer or safeguarding.
    pub kind: Kind,
    /// When sealed, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// The day the pupil left the sending school (`None`: the day it is
    /// sealed). Signed into the header from format version 3.
    pub left_on: Option<time::Date>,
    /// The pack this one corrects (`baton send --supersedes`), signed into
    /// the header from format version 4.
    pub supersedes: Option<PackId>,
}

/// Why a pack could not be sealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The destination has no key this kind of pack may be sealed to.
    #[error("the destination has no active key{} to seal to", if *.0 == Kind::Safeguarding { " with role dsl" } else { "" })]
    NoRecipients(Kind),
    /// A directory key is not a usable age recipient.
    #[error("key {0} in the directory is not a valid age recipient")]
    Recipient(crate::keys::KeyId),
    /// The manifest or an attachment is not acceptable.
    #[error(transparent)]
    Contents(#[from] ContentsError),
    /// Writing the ciphertext failed.
    #[error("writing the sealed pack failed: {0}")]
    Io(#[from] io::Error),
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] PackError),
}

/// Seals one pack into `out` in format [`FORMAT_VERSION`], returning the
/// signed header and the writer.
///
/// `recipients` are the destination's directory keys: the pack is sealed to
/// the ones [`recipients_for`] chooses for `draft.kind`. `open_attachment`
/// is called once per attachment, in manifest order, and must give exactly
/// the size the manifest lists (checked). Each attachment is read and hashed
/// once, as it is sealed: on return `manifest` carries the SHA-256 of the
/// bytes sealed (whatever it held before is not read).
pub fn seal<W, R>(
    draft: &Draft,
    manifest: &mut Manifest,
    open_attachment: impl FnMut(usize) -> io::Result<R>,
    recipients: &[SchoolKey],
    signer: &Identity,
    out: W,
) -> Result<(SignedHeader, W), SealError>
where
    W: Write,
    R: Read,
{
    seal_version(
        FORMAT_VERSION,
        draft,
        manifest,
        open_attachment,
        recipients,
        signer,
        out,
    )
}

/// [`seal`] in any format version this build reads (tests of older
/// versions). Version 1 checks the attachments against the SHA-256 the
/// manifest lists.
pub(crate) fn seal_version<W, R>(
    version: u32,
    draft: &Draft,
    manifest: &mut Manifest,
    mut open_attachment: impl FnMut(usize) -> io::Result<R>,
    recipients: &[SchoolKey],
    signer: &Identity,
    out: W,
) -> Result<(SignedHeader, W), SealError>
where
    W: Write,
    R: Read,
{
    let chosen = recipients_for(draft.kind, recipients);
    if chosen.is_empty() {
        return Err(SealError::NoRecipients(draft.kind));
    }
    let age_recipients = chosen
        .iter()
        .map(|k| {
            age::x25519::Recipient::from_str(k.public.age_recipient())
                .map_err(|_| SealError::Recipient(k.key_id()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let encryptor =
        age::Encryptor::with_recipients(age_recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| SealError::Io(io::Error::other(e.to_string())))?;

    let encrypted = encryptor.wrap_output(HashingWriter::new(out))?;
    let mut plain = ContentsWriter::new(encrypted, manifest, version)?;
    for i in 0..manifest.attachments.len() {
        plain.attachment(&mut open_attachment(i)?)?;
    }
    let (encrypted, hashed) = plain.finish()?;
    let (out, ciphertext_len, ciphertext_sha256) = encrypted.finish()?.finish()?;
    manifest.attachments = hashed;

    let header = Header {
        format_version: version,
        pack_id: draft.pack_id,
        from: draft.from,
        to: draft.to,
        kind: draft.kind,
        created_at_ms: draft.created_at_ms,
        ciphertext_len,
        ciphertext_sha256,
        sender_key_id: signer.key_id(),
        recipient_key_ids: chosen.iter().map(|k| k.key_id()).collect(),
        // From version 3 the header says when the pupil left: the draft's
        // date, or the day it was sealed.
        left_on: (version >= LEFT_ON_SINCE).then(|| {
            draft.left_on.unwrap_or_else(|| {
                time::OffsetDateTime::from_unix_timestamp(draft.created_at_ms.div_euclid(1000))
                    .map_or(time::Date::MIN, time::OffsetDateTime::date)
            })
        }),
        supersedes: draft.supersedes,
        forwarded: None,
    };
    Ok((signer.sign_header(header)?, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{MemorySink, open};
    use crate::keys::Role;
    use crate::pack::AttachmentMeta;

    fn school_key(id: &Identity) -> SchoolKey {
        SchoolKey {
            public: id.public(),
            roles: vec![Role::Staff],
            label: "office".into(),
            created_at_ms: 0,
            revoked_at_ms: None,
            endorsement: None,
            revocation: None,
        }
    }

    #[test]
    fn every_version_this_build_reads_opens_what_it_seals() {
        let sender = Identity::generate();
        let to = Identity::generate();
        let files = [b"profile".to_vec(), vec![3u8; 100_000]];
        let described = Manifest {
            record: crate::record::tests::valid_record(),
            ctf_pupil_xml: None,
            attachments: files
                .iter()
                .enumerate()
                .map(|(i, f)| AttachmentMeta::describe(&format!("f{i}.pdf"), &mut f.as_slice()))
                .collect::<Result<_, _>>()
                .unwrap(),
        };
        let draft = Draft {
            pack_id: PackId::new(),
            from: Laestab::parse("8612001").unwrap(),
            to: Laestab::parse("8614001").unwrap(),
            kind: Kind::Transfer,
            created_at_ms: 1,
            left_on: None,
            supersedes: None,
        };
        for version in crate::pack::contents::VERSIONS {
            let mut manifest = described.clone();
            let (header, ciphertext) = seal_version(
                version,
                &draft,
                &mut manifest,
                |i| Ok(files[i].as_slice()),
                &[school_key(&to)],
                &sender,
                Vec::new(),
            )
            .unwrap();
            assert_eq!(header.header().format_version, version);
            let mut sink = MemorySink::default();
            let opened = open(
                &header,
                &[sender.public()],
                &to,
                ciphertext.as_slice(),
                &mut sink,
            )
            .unwrap();
            assert!(opened == described, "version {version}");
            assert_eq!(sink.files, files, "version {version}");
        }
    }
}
