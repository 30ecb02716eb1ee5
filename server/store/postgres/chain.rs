//! What PostgreSQL does its own way for every write: a plain transaction
//! (races between nodes are settled by `ON CONFLICT` and row locks), and
//! one chain-head row that every appending transaction locks, so the audit
//! log stays a single hash chain across nodes.

use sqlx::{PgConnection, PgPool, Postgres as Db, Transaction};

use crate::audit;
use crate::store::Result;

/// A write transaction on the pool.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Db>> {
    Ok(pool.begin().await?)
}

/// Appends `event` to the audit chain inside the caller's transaction. The
/// lock on the head row is held until that transaction ends, so appends from
/// every node queue here and the chain has no forks or gaps.
pub async fn append(conn: &mut PgConnection, now_ms: i64, event: &audit::Event) -> Result<()> {
    append_all(conn, &[(now_ms, event)]).await
}

/// Appends `events` (each with its time), in order, inside the caller's
/// transaction: the head row locked and moved once, one insert for them all.
pub async fn append_all(conn: &mut PgConnection, events: &[(i64, &audit::Event)]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let (seq, hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *conn)
            .await?;
    let entries = crate::store::rows::chain_entries((seq > 0).then_some((seq, hash)), events);
    insert_audit_entries!(Db, conn, entries)?;
    if let Some(head) = entries.last() {
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(head.seq)
            .bind(&head.hash)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
