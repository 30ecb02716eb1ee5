//! What every gRPC service shares: the store, the directory cache, limits
//! and the shutdown signal. Its own module so that the services and the
//! authentication they call both depend on it, not on each other.

use std::sync::Arc;
use std::time::Duration;

use crate::endorsements::Endorsements;
use crate::signatures::Signatures;
use baton::Laestab;
use baton::keys::SchoolKey;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::attempts::Attempts;
use crate::cache::DirectoryCache;
use crate::config::Config;
use crate::limits::{Caps, StreamLimits};
use crate::notary::Notary;
use crate::store::Store;

/// What every service shares.
pub struct App<S> {
    /// Persistent state.
    pub store: S,
    /// Schools, keys and tokens, as of the store's directory version.
    pub directory: DirectoryCache,
    /// Largest pack accepted, bytes of ciphertext.
    pub max_pack_bytes: u64,
    /// Most ciphertext one school may have waiting (sent, not acknowledged).
    pub school_quota_bytes: u64,
    /// What each school has waiting, for its quota.
    pub school_waiting: crate::quota::Waiting<Laestab>,
    /// What each peer's schools have waiting here, for the peer's quota.
    pub peer_waiting: crate::quota::Waiting<String>,
    /// Cancelled when the daemon shuts down, to end long streams.
    pub shutdown: CancellationToken,
    /// Longest wait for the next message of an upload stream; a stalled
    /// (or slowloris) upload is dropped after it.
    pub upload_idle_timeout: Duration,
    /// Failed enrolment codes per address (10 a window).
    pub redeem_attempts: Attempts,
    /// Unknown or revoked tokens per address (30 a window).
    pub token_attempts: Attempts,
    /// The directory version as this node last read it, for long streams
    /// that authenticated once (`Watch`): they check their token again when
    /// it moves, instead of each polling the store. Fed by
    /// [`App::watch_directory`].
    pub directory_changes: watch::Sender<i64>,
    /// The trust's directory key, when only keys it endorsed count as a
    /// school's keys for sealing, and the endorsements it was seen to make.
    pub endorsements: Endorsements,
    /// Checks upload headers' signatures, many at once.
    pub signatures: Signatures,
    /// Concurrent long calls per school.
    pub streams: StreamLimits,
    /// Slowest average an upload may keep after the idle timeout, bytes/s.
    pub upload_min_bytes_per_sec: u64,
    /// Signs checkpoints of the audit log's head.
    pub notary: Notary,
    /// How long packs' ciphertext is kept.
    pub retention: crate::config::Retention,
}

/// How often a node reads the directory version for its long streams.
const DIRECTORY_POLL: Duration = Duration::from_secs(2);

/// Failed enrolment attempts an address may make in one window.
pub const MAX_FAILED_REDEEMS: usize = 10;
/// Failed authentications an address may make in one window.
pub const MAX_FAILED_TOKENS: usize = 30;

impl<S: Store> App<S> {
    /// Shared state over `store`, with the limits `config` gives.
    pub fn new(
        store: S,
        config: &Config,
        notary: Notary,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let attempt_window = Duration::from_secs(config.attempt_window_secs);
        let limits = &config.limits;
        Arc::new(Self {
            store,
            directory: DirectoryCache::default(),
            max_pack_bytes: config.max_pack_bytes,
            school_quota_bytes: config.school_quota_bytes,
            school_waiting: Default::default(),
            peer_waiting: Default::default(),
            shutdown,
            upload_idle_timeout: Duration::from_secs(config.upload_idle_timeout_secs),
            redeem_attempts: Attempts::new(
                "enrolment attempts",
                MAX_FAILED_REDEEMS,
                attempt_window,
            ),
            token_attempts: Attempts::new("authentications", MAX_FAILED_TOKENS, attempt_window),
            directory_changes: watch::channel(0).0,
            endorsements: Endorsements::new(config.directory_key),
            signatures: Signatures::start(),
            streams: StreamLimits::new(Caps {
                uploads: limits.school_max_uploads,
                downloads: limits.school_max_downloads,
                watches: limits.school_max_watches,
            }),
            upload_min_bytes_per_sec: limits.upload_min_bytes_per_sec,
            notary,
            retention: config.retention,
        })
    }

    /// A signed checkpoint of the audit log's head as it is now, for an
    /// answer; `None` (logged) if the log cannot be read.
    pub async fn checkpoint(&self) -> Option<baton::api::v1::AuditCheckpoint> {
        match self.notary.checkpoint(&self.store).await {
            Ok(c) => c.as_ref().map(baton::api::v1::AuditCheckpoint::from),
            Err(e) => {
                tracing::error!(error = %e, "could not sign an audit checkpoint");
                None
            }
        }
    }

    /// [`Self::checkpoint`] for an upload's answer: the head as read after
    /// the latest group commit (which includes the upload), without
    /// reading the store once a pack; read afresh if there is none.
    pub async fn checkpoint_after_upload(&self) -> Option<baton::api::v1::AuditCheckpoint> {
        match self.store.written_head() {
            Some((entries, hash)) => Some(baton::api::v1::AuditCheckpoint::from(
                &self.notary.sign_head(entries, hash),
            )),
            None => self.checkpoint().await,
        }
    }

    /// True without a directory key, or if it endorsed `key` for `school`.
    pub fn endorsed(&self, school: &Laestab, key: &SchoolKey) -> bool {
        self.endorsements.endorsed(school, key)
    }

    /// Starts the one task that reads the directory version every 2 s
    /// (while any stream listens) and announces a change, whichever process
    /// or node made it; it ends with the daemon.
    pub fn watch_directory(self: &Arc<Self>) {
        let app = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DIRECTORY_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(app) = app.upgrade() else { break };
                if app.shutdown.is_cancelled() {
                    break;
                }
                if app.directory_changes.receiver_count() == 0 {
                    continue;
                }
                match app.directory.view(&app.store).await {
                    Ok(view) => {
                        let now = view.version();
                        app.directory_changes.send_if_modified(|seen| {
                            let moved = *seen != now;
                            *seen = now;
                            moved
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the directory version failed"),
                }
            }
        });
    }
}
