//! Unwrapping age's X25519 recipient stanzas (the file key of a pack sealed
//! to this key holder) with the public key derived once.
//!
//! `age::x25519::Identity` derives its own public key, an X25519 scalar
//! multiplication, for every stanza it tries: a seventh of a receiver's
//! CPU opening a small pack. This is the same unwrap, as the age
//! specification gives it (<https://c2sp.org/age#x25519-recipient-stanza>),
//! with age's own HKDF and AEAD primitives; only the public key is held.
//! The tests check it against `age::x25519::Identity` stanza for stanza.

use age::secrecy::ExposeSecret as _;
use age_core::format::{FILE_KEY_BYTES, FileKey, Stanza};
use age_core::primitives::{aead_decrypt, hkdf};
use base64::Engine as _;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroize as _;

/// The stanza tag and HKDF label of age's X25519 recipients.
const TAG: &str = "X25519";
const LABEL: &[u8] = b"age-encryption.org/v1/X25519";
/// An ephemeral share's length, and a wrapped file key's (key and tag).
const SHARE_BYTES: usize = 32;
const WRAPPED_BYTES: usize = FILE_KEY_BYTES + 16;

/// An X25519 secret key and its public key, derived once.
pub(super) struct Unwrapper {
    keys: Option<(StaticSecret, PublicKey)>,
    /// The same key as age holds it (the one copy the key holder keeps):
    /// it unwraps if the secret did not read back (it always does for a
    /// key age parsed).
    age: age::x25519::Identity,
}

impl Unwrapper {
    /// The unwrapper for `identity`'s key.
    pub(super) fn new(identity: age::x25519::Identity) -> Self {
        let mut text = identity.to_string().expose_secret().to_ascii_lowercase();
        let decoded = crate::bech32::decode(&text);
        text.zeroize();
        let keys = decoded.and_then(|(_, mut bytes)| {
            let key: Option<[u8; 32]> = bytes.as_slice().try_into().ok();
            bytes.zeroize();
            let secret = StaticSecret::from(key?);
            let public = PublicKey::from(&secret);
            Some((secret, public))
        });
        Self {
            keys,
            age: identity,
        }
    }

    /// The key as age holds it.
    pub(super) fn age(&self) -> &age::x25519::Identity {
        &self.age
    }
}

/// The 32-byte ephemeral share in a stanza's one argument: canonical
/// unpadded base64, exactly as age accepts it.
fn ephemeral_share(args: &[String]) -> Option<[u8; SHARE_BYTES]> {
    let [arg] = args else { return None };
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(arg)
        .ok()?;
    bytes.try_into().ok()
}

impl age::Identity for Unwrapper {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        if stanza.tag != TAG {
            return None;
        }
        let Some((secret, public)) = &self.keys else {
            return self.age.unwrap_stanza(stanza);
        };
        let (Some(share), Ok(wrapped)) = (
            ephemeral_share(&stanza.args),
            <[u8; WRAPPED_BYTES]>::try_from(stanza.body.as_slice()),
        ) else {
            return Some(Err(age::DecryptError::InvalidHeader));
        };
        let share = PublicKey::from(share);
        let shared = secret.diffie_hellman(&share);
        if !shared.was_contributory() {
            return Some(Err(age::DecryptError::InvalidHeader));
        }
        let mut salt = [0u8; 2 * SHARE_BYTES];
        salt[..SHARE_BYTES].copy_from_slice(share.as_bytes());
        salt[SHARE_BYTES..].copy_from_slice(public.as_bytes());
        let mut key = hkdf(&salt, LABEL, shared.as_bytes());
        // Not ours (another recipient's stanza) is not an error: the next
        // stanza is tried.
        let opened = aead_decrypt(&key, FILE_KEY_BYTES, &wrapped).ok();
        key.zeroize();
        opened.map(|mut plain| {
            Ok(FileKey::init_with_mut(|file_key| {
                file_key.copy_from_slice(&plain);
                plain.zeroize();
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::Identity as _;
    use age::Recipient as _;

    fn stanzas_for(recipient: &age::x25519::Recipient) -> (Vec<Stanza>, [u8; FILE_KEY_BYTES]) {
        let key = [7u8; FILE_KEY_BYTES];
        let file_key = FileKey::init_with_mut(|k| k.copy_from_slice(&key));
        let (stanzas, _) = recipient.wrap_file_key(&file_key).unwrap();
        (stanzas, key)
    }

    /// A stanza to change (age's has no `Clone`).
    fn copy(s: &Stanza) -> Stanza {
        Stanza {
            tag: s.tag.clone(),
            args: s.args.clone(),
            body: s.body.clone(),
        }
    }

    #[test]
    fn unwraps_what_age_wraps_and_refuses_what_age_refuses() {
        let ours = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let fast = Unwrapper::new(ours.clone());
        assert!(fast.keys.is_some());
        let (stanzas, key) = stanzas_for(&ours.to_public());
        let stanza = &stanzas[0];
        let got = fast.unwrap_stanza(stanza).unwrap().unwrap();
        assert_eq!(got.expose_secret(), &key);

        // Another key holder's stanza: not ours, as age says.
        let (theirs, _) = stanzas_for(&other.to_public());
        assert!(fast.unwrap_stanza(&theirs[0]).is_none());
        assert!(ours.unwrap_stanza(&theirs[0]).is_none());

        // Another tag is not for this identity at all.
        let mut scrypt = copy(stanza);
        scrypt.tag = "scrypt".into();
        assert!(fast.unwrap_stanza(&scrypt).is_none());

        // Malformed stanzas are invalid headers for both.
        let mut short = copy(stanza);
        short.body.pop();
        let mut padded = copy(stanza);
        padded.args[0].push('=');
        let mut two = copy(stanza);
        two.args.push("x".into());
        let mut zero = copy(stanza);
        zero.args[0] = base64::engine::general_purpose::STANDARD_NO_PAD.encode([0u8; 32]);
        for bad in [short, padded, two, zero] {
            assert!(matches!(
                fast.unwrap_stanza(&bad),
                Some(Err(age::DecryptError::InvalidHeader))
            ));
            assert!(matches!(
                ours.unwrap_stanza(&bad),
                Some(Err(age::DecryptError::InvalidHeader))
            ));
        }

        // A changed wrapped key does not open.
        let mut flipped = copy(stanza);
        flipped.body[0] ^= 1;
        assert!(fast.unwrap_stanza(&flipped).is_none());
    }
}
