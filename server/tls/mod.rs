//! TLS material: the operator's own certificate and key, or a private CA and
//! server certificate that `batond` creates once in `DATA_DIR/tls/`. Clients
//! are given `DATA_DIR/tls/ca.pem`. Private keys are written with mode 0600.
//!
//! The generated server certificate covers localhost, the loopback
//! addresses, a specific listen address and the operator's `--tls-name`s.
//! `server-names.txt` records the names it was issued for; when the wanted
//! set differs, or the certificate has less than [`RENEW_BEFORE_DAYS`] left,
//! it is issued again by the same CA, so clients keep trusting `ca.pem`.
//! [`live`] serves whichever certificate is current and re-reads it
//! without dropping connections.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
pub mod live;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// A certificate chain and key to serve with, and the CA clients should trust.
pub struct Material {
    /// PEM certificate chain.
    pub cert_pem: Vec<u8>,
    /// PEM private key.
    pub key_pem: Vec<u8>,
    /// The generated CA's certificate file, when batond made its own.
    pub ca_path: Option<PathBuf>,
}

/// Reads the operator's certificate and key.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Material> {
    Ok(Material {
        cert_pem: fs::read(cert)
            .with_context(|| format!("reading TLS certificate {}", cert.display()))?,
        key_pem: fs::read(key).with_context(|| format!("reading TLS key {}", key.display()))?,
        ca_path: None,
    })
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The CA's parameters: deterministic, so an issuer can be rebuilt from the
/// stored CA key alone.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Baton local CA");
    dn.push(DnType::OrganizationName, "batond");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    Ok(params)
}

/// Host names and addresses the server certificate covers: localhost and
/// loopback, `listen` unless it is a wildcard, then `extra` (the operator's
/// `--tls-name`s), each once.
fn subject_alt_names(listen: IpAddr, extra: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let listen = (!listen.is_unspecified()).then(|| listen.to_string());
    for name in listen.iter().chain(extra) {
        if !sans.contains(name) {
            sans.push(name.clone());
        }
    }
    sans
}

/// The generated server certificate is issued again when it has fewer
/// days left than this.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// Days a generated server certificate is valid (the most browsers accept
/// is 825).
const SERVER_CERT_DAYS: i64 = 825;

/// When the first certificate in `pem` stops being valid, seconds since the
/// Unix epoch; `None` if it does not parse.
pub fn not_after(pem: &[u8]) -> Option<i64> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Whether the server certificate at `path` is missing, unreadable or
/// within [`RENEW_BEFORE_DAYS`] of its end.
fn due_for_renewal(path: &Path) -> bool {
    let Ok(pem) = fs::read(path) else { return true };
    let renew_at = time::OffsetDateTime::now_utc() + time::Duration::days(RENEW_BEFORE_DAYS);
    not_after(&pem).is_none_or(|end| end <= renew_at.unix_timestamp())
}

/// Creates (once) the CA and a server certificate for `listen` and the
/// extra `names` in `dir`, re-issuing the server certificate (same CA)
/// only when its names must change.
pub fn ensure_local(dir: &Path, listen: IpAddr, names: &[String]) -> anyhow::Result<Material> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server-key.pem");
    let sans_path = dir.join("server-names.txt");

    let ca_key = if ca_path.exists() && ca_key_path.exists() {
        let pem = fs::read_to_string(&ca_key_path)
            .with_context(|| format!("reading {}", ca_key_path.display()))?;
        KeyPair::from_pem(&pem).with_context(|| format!("parsing {}", ca_key_path.display()))?
    } else {
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = ca_params()?
            .self_signed(&key)
            .context("signing the CA certificate")?;
        write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        fs::write(&ca_path, cert.pem())
            .with_context(|| format!("writing {}", ca_path.display()))?;
        // A new CA invalidates any old server certificate.
        let _ = fs::remove_file(&sans_path);
        key
    };

    let sans = subject_alt_names(listen, names);
    let wanted = sans.join("\n");
    let current = fs::read_to_string(&sans_path).unwrap_or_default();
    let renew = due_for_renewal(&cert_path);
    if current != wanted || renew || !key_path.exists() {
        // Forget the old names first: a crash part-way leaves a set that
        // matches nothing, so the next start issues the certificate again.
        match fs::remove_file(&sans_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", sans_path.display()));
            }
            _ => {}
        }
        tracing::info!(names = ?sans, renew, "issuing the server certificate");
        let issuer = Issuer::new(ca_params()?, ca_key);
        let mut params = CertificateParams::new(sans)
            .with_context(|| format!("server certificate names {wanted:?}"))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "batond");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(SERVER_CERT_DAYS);
        let key = KeyPair::generate().context("generating the server key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing the server certificate")?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        fs::write(&cert_path, cert.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        fs::write(&sans_path, wanted)
            .with_context(|| format!("writing {}", sans_path.display()))?;
    }
    let mut material = load(&cert_path, &key_path)?;
    material.ca_path = Some(ca_path);
    Ok(material)
}
