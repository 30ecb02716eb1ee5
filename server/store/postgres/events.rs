//! The background work of a PostgreSQL node: hearing about new packs that
//! any node committed (`NOTIFY` in the committing transaction, `LISTEN`
//! here, fed to this node's `Watch` subscribers), and removing the staged
//! chunks of uploads that a dead node abandoned.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::broadcast;

use super::sql::pack_by_id;
use crate::store::rows::arrival;
use crate::store::{Arrival, Result};

/// The `NOTIFY` channel; the payload is the new pack's id.
pub(super) const CHANNEL: &str = "baton_packs";

/// Staged chunks of an upload that has not staged anything for this long
/// belong to a node that died: any node may remove them.
pub const STALE_UPLOAD: Duration = Duration::from_secs(60 * 60);

/// Starts listening for new packs and the periodic clean-up.
pub(super) async fn start(
    options: &PgConnectOptions,
    pool: &PgPool,
    arrivals: &broadcast::Sender<Arrival>,
) -> Result<()> {
    // A connection of its own, outside the pool the calls use.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&own).await?;
    listener.listen(CHANNEL).await?;
    tokio::spawn(fan_in(listener, pool.clone(), arrivals.clone()));
    tokio::spawn(clean_periodically(pool.clone()));
    Ok(())
}

/// Turns this node's notifications into local arrivals, for as long as the
/// process runs. A lost connection is re-established by `PgListener`;
/// notifications sent meanwhile are missed (watchers list their inbox).
async fn fan_in(mut listener: PgListener, pool: PgPool, arrivals: broadcast::Sender<Arrival>) {
    loop {
        let note = match listener.recv().await {
            Ok(note) => note,
            Err(e) => {
                tracing::warn!(error = %e, "listening for new packs failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if arrivals.receiver_count() == 0 {
            continue;
        }
        match pack_by_id(&pool, note.payload()).await {
            Ok(Some(pack)) => {
                let _ = arrivals.send(arrival(&pack));
            }
            Ok(None) => tracing::warn!("a notified pack is not visible"),
            Err(e) => tracing::error!(error = %e, "reading a notified pack"),
        }
    }
}

/// Removes the staged chunks of uploads idle for [`STALE_UPLOAD`].
pub(super) async fn clean_stale(pool: &PgPool) -> Result<u64> {
    let cutoff = crate::store::now_ms() - STALE_UPLOAD.as_millis() as i64;
    let done = sqlx::query(
        "DELETE FROM pack_chunks WHERE staged AND upload_id IN \
         (SELECT upload_id FROM pack_chunks WHERE staged GROUP BY upload_id \
          HAVING MAX(staged_at_ms) < $1)",
    )
    .bind(cutoff)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Cleans up after dead nodes every quarter of [`STALE_UPLOAD`], for as long
/// as the process runs (nodes rarely restart, so start-up is not enough).
async fn clean_periodically(pool: PgPool) {
    loop {
        tokio::time::sleep(STALE_UPLOAD / 4).await;
        match clean_stale(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(chunks = n, "removed chunks of abandoned uploads"),
            Err(e) => tracing::warn!(error = %e, "cleaning abandoned uploads failed"),
        }
    }
}
