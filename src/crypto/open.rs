//! Opening: check the header's signature against the sender's pinned keys,
//! decrypt, and stream each attachment into a [`Sink`] while checking sizes,
//! hashes, and the ciphertext's own length and SHA-256.
//!
//! Until [`open`] returns `Ok`, whatever the sink received is unverified:
//! the caller writes into a staging area and publishes only on success.

use std::io::{self, Read, Write};

use super::{HashingReader, Identity};
use crate::keys::PublicKey;
use crate::pack::contents::{ContentsError, ContentsReader};
use crate::pack::{AttachmentMeta, Manifest, PackError, SignedHeader};

/// Where opened attachments go.
pub trait Sink {
    /// A writer for the attachment at `index` (0-based, manifest order).
    /// `meta.sha256` is not known yet in format version 2 (all zeros): the
    /// manifest [`open`] returns has every attachment's checked SHA-256.
    fn create(&mut self, index: usize, meta: &AttachmentMeta) -> io::Result<Box<dyn Write + '_>>;
}

/// A sink that keeps attachments in memory (small packs and tests).
#[derive(Debug, Default)]
pub struct MemorySink {
    /// The attachments' bytes, in manifest order.
    pub files: Vec<Vec<u8>>,
}

impl Sink for MemorySink {
    fn create(&mut self, index: usize, _meta: &AttachmentMeta) -> io::Result<Box<dyn Write + '_>> {
        self.files.resize_with(index + 1, Vec::new);
        Ok(Box::new(&mut self.files[index]))
    }
}

/// Why a pack could not be opened. Decryption failures and damage are one
/// variant on purpose: the reason would tell an attacker which byte to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The header names a signing key that is not among the sender's pinned keys.
    #[error("the pack is signed by key {0}, which is not a pinned key of the sending school")]
    UnknownSigner(crate::keys::KeyId),
    /// The header's signature does not verify: it was altered after signing.
    #[error("the pack header's signature does not verify: the header was altered")]
    BadSignature,
    /// None of our keys is a recipient of the pack.
    #[error("none of your keys can open this pack (it was sealed to other keys)")]
    NotForUs,
    /// The ciphertext or the plaintext inside it is damaged or was altered.
    #[error("the pack is damaged or was altered: {0}")]
    Damaged(String),
    /// Writing an attachment to the sink failed.
    #[error("writing the opened pack failed: {0}")]
    Io(io::Error),
}

/// Opens a sealed pack.
///
/// `sender_keys` are the keys pinned for `header.from` (all of them: a key
/// revoked after signing still verifies what it signed before).
pub fn open<R: Read>(
    header: &SignedHeader,
    sender_keys: &[PublicKey],
    identity: &Identity,
    ciphertext: R,
    sink: &mut dyn Sink,
) -> Result<Manifest, OpenError> {
    let h = header.header();
    let signer = sender_keys
        .iter()
        .find(|k| k.key_id() == h.sender_key_id)
        .ok_or(OpenError::UnknownSigner(h.sender_key_id))?;
    header.verify(signer).map_err(|e| match e {
        PackError::BadSignature => OpenError::BadSignature,
        _ => OpenError::UnknownSigner(h.sender_key_id),
    })?;

    // Read at most one byte past the declared length, so a longer
    // ciphertext is caught without reading it all.
    let mut hashed = HashingReader::new(ciphertext.take(h.ciphertext_len.saturating_add(1)));
    let manifest = decrypt_into(&mut hashed, h.format_version, identity, sink)?;
    io::copy(&mut hashed, &mut io::sink()).map_err(damaged)?;
    let (len, sha) = hashed.finish().map_err(damaged)?;
    if len != h.ciphertext_len || sha != h.ciphertext_sha256 {
        return Err(OpenError::Damaged(
            "the ciphertext does not match its signed length and SHA-256".into(),
        ));
    }
    Ok(manifest)
}

/// What the age header is read through: a header with a few stanzas fits.
const HEADER_READ_AHEAD: usize = 8 * 1024;

fn decrypt_into(
    input: &mut impl Read,
    version: u32,
    identity: &Identity,
    sink: &mut dyn Sink,
) -> Result<Manifest, OpenError> {
    // Buffered, so age parses its header a line at a time: unbuffered, it
    // reads what the parser asks for next and parses the header again from
    // its start each time (a quarter of opening a small pack; half with
    // three recipients). Whatever the buffer reads ahead has gone through
    // the hashing reader already.
    let buffered = io::BufReader::with_capacity(HEADER_READ_AHEAD, input);
    let decryptor = age::Decryptor::new_buffered(buffered).map_err(age_error)?;
    let plain = decryptor
        .decrypt(std::iter::once(
            identity.age_identity() as &dyn age::Identity
        ))
        .map_err(age_error)?;
    let mut contents = ContentsReader::new(plain, version).map_err(contents_error)?;
    while let Some(i) = contents.next_index() {
        let meta = contents.manifest().attachments[i].clone();
        let mut out = sink.create(i, &meta).map_err(OpenError::Io)?;
        contents.copy_next(&mut out).map_err(contents_error)?;
        out.flush().map_err(OpenError::Io)?;
    }
    contents.finish().map_err(contents_error)
}

fn age_error(e: age::DecryptError) -> OpenError {
    match e {
        age::DecryptError::NoMatchingKeys => OpenError::NotForUs,
        other => OpenError::Damaged(other.to_string()),
    }
}

fn contents_error(e: ContentsError) -> OpenError {
    // Reads from the age stream fail with I/O errors when a chunk does not
    // authenticate: that is damage, not a local I/O problem.
    OpenError::Damaged(e.to_string())
}

fn damaged(e: io::Error) -> OpenError {
    OpenError::Damaged(e.to_string())
}
