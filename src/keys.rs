//! Public keys as the directory knows them: key ids (fingerprints), roles,
//! Ed25519 signature checks, and which of a school's keys a pack is sealed to.
//!
//! This side needs no private key and no encryption code, so the daemon uses
//! it as it is; generating keys and sealing live in [`crate::crypto`].

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::api::convert::wire;
use crate::api::{WireError, v1};

/// Domain separation for key fingerprints. Signed bytes: do not change.
const KEY_ID_CONTEXT: &[u8] = b"baton-key-v1\n";

/// Domain separation for proofs of possession at enrolment. Do not change.
const ENROL_CONTEXT: &[u8] = b"baton-enrol-v1\n";

/// A key's fingerprint: the first 16 bytes of SHA-256 over the key's public
/// parts. Shown as 32 lowercase hex digits (grouped by four for reading
/// aloud when comparing out of band).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 16]);

/// What a key holder does at their school.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Designated safeguarding lead: receives safeguarding packs.
    Dsl,
    /// Special educational needs co-ordinator.
    Senco,
    /// Any other member of staff.
    Staff,
}

/// The public half of a school's key: where to encrypt to, and which
/// signatures to trust.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    age_recipient: String,
    signing_key: VerifyingKey,
}

/// One key in the directory, with what the directory says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchoolKey {
    /// The public key.
    pub public: PublicKey,
    /// The holder's label.
    pub label: String,
    /// The holder's roles.
    pub roles: Vec<Role>,
    /// When it was registered, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// When it was revoked, ms since the Unix epoch; `None` while active.
    pub revoked_at_ms: Option<i64>,
    /// The trust directory key's endorsement, once the operator approved it.
    pub endorsement: Option<[u8; 64]>,
    /// The signed revocation, if it was revoked with one.
    pub revocation: Option<crate::trust::Revocation>,
}

/// Problems with keys and signatures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not an age X25519 recipient (`age1…`).
    #[error("not an age X25519 recipient (expected age1…)")]
    Recipient,
    /// An age X25519 recipient that is a small-order point: its shared
    /// secret with any sender is zero, so anyone could open what is sealed
    /// to it.
    #[error(
        "an age X25519 recipient no one can hold the secret of (a small-order point: anyone could open what is sealed to it)"
    )]
    WeakRecipient,
    /// Not a 32-byte Ed25519 verifying key.
    #[error("not an Ed25519 public key (expected 32 bytes)")]
    SigningKey,
    /// Not 32 hex digits.
    #[error("a key id has 32 hex digits")]
    KeyId,
    /// Not a known role.
    #[error("unknown role {0:?} (expected dsl, senco or staff)")]
    Role(String),
    /// A signature did not verify.
    #[error("signature does not verify")]
    BadSignature,
}

impl KeyId {
    /// The 16 bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// From 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id grouped in fours (`1a2b 3c4d …`), for reading aloud.
    pub fn grouped(&self) -> String {
        let hex = self.to_string();
        hex.as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = hex::decode(compact.to_ascii_lowercase()).map_err(|_| KeyError::KeyId)?;
        let bytes: [u8; 16] = bytes.try_into().map_err(|_| KeyError::KeyId)?;
        Ok(Self(bytes))
    }
}

/// Role names joined by `sep` (`dsl,staff`), as stored, audited and shown.
pub fn role_names(roles: &[Role], sep: &str) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(sep)
}

impl Role {
    /// The role's name on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dsl => "dsl",
            Self::Senco => "senco",
            Self::Staff => "staff",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "dsl" => Ok(Self::Dsl),
            "senco" => Ok(Self::Senco),
            "staff" => Ok(Self::Staff),
            _ => Err(KeyError::Role(s.to_string())),
        }
    }
}

