//! The trust's directory key and the statements signed about school keys.
//!
//! The daemon hands out each school's keys, so on its own it could hand out
//! a key of its choosing and read what is sealed to it. Two kinds of signed
//! statement stop that without trusting the daemon:
//!
//! - An **endorsement**: the trust's *directory key*, an Ed25519 key the
//!   operator keeps off the server (like an offline CA), signs a school's key
//!   with its school, label and roles once the operator has checked its
//!   fingerprint with the school (`batond admin key approve`). Clients pin
//!   the directory key's public half at `baton init` and refuse keys it has
//!   not endorsed.
//! - A **revocation**: signed by the key itself, by one of the school's DSL
//!   keys, or by the directory key, over the school, the key id and the
//!   revocation time. Clients follow a revocation they can verify; any other
//!   is a key change the user confirms.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::Laestab;
use crate::keys::{KeyId, SchoolKey, role_names};

/// Domain separation for endorsements. Signed bytes: do not change.
const ENDORSE_CONTEXT: &[u8] = b"baton-endorse-v1\n";
/// Domain separation for revocations. Signed bytes: do not change.
const REVOKE_CONTEXT: &[u8] = b"baton-revoke-v1\n";
/// Human-readable part of a directory key's public text form.
const PUBLIC_HRP: &str = "batondir";
/// Human-readable part of a directory key's secret text form.
const SECRET_HRP: &str = "batondir-secret-";

/// Problems with the directory key and signed statements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// Not a directory key (`batondir1…`).
    #[error("not a Baton directory key (expected batondir1…, 64 characters)")]
    PublicKey,
    /// Not a directory secret key file.
    #[error("not a Baton directory secret key (expected one line batondir-secret-1…)")]
    SecretKey,
    /// Not who revoked a key.
    #[error("revoked_by is \"directory\" or a key id")]
    RevokedBy,
    /// A signature is not 64 bytes.
    #[error("a signature is 64 bytes")]
    SignatureLength,
    /// The system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The public half of a trust's directory key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DirectoryKey(VerifyingKey);

/// The secret half, held by the operator off the server.
pub struct DirectorySigner(SigningKey);

/// Who signed a key's revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    /// The trust's directory key.
    Directory,
    /// A key of the same school (the key itself, or a DSL key).
    Key(KeyId),
}

/// A signed revocation, as stored and sent with the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// Who signed it.
    pub by: RevokedBy,
    /// Ed25519 signature over [`revocation_statement`].
    pub signature: [u8; 64],
}

/// The bytes the directory key signs to endorse `key` for `laestab`: the
/// school, the key's fingerprint, both public halves, its label and roles.
pub fn endorsement_statement(laestab: &Laestab, key: &SchoolKey) -> Vec<u8> {
    let mut out = ENDORSE_CONTEXT.to_vec();
    out.extend_from_slice(&laestab.to_bytes());
    out.extend_from_slice(&key.key_id().to_bytes());
    for field in [
        key.public.age_recipient().as_bytes(),
        &key.public.signing_key_bytes(),
        key.label.as_bytes(),
        role_names(&key.roles, ",").as_bytes(),
    ] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// The bytes signed to revoke key `key_id` of `laestab` at `revoked_at_ms`.
pub fn revocation_statement(laestab: &Laestab, key_id: KeyId, revoked_at_ms: i64) -> Vec<u8> {
    let mut out = REVOKE_CONTEXT.to_vec();
    out.extend_from_slice(&laestab.to_bytes());
    out.extend_from_slice(&key_id.to_bytes());
    out.extend_from_slice(&revoked_at_ms.to_be_bytes());
    out
}

/// A 64-byte signature from the wire or a row (`None` when empty).
pub fn signature_bytes(bytes: &[u8]) -> Result<Option<[u8; 64]>, TrustError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    bytes
        .try_into()
        .map(Some)
        .map_err(|_| TrustError::SignatureLength)
}

impl DirectoryKey {
    /// The key's fingerprint, grouped in fours, to read aloud.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        KeyId::from_bytes(digest[..16].try_into().unwrap_or([0; 16])).grouped()
    }

    /// True if `signature` is this key's endorsement of `key` for `laestab`.
    pub fn endorses(&self, laestab: &Laestab, key: &SchoolKey, signature: &[u8; 64]) -> bool {
        self.verifies(&endorsement_statement(laestab, key), signature)
    }

    /// True if `signature` is this key's signature over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.0
            .verify(message, &Signature::from_bytes(signature))
            .is_ok()
    }
}

impl fmt::Display for DirectoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::bech32::encode(PUBLIC_HRP, self.0.as_bytes()))
    }
}

impl fmt::Debug for DirectoryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DirectoryKey({self})")
    }
}

impl FromStr for DirectoryKey {
    type Err = TrustError;
    fn from_str(s: &str) -> Result<Self, TrustError> {
        let (hrp, data) = crate::bech32::decode(s.trim()).ok_or(TrustError::PublicKey)?;
        let bytes: [u8; 32] = data.try_into().map_err(|_| TrustError::PublicKey)?;
        if hrp != PUBLIC_HRP {
            return Err(TrustError::PublicKey);
        }
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| TrustError::PublicKey)?;
        if key.is_weak() {
            return Err(TrustError::PublicKey);
        }
        Ok(Self(key))
    }
}

