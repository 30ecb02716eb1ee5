//! The daemon's limits under abuse: how long a TLS handshake may take, how
//! many connections it holds (in all and per address), how many streams a
//! connection may open, how many long calls one school may hold, and how
//! slowly an upload may trickle. Set on the command line, in the
//! environment, or in the `[limits]` table of the TOML file.

use clap::Args;
use serde::Deserialize;

/// Limits as given (flags, environment, `[limits]`): every field optional.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitArgs {
    /// Seconds a client has to complete the TLS handshake [default: 10].
    #[arg(long, env = "BATON_TLS_HANDSHAKE_TIMEOUT_SECS", value_name = "SECS")]
    pub tls_handshake_timeout_secs: Option<u64>,
    /// Most connections open at once; more wait to be accepted [default: 512].
    #[arg(long, env = "BATON_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most connections open at once from one IP address; more are closed at
    /// once [default: 64].
    #[arg(long, env = "BATON_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<usize>,
    /// Most concurrent HTTP/2 streams (calls) on one connection [default: 64].
    #[arg(long, env = "BATON_MAX_CONCURRENT_STREAMS", value_name = "N")]
    pub max_concurrent_streams: Option<u32>,
    /// Most concurrent uploads one school may hold [default: 16].
    #[arg(long, env = "BATON_SCHOOL_MAX_UPLOADS", value_name = "N")]
    pub school_max_uploads: Option<usize>,
    /// Most concurrent downloads one school may hold [default: 16].
    #[arg(long, env = "BATON_SCHOOL_MAX_DOWNLOADS", value_name = "N")]
    pub school_max_downloads: Option<usize>,
    /// Most concurrent `Watch` streams one school may hold [default: 32].
    #[arg(long, env = "BATON_SCHOOL_MAX_WATCHES", value_name = "N")]
    pub school_max_watches: Option<usize>,
    /// Slowest average an upload may keep once it has run for the upload
    /// idle timeout, bytes a second; a slower one is dropped and what it
    /// staged discarded [default: 4096].
    #[arg(long, env = "BATON_UPLOAD_MIN_BYTES_PER_SEC", value_name = "BYTES")]
    pub upload_min_bytes_per_sec: Option<u64>,
}

/// The resolved limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TLS handshake timeout, seconds.
    pub tls_handshake_timeout_secs: u64,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_connections_per_address: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Concurrent uploads per school.
    pub school_max_uploads: usize,
    /// Concurrent downloads per school.
    pub school_max_downloads: usize,
    /// Concurrent `Watch` streams per school.
    pub school_max_watches: usize,
    /// Slowest average upload rate after the idle timeout, bytes a second.
    pub upload_min_bytes_per_sec: u64,
}

impl Limits {
    /// `flags` over `file` over the defaults; every limit at least 1.
    pub fn resolve(flags: &LimitArgs, file: &LimitArgs) -> anyhow::Result<Self> {
        let limits = Self {
            tls_handshake_timeout_secs: flags
                .tls_handshake_timeout_secs
                .or(file.tls_handshake_timeout_secs)
                .unwrap_or(10),
            max_connections: flags
                .max_connections
                .or(file.max_connections)
                .unwrap_or(512),
            max_connections_per_address: flags
                .max_connections_per_address
                .or(file.max_connections_per_address)
                .unwrap_or(64),
            max_concurrent_streams: flags
                .max_concurrent_streams
                .or(file.max_concurrent_streams)
                .unwrap_or(64),
            school_max_uploads: flags
                .school_max_uploads
                .or(file.school_max_uploads)
                .unwrap_or(16),
            school_max_downloads: flags
                .school_max_downloads
                .or(file.school_max_downloads)
                .unwrap_or(16),
            school_max_watches: flags
                .school_max_watches
                .or(file.school_max_watches)
                .unwrap_or(32),
            upload_min_bytes_per_sec: flags
                .upload_min_bytes_per_sec
                .or(file.upload_min_bytes_per_sec)
                .unwrap_or(4096),
        };
        let counts = [
            (
                "tls_handshake_timeout_secs",
                limits.tls_handshake_timeout_secs,
            ),
            ("max_connections", limits.max_connections as u64),
            (
                "max_connections_per_address",
                limits.max_connections_per_address as u64,
            ),
            (
                "max_concurrent_streams",
                u64::from(limits.max_concurrent_streams),
            ),
            ("school_max_uploads", limits.school_max_uploads as u64),
            ("school_max_downloads", limits.school_max_downloads as u64),
            ("school_max_watches", limits.school_max_watches as u64),
            ("upload_min_bytes_per_sec", limits.upload_min_bytes_per_sec),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, v)| *v == 0) {
            anyhow::bail!("limits: {name} must be at least 1");
        }
        Ok(limits)
    }
}

/// The `[limits]` table of the example configuration.
pub const DEFAULT_LIMITS: &str = r#"
# Limits under abuse: the daemon keeps serving its real clients while
# someone holds connections open or streams stall (docs/reliability.md).
[limits]
# Seconds a client has to finish the TLS handshake.
tls_handshake_timeout_secs = 10
# Connections open at once (more wait in the listen queue), and from any
# one IP address (more are closed at once).
max_connections = 512
max_connections_per_address = 64
# Concurrent calls (HTTP/2 streams) on one connection.
max_concurrent_streams = 64
# Concurrent long calls one school may hold.
school_max_uploads = 16
school_max_downloads = 16
school_max_watches = 32
# Once it has run for upload_idle_timeout_secs, an upload must average at
# least this many bytes a second, or it is dropped and what it staged is
# discarded (a slowloris trickling a byte every few seconds).
upload_min_bytes_per_sec = 4096
"#;
