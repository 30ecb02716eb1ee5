//! The pack format: what the server sees (a signed [`Header`], and later a
//! signed [`Receipt`]) and how the plaintext inside the age ciphertext is
//! framed ([`contents`]). Pure: no files, no network, no clock.
//!
//! A *sealed* pack is a [`SignedHeader`] plus its ciphertext; an *open* pack
//! is a [`Manifest`] plus the attachments' bytes. The two never share a type,
//! and the daemon only ever handles the sealed one.

#[cfg(feature = "records")]
pub mod contents;
mod header;
mod recall;
mod receipt;
mod wire;

use std::fmt;
use std::str::FromStr;

use crate::keys::{Role, SchoolKey};

#[cfg(feature = "records")]
pub use contents::{AttachmentMeta, Manifest};
pub use header::{
    FORMAT_VERSION, Forwarded, Header, LEFT_ON_SINCE, SUPERSEDES_SINCE, SignedHeader, VERSIONS,
};
pub use recall::{Recall, SignedRecall};
pub use receipt::{Receipt, SignedReceipt};

/// A pack id: a UUIDv7 chosen by the sending client, so ids sort by time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackId(uuid::Uuid);

/// What a pack carries, which decides the keys it is sealed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The educational record: sealed to every active key of the destination.
    Transfer,
    /// The child-protection file: sealed only to the destination's DSL keys.
    Safeguarding,
}

/// Problems with pack headers, receipts and ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// Not a hyphenated UUIDv7.
    #[error("a pack id is a UUIDv7 (xxxxxxxx-xxxx-7xxx-xxxx-xxxxxxxxxxxx)")]
    Id,
    /// Unknown kind name.
    #[error("unknown pack kind {0:?} (expected transfer or safeguarding)")]
    Kind(String),
    /// A format version this build does not know.
    #[error(
        "pack format version {0} is not supported (this build reads versions 1 to {FORMAT_VERSION}): upgrade Baton"
    )]
    Version(u32),
    /// A header of format version 3 or later without its leaving date, or
    /// an earlier one with one.
    #[error("a format version {0} header must {must} the pupil's leaving date (`left_on`)", must = if *.0 >= LEFT_ON_SINCE { "carry" } else { "not carry" })]
    LeftOn(u32),
    /// A header before format version 4 naming a pack it supersedes or
    /// forwards.
    #[error(
        "a format version {0} header cannot name a pack it supersedes or forwards (from version 4)"
    )]
    Supersedes(u32),
    /// A forwarding pack whose original is itself a forwarding pack.
    #[error("a forwarded pack cannot be forwarded again")]
    ForwardedTwice,
    /// A recall's reason is not acceptable.
    #[error("the recall's reason {0}")]
    Reason(&'static str),
    /// A header naming its own pack as the one it supersedes.
    #[error("a pack cannot supersede itself")]
    SupersedesItself,
    /// The key that signed is not the key the header names.
    #[error("signed by key {found}, but the header names key {expected}")]
    WrongSigner {
        /// The key id in the header.
        expected: crate::keys::KeyId,
        /// The key id of the key offered for checking.
        found: crate::keys::KeyId,
    },
    /// The signature does not verify.
    #[error("the signature does not verify: the header was altered or not signed by this key")]
    BadSignature,
}

impl PackId {
    /// A fresh UUIDv7 pack id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// From the 16 bytes of a UUIDv7.
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, PackError> {
        let id = uuid::Uuid::from_bytes(bytes);
        if id.get_version_num() != 7 {
            return Err(PackError::Id);
        }
        Ok(Self(id))
    }

    /// The 16 bytes, as signed.
    pub fn to_bytes(self) -> [u8; 16] {
        *self.0.as_bytes()
    }
}

impl Default for PackId {
    fn default() -> Self {
        Self::new()
    }
}

impl FromStr for PackId {
    type Err = PackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id = uuid::Uuid::parse_str(s.trim()).map_err(|_| PackError::Id)?;
        Self::from_bytes(*id.as_bytes())
    }
}

impl fmt::Display for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

impl fmt::Debug for PackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PackId({self})")
    }
}

impl Kind {
    /// The kind's name on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transfer => "transfer",
            Self::Safeguarding => "safeguarding",
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Self::Transfer => 1,
            Self::Safeguarding => 2,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = PackError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "transfer" => Ok(Self::Transfer),
            "safeguarding" => Ok(Self::Safeguarding),
            _ => Err(PackError::Kind(s.to_string())),
        }
    }
}

/// Appends `bytes` with a big-endian u32 length prefix.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths here are bounded by the types (ids, hashes); u32 always fits.
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The keys of a destination school that a pack of `kind` is sealed to:
/// every active key for a transfer pack, only active `dsl` keys for a
/// safeguarding pack. Sorted by key id, without duplicates.
pub fn recipients_for(kind: Kind, keys: &[SchoolKey]) -> Vec<&SchoolKey> {
    let mut chosen: Vec<&SchoolKey> = keys
        .iter()
        .filter(|k| k.is_active())
        .filter(|k| kind != Kind::Safeguarding || k.roles.contains(&Role::Dsl))
        .collect();
    chosen.sort_by_key(|k| k.key_id());
    chosen.dedup_by_key(|k| k.key_id());
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_ids_are_v7_and_round_trip() {
        let id = PackId::new();
        let text = id.to_string();
        assert_eq!(text.as_bytes()[14], b'7');
        assert_eq!(text.parse::<PackId>().unwrap(), id);
        assert_eq!(PackId::from_bytes(id.to_bytes()).unwrap(), id);
        // A UUIDv4 is not a pack id.
        assert_eq!(
            "3f2b8c4e-1d2a-4b6c-9e8f-0a1b2c3d4e5f".parse::<PackId>(),
            Err(PackError::Id)
        );
        assert_eq!("nope".parse::<PackId>(), Err(PackError::Id));
    }

    #[test]
    fn kinds_parse() {
        assert_eq!("Safeguarding".parse::<Kind>().unwrap(), Kind::Safeguarding);
        assert_eq!(Kind::Transfer.to_string(), "transfer");
        assert!("cp".parse::<Kind>().is_err());
    }
}
