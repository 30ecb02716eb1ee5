//! Daemon settings and their layering: built-in defaults, then a TOML file
//! (`--config`), then `BATON_*` environment variables, then flags. Clap
//! reads the environment and the flags (a flag beats its variable); this
//! module merges the result over the file and the defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use baton::trust::DirectoryKey;
use clap::{Args, ValueEnum};

mod limits;
mod retention;
pub use limits::{DEFAULT_LIMITS, LimitArgs, Limits};
pub use retention::{DEFAULT_RETENTION, Retention, RetentionArgs};
use serde::Deserialize;

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default largest pack (ciphertext) accepted: 256 MiB.
pub const DEFAULT_MAX_PACK_BYTES: u64 = 256 * 1024 * 1024;
/// Default lifetime of an enrolment code: 7 days.
pub const DEFAULT_ENROLMENT_CODE_HOURS: u64 = 7 * 24;
/// Default most connections a node opens to PostgreSQL.
pub const DEFAULT_DATABASE_POOL_SIZE: u32 = 8;
/// Default longest wait for the next message of an upload stream: 60 s.
pub const DEFAULT_UPLOAD_IDLE_TIMEOUT_SECS: u64 = 60;
/// Default seconds between reads of each peer's directory.
pub const DEFAULT_FEDERATION_SYNC_SECS: u64 = 60;

/// What one federation peer may relay to this daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Packs a minute.
    pub packs_per_minute: u32,
    /// Relays at once.
    pub concurrent: u32,
    /// Ciphertext waiting (relayed here, not acknowledged), bytes.
    pub quota_bytes: u64,
}

/// The database a configuration names.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (one node).
    Sqlite(PathBuf),
    /// A PostgreSQL URL (any number of nodes).
    Postgres(String),
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings every command reads: where the state is, and how to log.
/// Global, so they may be given before or after the subcommand.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct CommonArgs {
    /// TOML configuration file (see `batond default-config`).
    #[arg(long, env = "BATON_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Directory for the database and generated TLS files [default: the platform data directory].
    #[arg(long, env = "BATON_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL: `sqlite:PATH` or `postgres://USER@HOST/DB` [default: sqlite:DATA_DIR/baton.db].
    #[arg(long, env = "BATON_DATABASE_URL", value_name = "URL", global = true)]
    pub database_url: Option<String>,
    /// Most connections this node opens to PostgreSQL [default: 8].
    #[arg(
        long,
        env = "BATON_DATABASE_POOL_SIZE",
        value_name = "N",
        global = true
    )]
    pub database_pool_size: Option<u32>,
    /// Log format on stderr.
    #[arg(long, env = "BATON_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
    /// The public half of the trust's directory key (`batondir1…`): only
    /// keys it endorsed are sealed to, and `admin key approve` checks the
    /// secret file it is given against it.
    #[arg(
        long,
        env = "BATON_DIRECTORY_KEY",
        value_name = "batondir1…",
        global = true
    )]
    pub directory_key: Option<String>,
}

