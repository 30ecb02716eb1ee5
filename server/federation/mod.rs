//! Federation between trusts: a school sends to another trust's school
//! through its own daemon, which relays to the other trust's daemon. A
//! daemon's operator exports a signed [`descriptor`] (`batond admin peer
//! export`), the other trust's operator checks its fingerprints with them
//! and adds it (`batond admin peer add`); both are audited. This module
//! owns the daemon's federation identity under `DATA_DIR/federation/`: a
//! CA of its own (`ca.pem`, `ca-key.pem`), which the descriptor carries
//! and the peer pins, and the certificate its federation connections
//! present, as server and as client (`cert.pem`, `key.pem`), signed by
//! that CA. Keys are owner-only; every node of one trust needs the same
//! files, as with the audit key. [`tls`] serves and dials mutual TLS with
//! the peers, [`service`] answers them (checks in [`inbound`], bounds in
//! [`limits`]; a pack another trust's escrow re-addressed in
//! [`readdressed`]), [`sync`] reads their directories and [`directory`]
//! checks and merges them, [`relay`] works the relay queues. See
//! docs/federation.md.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

pub mod descriptor;
pub mod directory;
pub mod inbound;
pub mod limits;
pub mod readdressed;
pub mod relay;
pub mod service;
pub mod sync;
pub mod tls;

/// The folder under the data directory.
pub const FOLDER: &str = "federation";
/// How long the federation CA and certificate are made for, days: a new
/// CA changes the pin, so every peer must add a new descriptor.
const CERT_DAYS: i64 = 5 * 365;
/// The name the federation certificate is issued for; peers connect by
/// address and check the certificate against the pinned CA and this name.
pub const SERVER_NAME: &str = "batond-federation";

/// Serves the `Federation` service on `address` (mutual TLS with the
/// peers only, under the same connection caps as the gRPC listener) and
/// starts [`sync::watch`]; returns the bound address.
pub async fn serve<S: crate::store::Store>(
    address: std::net::SocketAddr,
    app: std::sync::Arc<crate::app::App<S>>,
    config: &crate::config::Config,
) -> anyhow::Result<std::net::SocketAddr> {
    let peers = app.store.peers().await.context("reading the peers")?;
    let verifier = tls::PeerVerifier::new(&peers);
    let acceptor = verifier.acceptor(&config.data_dir)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("listening for peers on {address}"))?;
    let local = listener
        .local_addr()
        .context("reading the federation listener's address")?;
    let limits = &config.limits;
    let incoming = crate::listener::incoming(
        listener,
        limits.max_connections,
        limits.max_connections_per_address,
    );
    let handshake = std::time::Duration::from_secs(limits.tls_handshake_timeout_secs);
    let tls = crate::listener::handshakes(incoming, acceptor, handshake);
    let service = baton::api::v1::federation_server::FederationServer::new(service::Service::new(
        app.clone(),
        verifier.clone(),
        limits::Limits::new(config.peer_limits),
        sync::Resync::new(config.data_dir.clone()),
    ))
    .max_decoding_message_size(crate::services::MAX_MESSAGE_BYTES)
    // Answers are small but for a whole directory.
    .max_encoding_message_size(directory::MAX_DIRECTORY_BYTES);
    // As the schools' listener: keepalive finds dead peers, the flow
    // control windows bound what one relay has in flight, and a relayed
    // chunk comes in 64 KiB frames.
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .initial_stream_window_size(Some(crate::services::STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(crate::services::CONNECTION_WINDOW_BYTES))
        .max_frame_size(Some(crate::services::FRAME_BYTES))
        .add_service(service);
    let shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(tls, shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "the federation listener stopped");
        }
    });
    let every = std::time::Duration::from_secs(config.federation_sync_secs);
    tokio::spawn(sync::watch(
        app.clone(),
        verifier,
        config.data_dir.clone(),
        every,
    ));
    tokio::spawn(relay::watch(app, config.data_dir.clone()));
    tracing::info!(address = %local, peers = peers.len(), "serving federation");
    Ok(local)
}

/// The federation CA certificate (PEM) under `data_dir`, made with its
/// key and the connection certificate it signs on first use.
pub fn ensure_identity(data_dir: &Path) -> anyhow::Result<String> {
    let dir = data_dir.join(FOLDER);
    let files = Files::in_dir(&dir);
    if [&files.ca, &files.ca_key, &files.cert, &files.key]
        .iter()
        .all(|p| p.exists())
    {
        return fs::read_to_string(&files.ca)
            .with_context(|| format!("reading {}", files.ca.display()));
    }
    crate::create_private_dir(&dir)?;
    let ca_key = KeyPair::generate().context("generating the federation CA key")?;
    let mut ca = params(Vec::new(), "batond federation CA")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca
        .self_signed(&ca_key)
        .context("signing the federation CA certificate")?;
    let ca_key_pem = ca_key.serialize_pem();

    let key = KeyPair::generate().context("generating the federation key")?;
    let mut leaf = params(vec![SERVER_NAME.to_string()], "batond federation")?;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = leaf
        .signed_by(&key, &Issuer::new(ca, ca_key))
        .context("signing the federation certificate")?;

    // The CA last: its presence says the set is whole.
    crate::tls::write_private(&files.key, key.serialize_pem().as_bytes())?;
    fs::write(&files.cert, cert.pem())
        .with_context(|| format!("writing {}", files.cert.display()))?;
    crate::tls::write_private(&files.ca_key, ca_key_pem.as_bytes())?;
    fs::write(&files.ca, ca_cert.pem())
        .with_context(|| format!("writing {}", files.ca.display()))?;
    Ok(ca_cert.pem())
}

/// Certificate parameters for `names`, named `common_name`, valid from
/// yesterday for [`CERT_DAYS`].
fn params(names: Vec<String>, common_name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(names).context("federation certificate names")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CERT_DAYS);
    Ok(params)
}

/// The files of a federation folder.
struct Files {
    ca: PathBuf,
    ca_key: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    /// What the federation listener will do: a peer's connection
    /// certificate verifies against its pinned CA, as server and as client,
    /// and no other CA's does.
    #[test]
    fn the_connection_certificate_verifies_against_the_federation_ca_only() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ca_a = ensure_identity(a.path()).unwrap();
        assert_eq!(ensure_identity(a.path()).unwrap(), ca_a, "made once");
        let ca_b = ensure_identity(b.path()).unwrap();
        let leaf_a = CertificateDer::from_pem_file(a.path().join("federation/cert.pem")).unwrap();
        let roots = |pem: &str| {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
                .unwrap();
            Arc::new(roots)
        };
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let as_server = |ca: &str| {
            WebPkiServerVerifier::builder_with_provider(roots(ca), provider.clone())
                .build()
                .unwrap()
                .verify_server_cert(&leaf_a, &[], &name, &[], UnixTime::now())
                .is_ok()
        };
        assert!(as_server(&ca_a));
        assert!(
            !as_server(&ca_b),
            "another trust's CA does not vouch for it"
        );
        let as_client = |ca: &str| {
            WebPkiClientVerifier::builder_with_provider(roots(ca), provider.clone())
                .build()
                .unwrap()
                .verify_client_cert(&leaf_a, &[], UnixTime::now())
                .is_ok()
        };
        assert!(as_client(&ca_a));
        assert!(!as_client(&ca_b));
    }
}
