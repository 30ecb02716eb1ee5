//! Federation between trusts: the first part, peering. A daemon's operator
//! exports a signed [`descriptor`] (`batond admin peer export`), the other
//! trust's operator checks its fingerprints with them and adds it (`batond
//! admin peer add`); both are audited. This module owns the daemon's
//! federation identity: the certificate its federation listener presents
//! (`DATA_DIR/federation/cert.pem`, self-signed, pinned by the peer by
//! SHA-256) and its key (`key.pem`, owner-only). Every node of one trust
//! needs the same two files, as with the audit key. Relaying packs over
//! mutual TLS between peers is not built yet: see docs/federation.md.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

pub mod descriptor;

/// The folder under the data directory.
pub const FOLDER: &str = "federation";
/// How long a federation certificate is made for, days: a new one changes
/// the pin, so every peer must add a new descriptor.
const CERT_DAYS: i64 = 5 * 365;

/// The federation certificate (PEM) under `data_dir`, made with its key on
/// first use.
pub fn ensure_identity(data_dir: &Path) -> anyhow::Result<String> {
    let dir = data_dir.join(FOLDER);
    let (cert_path, key_path) = paths(&dir);
    if cert_path.exists() && key_path.exists() {
        return fs::read_to_string(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()));
    }
    crate::create_private_dir(&dir)?;
    let key = KeyPair::generate().context("generating the federation key")?;
    let mut params = CertificateParams::new(vec!["batond-federation".to_string()])
        .context("federation certificate names")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "batond federation");
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CERT_DAYS);
    let cert = params
        .self_signed(&key)
        .context("signing the federation certificate")?;
    crate::tls::write_private(&key_path, key.serialize_pem().as_bytes())?;
    fs::write(&cert_path, cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok(cert.pem())
}

/// The certificate and key files in the federation folder `dir`.
fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}