/// Settings only `batond serve` reads.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on, IP:PORT; port 0 picks a free port [default: 127.0.0.1:50051].
    #[arg(long, env = "BATON_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Server certificate chain (PEM) instead of the generated one; needs --tls-key.
    #[arg(long, env = "BATON_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for --tls-cert.
    #[arg(long, env = "BATON_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// A host name (or IP address) clients connect by, added to the generated
    /// server certificate besides localhost and loopback; repeat for more
    /// (comma-separated in the variable).
    #[arg(
        long = "tls-name",
        env = "BATON_TLS_NAMES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tls_names: Vec<String>,
    /// Serve plaintext gRPC, for development only; refused unless listening on loopback.
    #[arg(long, env = "BATON_INSECURE_LOOPBACK")]
    pub insecure_loopback: bool,
    /// Serve Prometheus metrics (plain HTTP, no pupil data) on IP:PORT at
    /// /metrics; keep it on loopback or a monitoring network [default: off].
    #[arg(long, env = "BATON_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the trust dashboard (HTTPS with the daemon's certificate) on
    /// IP:PORT; `batond admin dashboard link` prints a sign-in link [default: off].
    #[arg(long, env = "BATON_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Serve the federation listener (mutual TLS; only peers added with
    /// `batond admin peer add` get past the handshake) on IP:PORT, and read
    /// the peers' directories [default: off].
    #[arg(long, env = "BATON_FEDERATION_LISTEN", value_name = "ADDR")]
    pub federation_listen: Option<SocketAddr>,
    /// Seconds between reads of each peer's directory [default: 60].
    #[arg(long, env = "BATON_FEDERATION_SYNC_SECS", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub federation_sync_secs: Option<u64>,
    /// Most packs one peer may relay here a minute [default: 600].
    #[arg(long, env = "BATON_FEDERATION_PEER_PACKS_PER_MINUTE", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub federation_peer_packs_per_minute: Option<u32>,
    /// Most relays from one peer at once [default: 4].
    #[arg(long, env = "BATON_FEDERATION_PEER_CONCURRENT", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub federation_peer_concurrent: Option<u32>,
    /// Most ciphertext one peer's schools may have waiting here for this
    /// daemon's schools (relayed, not acknowledged) [default: 21474836480].
    #[arg(long, env = "BATON_FEDERATION_PEER_QUOTA_BYTES", value_name = "BYTES")]
    pub federation_peer_quota_bytes: Option<u64>,
    /// Largest pack (ciphertext bytes) accepted [default: 268435456].
    #[arg(long, env = "BATON_MAX_PACK_BYTES", value_name = "BYTES")]
    pub max_pack_bytes: Option<u64>,
    /// Seconds an upload stream may sit idle between messages before it is dropped [default: 60].
    #[arg(long, env = "BATON_UPLOAD_IDLE_TIMEOUT_SECS", value_name = "SECS")]
    pub upload_idle_timeout_secs: Option<u64>,
    /// The window, in seconds, over which failed attempts per address are
    /// counted (10 wrong enrolment codes, 30 bad tokens) [default: 60].
    #[arg(long, env = "BATON_ATTEMPT_WINDOW_SECS", value_name = "SECS")]
    pub attempt_window_secs: Option<u64>,
    /// Most ciphertext one school may have waiting on the server (sent, not
    /// yet acknowledged), bytes [default: 53687091200, 50 GiB].
    #[arg(long, env = "BATON_SCHOOL_QUOTA_BYTES", value_name = "BYTES")]
    pub school_quota_bytes: Option<u64>,
    /// Limits under abuse.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// How long packs' ciphertext is kept.
    #[command(flatten)]
    pub retention: RetentionArgs,
}

/// Settings of the admin commands that issue enrolment codes.
#[derive(Debug, Clone, Default, Args)]
pub struct CodeArgs {
    /// Hours the enrolment code stays valid [default: 168].
    #[arg(long, env = "BATON_ENROLMENT_CODE_HOURS", value_name = "HOURS")]
    pub enrolment_code_hours: Option<u64>,
}

/// What the command line and the environment gave, for [`Config::resolve`]
/// to merge over the file and the defaults.
#[derive(Debug, Clone, Default)]
pub struct ConfigArgs {
    /// Options of every command.
    pub common: CommonArgs,
    /// Options of `serve` (empty for other commands).
    pub serve: ServeArgs,
    /// Options of the code-issuing admin commands (empty for others).
    pub code: CodeArgs,
}

/// The TOML file: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_pool_size: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_names: Option<Vec<String>>,
    insecure_loopback: Option<bool>,
    metrics_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    federation_listen: Option<SocketAddr>,
    federation_sync_secs: Option<u64>,
    federation_peer_packs_per_minute: Option<u32>,
    federation_peer_concurrent: Option<u32>,
    federation_peer_quota_bytes: Option<u64>,
    log_format: Option<LogFormat>,
    max_pack_bytes: Option<u64>,
    enrolment_code_hours: Option<u64>,
    upload_idle_timeout_secs: Option<u64>,
    attempt_window_secs: Option<u64>,
    school_quota_bytes: Option<u64>,
    directory_key: Option<String>,
    limits: Option<LimitArgs>,
    retention: Option<RetentionArgs>,
}

