//! A peer descriptor: what one trust's operator hands another so their
//! daemons can peer. It names the daemon (`name`), where its federation
//! listener is (`url`), its federation CA certificate (each side pins the
//! other's CA, by SHA-256, and accepts only the certificates it signs), the
//! daemon's Ed25519 key (the trust's audit key, which will sign relay
//! receipts) and how long the descriptor is good for, all signed by that
//! key.
//!
//! The signature proves the descriptor was made by the holder of the key
//! and not altered since; it does not prove whose key it is. That comes
//! from the operators: each reads the other's fingerprints aloud (phone,
//! video call) before `peer add`, as the data-sharing agreement says.

use anyhow::{Context as _, bail};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::store::Peer;

/// The descriptor format this daemon writes and reads.
pub const VERSION: u32 = 1;
/// What the signature covers starts with this, so no other statement the
/// key signs (audit checkpoints) can pass for a descriptor.
const CONTEXT: &[u8] = b"baton peer descriptor v1\n";

/// A signed peer descriptor, as written to and read from a file (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The daemon's name, as the other trust will list it.
    pub name: String,
    /// Its federation listener, `https://HOST:PORT`.
    pub url: String,
    /// Its federation CA certificate (PEM), which signs the certificate
    /// its federation connections present.
    pub ca_cert_pem: String,
    /// The daemon's Ed25519 public key (hex, 32 bytes).
    pub daemon_key: String,
    /// When it was made, milliseconds since the Unix epoch.
    pub issued_at_ms: i64,
    /// Until when the other side may add it, milliseconds since the Unix epoch.
    pub valid_until_ms: i64,
    /// Ed25519 signature by `daemon_key` over the fields above (hex, 64 bytes).
    pub signature: String,
}

/// The bytes the signature covers.
fn statement(d: &Descriptor) -> Vec<u8> {
    let mut out = CONTEXT.to_vec();
    for field in [
        d.version.to_string().as_str(),
        &d.name,
        &d.url,
        &d.ca_cert_pem,
        &d.daemon_key,
        &d.issued_at_ms.to_string(),
        &d.valid_until_ms.to_string(),
    ] {
        // Each field length-prefixed: no two descriptors share a statement.
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out
}

/// SHA-256 (of the DER bytes) of the one CA certificate `pem` must hold.
pub fn cert_sha256(pem: &str) -> anyhow::Result<[u8; 32]> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .ok()
        .context("the certificate PEM does not parse")?;
    let [der] = certs.as_slice() else {
        bail!(
            "{} certificates in the PEM; expected the one federation CA",
            certs.len()
        );
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .ok()
        .context("the certificate does not parse")?;
    if !cert.is_ca() {
        bail!("the certificate is not a CA certificate");
    }
    Ok(Sha256::digest(der.as_ref()).into())
}

/// A fingerprint to read aloud: the first 16 bytes of `bytes` in groups.
pub fn fingerprint(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|pair| pair.concat())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks a descriptor's name and URL as an operator would type them.
pub fn check_name_and_url(name: &str, url: &str) -> anyhow::Result<()> {
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        bail!("name {name:?}: use 1 to 64 lower-case letters, digits and hyphens");
    }
    let rest = url
        .strip_prefix("https://")
        .with_context(|| format!("url {url:?}: the federation listener is https://HOST:PORT"))?;
    let port_ok = rest
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    let plain = rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !port_ok || !plain {
        bail!("url {url:?}: give https://HOST:PORT, with no user, path or query");
    }
    Ok(())
}

impl Descriptor {
    /// Makes and signs a descriptor with `key`.
    pub fn sign(
        key: &SigningKey,
        name: &str,
        url: &str,
        ca_cert_pem: &str,
        issued_at_ms: i64,
        valid_until_ms: i64,
    ) -> anyhow::Result<Self> {
        check_name_and_url(name, url)?;
        cert_sha256(ca_cert_pem)?;
        let mut d = Self {
            version: VERSION,
            name: name.to_string(),
            url: url.to_string(),
            ca_cert_pem: ca_cert_pem.to_string(),
            daemon_key: hex::encode(key.verifying_key().to_bytes()),
            issued_at_ms,
            valid_until_ms,
            signature: String::new(),
        };
        d.signature = hex::encode(key.sign(&statement(&d)).to_bytes());
        Ok(d)
    }

