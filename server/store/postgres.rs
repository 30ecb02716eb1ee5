//! The PostgreSQL store, for several `batond` nodes on one database.
//!
//! No node keeps state another needs. Races between nodes are settled by the
//! database: `ON CONFLICT` on unique keys (two uploads of one pack id, two
//! enrolments of one school), row locks (`SELECT … FOR UPDATE` on the pack
//! being acknowledged) and one chain-head row that every appending
//! transaction locks, so the audit log stays a single hash chain. New packs
//! are announced with `NOTIFY` in the committing transaction; each node
//! `LISTEN`s and feeds its local `Watch` subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::broadcast;

use super::appender::Appender;
use super::group::Committer;
use super::{ARRIVALS_BUFFER, Arrival, Events, Result};

pub(super) mod chain;
mod committer;
mod events;
mod sql;

/// The PostgreSQL implementation of [`super::Store`].
pub struct Postgres {
    pool: PgPool,
    /// This node's group committer (see [`committer`]).
    committer: Committer,
    /// The audit queue, for listings.
    audit: Appender,
    /// Always `None`: nodes share no disk, so every chunk is a row.
    files: Option<super::PackFiles>,
    options: PgConnectOptions,
    arrivals: broadcast::Sender<Arrival>,
    listening: Arc<AtomicBool>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connect options hold the password: leave them out.
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

impl Postgres {
    /// Connects with at most `pool_size` connections and applies migrations.
    pub async fn open(url: &str, pool_size: u32) -> Result<Self> {
        // Slow statements are still logged (warn, 1 s); every statement at
        // debug level cost CPU in checks alone.
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()?
            .log_statements(log::LevelFilter::Off);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("server/migrations/postgres")
            .run(&pool)
            .await?;
        let (arrivals, _) = broadcast::channel(ARRIVALS_BUFFER);
        let committer = Committer::start(committer::Writer { pool: pool.clone() });
        let audit = Appender::start(pool.clone());
        Ok(Self {
            pool,
            committer,
            audit,
            files: None,
            options,
            arrivals,
            listening: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The connection pool, for tests that look behind the store's back.
    #[cfg(test)]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Removes staged chunks of uploads idle for [`events::STALE_UPLOAD`]:
    /// other nodes may be receiving uploads right now.
    async fn clean_staged(&self) -> Result<u64> {
        events::clean_stale(&self.pool).await
    }

    /// Nothing PostgreSQL can promise here: a deleted row is invisible at
    /// once, but its bytes stay in the table's files (and in WAL segments
    /// and base backups) until VACUUM frees the space and later writes
    /// reuse it. Autovacuum does the first; `VACUUM FULL pack_chunks`
    /// rewrites the table without them (see docs/operations.md). The
    /// ciphertext is age-encrypted in any case.
    async fn reclaim_space(&self) -> Result<bool> {
        Ok(true)
    }
}

impl super::Backup for Postgres {
    async fn backup_into(&self, _path: &std::path::Path) -> Result<bool> {
        Ok(false)
    }
}

impl Events for Postgres {
    async fn listen(&self) -> Result<()> {
        if self.listening.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        events::start(&self.options, &self.pool, &self.arrivals).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Arrival> {
        self.arrivals.subscribe()
    }
}

#[cfg(test)]
mod tests;