/// The resolved settings.
#[derive(Clone)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database URL, if not the default SQLite file.
    pub database_url: Option<String>,
    /// Most connections to PostgreSQL.
    pub database_pool_size: u32,
    /// Certificate chain file.
    pub tls_cert: Option<PathBuf>,
    /// Private key file.
    pub tls_key: Option<PathBuf>,
    /// Extra names for the generated server certificate: lower-case DNS
    /// names or IP addresses, sorted, no duplicates.
    pub tls_names: Vec<String>,
    /// Plaintext on loopback allowed.
    pub insecure_loopback: bool,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the trust dashboard is served, if anywhere.
    pub http_listen: Option<SocketAddr>,
    /// Where the federation listener is served, if anywhere.
    pub federation_listen: Option<SocketAddr>,
    /// Seconds between reads of each peer's directory.
    pub federation_sync_secs: u64,
    /// What one peer may relay here.
    pub peer_limits: PeerLimits,
    /// Log format.
    pub log_format: LogFormat,
    /// Largest pack accepted.
    pub max_pack_bytes: u64,
    /// Enrolment code lifetime, hours.
    pub enrolment_code_hours: u64,
    /// Longest wait for the next message of an upload stream, seconds.
    pub upload_idle_timeout_secs: u64,
    /// Window over which failed attempts per address are counted, seconds.
    pub attempt_window_secs: u64,
    /// Most ciphertext one school may have waiting, bytes.
    pub school_quota_bytes: u64,
    /// The trust's directory key, when keys must be endorsed.
    pub directory_key: Option<DirectoryKey>,
    /// Limits under abuse.
    pub limits: Limits,
    /// How long packs' ciphertext is kept.
    pub retention: Retention,
    /// The configuration file read, if any (a backup keeps a copy).
    pub config_file: Option<PathBuf>,
}

/// Hides the password of a `scheme://user:password@host` URL.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redact_url),
            )
            .field("database_pool_size", &self.database_pool_size)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_names", &self.tls_names)
            .field("insecure_loopback", &self.insecure_loopback)
            .field("metrics_listen", &self.metrics_listen)
            .field("http_listen", &self.http_listen)
            .field("federation_listen", &self.federation_listen)
            .field("federation_sync_secs", &self.federation_sync_secs)
            .field("peer_limits", &self.peer_limits)
            .field("log_format", &self.log_format)
            .field("max_pack_bytes", &self.max_pack_bytes)
            .field("enrolment_code_hours", &self.enrolment_code_hours)
            .field("upload_idle_timeout_secs", &self.upload_idle_timeout_secs)
            .field("attempt_window_secs", &self.attempt_window_secs)
            .field("school_quota_bytes", &self.school_quota_bytes)
            .field("directory_key", &self.directory_key)
            .field("limits", &self.limits)
            .field("retention", &self.retention)
            .finish()
    }
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    directories::ProjectDirs::from("uk.org", "Baton", "batond")
        .map(|d| d.data_dir().to_path_buf())
        .context("no platform data directory (is HOME set?): pass --data-dir or set BATON_DATA_DIR")
}

