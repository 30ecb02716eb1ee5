//! `batond`, the Baton daemon a trust runs on its own server: it stores and
//! forwards sealed packs and never holds a byte of pupil plaintext.
//!
//! This file owns the command line and the exit codes: 0 success, 1
//! failure, 2 usage (clap's own), and what guards a SQLite database at
//! start: one `serve` at a time (an advisory lock beside the file), and
//! admin commands only on a database that exists.

mod admin;
mod app;
mod attempts;
mod audit;
mod auth;
mod cache;
mod clocks;
mod config;
mod dashboard;
mod endorsements;
mod federation;
mod limits;
mod listener;
mod metrics;
mod notary;
mod quota;
mod retention;
mod services;
mod signatures;
mod store;
mod tls;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{CommonArgs, Config, ConfigArgs, Database, LogFormat, ServeArgs, redact_url};
use crate::store::Store;
use crate::store::postgres::Postgres;
use crate::store::sqlite::Sqlite;

/// How long in-flight calls get to finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The Baton daemon: stores and forwards sealed transfer packs between schools.
#[derive(Debug, Parser)]
#[command(name = "batond", version, about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gRPC API (TLS unless --insecure-loopback).
    Serve(Box<ServeArgs>),
    /// Print a commented example configuration file.
    DefaultConfig,
    /// Create the trust's directory key, on the operator's machine: its
    /// secret goes into FILE (keep it off the server), its public half is
    /// printed for `directory_key` and for each school's `baton init`.
    NewDirectoryKey {
        /// Where to write the secret key (created, never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Operator commands; they work while `serve` runs.
    #[command(subcommand)]
    Admin(admin::Command),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions {
        /// The shell.
        shell: baton::cli_docs::Shell,
    },
    /// Write man pages for batond and every subcommand into a folder.
    Man {
        /// The folder to write them into (created if need be).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    // One process-wide TLS provider, before anything touches rustls.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open_sqlite(path: &Path) -> anyhow::Result<Sqlite> {
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    Sqlite::open(path)
        .await
        .with_context(|| format!("opening database {}", path.display()))
}

/// Opens the database the configuration names (applying migrations) and
/// runs `command` on the backend its URL scheme picks.
async fn with_store(config: Config, command: Command) -> anyhow::Result<()> {
    match config.database()? {
        Database::Sqlite(path) => {
            let store = open_sqlite(&path).await?;
            dispatch(store, config, command).await
        }
        Database::Postgres(url) => {
            let store = Postgres::open(&url, config.database_pool_size)
                .await
                .with_context(|| format!("opening database {}", redact_url(&url)))?;
            dispatch(store, config, command).await
        }
    }
}

async fn dispatch<S: Store>(store: S, config: Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::DefaultConfig
        | Command::NewDirectoryKey { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(()),
        Command::Serve(_) => serve(config, store).await,
        Command::Admin(command) => admin::run(&store, &config, command).await,
    }
}

/// Creates `dir` (and its parents), readable by its owner only.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { common, command } = cli;
    let args = match &command {
        Command::DefaultConfig => {
            print!(
                "{}{}{}",
                config::DEFAULT_CONFIG,
                config::DEFAULT_LIMITS,
                config::DEFAULT_RETENTION
            );
            return Ok(());
        }
        Command::NewDirectoryKey { out } => {
            return admin::keys::new_directory_key(out, &mut std::io::stdout().lock());
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut out = std::io::stdout().lock();
            baton::cli_docs::completions(&mut Cli::command(), "batond", *shell, &mut out);
            return Ok(());
        }
        Command::Man { out } => {
            use clap::CommandFactory as _;
            let pages = baton::cli_docs::man_pages(Cli::command(), out)
                .with_context(|| format!("writing man pages into {}", out.display()))?;
            println!("{} man pages in {}", pages.len(), out.display());
            return Ok(());
        }
        Command::Serve(serve) => ConfigArgs {
            common,
            serve: (**serve).clone(),
            ..ConfigArgs::default()
        },
        Command::Admin(admin) => ConfigArgs {
            common,
            code: admin.code_args(),
            ..ConfigArgs::default()
        },
    };
    let config = Config::resolve(&args)?;
    init_logging(config.log_format);
    // Held until the process ends: the lock keeps other `serve`s off the file.
    let mut _serve_lock = None;
    match &command {
        Command::Serve(_) => {
            let loopback = config.listen.ip().is_loopback();
            if config.insecure_loopback && config.http_listen.is_some() {
                bail!(
                    "--http-listen serves the dashboard over TLS with the daemon's certificate: drop --insecure-loopback"
                );
            }
            if config.insecure_loopback && !loopback {
                bail!(
                    "refusing plaintext gRPC on {}: --insecure-loopback is only allowed on a loopback address (127.0.0.1 or ::1); drop it to serve TLS",
                    config.listen
                );
            }
            tracing::debug!(?config, "configuration");
            create_private_dir(&config.data_dir)?;
            if let Database::Sqlite(path) = config.database()? {
                _serve_lock = Some(lock_for_serve(&path)?);
            }
        }
        Command::Admin(admin) if !admin.creates_database() => {
            if let Database::Sqlite(path) = config.database()? {
                refuse_missing_database(&path)?;
            }
        }
        _ => {}
    }
    with_store(config, command).await
}

