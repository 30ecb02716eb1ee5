//! The pack header: the only part of a pack the server reads, signed by the
//! sender over a canonical byte encoding.

use super::{Kind, PackError, PackId, put_bytes};
use crate::Laestab;
use crate::keys::{KeyId, PublicKey};

/// The pack format version this build writes. It reads every version in
/// [`VERSIONS`].
pub const FORMAT_VERSION: u32 = 4;

/// The plaintext framing of each pack format version this build reads
/// (the header's `format_version` says which one a pack uses):
///
/// - **1**: the manifest lists every attachment's SHA-256; each
///   attachment's bytes follow in order.
/// - **2** (written since): the manifest lists names, media types and sizes;
///   each attachment's bytes are followed by their SHA-256 (32 bytes). A
///   sender hashes each file once, while sealing it, instead of once to
///   write the manifest and again while sealing.
/// - **3** (written since): framed as 2; the header also carries the day the
///   pupil left the sending school (`left_on`), signed, from which the
///   statutory clock counts.
/// - **4** (written since): as 3; the header may also name the pack this
///   one corrects (`supersedes`), signed, so the receiver knows which pack
///   to set aside and the server cannot make or unmake the link; and a pack
///   the trust's escrow forwards carries the original's signed header and
///   age header (`forwarded`), so the receiver checks that the record is
///   the original sender's, byte for byte.
pub const VERSIONS: std::ops::RangeInclusive<u32> = 1..=4;

/// The first format version whose header carries the leaving date.
pub const LEFT_ON_SINCE: u32 = 3;

/// The first format version whose header may name a pack it supersedes.
pub const SUPERSEDES_SINCE: u32 = 4;

const _: () = assert!(*VERSIONS.end() == FORMAT_VERSION);

/// Domain separation for header signatures. Signed bytes: do not change.
const HEADER_CONTEXT: &[u8] = b"baton-pack-header-v1\n";

/// What the server may know about a pack: never who the pupil is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Pack format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The pack's id.
    pub pack_id: PackId,
    /// The sending school.
    pub from: Laestab,
    /// The destination school.
    pub to: Laestab,
    /// Transfer or safeguarding.
    pub kind: Kind,
    /// When the pack was sealed, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Length of the ciphertext in bytes.
    pub ciphertext_len: u64,
    /// SHA-256 of the ciphertext.
    pub ciphertext_sha256: [u8; 32],
    /// The sender's key that signs this header.
    pub sender_key_id: KeyId,
    /// The keys the pack is sealed to, sorted ascending.
    pub recipient_key_ids: Vec<KeyId>,
    /// The day the pupil left (ceased to be registered at) the sending
    /// school: present from format version [`LEFT_ON_SINCE`], absent before.
    pub left_on: Option<time::Date>,
    /// The pack this one corrects (same sender, destination, kind and
    /// pupil): from format version [`SUPERSEDES_SINCE`], `None` otherwise.
    pub supersedes: Option<PackId>,
    /// For a pack the escrow forwards: the original it forwards (from
    /// format version [`SUPERSEDES_SINCE`]).
    pub forwarded: Option<Forwarded>,
}

/// What a forwarding pack carries of the pack it forwards. The server sees
/// it: headers and an age header are not pupil data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The original pack's header, as its sender signed it.
    pub original: Box<SignedHeader>,
    /// The original age file's header (its recipient stanzas and MAC):
    /// followed by the forwarding pack's payload, it is the original
    /// ciphertext, whose length and SHA-256 the original header signs.
    pub original_age_header: Vec<u8>,
}

/// A header with the sender's Ed25519 signature over its canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeader {
    header: Header,
    signature: [u8; 64],
}

impl Header {
    /// For a pack that forwards another ([`Header::forwarded`]): whether it
    /// keeps the original's kind and leaving date, as a re-addressed pack
    /// must. True for a pack that forwards none.
    pub fn keeps_forwarded_original(&self) -> bool {
        self.forwarded.as_ref().is_none_or(|f| {
            let original = f.original.header();
            original.kind == self.kind
                && (original.left_on.is_none() || original.left_on == self.left_on)
        })
    }