/// Checks each `--tls-name`: an IP address, or a DNS name (letters, digits,
/// hyphens, dots; no wildcards). Returns them lower-cased, sorted and without
/// duplicates, so the same set always gives the same certificate.
fn normalise_tls_names(names: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        let normal = if let Ok(ip) = name.parse::<std::net::IpAddr>() {
            ip.to_string()
        } else {
            let lower = name.trim_end_matches('.').to_ascii_lowercase();
            let dns_ok = !lower.is_empty()
                && lower.len() <= 253
                && lower.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !dns_ok {
                bail!(
                    "--tls-name {name:?}: expected a host name such as baton.trust.example or an IP address"
                );
            }
            lower
        };
        out.push(normal);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl Config {
    /// Resolves defaults → file → environment/flags.
    pub fn resolve(args: &ConfigArgs) -> anyhow::Result<Self> {
        let ConfigArgs {
            common,
            serve,
            code,
        } = args;
        let file = match &common.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = match common.data_dir.clone().or(file.data_dir) {
            Some(dir) => dir,
            None => default_data_dir()?,
        };
        let listen = match serve.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        };
        // A list from the flags (or BATON_TLS_NAMES) replaces the file's.
        let tls_names = if serve.tls_names.is_empty() {
            file.tls_names.unwrap_or_default()
        } else {
            serve.tls_names.clone()
        };
        let config = Self {
            listen,
            data_dir,
            database_url: common.database_url.clone().or(file.database_url),
            database_pool_size: common
                .database_pool_size
                .or(file.database_pool_size)
                .unwrap_or(DEFAULT_DATABASE_POOL_SIZE),
            tls_cert: serve.tls_cert.clone().or(file.tls_cert),
            tls_key: serve.tls_key.clone().or(file.tls_key),
            tls_names: normalise_tls_names(&tls_names)?,
            insecure_loopback: serve.insecure_loopback || file.insecure_loopback.unwrap_or(false),
            metrics_listen: serve.metrics_listen.or(file.metrics_listen),
            http_listen: serve.http_listen.or(file.http_listen),
            federation_listen: serve.federation_listen.or(file.federation_listen),
            federation_sync_secs: serve
                .federation_sync_secs
                .or(file.federation_sync_secs)
                .unwrap_or(DEFAULT_FEDERATION_SYNC_SECS)
                .max(1),
            peer_limits: PeerLimits {
                packs_per_minute: serve
                    .federation_peer_packs_per_minute
                    .or(file.federation_peer_packs_per_minute)
                    .unwrap_or(600)
                    .max(1),
                concurrent: serve
                    .federation_peer_concurrent
                    .or(file.federation_peer_concurrent)
                    .unwrap_or(4)
                    .max(1),
                quota_bytes: serve
                    .federation_peer_quota_bytes
                    .or(file.federation_peer_quota_bytes)
                    .unwrap_or(20 * 1024 * 1024 * 1024),
            },
            log_format: common.log_format.or(file.log_format).unwrap_or_default(),
            max_pack_bytes: serve
                .max_pack_bytes
                .or(file.max_pack_bytes)
                .unwrap_or(DEFAULT_MAX_PACK_BYTES),
            enrolment_code_hours: code
                .enrolment_code_hours
                .or(file.enrolment_code_hours)
                .unwrap_or(DEFAULT_ENROLMENT_CODE_HOURS),
            upload_idle_timeout_secs: serve
                .upload_idle_timeout_secs
                .or(file.upload_idle_timeout_secs)
                .unwrap_or(DEFAULT_UPLOAD_IDLE_TIMEOUT_SECS),
            attempt_window_secs: serve
                .attempt_window_secs
                .or(file.attempt_window_secs)
                .unwrap_or(60),
            school_quota_bytes: serve
                .school_quota_bytes
                .or(file.school_quota_bytes)
                .unwrap_or(50 << 30),
            directory_key: common
                .directory_key
                .clone()
                .or(file.directory_key)
                .map(|k| {
                    k.parse::<DirectoryKey>()
                        .with_context(|| format!("directory_key {k:?}"))
                })
                .transpose()?,
            limits: Limits::resolve(&serve.limits, &file.limits.unwrap_or_default())?,
            retention: Retention::resolve(&serve.retention, &file.retention.unwrap_or_default()),
            config_file: common.config.clone(),
        };
        if config.attempt_window_secs == 0 {
            bail!("attempt_window_secs must be at least 1");
        }
        if config.upload_idle_timeout_secs == 0 {
            bail!("upload_idle_timeout_secs must be at least 1");
        }
        if config.database_pool_size == 0 {
            bail!("database_pool_size must be at least 1");
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            bail!("--tls-cert and --tls-key go together: give both or neither");
        }
        if config.tls_cert.is_some() && !config.tls_names.is_empty() {
            bail!(
                "--tls-name (tls_names) names hosts in the certificate batond makes itself; with --tls-cert your certificate names them: drop one"
            );
        }
        Ok(config)
    }

    /// The database this configuration names, by the URL's scheme.
    pub fn database(&self) -> anyhow::Result<Database> {
        match self.database_url.as_deref() {
            None => Ok(Database::Sqlite(self.data_dir.join("baton.db"))),
            Some(url) => {
                if let Some(path) = url
                    .strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("sqlite:"))
                {
                    Ok(Database::Sqlite(Path::new(path).to_path_buf()))
                } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    Ok(Database::Postgres(url.to_string()))
                } else {
                    bail!(
                        "database URL {}: expected sqlite:PATH or postgres://USER@HOST/DATABASE",
                        redact_url(url)
                    )
                }
            }
        }
    }
}

