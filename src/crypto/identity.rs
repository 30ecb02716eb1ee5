//! One key holder's secret key: an age X25519 identity, and the Ed25519
//! signing key derived from it. Stored as a standard age identity file so
//! the reference `age` CLI can decrypt packs with it.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};
use ed25519_dalek::{Signer as _, SigningKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::x25519::Unwrapper;
use crate::keys::{KeyId, PublicKey};
use crate::pack::{Header, PackError, Recall, Receipt, SignedHeader, SignedRecall, SignedReceipt};

/// Domain separation for deriving the signing key. Do not change: it would
/// change every key holder's signing key.
const SIGNING_CONTEXT: &[u8] = b"baton-signing-key-from-age-v1\n";

const ARMOR_BEGIN: &str = "-----BEGIN AGE ENCRYPTED FILE-----";

/// A key holder's secrets. Never `Display`ed; `Debug` shows the key id only.
pub struct Identity {
    signing: SigningKey,
    /// The public half, derived once: deriving it (an X25519 scalar
    /// multiplication) on every `key_id()` cost a tenth of opening a pack.
    public: PublicKey,
    /// Its key id, hashed once.
    key_id: KeyId,
    /// The age identity, as packs are opened with it (its public key
    /// derived once, not for every stanza).
    unwrapper: Unwrapper,
}

/// Problems reading or protecting an identity file. Messages never contain
/// key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No `AGE-SECRET-KEY-1…` line, or it does not decode.
    #[error("not an age identity file (no valid AGE-SECRET-KEY-1… line)")]
    NotIdentity,
    /// More than one secret key in one file.
    #[error("the identity file holds more than one key; Baton expects exactly one")]
    SeveralKeys,
    /// The file is passphrase-protected and no passphrase was given.
    #[error("the identity file is passphrase-protected: a passphrase is needed")]
    NeedsPassphrase,
    /// The passphrase does not open the file.
    #[error("the passphrase does not open the identity file")]
    WrongPassphrase,
    /// Encryption or I/O failed while protecting the file.
    #[error("could not write the protected identity file: {0}")]
    Protect(String),
}

impl Identity {
    /// Generates a new key.
    pub fn generate() -> Self {
        Self::from_age(age::x25519::Identity::generate())
    }

    fn from_age(age: age::x25519::Identity) -> Self {
        let secret = age.to_string();
        let mut seed: [u8; 32] = Sha256::new()
            .chain_update(SIGNING_CONTEXT)
            .chain_update(secret.expose_secret().as_bytes())
            .finalize()
            .into();
        let signing = SigningKey::from_bytes(&seed);
        seed.zeroize();
        let public = PublicKey::from_parts(age.to_public().to_string(), signing.verifying_key());
        let key_id = public.key_id();
        Self {
            unwrapper: Unwrapper::new(age),
            signing,
            public,
            key_id,
        }
    }

    /// Reads an identity file: plain (`AGE-SECRET-KEY-1…` with `#` comments)
    /// or passphrase-protected (armored or binary age file).
    pub fn from_file_bytes(
        bytes: &[u8],
        passphrase: Option<&SecretString>,
    ) -> Result<Self, IdentityError> {
        let protected =
            bytes.starts_with(ARMOR_BEGIN.as_bytes()) || bytes.starts_with(b"age-encryption.org/");
        if !protected {
            let text = std::str::from_utf8(bytes).map_err(|_| IdentityError::NotIdentity)?;
            return Self::from_identity_text(text);
        }
        let passphrase = passphrase.ok_or(IdentityError::NeedsPassphrase)?;
        let reader = age::armor::ArmoredReader::new(bytes);
        let decryptor = age::Decryptor::new(reader).map_err(|_| IdentityError::NotIdentity)?;
        let mut scrypt = age::scrypt::Identity::new(passphrase.clone());
        scrypt.set_max_work_factor(30);
        let mut plain = decryptor
            .decrypt(std::iter::once(&scrypt as &dyn age::Identity))
            .map_err(|_| IdentityError::WrongPassphrase)?;
        let mut text = String::new();
        plain
            .read_to_string(&mut text)
            .map_err(|_| IdentityError::WrongPassphrase)?;
        let identity = Self::from_identity_text(&text);
        text.zeroize();
        identity
    }