impl DirectorySigner {
    /// A new random directory key.
    pub fn generate() -> Result<Self, TrustError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand_core::TryRngCore::try_fill_bytes(&mut rand_core::OsRng, &mut *seed)
            .map_err(|_| TrustError::Random)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The secret key as one line of text, for its file.
    pub fn to_secret_text(&self) -> Zeroizing<String> {
        Zeroizing::new(crate::bech32::encode(SECRET_HRP, &self.0.to_bytes()))
    }

    /// The secret key from its file's text.
    pub fn from_secret_text(text: &str) -> Result<Self, TrustError> {
        let (hrp, data) = crate::bech32::decode(text.trim()).ok_or(TrustError::SecretKey)?;
        let data = Zeroizing::new(data);
        let seed: [u8; 32] = data
            .as_slice()
            .try_into()
            .map_err(|_| TrustError::SecretKey)?;
        if hrp != SECRET_HRP {
            return Err(TrustError::SecretKey);
        }
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The public half, for clients to pin.
    pub fn public(&self) -> DirectoryKey {
        DirectoryKey(self.0.verifying_key())
    }

    /// Endorses `key` for `laestab`.
    pub fn endorse(&self, laestab: &Laestab, key: &SchoolKey) -> [u8; 64] {
        self.0.sign(&endorsement_statement(laestab, key)).to_bytes()
    }

    /// Signs the revocation of `key_id` of `laestab` at `revoked_at_ms`.
    pub fn revoke(&self, laestab: &Laestab, key_id: KeyId, revoked_at_ms: i64) -> [u8; 64] {
        self.0
            .sign(&revocation_statement(laestab, key_id, revoked_at_ms))
            .to_bytes()
    }
}

impl fmt::Display for RevokedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Directory => f.write_str("directory"),
            Self::Key(id) => write!(f, "{id}"),
        }
    }
}

impl FromStr for RevokedBy {
    type Err = TrustError;
    fn from_str(s: &str) -> Result<Self, TrustError> {
        if s == "directory" {
            return Ok(Self::Directory);
        }
        s.parse().map(Self::Key).map_err(|_| TrustError::RevokedBy)
    }
}

impl Revocation {
    /// From the wire or a row: both empty means no signature.
    pub fn from_parts(by: &str, signature: &[u8]) -> Result<Option<Self>, TrustError> {
        match (by.is_empty(), signature_bytes(signature)?) {
            (true, None) => Ok(None),
            (false, Some(signature)) => Ok(Some(Self {
                by: by.parse()?,
                signature,
            })),
            _ => Err(TrustError::RevokedBy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{PublicKey, Role};

    fn key(label: &str, roles: Vec<Role>) -> SchoolKey {
        let signing = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let recipient = crate::bech32::encode("age", &[9u8; 32]);
        SchoolKey {
            public: PublicKey::new(&recipient, signing.as_bytes()).unwrap(),
            label: label.into(),
            roles,
            created_at_ms: 1,
            revoked_at_ms: None,
            endorsement: None,
            revocation: None,
        }
    }

    #[test]
    fn endorsement_covers_school_label_and_roles() {
        let signer = DirectorySigner::generate().unwrap();
        let public = signer.public();
        let school: Laestab = "8612001".parse().unwrap();
        let other: Laestab = "8614001".parse().unwrap();
        let k = key("Office", vec![Role::Staff]);
        let sig = signer.endorse(&school, &k);
        assert!(public.endorses(&school, &k, &sig));
        assert!(!public.endorses(&other, &k, &sig));
        assert!(!public.endorses(&school, &key("DSL J. Smith", vec![Role::Staff]), &sig));
        assert!(!public.endorses(&school, &key("Office", vec![Role::Dsl, Role::Staff]), &sig));
        let stranger = DirectorySigner::generate().unwrap().public();
        assert!(!stranger.endorses(&school, &k, &sig));
    }

    #[test]
    fn keys_round_trip_as_text() {
        let signer = DirectorySigner::generate().unwrap();
        let text = signer.public().to_string();
        assert!(text.starts_with("batondir1"));
        assert_eq!(text.parse::<DirectoryKey>().unwrap(), signer.public());
        let secret = signer.to_secret_text();
        let back = DirectorySigner::from_secret_text(&secret).unwrap();
        assert_eq!(back.public(), signer.public());
        assert!(DirectorySigner::from_secret_text(&text).is_err());
        assert!(secret.parse::<DirectoryKey>().is_err());
        let mut typo = text.clone();
        typo.pop();
        typo.push(if text.ends_with('q') { 'p' } else { 'q' });
        assert_eq!(typo.parse::<DirectoryKey>(), Err(TrustError::PublicKey));
    }

    #[test]
    fn revocations_name_their_signer() {
        assert_eq!(Revocation::from_parts("", &[]).unwrap(), None);
        assert!(Revocation::from_parts("directory", &[]).is_err());
        assert!(Revocation::from_parts("", &[1; 64]).is_err());
        assert!(Revocation::from_parts("directory", &[1; 63]).is_err());
        let r = Revocation::from_parts("directory", &[1; 64])
            .unwrap()
            .unwrap();
        assert_eq!(r.by, RevokedBy::Directory);
        let id = "ab".repeat(16);
        let r = Revocation::from_parts(&id, &[1; 64]).unwrap().unwrap();
        assert_eq!(r.by.to_string(), id);
    }
}