/// The X25519 points of small order (dividing 8), as u-coordinates with
/// bit 255 cleared (X25519 ignores it): the list libsodium refuses. No
/// other encoding has small order: the order-8 points' u plus p does not
/// fit in 255 bits.
const SMALL_ORDER: [&str; 7] = [
    // 0 (order 4) and 1 (order 1)
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    // the two of order 8
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    // p − 1 (order 2), then p and p + 1 (0 and 1, not canonical)
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

/// Whether the X25519 point `u` has small order (any multiple of it is one
/// of at most eight points, so every shared secret with it is known).
fn small_order(mut u: [u8; 32]) -> bool {
    u[31] &= 0x7f;
    SMALL_ORDER.contains(&hex::encode(u).as_str())
}

impl PublicKey {
    /// Builds a public key from its two parts, checking their shape.
    pub fn new(age_recipient: &str, signing_key: &[u8]) -> Result<Self, KeyError> {
        let age_recipient = age_recipient.trim();
        // An X25519 recipient: `age1` and 32 bytes whose Bech32 checksum
        // holds (a mistyped or altered one is refused, not registered).
        let point: [u8; 32] = match crate::bech32::decode(age_recipient) {
            Some((hrp, data)) if age_recipient.len() == 62 && hrp == "age" => {
                data.try_into().map_err(|_| KeyError::Recipient)?
            }
            _ => return Err(KeyError::Recipient),
        };
        // A small-order point makes every sender's shared secret zero, so
        // the file key it wraps is anyone's: never a key.
        if small_order(point) {
            return Err(KeyError::WeakRecipient);
        }
        let bytes: [u8; 32] = signing_key.try_into().map_err(|_| KeyError::SigningKey)?;
        let signing_key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::SigningKey)?;
        // A small-order point verifies forged signatures: never a key.
        if signing_key.is_weak() {
            return Err(KeyError::SigningKey);
        }
        Ok(Self {
            age_recipient: age_recipient.to_string(),
            signing_key,
        })
    }

    /// From an age recipient and an Ed25519 verifying key.
    pub fn from_parts(age_recipient: String, signing_key: VerifyingKey) -> Self {
        Self {
            age_recipient,
            signing_key,
        }
    }

    /// The age X25519 recipient, `age1…`.
    pub fn age_recipient(&self) -> &str {
        &self.age_recipient
    }

    /// The Ed25519 verifying key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.signing_key
    }

    /// The Ed25519 verifying key bytes.
    pub fn signing_key_bytes(&self) -> [u8; 32] {
        self.signing_key.to_bytes()
    }

    /// The key's fingerprint.
    pub fn key_id(&self) -> KeyId {
        let mut h = Sha256::new();
        h.update(KEY_ID_CONTEXT);
        h.update(self.age_recipient.as_bytes());
        h.update(b"\n");
        h.update(self.signing_key.as_bytes());
        let digest = h.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        KeyId(id)
    }

    /// Checks an Ed25519 signature by this key over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let signature = Signature::from_slice(signature).map_err(|_| KeyError::BadSignature)?;
        self.signing_key
            .verify(message, &signature)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl SchoolKey {
    /// The key's fingerprint.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// True while the key is not revoked.
    pub fn is_active(&self) -> bool {
        self.revoked_at_ms.is_none()
    }
}

/// The bytes a new key signs to prove possession when it is registered for
/// `laestab`.
pub fn enrol_statement(laestab: &crate::Laestab, key_id: KeyId) -> Vec<u8> {
    let mut out = ENROL_CONTEXT.to_vec();
    out.extend_from_slice(&laestab.to_bytes());
    out.extend_from_slice(&key_id.to_bytes());
    out
}

/// Parses a key id field.
pub fn parse_key_id(field: &'static str, text: &str) -> Result<KeyId, WireError> {
    text.parse().map_err(|e| wire(field, e))
}

impl From<Role> for v1::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::Dsl => Self::Dsl,
            Role::Senco => Self::Senco,
            Role::Staff => Self::Staff,
        }
    }
}

/// Parses a `Role` enum value.
pub fn role(field: &'static str, value: i32) -> Result<Role, WireError> {
    match v1::Role::try_from(value) {
        Ok(v1::Role::Dsl) => Ok(Role::Dsl),
        Ok(v1::Role::Senco) => Ok(Role::Senco),
        Ok(v1::Role::Staff) => Ok(Role::Staff),
        _ => Err(wire(field, "must be ROLE_DSL, ROLE_SENCO or ROLE_STAFF")),
    }
}

