//! Forwarding a sealed pack to other keys without changing a byte of what
//! its sender sealed: the trust's escrow unwraps the age file key with its
//! own identity and wraps it again for the destination's keys, writing a
//! new age header in front of the original payload ([`rewrap`]). The
//! receiver opens the result like any age file, and, holding the original
//! age header (it travels in the forwarding header), rebuilds the original
//! ciphertext and checks it against the original sender's signed header
//! ([`check_forwarded`]): the escrow can re-address a record, not alter it.
//!
//! The age header is written here (stanzas, then `---` and its HMAC, as the
//! age format specifies); the reference `age` CLI reads what this writes
//! (tested in `tests/it/age_interop.rs`).

use std::cell::Cell;
use std::io::Read;
use std::str::FromStr;

use age::secrecy::ExposeSecret as _;
use base64::Engine as _;
use hmac::Mac as _;
use sha2::Digest as _;

use super::Identity;
use crate::keys::SchoolKey;
use crate::pack::Forwarded;

/// The first line of every age file.
const AGE_INTRO: &[u8] = b"age-encryption.org/v1\n";

/// The longest age header this reads (recipient stanzas of a few dozen keys
/// take a few kilobytes).
pub const MAX_AGE_HEADER: usize = 64 * 1024;

/// Why a pack could not be forwarded, or a forwarded pack does not check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The age header is malformed or longer than [`MAX_AGE_HEADER`].
    #[error("the pack's age header is malformed")]
    Header,
    /// None of this identity's keys can unwrap the file key, or the header's
    /// MAC does not verify.
    #[error("this key cannot open the pack")]
    NotForUs,
    /// A destination key is not a usable age recipient.
    #[error("key {0} is not a valid age recipient")]
    Recipient(crate::keys::KeyId),
    /// The rebuilt original ciphertext is not the one its sender signed.
    #[error(
        "the forwarded pack is not the original sender's: its payload with the original age header does not match the original's signed length and SHA-256"
    )]
    NotTheOriginal,
}

/// The length of the age header at the start of `file` (through the MAC
/// line): where the payload starts.
pub fn header_len(file: &[u8]) -> Result<usize, ForwardError> {
    if !file.starts_with(AGE_INTRO) {
        return Err(ForwardError::Header);
    }
    let window = &file[..file.len().min(MAX_AGE_HEADER)];
    let mac_line = window
        .windows(5)
        .position(|w| w == b"\n--- ")
        .ok_or(ForwardError::Header)?
        + 1;
    let end = window[mac_line..]
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(ForwardError::Header)?;
    Ok(mac_line + end + 1)
}

/// An age identity that remembers the file key it unwraps.
struct Capture<'a> {
    inner: &'a super::x25519::Unwrapper,
    file_key: Cell<Option<[u8; 16]>>,
}

impl age::Identity for Capture<'_> {
    fn unwrap_stanza(
        &self,
        stanza: &age_core::format::Stanza,
    ) -> Option<Result<age_core::format::FileKey, age::DecryptError>> {
        let unwrapped = self.inner.unwrap_stanza(stanza);
        if let Some(Ok(key)) = &unwrapped {
            self.file_key.set(Some(*key.expose_secret()));
        }
        unwrapped
    }
}

/// Appends one stanza as the age format writes it: `-> TAG ARGS…`, then
/// the body in unpadded base64 wrapped at 64 columns, ending with a line
/// shorter than 64 (empty if need be).
fn put_stanza(out: &mut Vec<u8>, stanza: &age_core::format::Stanza) {
    out.extend_from_slice(b"-> ");
    out.extend_from_slice(stanza.tag.as_bytes());
    for arg in &stanza.args {
        out.push(b' ');
        out.extend_from_slice(arg.as_bytes());
    }
    out.push(b'\n');
    let body = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&stanza.body);
    let mut lines = body.as_bytes().chunks(64).peekable();
    let mut last_full = body.is_empty();
    while let Some(line) = lines.next() {
        out.extend_from_slice(line);
        out.push(b'\n');
        last_full = lines.peek().is_none() && line.len() == 64;
    }
    if last_full {
        out.push(b'\n');
    }
}

