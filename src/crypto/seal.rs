//! Sealing: frame the plaintext, encrypt it as one binary age file to the
//! destination's keys while hashing the ciphertext, then sign the header.

use std::io::{self, Read, Write};
use std::str::FromStr;

use super::{HashingWriter, Identity};
use crate::Laestab;
use crate::keys::{SchoolKey, recipients_for};
use crate::pack::contents::{self, ContentsError};
use crate::pack::{FORMAT_VERSION, Header, Kind, Manifest, PackError, PackId, SignedHeader};

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

/// Seals one pack into `out`, returning the signed header and the writer.
///
/// `recipients` are the destination's directory keys: the pack is sealed to
/// the ones [`recipients_for`] chooses for `draft.kind`. `open_attachment`
/// is called once per attachment, in manifest order, and must give the same
/// bytes the manifest describes (checked).
pub fn seal<W, R>(
    draft: &Draft,
    manifest: &Manifest,
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

    let mut writer = encryptor.wrap_output(HashingWriter::new(out))?;
    contents::write_manifest(&mut writer, manifest)?;
    for (i, meta) in manifest.attachments.iter().enumerate() {
        let mut source = open_attachment(i)?;
        contents::copy_attachment(&mut source, &mut writer, meta, i + 1).map_err(|e| match e {
            ContentsError::Truncated | ContentsError::AttachmentMismatch { .. } => {
                ContentsError::AttachmentChanged { index: i + 1 }
            }
            other => other,
        })?;
        contents::expect_end(&mut source)
            .map_err(|_| ContentsError::AttachmentChanged { index: i + 1 })?;
    }
    let (out, ciphertext_len, ciphertext_sha256) = writer.finish()?.finish()?;

    let header = Header {
        format_version: FORMAT_VERSION,
        pack_id: draft.pack_id,
        from: draft.from,
        to: draft.to,
        kind: draft.kind,
        created_at_ms: draft.created_at_ms,
        ciphertext_len,
        ciphertext_sha256,
        sender_key_id: signer.key_id(),
        recipient_key_ids: chosen.iter().map(|k| k.key_id()).collect(),
    };
    Ok((signer.sign_header(header)?, out))
}
