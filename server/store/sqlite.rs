//! The SQLite store: one database file in the data directory, WAL, fully
//! synchronous commits, and every write transaction begun with
//! `BEGIN IMMEDIATE` so that concurrent writers (including `batond admin`
//! in another process) queue on the busy timeout instead of failing.
//!
//! Uploads' final commits go through a *group committer* ([`committer`]):
//! one task drains every commit request queued, writes them in one
//! transaction with a few multi-row statements, and answers each only after
//! that transaction is synced. Every acknowledged pack is on stable storage,
//! and one fsync serves many uploads.

use std::path::Path;
use std::time::Duration;

use baton::Laestab;
use baton::keys::{KeyId, SchoolKey};
use baton::pack::{PackId, SignedHeader};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite as Db, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::broadcast;

use super::rows::{
    AUDIT_COLUMNS, AuditRow, KEY_COLUMNS, KeyRow, PACK_COLUMNS, PackRow, corrupt, entry_from_row,
    key_from_row, laestab, next_entry, pack_from_row, page_from_rows, roles_text,
};
use super::{
    ARRIVALS_BUFFER, Acknowledged, Arrival, Committed, DIRECTORY_VERSION_SQL, NewSchool, Page,
    Result, School, Store, StoreError, StoredPack,
};
use crate::audit;

mod checkpoint;
mod committer;

use super::group::Committer;

/// A school's open packs after a cursor, oldest first (the partial index
/// `packs_inbox_open` answers it without touching acknowledged packs).
const INBOX_SQL: &str = "SELECT seq, header, from_laestab, to_laestab, ciphertext_sha256, upload_id, \
     chunks, status, uploaded_at_ms, downloaded_at_ms, acknowledged_at_ms, receipt \
     FROM packs WHERE to_laestab = ? AND status != 'acknowledged' AND seq > ? ORDER BY seq LIMIT ?";

/// A school's sent packs before a cursor, newest first (index `packs_sent`).
const SENT_SQL: &str = "SELECT seq, header, from_laestab, to_laestab, ciphertext_sha256, upload_id, \
     chunks, status, uploaded_at_ms, downloaded_at_ms, acknowledged_at_ms, receipt \
     FROM packs WHERE from_laestab = ? AND seq < ? ORDER BY seq DESC LIMIT ?";

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct Sqlite {
    pool: SqlitePool,
    /// Arrivals, in process: one node owns a SQLite file.
    arrivals: broadcast::Sender<Arrival>,
    /// The group committer's queue (see [`committer`]).
    committer: Committer,
}

/// Appends `event` to the audit chain inside the caller's transaction.
async fn append(conn: &mut SqliteConnection, now_ms: i64, event: &audit::Event) -> Result<()> {
    let last: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let entry = next_entry(last, now_ms, event);
    sqlx::query(
        "INSERT INTO audit (seq, at_ms, actor, action, subject, prev_hash, hash) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
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
    Ok(())
}

async fn keys_of(conn: &mut SqliteConnection, laestab: &Laestab) -> Result<Vec<SchoolKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE laestab = ? ORDER BY key_id");
    let rows: Vec<KeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(laestab.as_str())
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter().map(key_from_row).collect()
}

