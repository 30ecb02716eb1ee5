//! HTTPS for the daemon's own web listeners (the dashboard), checked
//! against the daemon's CA like a browser that trusts it, and the served
//! certificate itself, for the certificate tests.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A TLS client trusting only the CA in `ca_pem`, offering `alpn`.
pub fn connector(ca_pem: &[u8], alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The leaf certificate `address` serves as `name`, verified against `ca`;
/// `Err` (the handshake's error) when it does not verify.
pub async fn served_cert(
    address: &str,
    ca: &Path,
    name: &str,
) -> Result<CertificateDer<'static>, std::io::Error> {
    let ca_pem = std::fs::read(ca).unwrap();
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    let tls = connector(&ca_pem, b"h2").connect(name, tcp).await?;
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    Ok(certs[0].clone().into_owned())
}

/// End of validity of `cert`, seconds since the epoch.
pub fn not_after(cert: &CertificateDer<'_>) -> i64 {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();
    parsed.validity().not_after.timestamp()
}

/// An HTTPS answer: status, head (lower-cased), body.
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The response head, lower-cased.
    pub head: String,
    /// The body.
    pub body: String,
}

/// `GET path` on `https://address` (verified against `ca`), with a cookie.
pub async fn get(address: &str, ca: &Path, path: &str, cookie: Option<&str>) -> Answer {
    let ca_pem = std::fs::read(ca).unwrap();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector(&ca_pem, b"http/1.1")
        .connect(name, tcp)
        .await
        .unwrap();
    let cookie = cookie.map_or_else(String::new, |c| format!("Cookie: {c}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{cookie}Connection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A peer closing without close_notify is fine here.
    let _ = tls.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head: head.to_lowercase(),
        body: body.to_string(),
    }
}
