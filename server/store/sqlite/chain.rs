//! What SQLite does its own way for every write: the write transaction
//! begins with `BEGIN IMMEDIATE` (so concurrent writers, `batond admin` in
//! another process included, queue on the busy timeout instead of failing),
//! and the audit chain's head is its last row.

use sqlx::{Sqlite as Db, SqliteConnection, SqlitePool, Transaction};

use crate::audit;
use crate::store::Result;

/// A write transaction on the pool.
pub async fn begin(pool: &SqlitePool) -> Result<Transaction<'static, Db>> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// Appends `event` to the audit chain inside the caller's transaction.
pub async fn append(conn: &mut SqliteConnection, now_ms: i64, event: &audit::Event) -> Result<()> {
    append_all(conn, &[(now_ms, event)]).await
}

/// Appends `events` (each with its time), in order, inside the caller's
/// transaction: one read of the head and one insert for them all.
pub async fn append_all(
    conn: &mut SqliteConnection,
    events: &[(i64, &audit::Event)],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let last: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let entries = crate::store::rows::chain_entries(last, events);
    insert_audit_entries!(Db, conn, entries)
}