/// The new age header for an age file that starts with `head` (its header
/// and at least the 16-byte payload nonce): the file key, unwrapped with
/// `identity`, wrapped for each of `recipients`. Followed by the original
/// payload, it is an age file those recipients open to the same plaintext.
pub fn rewrap(
    head: &[u8],
    identity: &Identity,
    recipients: &[&SchoolKey],
) -> Result<Vec<u8>, ForwardError> {
    let capture = Capture {
        inner: identity.age_identity(),
        file_key: Cell::new(None),
    };
    // Parses the header, unwraps the file key and checks the header's MAC.
    let decryptor = age::Decryptor::new(head).map_err(|_| ForwardError::Header)?;
    decryptor
        .decrypt(std::iter::once(&capture as &dyn age::Identity))
        .map_err(|_| ForwardError::NotForUs)?;
    let file_key = capture.file_key.get().ok_or(ForwardError::NotForUs)?;
    let mut out = AGE_INTRO.to_vec();
    for key in recipients {
        let recipient = age::x25519::Recipient::from_str(key.public.age_recipient())
            .map_err(|_| ForwardError::Recipient(key.key_id()))?;
        let (stanzas, _) = age::Recipient::wrap_file_key(
            &recipient,
            &age_core::format::FileKey::new(Box::new(file_key)),
        )
        .map_err(|_| ForwardError::Recipient(key.key_id()))?;
        for stanza in &stanzas {
            put_stanza(&mut out, stanza);
        }
    }
    out.extend_from_slice(b"---");
    let mac_key = age_core::primitives::hkdf(&[], b"header", &file_key);
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&mac_key).map_err(|_| ForwardError::Header)?;
    mac.update(&out);
    let tag = mac.finalize().into_bytes();
    out.push(b' ');
    out.extend_from_slice(
        base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(tag)
            .as_bytes(),
    );
    out.push(b'\n');
    Ok(out)
}

/// Checks that a forwarded age file (`file`, read from its start) carries
/// the original sender's payload unchanged: the original age header
/// followed by `file`'s payload has the length and SHA-256 the original's
/// signed header states. (The original header's signature is checked by
/// the caller, against the sender's pinned keys.)
pub fn check_forwarded(forwarded: &Forwarded, mut file: impl Read) -> Result<(), ForwardError> {
    let mut head = vec![0u8; MAX_AGE_HEADER];
    let mut filled = 0;
    while filled < head.len() {
        let n = file
            .read(&mut head[filled..])
            .map_err(|_| ForwardError::Header)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    let skip = header_len(&head)?;
    let mut hasher = sha2::Sha256::new();
    hasher.update(&forwarded.original_age_header);
    hasher.update(&head[skip..]);
    let mut len = (forwarded.original_age_header.len() + head.len() - skip) as u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|_| ForwardError::Header)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    let original = forwarded.original.header();
    if len != original.ciphertext_len
        || <[u8; 32]>::from(hasher.finalize()) != original.ciphertext_sha256
    {
        return Err(ForwardError::NotTheOriginal);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Laestab;
    use crate::crypto::{Draft, seal};
    use crate::keys::Role;
    use crate::pack::{AttachmentMeta, Kind, Manifest, PackId};

    fn school_key(id: &Identity) -> SchoolKey {
        SchoolKey {
            public: id.public(),
            roles: vec![Role::Staff, Role::Dsl],
            label: "office".into(),
            created_at_ms: 0,
            revoked_at_ms: None,
            endorsement: None,
            revocation: None,
        }
    }

    fn plaintext(file: &[u8], identity: &Identity) -> Vec<u8> {
        let mut out = Vec::new();
        age::Decryptor::new(file)
            .unwrap()
            .decrypt(std::iter::once(
                identity.age_identity() as &dyn age::Identity
            ))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_rewrapped_pack_opens_to_the_same_bytes_and_checks_against_the_original() {
        let (sender, escrow, school, stranger) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let attachment = vec![7u8; 200_000];
        let mut manifest = Manifest {
            record: crate::record::tests::valid_record(),
            ctf_pupil_xml: None,
            attachments: vec![
                AttachmentMeta::describe("profile.pdf", &mut attachment.as_slice()).unwrap(),
            ],
        };
        let draft = Draft {
            pack_id: PackId::new(),
            from: Laestab::parse("8612001").unwrap(),
            to: Laestab::ESCROW,
            kind: Kind::Transfer,
            created_at_ms: 1,
            left_on: None,
            supersedes: None,
        };
        let (original, file) = seal(
            &draft,
            &mut manifest,
            |_| Ok(attachment.as_slice()),
            &[school_key(&escrow)],
            &sender,
            Vec::new(),
        )
        .unwrap();
        let split = header_len(&file).unwrap();
        assert!(rewrap(&file[..split + 16], &stranger, &[&school_key(&school)]).is_err());
        let new_header = rewrap(&file[..split + 16], &escrow, &[&school_key(&school)]).unwrap();
        let mut forwarded_file = new_header.clone();
        forwarded_file.extend_from_slice(&file[split..]);
        // The school opens it, to exactly what the sender sealed; the escrow
        // no longer can.
        assert_eq!(
            plaintext(&forwarded_file, &school),
            plaintext(&file, &escrow)
        );
        assert!(
            age::Decryptor::new(forwarded_file.as_slice())
                .unwrap()
                .decrypt(std::iter::once(escrow.age_identity() as &dyn age::Identity))
                .is_err()
        );
        let forwarded = Forwarded {
            original: Box::new(original),
            original_age_header: file[..split].to_vec(),
        };
        check_forwarded(&forwarded, forwarded_file.as_slice()).unwrap();
        let mut altered = forwarded_file.clone();
        let last = altered.len() - 10;
        altered[last] ^= 1;
        assert!(matches!(
            check_forwarded(&forwarded, altered.as_slice()),
            Err(ForwardError::NotTheOriginal)
        ));
        assert!(matches!(header_len(b"not age"), Err(ForwardError::Header)));
    }
}