/// The commented example printed by `batond default-config`.
pub const DEFAULT_CONFIG: &str = r#"# batond configuration. Every setting is optional; environment variables
# (BATON_LISTEN, BATON_DATA_DIR, ...) override this file, and flags override both.

# Address to listen on. Port 0 picks a free port.
listen = "127.0.0.1:50051"

# Where the SQLite database and the generated TLS files live.
# Default: the platform data directory (e.g. ~/.local/share/batond).
# data_dir = "/var/lib/batond"

# Database URL. Default: sqlite:DATA_DIR/baton.db (one node). Several nodes
# share one PostgreSQL database: postgres://USER:PASSWORD@HOST:5432/DATABASE
# (or set BATON_DATABASE_URL, which keeps the password out of this file).
# database_url = "sqlite:/var/lib/batond/baton.db"
# database_url = "postgres://baton@db.example.org:5432/baton"

# Most connections each node opens to PostgreSQL (ignored for SQLite). Keep
# nodes x pool size below the server's max_connections.
database_pool_size = 8

# Your own certificate chain and key (PEM). Without them batond creates a CA
# and a server certificate in DATA_DIR/tls/ (give clients DATA_DIR/tls/ca.pem).
# tls_cert = "/etc/batond/cert.pem"
# tls_key = "/etc/batond/key.pem"

# Host names (or IP addresses) schools connect by, added to the certificate
# batond makes itself (it always covers localhost, 127.0.0.1 and ::1). The
# server certificate is issued again, by the same CA, when this list changes.
# Not used with tls_cert.
tls_names = []
# tls_names = ["baton.trust.example", "192.0.2.10"]

# Plaintext gRPC for development; refused unless listening on loopback.
insecure_loopback = false

# Prometheus metrics (plain HTTP at /metrics: call counts, pack states,
# storage; never pupil data or school pairs). Off unless set; keep it on
# loopback or a monitoring network.
# metrics_listen = "127.0.0.1:9090"

# The trust dashboard (HTTPS, the daemon's certificate), read-only, for the
# operator and the data protection lead; `batond admin dashboard link`
# prints a one-time sign-in link. Off unless set.
# http_listen = "127.0.0.1:8443"

# The federation listener (mutual TLS with the peers added by `batond
# admin peer add`; docs/federation.md), and how often each peer's
# directory is read, seconds. Off unless set.
# federation_listen = "0.0.0.0:50052"
federation_sync_secs = 60
# What one peer may relay here: packs a minute, relays at once, and the
# ciphertext its schools may have waiting for this trust's schools (20 GiB).
federation_peer_packs_per_minute = 600
federation_peer_concurrent = 4
federation_peer_quota_bytes = 21474836480

# Log format on stderr: "text" or "json".
log_format = "text"

# Largest pack (ciphertext bytes) accepted: 256 MiB.
max_pack_bytes = 268435456

# Hours an enrolment code from `batond admin school add` stays valid.
enrolment_code_hours = 168

# Seconds an upload stream may sit idle between two messages before the
# daemon drops it and discards what it staged (slow or stalled clients).
upload_idle_timeout_secs = 60

# Seconds over which failed attempts from one address are counted: beyond
# 10 wrong enrolment codes or 30 unknown or revoked tokens in this window,
# the address is refused ("too many failed attempts") until it passes.
attempt_window_secs = 60

# Most ciphertext one school may have waiting on the server (sent and not
# yet acknowledged by its destinations): 50 GiB. Beyond it uploads are
# refused ("quota") until destinations collect and acknowledge.
school_quota_bytes = 53687091200