/// Fails, naming `path` and how to point at the right database, when the
/// SQLite file an admin command would work on does not exist (creating it
/// would print enrolment codes no daemon knows about).
fn refuse_missing_database(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    bail!(
        "no database at {}: admin commands work on the database `batond serve` uses and do not create one. \
         Point at it with --data-dir DIR (or BATON_DATA_DIR=DIR; the database is DIR/baton.db) \
         or --database-url sqlite:PATH / postgres://… (or BATON_DATABASE_URL), given before or after `admin`. \
         To start an empty database on purpose, run `batond admin migrate` (or `batond serve`) first.",
        path.display()
    )
}

/// The lock file beside a SQLite database: `baton.db` → `baton.db.serve-lock`.
fn serve_lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".serve-lock");
    PathBuf::from(name)
}

/// Takes the advisory lock that lets one `batond serve` at a time use the
/// SQLite file at `database` (admin commands do not take it). The lock is
/// the operating system's, so it goes when the process does, however it
/// ends; the file keeps the holder's process id for the message.
fn lock_for_serve(database: &Path) -> anyhow::Result<std::fs::File> {
    if let Some(parent) = database.parent() {
        create_private_dir(parent)?;
    }
    let path = serve_lock_path(database);
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            bail!(
                "another batond serve{holder} is already using the database {}: only one may serve a SQLite file (lock {}). \
                 Stop it first, or give this one its own --data-dir; several nodes need PostgreSQL. \
                 `batond admin` commands work beside the running daemon.",
                database.display(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(file)
}

/// A future that resolves when SIGINT or SIGTERM arrives. The handlers are
/// installed now, not when the future is first polled: a signal that comes
/// just after `serve` says it is listening still shuts it down cleanly.
fn terminate() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

async fn serve<S: Store>(config: Config, store: S) -> anyhow::Result<()> {
    let cleaned = store
        .clean_staging()
        .await
        .context("cleaning unfinished uploads")?;
    if cleaned > 0 {
        tracing::info!(chunks = cleaned, "removed chunks of unfinished uploads");
    }
    store
        .listen()
        .await
        .context("listening for packs stored by other nodes")?;

    let builder = tonic::transport::Server::builder()
        .max_concurrent_streams(config.limits.max_concurrent_streams);
    let mut ca_path = None;
    let mut certs = None;
    if !config.insecure_loopback {
        let source = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => tls::live::Source::Given {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => tls::live::Source::Generated {
                dir: config.data_dir.join("tls"),
                listen: config.listen.ip(),
                names: config.tls_names.clone(),
            },
        };
        let (live, ca) = tls::live::LiveCerts::load(source)?;
        ca_path = ca;
        certs = Some(live);
    }

    // Before the first call, so the layer's first counts are kept.
    let metrics_handle = match config.metrics_listen {
        Some(_) => Some(metrics::install()?),
        None => None,
    };
    let shutdown = CancellationToken::new();
    let notary = notary::Notary::load_or_create(&config.data_dir)?;
    let app = app::App::new(store, &config, notary, shutdown.clone());
    if let Some(certs) = &certs {
        certs.keep_fresh(shutdown.clone())?;
    }
    app.watch_directory();
    tokio::spawn(clocks::overdue::watch(app.clone()));
    tokio::spawn(retention::watch(app.clone()));
    let metrics_at = match (config.metrics_listen, metrics_handle) {
        (Some(address), Some(handle)) => Some(metrics::serve(address, handle, app.clone()).await?),
        _ => None,
    };
    let dashboard_at = match (config.http_listen, &certs) {
        (Some(address), Some(certs)) => {
            Some(dashboard::serve(address, app.clone(), certs.clone(), &config).await?)
        }
        _ => None,
    };
    let federation_at = match config.federation_listen {
        Some(address) => Some(federation::serve(address, app.clone(), &config).await?),
        None => None,
    };
    let router = services::router(builder, app).await?;

    let terminated = terminate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    {
        let mut out = std::io::stdout().lock();
        let scheme = if config.insecure_loopback {
            "http"
        } else {
            "https"
        };
        writeln!(out, "listening on {scheme}://{local}")?;
        match &ca_path {
            Some(path) => writeln!(out, "CA certificate: {}", path.display())?,
            None if config.insecure_loopback => {
                writeln!(out, "CA certificate: none (plaintext, loopback only)")?
            }
            None => writeln!(out, "CA certificate: the issuer of --tls-cert")?,
        }
        if let Some(at) = metrics_at {
            writeln!(out, "metrics on http://{at}/metrics")?;
        }
        if let Some(at) = dashboard_at {
            writeln!(out, "dashboard on https://{at}/")?;
        }
        if let Some(at) = federation_at {
            writeln!(out, "federation on https://{at}")?;
        }
        out.flush()?;
    }
    tracing::info!(address = %local, tls = !config.insecure_loopback, "serving");

    let incoming = listener::incoming(
        listener,
        config.limits.max_connections,
        config.limits.max_connections_per_address,
    );
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            terminated.await;
            tracing::info!("shutting down");
            shutdown.cancel();
        }
    };
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let serving = async {
        match &certs {
            Some(certs) => {
                let handshake = Duration::from_secs(config.limits.tls_handshake_timeout_secs);
                let tls = listener::handshakes(incoming, certs.acceptor(&[b"h2"])?, handshake);
                router.serve_with_incoming_shutdown(tls, signal).await
            }
            None => router.serve_with_incoming_shutdown(incoming, signal).await,
        }
        .context("serving")
    };
    tokio::select! {
        result = serving => result?,
        () = grace => tracing::warn!("calls still running after the grace period; stopping anyway"),
    }
    Ok(())
}