impl From<&SchoolKey> for v1::Key {
    fn from(key: &SchoolKey) -> Self {
        Self {
            key_id: key.key_id().to_string(),
            age_recipient: key.public.age_recipient().to_string(),
            signing_key: key.public.signing_key_bytes().to_vec(),
            label: key.label.clone(),
            roles: key
                .roles
                .iter()
                .map(|r| v1::Role::from(*r) as i32)
                .collect(),
            created_at_ms: key.created_at_ms,
            revoked_at_ms: key.revoked_at_ms.unwrap_or(0),
            endorsement: key.endorsement.map(|e| e.to_vec()).unwrap_or_default(),
            revoked_by: key.revocation.map(|r| r.by.to_string()).unwrap_or_default(),
            revocation_signature: key
                .revocation
                .map(|r| r.signature.to_vec())
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<&v1::Key> for SchoolKey {
    type Error = WireError;
    fn try_from(key: &v1::Key) -> Result<Self, WireError> {
        Self::from_wire(key, true)
    }
}

impl SchoolKey {
    /// A key from the wire, checked field by field. With `roles_required`
    /// false a key naming no roles is accepted with none (an enrolment,
    /// where the code gives them); everywhere else a key needs one.
    pub fn from_wire(key: &v1::Key, roles_required: bool) -> Result<Self, WireError> {
        let public = PublicKey::new(&key.age_recipient, &key.signing_key).map_err(|e| match e {
            KeyError::Recipient | KeyError::WeakRecipient => wire("key.age_recipient", e),
            _ => wire("key.signing_key", e),
        })?;
        if !key.key_id.is_empty() && parse_key_id("key.key_id", &key.key_id)? != public.key_id() {
            return Err(wire("key.key_id", "does not match the key's fingerprint"));
        }
        let mut roles = key
            .roles
            .iter()
            .map(|r| role("key.roles", *r))
            .collect::<Result<Vec<_>, _>>()?;
        roles.sort();
        roles.dedup();
        if roles.is_empty() && roles_required {
            return Err(wire("key.roles", "a key needs at least one role"));
        }
        if key.label.chars().count() > 200 || key.label.chars().any(char::is_control) {
            return Err(wire(
                "key.label",
                "at most 200 characters, no control characters",
            ));
        }
        let endorsement = crate::trust::signature_bytes(&key.endorsement)
            .map_err(|e| wire("key.endorsement", e))?;
        let revocation =
            crate::trust::Revocation::from_parts(&key.revoked_by, &key.revocation_signature)
                .map_err(|e| wire("key.revocation_signature", e))?;
        Ok(Self {
            public,
            label: key.label.clone(),
            roles,
            created_at_ms: key.created_at_ms,
            revoked_at_ms: (key.revoked_at_ms != 0).then_some(key.revoked_at_ms),
            endorsement,
            revocation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_text_round_trip() {
        let id = KeyId([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<KeyId>().unwrap(), id);
        assert_eq!(id.grouped().parse::<KeyId>().unwrap(), id);
        assert_eq!("abc".parse::<KeyId>(), Err(KeyError::KeyId));
    }

    #[test]
    fn roles_parse() {
        assert_eq!("DSL".parse::<Role>().unwrap(), Role::Dsl);
        assert_eq!("senco".parse::<Role>().unwrap(), Role::Senco);
        assert!("head".parse::<Role>().is_err());
    }

    #[test]
    fn public_key_shape_is_checked() {
        let ed = [7u8; 32];
        assert_eq!(PublicKey::new("age1nope", &ed), Err(KeyError::Recipient));
        let recipient = crate::bech32::encode("age", &[9u8; 32]);
        assert_eq!(
            PublicKey::new(&recipient, &[1, 2, 3]),
            Err(KeyError::SigningKey)
        );
        let bad_checksum = format!("{}q", &recipient[..61]);
        assert_ne!(bad_checksum, recipient);
        assert_eq!(PublicKey::new(&bad_checksum, &ed), Err(KeyError::Recipient));
        let signing = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
        assert!(PublicKey::new(&recipient, signing.as_bytes()).is_ok());
        // The identity point (small order) is refused.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::new(&recipient, &identity),
            Err(KeyError::SigningKey)
        );
    }

    #[test]
    #[cfg(feature = "client")]
    fn a_small_order_x25519_recipient_is_refused() {
        let ed = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
        // Each listed point, and each with bit 255 set (ignored by X25519).
        let listed = SMALL_ORDER.iter().map(|h| hex::decode(h).unwrap());
        let high = listed.clone().map(|mut u| {
            u[31] |= 0x80;
            u
        });
        for bytes in listed.chain(high) {
            let h = hex::encode(&bytes);
            let recipient = crate::bech32::encode("age", &bytes);
            assert_eq!(recipient.len(), 62);
            assert_eq!(
                PublicKey::new(&recipient, ed.as_bytes()),
                Err(KeyError::WeakRecipient),
                "{h}"
            );
        }
        // A real recipient, as age makes one, is taken.
        let real = age::x25519::Identity::generate().to_public().to_string();
        assert!(PublicKey::new(&real, ed.as_bytes()).is_ok());
        // Each listed point really has small order: a clamped scalar (a
        // multiple of 8) takes it to the identity, which X25519 gives as
        // all zeros; a real key's is not.
        let probe = x25519_dalek::StaticSecret::from([0x5a; 32]);
        for h in SMALL_ORDER {
            let u: [u8; 32] = hex::decode(h).unwrap().try_into().unwrap();
            let shared = probe.diffie_hellman(&x25519_dalek::PublicKey::from(u));
            assert!(!shared.was_contributory(), "{h}");
        }
        let (_, real) = crate::bech32::decode(&real).unwrap();
        let real: [u8; 32] = real.try_into().unwrap();
        assert!(
            probe
                .diffie_hellman(&x25519_dalek::PublicKey::from(real))
                .was_contributory()
        );
        // And on the wire the field is named.
        let weak = crate::bech32::encode("age", &[0u8; 32]);
        let key = v1::Key {
            age_recipient: weak,
            signing_key: ed.as_bytes().to_vec(),
            ..Default::default()
        };
        let e = SchoolKey::from_wire(&key, false).unwrap_err();
        assert!(e.to_string().contains("key.age_recipient"), "{e}");
        assert!(e.to_string().contains("small-order"), "{e}");
    }
}