    fn from_identity_text(text: &str) -> Result<Self, IdentityError> {
        let mut keys = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("AGE-SECRET-KEY-1"));
        let line = keys.next().ok_or(IdentityError::NotIdentity)?;
        if keys.next().is_some() {
            return Err(IdentityError::SeveralKeys);
        }
        let age = age::x25519::Identity::from_str(line).map_err(|_| IdentityError::NotIdentity)?;
        Ok(Self::from_age(age))
    }

    /// The standard age identity file text, with the public key and key id
    /// as comments. Secret: write it with mode 0600.
    pub fn to_file_text(&self, created: &str) -> SecretString {
        let public = self.public();
        SecretString::from(format!(
            "# Baton key {}\n# created: {created}\n# public key: {}\n{}\n",
            public.key_id(),
            public.age_recipient(),
            self.unwrapper.age().to_string().expose_secret()
        ))
    }

    /// The identity file encrypted with a passphrase (armored age, scrypt),
    /// which `age -d` also opens. `work_factor` is scrypt's log2(N); `None`
    /// uses age's default (about one second).
    pub fn to_protected_file(
        &self,
        created: &str,
        passphrase: &SecretString,
        work_factor: Option<u8>,
    ) -> Result<Vec<u8>, IdentityError> {
        let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
        if let Some(n) = work_factor {
            recipient.set_work_factor(n);
        }
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(|e| IdentityError::Protect(e.to_string()))?;
        let protect = || -> std::io::Result<Vec<u8>> {
            let armor =
                age::armor::ArmoredWriter::wrap_output(Vec::new(), age::armor::Format::AsciiArmor)?;
            let mut writer = encryptor.wrap_output(armor)?;
            writer.write_all(self.to_file_text(created).expose_secret().as_bytes())?;
            writer.finish()?.finish()
        };
        protect().map_err(|e| IdentityError::Protect(e.to_string()))
    }

    /// The public half, as published in the directory.
    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Signs arbitrary bytes (enrolment proofs).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Signs a header. The header must name this key as its sender.
    pub fn sign_header(&self, header: Header) -> Result<SignedHeader, PackError> {
        let found = self.key_id();
        if header.sender_key_id != found {
            return Err(PackError::WrongSigner {
                expected: header.sender_key_id,
                found,
            });
        }
        let signature = self.sign(&header.to_signed_bytes());
        SignedHeader::from_parts(header, signature)
    }

    /// Signs a receipt. The receipt must name this key.
    pub fn sign_receipt(&self, receipt: Receipt) -> Result<SignedReceipt, PackError> {
        let found = self.key_id();
        if receipt.recipient_key_id != found {
            return Err(PackError::WrongSigner {
                expected: receipt.recipient_key_id,
                found,
            });
        }
        let signature = self.sign(&receipt.to_signed_bytes());
        Ok(SignedReceipt::from_parts(receipt, signature))
    }

    /// Signs a recall. The recall must name this key.
    pub fn sign_recall(&self, recall: Recall) -> Result<SignedRecall, PackError> {
        let found = self.key_id();
        if recall.signer_key_id != found {
            return Err(PackError::WrongSigner {
                expected: recall.signer_key_id,
                found,
            });
        }
        let signature = self.sign(&recall.to_signed_bytes());
        SignedRecall::from_parts(recall, signature)
    }

    /// The age identity that opens packs sealed to this key.
    pub(super) fn age_identity(&self) -> &Unwrapper {
        &self.unwrapper
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_round_trips_and_derives_the_same_signing_key() {
        let id = Identity::generate();
        let text = id.to_file_text("2026-07-01T00:00:00Z");
        assert!(text.expose_secret().contains("AGE-SECRET-KEY-1"));
        let back = Identity::from_file_bytes(text.expose_secret().as_bytes(), None).unwrap();
        assert_eq!(back.public(), id.public());
        assert_eq!(back.sign(b"x"), id.sign(b"x"));
        assert!(!format!("{id:?}").contains("AGE-SECRET"));
    }

    #[test]
    fn protected_identity_needs_the_passphrase() {
        let id = Identity::generate();
        let pass = SecretString::from("correct horse battery staple".to_string());
        let bytes = id.to_protected_file("now", &pass, Some(2)).unwrap();
        assert!(bytes.starts_with(ARMOR_BEGIN.as_bytes()));
        assert!(matches!(
            Identity::from_file_bytes(&bytes, None),
            Err(IdentityError::NeedsPassphrase)
        ));
        let wrong = SecretString::from("wrong".to_string());
        assert!(matches!(
            Identity::from_file_bytes(&bytes, Some(&wrong)),
            Err(IdentityError::WrongPassphrase)
        ));
        let back = Identity::from_file_bytes(&bytes, Some(&pass)).unwrap();
        assert_eq!(back.key_id(), id.key_id());
    }

    #[test]
    fn malformed_identity_files_are_refused() {
        assert!(matches!(
            Identity::from_file_bytes(b"# nothing\n", None),
            Err(IdentityError::NotIdentity)
        ));
        assert!(matches!(
            Identity::from_file_bytes(b"AGE-SECRET-KEY-1NOTBECH32\n", None),
            Err(IdentityError::NotIdentity)
        ));
        let a = Identity::generate().to_file_text("");
        let b = Identity::generate().to_file_text("");
        let both = format!("{}{}", a.expose_secret(), b.expose_secret());
        assert!(matches!(
            Identity::from_file_bytes(both.as_bytes(), None),
            Err(IdentityError::SeveralKeys)
        ));
    }
}