    /// Checks the format, the fields, the signature and that it is still
    /// valid at `now_ms`; each refusal names the field. The peer it
    /// describes, as added at `now_ms`.
    pub fn check(&self, now_ms: i64) -> anyhow::Result<Peer> {
        if self.version != VERSION {
            bail!(
                "field `version`: {} (this daemon reads version {VERSION})",
                self.version
            );
        }
        check_name_and_url(&self.name, &self.url).context("field `name` or `url`")?;
        let ca_cert_sha256 = cert_sha256(&self.ca_cert_pem).context("field `ca_cert_pem`")?;
        let daemon_key: [u8; 32] = hex::decode(&self.daemon_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("field `daemon_key`: not 64 hex digits")?;
        let key = VerifyingKey::from_bytes(&daemon_key)
            .ok()
            .filter(|k| !k.is_weak())
            .context("field `daemon_key`: not an Ed25519 key (or a weak one)")?;
        let signature: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("field `signature`: not 128 hex digits")?;
        key.verify_strict(&statement(self), &Signature::from_bytes(&signature))
            .ok()
            .context("field `signature`: does not verify (the descriptor was altered, or not made by this key)")?;
        if self.issued_at_ms >= self.valid_until_ms {
            bail!("field `issued_at_ms`: not before `valid_until_ms`");
        }
        if self.valid_until_ms <= now_ms {
            bail!(
                "field `valid_until_ms`: the descriptor expired at {}; ask the other trust for a new one",
                crate::audit::time(self.valid_until_ms)
            );
        }
        Ok(Peer {
            name: self.name.clone(),
            url: self.url.clone(),
            ca_cert_pem: self.ca_cert_pem.clone(),
            ca_cert_sha256,
            daemon_key,
            valid_until_ms: self.valid_until_ms,
            added_at_ms: now_ms,
            la_codes: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_signed_descriptor_checks_and_any_change_is_refused_by_field() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let pem = cert();
        let d = Descriptor::sign(
            &key,
            "seven-stars",
            "https://fed.example:50052",
            &pem,
            1,
            100,
        )
        .unwrap();
        let checked = d.check(50).unwrap();
        assert_eq!(checked.daemon_key, key.verifying_key().to_bytes());
        assert_eq!(checked.ca_cert_sha256, cert_sha256(&pem).unwrap());

        let expired = d.check(100).unwrap_err().to_string();
        assert!(expired.contains("valid_until_ms"), "{expired}");
        for (field, change) in [
            (
                "signature",
                Box::new(|d: &mut Descriptor| d.url = "https://evil.example:1".into())
                    as Box<dyn Fn(&mut Descriptor)>,
            ),
            (
                "signature",
                Box::new(|d: &mut Descriptor| d.valid_until_ms = 10_000),
            ),
            (
                "signature",
                Box::new(|d: &mut Descriptor| d.ca_cert_pem = cert()),
            ),
            (
                "daemon_key",
                Box::new(|d: &mut Descriptor| d.daemon_key = "00".into()),
            ),
            ("version", Box::new(|d: &mut Descriptor| d.version = 2)),
            (
                "url",
                Box::new(|d: &mut Descriptor| d.url = "http://x:1".into()),
            ),
        ] {
            let mut bad = d.clone();
            change(&mut bad);
            let err = format!("{:#}", bad.check(50).unwrap_err());
            assert!(err.contains(field), "{field}: {err}");
        }
        // Another key's signature over the same fields does not verify.
        let other = SigningKey::from_bytes(&[8; 32]);
        let mut forged = d.clone();
        forged.signature = Descriptor::sign(
            &other,
            "seven-stars",
            "https://fed.example:50052",
            &pem,
            1,
            100,
        )
        .unwrap()
        .signature;
        assert!(format!("{:#}", forged.check(50).unwrap_err()).contains("signature"));
        assert_eq!(
            fingerprint(&[0xab; 32]),
            "abab abab abab abab abab abab abab abab"
        );
    }

    #[test]
    fn names_and_urls_are_checked_as_typed() {
        assert!(check_name_and_url("north-trust", "https://fed.north.example:50052").is_ok());
        for (name, url) in [
            ("North", "https://a:1"),
            ("", "https://a:1"),
            ("a b", "https://a:1"),
            ("a", "https://"),
            ("a", "https://a:1/path"),
            ("a", "a:1"),
            ("a", "https://user@a:1"),
            ("a", "https://a:1?x=1"),
            ("a", "https://a"),
            ("a", "https://a:0"),
        ] {
            assert!(check_name_and_url(name, url).is_err(), "{name} {url}");
        }
    }
}
