//! Mutual TLS between peer daemons. The listener presents the federation
//! certificate (`DATA_DIR/federation/cert.pem`) and asks every caller for
//! one: only a certificate signed by the federation CA of a peer added here
//! completes the handshake, so a daemon that is not a peer is refused
//! before any call ([`PeerVerifier`], its pins replaced when peers are
//! added or removed). Outbound, [`channel`] pins the peer's CA from its
//! descriptor, checks the name [`super::SERVER_NAME`] and presents this
//! daemon's certificate.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio_rustls::TlsAcceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::Files;
use crate::store::Peer;

/// How long an outbound connection to a peer may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle connection to a peer is checked, and how long its
/// answer may take.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// A peer as the listener pins it.
struct Pinned {
    name: String,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// Accepts client certificates signed by a peer's federation CA, and says
/// which peer a verified certificate belongs to.
pub struct PeerVerifier {
    pinned: RwLock<Vec<Pinned>>,
    algorithms: WebPkiSupportedAlgorithms,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier").finish_non_exhaustive()
    }
}

impl PeerVerifier {
    /// A verifier pinning `peers`' CAs.
    pub fn new(peers: &[Peer]) -> Arc<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Self {
            pinned: RwLock::new(Vec::new()),
            algorithms: provider.signature_verification_algorithms,
            provider,
        });
        verifier.pin(peers);
        verifier
    }

    /// Replaces the pins with `peers`' CAs (a peer whose CA cannot be read
    /// is left out, and logged).
    pub fn pin(&self, peers: &[Peer]) {
        let mut pinned = Vec::with_capacity(peers.len());
        for peer in peers {
            match self.verifier_for(&peer.ca_cert_pem) {
                Ok(verifier) => pinned.push(Pinned {
                    name: peer.name.clone(),
                    verifier,
                }),
                Err(e) => tracing::error!(
                    peer = %peer.name,
                    error = format!("{e:#}"),
                    "the peer's federation CA cannot be used; its daemon is refused"
                ),
            }
        }
        *self.pinned.write().unwrap_or_else(|e| e.into_inner()) = pinned;
    }

    fn verifier_for(&self, ca_pem: &str) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).context("the CA is not PEM")?)
            .context("the CA certificate")?;
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .context("a verifier for the CA")
    }

    /// The name of the peer whose CA signed `cert`, if any does.
    pub fn peer_of(&self, cert: &CertificateDer<'_>) -> Option<String> {
        let pinned = self.pinned.read().unwrap_or_else(|e| e.into_inner());
        let now = UnixTime::now();
        pinned
            .iter()
            .find(|p| p.verifier.verify_client_cert(cert, &[], now).is_ok())
            .map(|p| p.name.clone())
    }

    /// A TLS acceptor presenting the federation certificate under
    /// `data_dir` and admitting only this verifier's peers, for gRPC (h2).
    pub fn acceptor(self: &Arc<Self>, data_dir: &Path) -> anyhow::Result<TlsAcceptor> {
        super::ensure_identity(data_dir)?;
        let files = Files::in_dir(&data_dir.join(super::FOLDER));
        let chain = vec![
            CertificateDer::from_pem_file(&files.cert)
                .with_context(|| format!("reading {}", files.cert.display()))?,
        ];
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .with_context(|| format!("reading {}", files.key.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_client_cert_verifier(self.clone())
            .with_single_cert(chain, key)
            .context("the federation certificate")?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        // Every connection proves its certificate afresh: no resumed
        // session lets a peer removed since its last handshake back in.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let pinned = self.pinned.read().unwrap_or_else(|e| e.into_inner());
        pinned
            .iter()
            .find_map(|p| {
                p.verifier
                    .verify_client_cert(end_entity, intermediates, now)
                    .ok()
            })
            .ok_or(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A channel to `peer`'s federation listener: its CA pinned, the
/// certificate checked for [`super::SERVER_NAME`], this daemon's
/// federation certificate (under `data_dir`) presented.
pub async fn channel(peer: &Peer, data_dir: &Path) -> anyhow::Result<Channel> {
    super::ensure_identity(data_dir)?;
    let files = Files::in_dir(&data_dir.join(super::FOLDER));
    let cert =
        std::fs::read(&files.cert).with_context(|| format!("reading {}", files.cert.display()))?;
    let key =
        std::fs::read(&files.key).with_context(|| format!("reading {}", files.key.display()))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(peer.ca_cert_pem.as_bytes()))
        .identity(Identity::from_pem(cert, key))
        .domain_name(super::SERVER_NAME);
    let endpoint = Endpoint::from_shared(peer.url.clone())
        .with_context(|| format!("peer {}: {} is not a URL", peer.name, peer.url))?
        .connect_timeout(CONNECT_TIMEOUT)
        // No whole-call timeout (a large relay takes as long as it takes):
        // a dead connection is found by HTTP/2 keepalive instead.
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true)
        .tls_config(tls)
        .context("configuring TLS")?;
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to peer {} at {}", peer.name, peer.url))
}