# The public half of the trust's directory key (`batondir1…`, from
# `batond admin directory-key new`, whose secret file stays off this
# server). When set, a key is sealed to only once the operator has approved
# it (`batond admin key approve`), and clients pinned to the same key trust
# no key the server hands out without its endorsement.
# directory_key = "batondir1…"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses() {
        let text = format!("{DEFAULT_CONFIG}{DEFAULT_LIMITS}{DEFAULT_RETENTION}");
        let file: FileConfig = toml::from_str(&text).unwrap();
        assert_eq!(file.max_pack_bytes, Some(DEFAULT_MAX_PACK_BYTES));
        let limits = Limits::resolve(&LimitArgs::default(), &file.limits.unwrap()).unwrap();
        assert_eq!(
            limits,
            Limits::resolve(&LimitArgs::default(), &LimitArgs::default()).unwrap()
        );
        assert_eq!(file.listen, DEFAULT_LISTEN.parse().ok());
        assert_eq!(file.database_pool_size, Some(DEFAULT_DATABASE_POOL_SIZE));
        assert_eq!(file.tls_names, Some(Vec::new()));
    }

    #[test]
    fn tls_names_are_checked_and_normalised() {
        let names = |list: &[&str]| {
            normalise_tls_names(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let ok = names(&[
            "Baton.Trust.Example.",
            "192.0.2.10",
            "baton.trust.example",
            "::1",
        ]);
        assert_eq!(
            ok.ok(),
            Some(vec![
                "192.0.2.10".to_string(),
                "::1".into(),
                "baton.trust.example".into()
            ])
        );
        for bad in ["", "*.trust.example", "bad name", "-x.example", "a..b"] {
            let err = names(&[bad])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("--tls-name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn tls_names_from_flags_replace_the_file_and_refuse_tls_cert() {
        let dir = std::env::temp_dir().join(format!("batond-config-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("batond.toml");
        let _ = std::fs::write(&file, "tls_names = [\"file.example\"]\n");
        let mut args = ConfigArgs::default();
        args.common.config = Some(file.clone());
        args.common.data_dir = Some(dir.clone());
        let from_file = Config::resolve(&args).map(|c| c.tls_names).ok();
        assert_eq!(from_file, Some(vec!["file.example".to_string()]));
        args.serve.tls_names = vec!["flag.example".into()];
        let from_flag = Config::resolve(&args).map(|c| c.tls_names).ok();
        assert_eq!(from_flag, Some(vec!["flag.example".to_string()]));
        args.serve.tls_cert = Some(dir.join("cert.pem"));
        args.serve.tls_key = Some(dir.join("key.pem"));
        let err = Config::resolve(&args).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("--tls-name")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_url_scheme_picks_the_backend() {
        let mut args = ConfigArgs::default();
        args.common.data_dir = Some(PathBuf::from("/d"));
        let config = Config::resolve(&args).ok();
        let db = config.as_ref().and_then(|c| c.database().ok());
        assert_eq!(db, Some(Database::Sqlite(PathBuf::from("/d/baton.db"))));
        let url = "postgres://b:pw@h/db";
        args.common.database_url = Some(url.into());
        let db = Config::resolve(&args).ok().and_then(|c| c.database().ok());
        assert_eq!(db, Some(Database::Postgres(url.into())));
        assert!(!format!("{db:?}").contains("pw"));
    }

    #[test]
    fn debug_redacts_passwords() {
        let config = Config {
            listen: "127.0.0.1:1"
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1))),
            data_dir: PathBuf::from("/tmp"),
            database_url: Some("postgres://baton:s3cret@db/baton".into()),
            database_pool_size: 8,
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
            insecure_loopback: false,
            metrics_listen: None,
            http_listen: None,
            federation_listen: None,
            federation_sync_secs: 60,
            peer_limits: PeerLimits {
                packs_per_minute: 600,
                concurrent: 4,
                quota_bytes: 1,
            },
            log_format: LogFormat::Text,
            max_pack_bytes: 1,
            enrolment_code_hours: 1,
            upload_idle_timeout_secs: 1,
            attempt_window_secs: 1,
            school_quota_bytes: 1,
            directory_key: None,
            limits: Limits::resolve(&LimitArgs::default(), &LimitArgs::default()).unwrap(),
            retention: Retention::resolve(&RetentionArgs::default(), &RetentionArgs::default()),
            config_file: None,
        };
        let text = format!("{config:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("baton:***@db"), "{text}");
    }
}
