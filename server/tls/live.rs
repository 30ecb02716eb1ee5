//! The certificate the daemon serves right now, for every new TLS
//! connection (gRPC and the dashboard alike), replaced in place without
//! dropping the connections already open:
//!
//! - the operator's own files (`--tls-cert`, `--tls-key`) are read again
//!   on SIGHUP and when either file's modification time changes (checked
//!   every minute), so a renewal by certbot or the trust's PKI needs no
//!   restart;
//! - the generated certificate is looked at on SIGHUP and twice a day, and
//!   issued again by the same CA when it nears its end
//!   ([`super::RENEW_BEFORE_DAYS`]).
//!
//! A reload that fails (a half-written file, a key that does not match)
//! is logged and the current certificate kept.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::Material;

/// How often the operator's files are checked for a change.
const FILE_CHECK: Duration = Duration::from_secs(60);

/// How often the generated certificate is checked for renewal.
const RENEWAL_CHECK: Duration = Duration::from_secs(12 * 60 * 60);

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The operator's files.
    Given {
        /// Certificate chain (PEM).
        cert: PathBuf,
        /// Private key (PEM).
        key: PathBuf,
    },
    /// Made by batond in `dir` for `listen` and `names`.
    Generated {
        /// `DATA_DIR/tls`.
        dir: PathBuf,
        /// The gRPC listen address.
        listen: IpAddr,
        /// The operator's `--tls-name`s.
        names: Vec<String>,
    },
}

/// The current certificate, swapped in place.
pub struct LiveCerts {
    source: Source,
    current: RwLock<Current>,
}

/// What is being served, and what it was read from.
struct Current {
    key: Arc<CertifiedKey>,
    /// Modification times of the given files when they were read.
    stamps: Option<(SystemTime, SystemTime)>,
    /// End of validity of the leaf certificate, seconds since the epoch.
    not_after: Option<i64>,
}

impl fmt::Debug for LiveCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveCerts")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for LiveCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        Some(current.key.clone())
    }
}

/// A file's modification time.
fn stamp(path: &Path) -> anyhow::Result<SystemTime> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading {}", path.display()))
}

/// Parses a PEM chain and key into what rustls serves, naming the files
/// (`what`) in each error.
fn certified(material: &Material, what: &str) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&material.cert_pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what}: the certificate file is not PEM"))?;
    if chain.is_empty() {
        bail!("{what}: no certificate in the certificate file");
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key_pem)
        .with_context(|| format!("{what}: no private key in the key file"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .with_context(|| format!("{what}: the private key's type is not supported"))?;
    let key = CertifiedKey::new(chain, signer);
    key.keys_match()
        .with_context(|| format!("{what}: the private key does not belong to the certificate"))?;
    Ok(key)
}

impl LiveCerts {
    /// Reads (or makes) the certificate from `source`; also returns the
    /// generated CA's path for clients, if there is one.
    pub fn load(source: Source) -> anyhow::Result<(Arc<Self>, Option<PathBuf>)> {
        let (current, ca) = Self::read(&source)?;
        let live = Arc::new(Self {
            source,
            current: RwLock::new(current),
        });
        Ok((live, ca))
    }

    fn read(source: &Source) -> anyhow::Result<(Current, Option<PathBuf>)> {
        match source {
            Source::Given { cert, key } => {
                let stamps = (stamp(cert)?, stamp(key)?);
                let material = super::load(cert, key)?;
                let what = format!("{} and {}", cert.display(), key.display());
                let certified = certified(&material, &what)?;
                Ok((
                    Current {
                        key: Arc::new(certified),
                        stamps: Some(stamps),
                        not_after: super::not_after(&material.cert_pem),
                    },
                    None,
                ))
            }
            Source::Generated { dir, listen, names } => {
                let material = super::ensure_local(dir, *listen, names)?;
                let certified = certified(&material, &dir.display().to_string())?;
                Ok((
                    Current {
                        key: Arc::new(certified),
                        stamps: None,
                        not_after: super::not_after(&material.cert_pem),
                    },
                    material.ca_path,
                ))
            }
        }
    }

    /// Reads the certificate again and serves it to new connections;
    /// `true` if it changed.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let (fresh, _) = Self::read(&self.source)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let changed = fresh.key.cert != current.key.cert;
        *current = fresh;
        Ok(changed)
    }

    /// Whether the operator's files changed since they were read.
    fn files_changed(&self) -> bool {
        let Source::Given { cert, key } = &self.source else {
            return false;
        };
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match (stamp(cert), stamp(key)) {
            (Ok(c), Ok(k)) => current.stamps != Some((c, k)),
            _ => false,
        }
    }

    /// When the served certificate ends, seconds since the epoch.
    pub fn not_after(&self) -> Option<i64> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .not_after
    }

    /// A TLS acceptor serving the current certificate and offering
    /// `protocols` by ALPN (`h2` for gRPC, `http/1.1` for the dashboard).
    pub fn acceptor(self: &Arc<Self>, protocols: &[&[u8]]) -> anyhow::Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Reloads on SIGHUP, when the operator's files change, and (for the
    /// generated certificate) twice a day, until `shutdown`.
    pub fn keep_fresh(self: &Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("handling SIGHUP")?;
        let live = self.clone();
        tokio::spawn(async move {
            let every = match live.source {
                Source::Given { .. } => FILE_CHECK,
                Source::Generated { .. } => RENEWAL_CHECK,
            };
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                #[cfg(unix)]
                let signalled = async {
                    hangup.recv().await;
                };
                #[cfg(not(unix))]
                let signalled = std::future::pending::<()>();
                let why = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = signalled => "SIGHUP",
                    _ = tick.tick() => {
                        if matches!(live.source, Source::Given { .. }) && !live.files_changed() {
                            continue;
                        }
                        "check"
                    }
                };
                match live.reload() {
                    Ok(changed) => tracing::info!(
                        trigger = why,
                        changed,
                        not_after = live.not_after().map(|t| crate::audit::time(t * 1000)),
                        "TLS certificate read again"
                    ),
                    Err(e) => tracing::error!(
                        trigger = why,
                        error = format!("{e:#}"),
                        "reading the TLS certificate again failed; still serving the previous one"
                    ),
                }
            }
        });
        Ok(())
    }
}