    /// The canonical encoding that is signed. Signed bytes: the order and
    /// widths of the fields must never change within a format version.
    pub fn to_signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + 16 * self.recipient_key_ids.len());
        out.extend_from_slice(HEADER_CONTEXT);
        out.extend_from_slice(&self.format_version.to_be_bytes());
        out.extend_from_slice(&self.pack_id.to_bytes());
        out.extend_from_slice(&self.from.to_bytes());
        out.extend_from_slice(&self.to.to_bytes());
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.created_at_ms.to_be_bytes());
        out.extend_from_slice(&self.ciphertext_len.to_be_bytes());
        out.extend_from_slice(&self.ciphertext_sha256);
        out.extend_from_slice(&self.sender_key_id.to_bytes());
        let ids: Vec<u8> = self
            .recipient_key_ids
            .iter()
            .flat_map(|k| k.to_bytes())
            .collect();
        put_bytes(&mut out, &ids);
        // From version 3: the leaving date, as its Julian day number.
        if let Some(left) = self.left_on {
            out.extend_from_slice(&left.to_julian_day().to_be_bytes());
        }
        // From version 4: whether the pack supersedes another, and which;
        // whether it forwards another, and which (the original's signed
        // header and signature, and its age header, by their SHA-256).
        if self.format_version >= SUPERSEDES_SINCE {
            match self.supersedes {
                Some(id) => {
                    out.push(1);
                    out.extend_from_slice(&id.to_bytes());
                }
                None => out.push(0),
            }
            match &self.forwarded {
                Some(f) => {
                    out.push(1);
                    use sha2::Digest as _;
                    out.extend_from_slice(&sha2::Sha256::digest(
                        f.original.header().to_signed_bytes(),
                    ));
                    out.extend_from_slice(f.original.signature());
                    out.extend_from_slice(&sha2::Sha256::digest(&f.original_age_header));
                }
                None => out.push(0),
            }
        }
        out
    }
}

impl SignedHeader {
    /// Joins a header and a signature, checking only the format version; use
    /// [`SignedHeader::verify`] before trusting it.
    pub fn from_parts(header: Header, signature: [u8; 64]) -> Result<Self, PackError> {
        if !VERSIONS.contains(&header.format_version) {
            return Err(PackError::Version(header.format_version));
        }
        if (header.format_version >= LEFT_ON_SINCE) != header.left_on.is_some() {
            return Err(PackError::LeftOn(header.format_version));
        }
        if header.format_version < SUPERSEDES_SINCE
            && (header.supersedes.is_some() || header.forwarded.is_some())
        {
            return Err(PackError::Supersedes(header.format_version));
        }
        if header
            .forwarded
            .as_ref()
            .is_some_and(|f| f.original.header().forwarded.is_some())
        {
            return Err(PackError::ForwardedTwice);
        }
        if header.supersedes == Some(header.pack_id) {
            return Err(PackError::SupersedesItself);
        }
        Ok(Self { header, signature })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// Checks the signature against `key`, which must be the key the header
    /// names as its signer.
    pub fn verify(&self, key: &PublicKey) -> Result<(), PackError> {
        let (message, signature) = self.signed_by(key)?;
        key.verify(&message, signature)
            .map_err(|_| PackError::BadSignature)
    }

    /// What [`Self::verify`] checks once `key` is the key the header names
    /// as its signer: the bytes signed and the signature (for a caller
    /// that checks many signatures together).
    pub fn signed_by(&self, key: &PublicKey) -> Result<(Vec<u8>, &[u8; 64]), PackError> {
        let found = key.key_id();
        if found != self.header.sender_key_id {
            return Err(PackError::WrongSigner {
                expected: self.header.sender_key_id,
                found,
            });
        }
        Ok((self.header.to_signed_bytes(), &self.signature))
    }
}