async fn school_in(conn: &mut SqliteConnection, laestab: &Laestab) -> Result<Option<School>> {
    let row: Option<(String, String, String, i64)> =
        sqlx::query_as("SELECT name, phase, urn, created_at_ms FROM schools WHERE laestab = ?")
            .bind(laestab.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    let Some((name, phase, urn, created_at_ms)) = row else {
        return Ok(None);
    };
    let keys = keys_of(conn, laestab).await?;
    Ok(Some(School {
        info: NewSchool {
            laestab: *laestab,
            name,
            phase,
            urn,
        },
        created_at_ms,
        keys,
    }))
}

async fn insert_enrolment(
    conn: &mut SqliteConnection,
    laestab: &Laestab,
    code_hash: [u8; 32],
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<()> {
    sqlx::query("INSERT INTO enrolments (code_hash, laestab, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?)")
        .bind(code_hash.to_vec())
        .bind(laestab.as_str())
        .bind(now_ms)
        .bind(expires_at_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_key(conn: &mut SqliteConnection, laestab: &Laestab, key: &SchoolKey) -> Result<()> {
    let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM keys WHERE key_id = ?")
        .bind(key.key_id().to_string())
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_some() {
        return Err(StoreError::Conflict("key"));
    }
    sqlx::query(
        "INSERT INTO keys (key_id, laestab, age_recipient, signing_key, label, roles, created_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
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
    Ok(())
}

impl Sqlite {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(15))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("server/migrations/sqlite")
            .run(&pool)
            .await?;
        let (arrivals, _) = broadcast::channel(ARRIVALS_BUFFER);
        let committer = Committer::start(committer::Writer::new(options, arrivals.clone()));
        Ok(Self {
            pool,
            arrivals,
            committer,
        })
    }

    async fn write(&self) -> Result<Transaction<'static, Db>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn page(
        &self,
        sql: &'static str,
        school: &Laestab,
        cursor: i64,
        limit: u32,
        event: audit::Event,
        now_ms: i64,
    ) -> Result<Page> {
        let mut tx = self.write().await?;
        let rows: Vec<PackRow> = sqlx::query_as(sql)
            .bind(school.as_str())
            .bind(cursor)
            .bind(i64::from(limit) + 1)
            .fetch_all(&mut *tx)
            .await?;
        append(&mut tx, now_ms, &event).await?;
        tx.commit().await?;
        page_from_rows(rows, limit)
    }
}

impl Store for Sqlite {
    async fn clean_staging(&self) -> Result<u64> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM pack_chunks WHERE staged = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn add_school(
        &self,
        school: &NewSchool,
        code_hash: [u8; 32],
        now_ms: i64,
        expires_at_ms: i64,
        event: audit::Event,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        if school_in(&mut tx, &school.laestab).await?.is_some() {
            return Err(StoreError::Conflict("school"));
        }
        sqlx::query(
            "INSERT INTO schools (laestab, name, phase, urn, created_at_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(school.laestab.as_str())
        .bind(&school.name)
        .bind(&school.phase)
        .bind(&school.urn)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
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
        let mut tx = self.write().await?;
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
        let mut tx = self.write().await?;
        let used = sqlx::query(
            "UPDATE enrolments SET used_at_ms = ? WHERE code_hash = ? AND laestab = ? \
             AND used_at_ms IS NULL AND expires_at_ms > ?",
        )
        .bind(now_ms)
        .bind(code_hash.to_vec())
        .bind(laestab.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Err(StoreError::BadCode);
        }
        insert_key(&mut tx, laestab, key).await?;
        sqlx::query("INSERT INTO tokens (token_hash, laestab, created_at_ms) VALUES (?, ?, ?)")
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
        let mut tx = self.write().await?;
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
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE keys SET revoked_at_ms = COALESCE(revoked_at_ms, ?) WHERE laestab = ? AND key_id = ?",
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
        let key = keys_of(&mut tx, laestab)
            .await?
            .into_iter()
            .find(|k| k.key_id() == key_id)
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
            "SELECT laestab FROM tokens WHERE token_hash = ? AND revoked_at_ms IS NULL",
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
        let mut tx = self.write().await?;
        if school_in(&mut tx, laestab).await?.is_none() {
            return Err(StoreError::NotFound("school"));
        }
        let done = sqlx::query(
            "UPDATE tokens SET revoked_at_ms = ? WHERE laestab = ? AND revoked_at_ms IS NULL",
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
        let sql = format!("SELECT {PACK_COLUMNS} FROM packs WHERE pack_id = ?");
        let row: Option<PackRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(pack_from_row).transpose()
    }

    async fn stage_chunk(&self, upload_id: &str, idx: i64, data: &[u8]) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO pack_chunks (upload_id, idx, staged, data) VALUES (?, ?, 1, ?)")
            .bind(upload_id)
            .bind(idx)
            .bind(data)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn discard_upload(&self, upload_id: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM pack_chunks WHERE upload_id = ? AND staged = 1")
            .bind(upload_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
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
        self.page(INBOX_SQL, to, after_seq, limit, event, super::now_ms())
            .await
    }

    async fn sent(
        &self,
        from: &Laestab,
        before_seq: i64,
        limit: u32,
        event: audit::Event,
    ) -> Result<Page> {
        self.page(SENT_SQL, from, before_seq, limit, event, super::now_ms())
            .await
    }

    async fn chunk(&self, upload_id: &str, idx: i64) -> Result<Vec<u8>> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT data FROM pack_chunks WHERE upload_id = ? AND idx = ? AND staged = 0",
        )
        .bind(upload_id)
        .bind(idx)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(d,)| d)
            .ok_or_else(|| corrupt(format!("chunk {idx} of upload {upload_id} is missing")))
    }

    async fn mark_downloaded(&self, id: PackId, now_ms: i64, event: audit::Event) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE packs SET downloaded_at_ms = COALESCE(downloaded_at_ms, ?), \
             status = CASE status WHEN 'pending' THEN 'downloaded' ELSE status END WHERE pack_id = ?",
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
        let mut tx = self.write().await?;
        let row: Option<(Option<Vec<u8>>, Option<i64>)> =
            sqlx::query_as("SELECT receipt, acknowledged_at_ms FROM packs WHERE pack_id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let outcome = match row {
            None => return Err(StoreError::NotFound("pack")),
            Some((Some(stored), at)) => {
                if stored == receipt {
                    Acknowledged::At(at.unwrap_or(now_ms))
                } else {
                    Acknowledged::Conflict
                }
            }
            Some((None, _)) => {
                sqlx::query(
                    "UPDATE packs SET receipt = ?, acknowledged_at_ms = ?, status = 'acknowledged', \
                     downloaded_at_ms = COALESCE(downloaded_at_ms, ?) WHERE pack_id = ?",
                )
                .bind(receipt)
                .bind(now_ms)
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
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Arrival> {
        self.arrivals.subscribe()
    }
}

#[cfg(test)]
mod tests;
