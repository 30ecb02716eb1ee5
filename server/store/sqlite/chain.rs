//! What SQLite does its own way for every write: the write transaction
//! begins with `BEGIN IMMEDIATE` (so concurrent writers, `batond admin` in
//! another process included, queue on the busy timeout instead of failing),
//! and the audit chain's head is its last row.

use sqlx::{QueryBuilder, Sqlite as Db, SqliteConnection, SqlitePool, Transaction};

use crate::audit;
use crate::store::Result;
use crate::store::rows::next_entry;

/// A write transaction on the pool.
pub async fn begin(pool: &SqlitePool) -> Result<Transaction<'static, Db>> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

/// Appends `event` to the audit chain inside the caller's transaction.
pub async fn append(conn: &mut SqliteConnection, now_ms: i64, event: &audit::Event) -> Result<()> {
    let last: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let entry = next_entry(last, now_ms, event);
    insert_audit_entry!(&mut *conn, &entry)?;
    Ok(())
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
    for rows in entries.chunks(crate::store::rows::AUDIT_ROWS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Db>::new(
            "INSERT INTO audit (seq, at_ms, actor, action, subject, prev_hash, hash) ",
        );
        insert.push_values(rows, |mut b, e| {
            b.push_bind(e.seq)
                .push_bind(e.at_ms)
                .push_bind(&e.actor)
                .push_bind(&e.action)
                .push_bind(&e.subject)
                .push_bind(&e.prev_hash)
                .push_bind(&e.hash);
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}
