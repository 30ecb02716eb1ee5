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

use baton::Laestab;
use baton::keys::{KeyId, SchoolKey};
use baton::pack::{PackId, SignedHeader};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use tokio::sync::broadcast;

use super::group::Committer;
use super::rows::{
    AUDIT_COLUMNS, AuditRow, KEY_COLUMNS, KeyRow, PACK_COLUMNS, PackRow, corrupt, entry_from_row,
    key_from_row, laestab, next_entry, pack_from_row, page_from_rows, roles_text,
};
use super::{
    ARRIVALS_BUFFER, Acknowledged, Arrival, Committed, DIRECTORY_VERSION_SQL, NewSchool, Page,
    Result, School, Store, StoreError, StoredPack,
};
use crate::audit;

/// The PostgreSQL implementation of [`Store`].
pub struct Postgres {
    pool: PgPool,
    /// This node's group committer (see [`committer`]).
    committer: Committer,
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

/// Appends `event` to the audit chain inside the caller's transaction. The
/// lock on the head row is held until that transaction ends, so appends from
/// every node queue here and the chain has no forks or gaps.
async fn append(conn: &mut PgConnection, now_ms: i64, event: &audit::Event) -> Result<()> {
    let (seq, hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *conn)
            .await?;
    let entry = next_entry((seq > 0).then_some((seq, hash)), now_ms, event);
    sqlx::query(
        "INSERT INTO audit (seq, at_ms, actor, action, subject, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(entry.seq)
    .bind(entry.at_ms)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(&entry.subject)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(entry.seq)
        .bind(&entry.hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn school_in(conn: &mut PgConnection, laestab: &Laestab) -> Result<Option<School>> {
    let row: Option<(String, String, String, i64)> =
        sqlx::query_as("SELECT name, phase, urn, created_at_ms FROM schools WHERE laestab = $1")
            .bind(laestab.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    let Some((name, phase, urn, created_at_ms)) = row else {
        return Ok(None);
    };
    let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE laestab = $1 ORDER BY key_id");
    let keys: Vec<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(laestab.as_str())
        .fetch_all(&mut *conn)
        .await?;
    Ok(Some(School {
        info: NewSchool {
            laestab: *laestab,
            name,
            phase,
            urn,
        },
        created_at_ms,
        keys: keys.into_iter().map(key_from_row).collect::<Result<_>>()?,
    }))
}

async fn insert_enrolment(
    conn: &mut PgConnection,
    laestab: &Laestab,
    code_hash: [u8; 32],
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO enrolments (code_hash, laestab, created_at_ms, expires_at_ms) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(code_hash.to_vec())
    .bind(laestab.as_str())
    .bind(now_ms)
    .bind(expires_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_key(conn: &mut PgConnection, laestab: &Laestab, key: &SchoolKey) -> Result<()> {
    let done = sqlx::query(
        "INSERT INTO keys (key_id, laestab, age_recipient, signing_key, label, roles, created_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key_id) DO NOTHING",
    )
    .bind(key.key_id().to_string())
    .bind(laestab.as_str())
    .bind(key.public.age_recipient())
    .bind(key.public.signing_key_bytes().to_vec())
    .bind(&key.label)
    .bind(roles_text(key))
    .bind(key.created_at_ms)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict("key"));
    }
    Ok(())
}

async fn pack_by_id(pool: &PgPool, id: &str) -> Result<Option<StoredPack>> {
    let sql = format!("SELECT {PACK_COLUMNS} FROM packs WHERE pack_id = $1");
    let row: Option<PackRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(pack_from_row).transpose()
}

impl Postgres {
    /// Connects with at most `pool_size` connections and applies migrations.
    pub async fn open(url: &str, pool_size: u32) -> Result<Self> {
        let options: PgConnectOptions = url.parse()?;
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
        Ok(Self {
            pool,
            committer,
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

    async fn page(
        &self,
        sql: &'static str,
        school: &Laestab,
        cursor: i64,
        limit: u32,
        event: audit::Event,
    ) -> Result<Page> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<PackRow> = sqlx::query_as(sql)
            .bind(school.as_str())
            .bind(cursor)
            .bind(i64::from(limit) + 1)
            .fetch_all(&mut *tx)
            .await?;
        append(&mut tx, super::now_ms(), &event).await?;
        tx.commit().await?;
        page_from_rows(rows, limit)
    }

    /// Removes staged chunks left by a finished or failed upload.
    async fn drop_staged(&self, upload_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM pack_chunks WHERE upload_id = $1 AND staged")
            .bind(upload_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Store for Postgres {
    /// Removes staged chunks of uploads idle for [`events::STALE_UPLOAD`]: other
    /// nodes may be receiving uploads right now.
    async fn clean_staging(&self) -> Result<u64> {
        events::clean_stale(&self.pool).await
    }

    async fn add_school(
        &self,
        school: &NewSchool,
        code_hash: [u8; 32],
        now_ms: i64,
        expires_at_ms: i64,
        event: audit::Event,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "INSERT INTO schools (laestab, name, phase, urn, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (laestab) DO NOTHING",
        )
        .bind(school.laestab.as_str())
        .bind(&school.name)
        .bind(&school.phase)
        .bind(&school.urn)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Conflict("school"));
        }
        insert_enrolment(&mut tx, &school.laestab, code_hash, now_ms, expires_at_ms).await?;
        append(&mut tx, now_ms, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn issue_code(
        &self,
        laestab: &Laestab,
        code_hash: [u8; 32],
        now_ms: i64,
        expires_at_ms: i64,
        event: audit::Event,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if school_in(&mut tx, laestab).await?.is_none() {
            return Err(StoreError::NotFound("school"));
        }
        insert_enrolment(&mut tx, laestab, code_hash, now_ms, expires_at_ms).await?;
        append(&mut tx, now_ms, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_schools(&self) -> Result<Vec<School>> {
        let mut conn = self.pool.acquire().await?;
        let ids: Vec<(String,)> = sqlx::query_as("SELECT laestab FROM schools ORDER BY laestab")
            .fetch_all(&mut *conn)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id,) in ids {
            if let Some(school) = school_in(&mut conn, &laestab(&id)?).await? {
                out.push(school);
            }
        }
        Ok(out)
    }

    async fn school(&self, laestab: &Laestab) -> Result<Option<School>> {
        let mut conn = self.pool.acquire().await?;
        school_in(&mut conn, laestab).await
    }

    async fn redeem(
        &self,
        laestab: &Laestab,
        code_hash: [u8; 32],
        key: &SchoolKey,
        token_hash: [u8; 32],
        now_ms: i64,
        event: audit::Event,
    ) -> Result<School> {
        let mut tx = self.pool.begin().await?;
        // A concurrent redeem of the same code waits on the row, then finds
        // it used: exactly one succeeds.
        let used = sqlx::query(
            "UPDATE enrolments SET used_at_ms = $1 WHERE code_hash = $2 AND laestab = $3 \
             AND used_at_ms IS NULL AND expires_at_ms > $1",
        )
        .bind(now_ms)
        .bind(code_hash.to_vec())
        .bind(laestab.as_str())
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Err(StoreError::BadCode);
        }
        insert_key(&mut tx, laestab, key).await?;
        sqlx::query("INSERT INTO tokens (token_hash, laestab, created_at_ms) VALUES ($1, $2, $3)")
            .bind(token_hash.to_vec())
            .bind(laestab.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        append(&mut tx, now_ms, &event).await?;
        let school = school_in(&mut tx, laestab)
            .await?
            .ok_or(StoreError::NotFound("school"))?;
        tx.commit().await?;
        Ok(school)
    }

    async fn add_key(&self, laestab: &Laestab, key: &SchoolKey, event: audit::Event) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_key(&mut tx, laestab, key).await?;
        append(&mut tx, key.created_at_ms, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_key(
        &self,
        laestab: &Laestab,
        key_id: KeyId,
        now_ms: i64,
        event: audit::Event,
    ) -> Result<SchoolKey> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE keys SET revoked_at_ms = COALESCE(revoked_at_ms, $1) \
             WHERE laestab = $2 AND key_id = $3",
        )
        .bind(now_ms)
        .bind(laestab.as_str())
        .bind(key_id.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::NotFound("key"));
        }
        append(&mut tx, now_ms, &event).await?;
        let key = school_in(&mut tx, laestab)
            .await?
            .and_then(|s| s.keys.into_iter().find(|k| k.key_id() == key_id))
            .ok_or(StoreError::NotFound("key"))?;
        tx.commit().await?;
        Ok(key)
    }

    async fn directory_version(&self) -> Result<i64> {
        let (version,): (i64,) = sqlx::query_as(DIRECTORY_VERSION_SQL)
            .fetch_one(&self.pool)
            .await?;
        Ok(version)
    }

    async fn token_school(&self, token_hash: [u8; 32]) -> Result<Option<Laestab>> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT laestab FROM tokens WHERE token_hash = $1 AND revoked_at_ms IS NULL",
        )
        .bind(token_hash.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(l,)| laestab(&l)).transpose()
    }

    async fn revoke_tokens(
        &self,
        laestab: &Laestab,
        now_ms: i64,
        event: audit::Event,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        if school_in(&mut tx, laestab).await?.is_none() {
            return Err(StoreError::NotFound("school"));
        }
        let done = sqlx::query(
            "UPDATE tokens SET revoked_at_ms = $1 WHERE laestab = $2 AND revoked_at_ms IS NULL",
        )
        .bind(now_ms)
        .bind(laestab.as_str())
        .execute(&mut *tx)
        .await?;
        append(&mut tx, now_ms, &event).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn pack(&self, id: PackId) -> Result<Option<StoredPack>> {
        pack_by_id(&self.pool, &id.to_string()).await
    }

    async fn stage_chunk(&self, upload_id: &str, idx: i64, data: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO pack_chunks (upload_id, idx, staged, staged_at_ms, data) \
             VALUES ($1, $2, TRUE, $3, $4)",
        )
        .bind(upload_id)
        .bind(idx)
        .bind(super::now_ms())
        .bind(data)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn discard_upload(&self, upload_id: &str) -> Result<()> {
        self.drop_staged(upload_id).await
    }

    async fn commit_upload(
        &self,
        upload_id: &str,
        header: &SignedHeader,
        header_bytes: &[u8],
        tail: Vec<(i64, Vec<u8>)>,
        now_ms: i64,
        event: audit::Event,
        directory_version: Option<i64>,
    ) -> Result<Committed> {
        self.committer
            .commit(
                upload_id,
                header,
                header_bytes,
                tail,
                now_ms,
                event,
                directory_version,
            )
            .await
    }

    async fn inbox(
        &self,
        to: &Laestab,
        after_seq: i64,
        limit: u32,
        event: audit::Event,
    ) -> Result<Page> {
        const SQL: &str = "SELECT seq, header, from_laestab, to_laestab, ciphertext_sha256, upload_id, \
             chunks, status, uploaded_at_ms, downloaded_at_ms, acknowledged_at_ms, receipt \
             FROM packs WHERE to_laestab = $1 AND status <> 'acknowledged' AND seq > $2 \
             ORDER BY seq LIMIT $3";
        self.page(SQL, to, after_seq, limit, event).await
    }

    async fn sent(
        &self,
        from: &Laestab,
        before_seq: i64,
        limit: u32,
        event: audit::Event,
    ) -> Result<Page> {
        const SQL: &str = "SELECT seq, header, from_laestab, to_laestab, ciphertext_sha256, upload_id, \
             chunks, status, uploaded_at_ms, downloaded_at_ms, acknowledged_at_ms, receipt \
             FROM packs WHERE from_laestab = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";
        self.page(SQL, from, before_seq, limit, event).await
    }

    async fn chunk(&self, upload_id: &str, idx: i64) -> Result<Vec<u8>> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT data FROM pack_chunks WHERE upload_id = $1 AND idx = $2 AND NOT staged",
        )
        .bind(upload_id)
        .bind(idx)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(d,)| d)
            .ok_or_else(|| corrupt(format!("chunk {idx} of upload {upload_id} is missing")))
    }

    async fn mark_downloaded(&self, id: PackId, now_ms: i64, event: audit::Event) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE packs SET downloaded_at_ms = COALESCE(downloaded_at_ms, $1), \
             status = CASE status WHEN 'pending' THEN 'downloaded' ELSE status END \
             WHERE pack_id = $2",
        )
        .bind(now_ms)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        append(&mut tx, now_ms, &event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn acknowledge(
        &self,
        id: PackId,
        receipt: &[u8],
        now_ms: i64,
        event: audit::Event,
    ) -> Result<Acknowledged> {
        let mut tx = self.pool.begin().await?;
        // The row lock makes concurrent acknowledgements through several
        // nodes take turns: the first receipt wins, the same one again is a retry.
        let row: Option<(Option<Vec<u8>>, Option<i64>)> = sqlx::query_as(
            "SELECT receipt, acknowledged_at_ms FROM packs WHERE pack_id = $1 FOR UPDATE",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match row {
            None => return Err(StoreError::NotFound("pack")),
            Some((Some(stored), at)) if stored == receipt => Acknowledged::At(at.unwrap_or(now_ms)),
            Some((Some(_), _)) => Acknowledged::Conflict,
            Some((None, _)) => {
                sqlx::query(
                    "UPDATE packs SET receipt = $1, acknowledged_at_ms = $2, \
                     status = 'acknowledged', downloaded_at_ms = COALESCE(downloaded_at_ms, $2) \
                     WHERE pack_id = $3",
                )
                .bind(receipt)
                .bind(now_ms)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                Acknowledged::At(now_ms)
            }
        };
        if outcome != Acknowledged::Conflict {
            append(&mut tx, now_ms, &event).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn audit_log(&self) -> Result<Vec<audit::Entry>> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq");
        let rows: Vec<AuditRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(entry_from_row).collect())
    }

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

mod committer;
mod events;
#[cfg(test)]
mod tests;
