//! The statements both backends run, written once: [`shared_store!`]
//! expands them for one backend's connection type. sqlx has no generic
//! connection that keeps both dialects' types (its `Any` driver cannot
//! decode a SQLite boolean), and code generic over `sqlx::Database` must
//! restate a dozen trait bounds on every function; a macro expanded twice
//! keeps each statement and its bindings in one place and compiles to the
//! same code as writing it out for each backend.
//!
//! Placeholders are `$1`, `$2`, …: PostgreSQL's own, and the numbered form
//! SQLite (and sqlx) accept, so one text serves both. Staged chunks are
//! `staged = TRUE`/`NOT staged`, which SQLite reads as 1 and 0.
//!
//! The expansion site provides what differs:
//! - `begin(&pool)`: a write transaction (`BEGIN IMMEDIATE` on SQLite);
//! - `append(&mut conn, now_ms, &event)`: the next link of the audit chain;
//! - fields `pool`, `committer` (group commit), `audit` (the audit
//!   queue) and `files` (ciphertext files, SQLite only: [`files`](super::files)),
//!   and an inherent `clean_staged()` for start-up cleaning;
//! - `for_update`: the row lock PostgreSQL takes on a pack being
//!   acknowledged (SQLite's write transaction already excludes others).

/// The columns of a pack row, in `rows::PackRow`'s order, for `SELECT`s.
macro_rules! pack_columns {
    () => {
        "seq, header, from_laestab, to_laestab, ciphertext_sha256, upload_id, chunks, status, \
         uploaded_at_ms, downloaded_at_ms, acknowledged_at_ms, receipt, supersedes, \
         superseded_by, recall, recalled_at_ms, deleted_at_ms, purged_at_ms, purge_reason, \
         forwards, readdressed_as, relay_to, relayed_at_ms, relayed_from"
    };
}

/// The columns a download's read adds to [`pack_columns`]: the pack's
/// chunk, if it is one chunk held as a row, and the directory version.
macro_rules! pack_chunk_columns {
    () => {
        ", (SELECT c.data FROM pack_chunks c WHERE c.upload_id = packs.upload_id \
         AND c.idx = 0 AND NOT c.staged AND packs.chunks = 1) AS first_chunk, \
         (SELECT v.version FROM directory_version v WHERE v.id = 1) AS directory_version"
    };
}

/// Inserts audit entries `$entries` (a slice of
/// [`audit::Entry`](crate::audit::Entry)) on connection `$conn` of database
/// `$db`, a multi-row statement per [`ROWS_PER_STATEMENT`](crate::store::group::ROWS_PER_STATEMENT):
/// the statement both backends' chain appends end with.
macro_rules! insert_audit_entries {
    ($db:ty, $conn:expr, $entries:expr) => {{
        let mut inserted: $crate::store::Result<()> = Ok(());
        for rows in $entries.chunks($crate::store::group::ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<$db>::new(
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
            if let Err(e) = insert.build().execute(&mut *$conn).await {
                inserted = Err(e.into());
                break;
            }
        }
        inserted
    }};
}

/// Implements [`Directory`](super::Directory), [`Packs`](super::Packs) and
/// [`AuditLog`](super::AuditLog) for `$store` over connections `$conn` of
/// pool `$pool` (database `$db`).
macro_rules! shared_store {
    ($store:ty, $conn:ty, $pool:ty, $db:ty, for_update = $lock:literal) => {
        use baton::Laestab;
        use baton::keys::{KeyId, Role, SchoolKey};
        use baton::trust::Revocation;
        use baton::pack::{PackId, SignedHeader};
        use tokio_stream::StreamExt as _;

        use $crate::audit;
        use $crate::store::rows::{
            AuditRow, KeyRow, PackRow, corrupt, entry_from_row, key_from_row, laestab,
            pack_from_row, page_from_rows, roles_from_text, roles_text,
        };
        use $crate::store::{
            Acknowledged, AuditLog, Committed, DIRECTORY_VERSION_SQL, Directory, Entries,
            NewSchool, Packs, Page, Result, School, StoreError, StoredPack, TokenHolder,
        };

        /// A school's packs waiting for it after a cursor, oldest first, and
        /// the packs it acknowledged that their sender then withdrew (the
        /// recall notice). The predicate is the partial index
        /// `packs_inbox_live`'s, word for word.
        pub(crate) const INBOX_SQL: &str = concat!(
            "SELECT ",
            pack_columns!(),
            " FROM packs WHERE to_laestab = $1 AND seq > $2 AND (status IN ('pending', 'downloaded') \
             OR (status = 'acknowledged' AND recalled_at_ms IS NOT NULL)) ORDER BY seq LIMIT $3"
        );

        /// A school's sent packs before a cursor, newest first (index `packs_sent`).
        pub(crate) const SENT_SQL: &str = concat!(
            "SELECT ",
            pack_columns!(),
            " FROM packs WHERE from_laestab = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );

        /// A visible pack by id.
        const PACK_SQL: &str = concat!("SELECT ", pack_columns!(), " FROM packs WHERE pack_id = $1");

        /// [`PACK_SQL`] with the pack's chunk, if it is one chunk held as a
        /// row, and the directory version.
        const PACK_AND_CHUNK_SQL: &str = concat!(
            "SELECT ",
            pack_columns!(),
            pack_chunk_columns!(),
            " FROM packs WHERE pack_id = $1"
        );

        /// A school's keys, in key id order.
        const KEYS_SQL: &str = "SELECT key_id, age_recipient, signing_key, label, roles, \
             created_at_ms, revoked_at_ms, endorsement, revoked_by, revocation_signature \
             FROM keys WHERE laestab = $1 ORDER BY key_id";

        /// The whole audit log in chain order.
        const AUDIT_SQL: &str =
            "SELECT seq, at_ms, actor, action, subject, prev_hash, hash FROM audit ORDER BY seq";

        /// `select` (a `SELECT` ending `WHERE pack_id IN (`) completed
        /// with `ids`, each bound.
        fn by_ids(select: &'static str, ids: &[PackId]) -> sqlx::QueryBuilder<$db> {
            let mut query = sqlx::QueryBuilder::<$db>::new(select);
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(id.to_string());
            }
            query.push(")");
            query
        }

        /// A pack id as a row holds it.
        fn stored_id(text: &str) -> Result<PackId> {
            text.parse()
                .map_err(|_| corrupt(format!("pack id {text:?}")))
        }

        /// A download's read of one pack's row.
        fn for_download(
            r: $crate::store::rows::PackChunkRow,
        ) -> Result<$crate::store::ForDownload> {
            Ok($crate::store::ForDownload {
                pack: pack_from_row(r.pack)?,
                chunk: r.first_chunk,
                directory_version: r.directory_version,
            })
        }

        /// A visible pack by id, on any connection or the pool.
        pub(crate) async fn pack_by_id<'c, E>(conn: E, id: &str) -> Result<Option<StoredPack>>
        where
            E: sqlx::Executor<'c, Database = $db>,
        {
            let row: Option<PackRow> = sqlx::query_as(PACK_SQL)
                .bind(id)
                .fetch_optional(conn)
                .await?;
            row.map(pack_from_row).transpose()
        }

        /// A school with all its keys and former numbers, by its LAESTAB
        /// or by a former one (an alias).
        async fn school_in(conn: &mut $conn, asked: &Laestab) -> Result<Option<School>> {
            let mut row: Option<(String, String, String, String, i64)> = sqlx::query_as(
                "SELECT laestab, name, phase, urn, created_at_ms FROM schools WHERE laestab = $1",
            )
            .bind(asked.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            if row.is_none() {
                row = sqlx::query_as(
                    "SELECT s.laestab, s.name, s.phase, s.urn, s.created_at_ms FROM schools s \
                     JOIN school_aliases a ON a.laestab = s.laestab WHERE a.alias = $1",
                )
                .bind(asked.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            }
            let Some((id, name, phase, urn, created_at_ms)) = row else {
                return Ok(None);
            };
            let keys: Vec<KeyRow> = sqlx::query_as(KEYS_SQL)
                .bind(&id)
                .fetch_all(&mut *conn)
                .await?;
            let aliases: Vec<(String,)> = sqlx::query_as(
                "SELECT alias FROM school_aliases WHERE laestab = $1 ORDER BY alias",
            )
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?;
            Ok(Some(School {
                info: NewSchool {
                    laestab: laestab(&id)?,
                    name,
                    phase,
                    urn,
                },
                created_at_ms,
                keys: keys.into_iter().map(key_from_row).collect::<Result<_>>()?,
                aliases: aliases
                    .iter()
                    .map(|(a,)| laestab(a))
                    .collect::<Result<_>>()?,
            }))
        }

        async fn insert_enrolment(
            conn: &mut $conn,
            laestab: &Laestab,
            code_hash: [u8; 32],
            roles: &[Role],
            now_ms: i64,
            expires_at_ms: i64,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO enrolments (code_hash, laestab, created_at_ms, expires_at_ms, roles) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(code_hash.to_vec())
            .bind(laestab.as_str())
            .bind(now_ms)
            .bind(expires_at_ms)
            .bind(roles_text(roles))
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn insert_key(conn: &mut $conn, laestab: &Laestab, key: &SchoolKey) -> Result<()> {
            let done = sqlx::query(
                "INSERT INTO keys (key_id, laestab, age_recipient, signing_key, label, roles, \
                 created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key_id) DO NOTHING",
            )
            .bind(key.key_id().to_string())
            .bind(laestab.as_str())
            .bind(key.public.age_recipient())
            .bind(key.public.signing_key_bytes().to_vec())
            .bind(&key.label)
            .bind(roles_text(&key.roles))
            .bind(key.created_at_ms)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() != 1 {
                return Err(StoreError::Conflict("key"));
            }
            Ok(())
        }

        impl $store {
            /// One page of a listing, then its audit entry through the queue.
            async fn page(
                &self,
                sql: &'static str,
                school: &Laestab,
                cursor: i64,
                limit: u32,
                event: audit::Event,
            ) -> Result<Page> {
                let rows: Vec<PackRow> = sqlx::query_as(sql)
                    .bind(school.as_str())
                    .bind(cursor)
                    .bind(i64::from(limit) + 1)
                    .fetch_all(&self.pool)
                    .await?;
                let page = page_from_rows(rows, limit)?;
                self.audit.append($crate::store::now_ms(), event).await?;
                Ok(page)
            }
        }

        impl Directory for $store {
            async fn add_school(
                &self,
                school: &NewSchool,
                code_hash: [u8; 32],
                roles: &[Role],
                now_ms: i64,
                expires_at_ms: i64,
                event: audit::Event,
            ) -> Result<()> {
                let mut tx = begin(&self.pool).await?;
                // A former number still routes to its school: not free.
                if school_in(&mut tx, &school.laestab).await?.is_some() {
                    return Err(StoreError::Conflict("school"));
                }
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
                // The escrow answers for both special destinations.
                if school.laestab == Laestab::ESCROW {
                    sqlx::query(
                        "INSERT INTO school_aliases (alias, laestab, created_at_ms) VALUES ($1, $2, $3)",
                    )
                    .bind(Laestab::ESCROW_ABROAD.as_str())
                    .bind(Laestab::ESCROW.as_str())
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                insert_enrolment(
                    &mut tx,
                    &school.laestab,
                    code_hash,
                    roles,
                    now_ms,
                    expires_at_ms,
                )
                .await?;
                append(&mut tx, now_ms, &event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn issue_code(
                &self,
                laestab: &Laestab,
                code_hash: [u8; 32],
                roles: &[Role],
                now_ms: i64,
                expires_at_ms: i64,
                event: audit::Event,
            ) -> Result<()> {
                let mut tx = begin(&self.pool).await?;
                if school_in(&mut tx, laestab).await?.is_none() {
                    return Err(StoreError::NotFound("school"));
                }
                insert_enrolment(&mut tx, laestab, code_hash, roles, now_ms, expires_at_ms)
                    .await?;
                append(&mut tx, now_ms, &event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_schools(&self) -> Result<Vec<School>> {
                let mut conn = self.pool.acquire().await?;
                let ids: Vec<(String,)> =
                    sqlx::query_as("SELECT laestab FROM schools ORDER BY laestab")
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
                let mut tx = begin(&self.pool).await?;
                // A concurrent redeem of the same code waits (on the row, or
                // on SQLite's write lock), then finds it used: exactly one
                // succeeds.
                let granted: Option<(String,)> = sqlx::query_as(
                    "UPDATE enrolments SET used_at_ms = $1 WHERE code_hash = $2 AND laestab = $3 \
                     AND used_at_ms IS NULL AND expires_at_ms > $1 RETURNING roles",
                )
                .bind(now_ms)
                .bind(code_hash.to_vec())
                .bind(laestab.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some((granted,)) = granted else {
                    return Err(StoreError::BadCode);
                };
                let granted = roles_from_text(&granted, "enrolment code")?;
                let mut key = key.clone();
                if key.roles.is_empty() {
                    key.roles.clone_from(&granted);
                }
                if !key.roles.iter().all(|r| granted.contains(r)) {
                    // Dropped without commit: the code stays unused.
                    return Err(StoreError::RolesNotGranted(roles_text(&granted)));
                }
                let key = &key;
                insert_key(&mut tx, laestab, key).await?;
                sqlx::query(
                    "INSERT INTO tokens (token_hash, laestab, created_at_ms, key_id) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(token_hash.to_vec())
                .bind(laestab.as_str())
                .bind(now_ms)
                .bind(key.key_id().to_string())
                .execute(&mut *tx)
                .await?;
                append(&mut tx, now_ms, &event).await?;
                let school = school_in(&mut tx, laestab)
                    .await?
                    .ok_or(StoreError::NotFound("school"))?;
                tx.commit().await?;
                Ok(school)
            }

            async fn add_key(
                &self,
                laestab: &Laestab,
                key: &SchoolKey,
                event: audit::Event,
            ) -> Result<()> {
                let mut tx = begin(&self.pool).await?;
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
                revocation: Option<Revocation>,
                event: audit::Event,
            ) -> Result<SchoolKey> {
                let mut tx = begin(&self.pool).await?;
                // A key revoked before keeps its first time and signature.
                let done = sqlx::query(
                    "UPDATE keys SET revoked_at_ms = COALESCE(revoked_at_ms, $1), \
                     revoked_by = CASE WHEN revoked_at_ms IS NULL THEN $4 ELSE revoked_by END, \
                     revocation_signature = CASE WHEN revoked_at_ms IS NULL THEN $5 \
                     ELSE revocation_signature END \
                     WHERE laestab = $2 AND key_id = $3",
                )
                .bind(now_ms)
                .bind(laestab.as_str())
                .bind(key_id.to_string())
                .bind(revocation.map(|r| r.by.to_string()))
                .bind(revocation.map(|r| r.signature.to_vec()))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::NotFound("key"));
                }
                // The key's device is shut out with it: its token goes too.
                sqlx::query(
                    "UPDATE tokens SET revoked_at_ms = COALESCE(revoked_at_ms, $1) \
                     WHERE laestab = $2 AND key_id = $3",
                )
                .bind(now_ms)
                .bind(laestab.as_str())
                .bind(key_id.to_string())
                .execute(&mut *tx)
                .await?;
                append(&mut tx, now_ms, &event).await?;
                let key = school_in(&mut tx, laestab)
                    .await?
                    .and_then(|s| s.keys.into_iter().find(|k| k.key_id() == key_id))
                    .ok_or(StoreError::NotFound("key"))?;
                tx.commit().await?;
                Ok(key)
            }

            async fn endorse_key(
                &self,
                laestab: &Laestab,
                key_id: KeyId,
                endorsement: [u8; 64],
                now_ms: i64,
                event: audit::Event,
            ) -> Result<()> {
                let mut tx = begin(&self.pool).await?;
                let done = sqlx::query(
                    "UPDATE keys SET endorsement = $1 WHERE laestab = $2 AND key_id = $3",
                )
                .bind(endorsement.to_vec())
                .bind(laestab.as_str())
                .bind(key_id.to_string())
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::NotFound("key"));
                }
                append(&mut tx, now_ms, &event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn renumber(
                &self,
                old: &Laestab,
                new: &Laestab,
                name: Option<&str>,
                now_ms: i64,
                event: audit::Event,
            ) -> Result<()> {
                let mut tx = begin(&self.pool).await?;
                let found: Option<(String, String, String, i64)> = sqlx::query_as(
                    "SELECT name, phase, urn, created_at_ms FROM schools WHERE laestab = $1",
                )
                .bind(old.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some((old_name, phase, urn, created_at_ms)) = found else {
                    return Err(StoreError::NotFound("school"));
                };
                if school_in(&mut tx, new).await?.is_some() {
                    return Err(StoreError::Conflict("school"));
                }
                sqlx::query(
                    "INSERT INTO schools (laestab, name, phase, urn, created_at_ms) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(new.as_str())
                .bind(name.unwrap_or(&old_name))
                .bind(&phase)
                .bind(&urn)
                .bind(created_at_ms)
                .execute(&mut *tx)
                .await?;
                // Everything of the school moves to its new number, in one
                // transaction: keys, tokens, codes, aliases, packs either way,
                // its own calendar. Signed headers keep the number they name.
                for sql in [
                    "UPDATE keys SET laestab = $1 WHERE laestab = $2",
                    "UPDATE tokens SET laestab = $1 WHERE laestab = $2",
                    "UPDATE enrolments SET laestab = $1 WHERE laestab = $2",
                    "UPDATE school_aliases SET laestab = $1 WHERE laestab = $2",
                    "UPDATE packs SET from_laestab = $1 WHERE from_laestab = $2",
                    "UPDATE packs SET to_laestab = $1 WHERE to_laestab = $2",
                    "UPDATE calendars SET scope = $1 WHERE scope = $2",
                ] {
                    sqlx::query(sql)
                        .bind(new.as_str())
                        .bind(old.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("DELETE FROM schools WHERE laestab = $1")
                    .bind(old.as_str())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO school_aliases (alias, laestab, created_at_ms) VALUES ($1, $2, $3)",
                )
                .bind(old.as_str())
                .bind(new.as_str())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                append(&mut tx, now_ms, &event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn directory_version(&self) -> Result<i64> {
                let (version,): (i64,) = sqlx::query_as(DIRECTORY_VERSION_SQL)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(version)
            }

            async fn token_holder(&self, token_hash: [u8; 32]) -> Result<Option<TokenHolder>> {
                // A token whose key is revoked is refused even if the token
                // row was not (revoked by hand, or before tokens had keys).
                let row: Option<(String, Option<String>)> = sqlx::query_as(
                    "SELECT t.laestab, t.key_id FROM tokens t \
                     LEFT JOIN keys k ON k.key_id = t.key_id \
                     WHERE t.token_hash = $1 AND t.revoked_at_ms IS NULL \
                     AND k.revoked_at_ms IS NULL",
                )
                .bind(token_hash.to_vec())
                .fetch_optional(&self.pool)
                .await?;
                let Some((school, key_id)) = row else {
                    return Ok(None);
                };
                let key_id = key_id
                    .map(|k| k.parse().map_err(|_| corrupt(format!("token key id {k:?}"))))
                    .transpose()?;
                Ok(Some(TokenHolder {
                    school: laestab(&school)?,
                    key_id,
                }))
            }

            async fn revoke_tokens(
                &self,
                laestab: &Laestab,
                now_ms: i64,
                event: audit::Event,
            ) -> Result<u64> {
                let mut tx = begin(&self.pool).await?;
                if school_in(&mut tx, laestab).await?.is_none() {
                    return Err(StoreError::NotFound("school"));
                }
                let done = sqlx::query(
                    "UPDATE tokens SET revoked_at_ms = $1 WHERE laestab = $2 \
                     AND revoked_at_ms IS NULL",
                )
                .bind(now_ms)
                .bind(laestab.as_str())
                .execute(&mut *tx)
                .await?;
                append(&mut tx, now_ms, &event).await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }
        }

        impl $store {
            /// Whether a pack row names `upload_id` and still holds its
            /// ciphertext (a scan: for clean-ups, not the upload path).
            pub(crate) async fn holds_ciphertext(&self, upload_id: &str) -> Result<bool> {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM packs WHERE upload_id = $1 AND deleted_at_ms IS NULL",
                )
                .bind(upload_id)
                .fetch_one(&self.pool)
                .await?;
                Ok(n > 0)
            }

            /// Removes a pack's ciphertext file once its row no longer holds
            /// it (nothing without files). A failure is logged: the row is
            /// the truth, and the next sweep removes what is left.
            async fn erase_file(&self, upload_id: &str) {
                if let Some(files) = &self.files
                    && let Err(error) = files.remove(upload_id).await
                {
                    tracing::warn!(%error, "a ciphertext file is left for the next sweep");
                }
            }
        }

        impl Packs for $store {
            async fn clean_staging(&self) -> Result<u64> {
                self.clean_staged().await
            }

            async fn pack(&self, id: PackId) -> Result<Option<StoredPack>> {
                pack_by_id(&self.pool, &id.to_string()).await
            }

            async fn packs(&self, ids: &[PackId]) -> Result<Vec<(PackId, StoredPack)>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let select = concat!(
                    "SELECT pack_id, ",
                    pack_columns!(),
                    " FROM packs WHERE pack_id IN ("
                );
                let rows: Vec<$crate::store::rows::PackIdRow> = by_ids(select, ids)
                    .build_query_as()
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter()
                    .map(|r| Ok((stored_id(&r.pack_id)?, pack_from_row(r.pack)?)))
                    .collect()
            }

            async fn pack_for_download(
                &self,
                id: PackId,
            ) -> Result<Option<$crate::store::ForDownload>> {
                let row: Option<$crate::store::rows::PackChunkRow> =
                    sqlx::query_as(PACK_AND_CHUNK_SQL)
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(for_download).transpose()
            }

            async fn packs_for_download(
                &self,
                ids: &[PackId],
            ) -> Result<Vec<(PackId, $crate::store::ForDownload)>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let select = concat!(
                    "SELECT pack_id, ",
                    pack_columns!(),
                    pack_chunk_columns!(),
                    " FROM packs WHERE pack_id IN ("
                );
                let rows: Vec<$crate::store::rows::PackIdChunkRow> = by_ids(select, ids)
                    .build_query_as()
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter()
                    .map(|r| Ok((stored_id(&r.pack_id)?, for_download(r.read)?)))
                    .collect()
            }

            async fn stage_chunk(&self, upload_id: &str, idx: i64, data: bytes::Bytes) -> Result<()> {
                if let Some(files) = &self.files {
                    return files.stage(upload_id, idx, data).await;
                }
                let mut tx = begin(&self.pool).await?;
                sqlx::query(
                    "INSERT INTO pack_chunks (upload_id, idx, staged, staged_at_ms, data) \
                     VALUES ($1, $2, TRUE, $3, $4)",
                )
                .bind(upload_id)
                .bind(idx)
                .bind($crate::store::now_ms())
                .bind(data.as_ref())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn discard_upload(&self, upload_id: &str) -> Result<()> {
                if let Some(files) = &self.files {
                    files.remove_staged(upload_id).await?;
                    // A file put in place whose commit seemed to fail: kept
                    // if its row committed after all.
                    if files.is_held(upload_id).await? && !self.holds_ciphertext(upload_id).await? {
                        files.remove(upload_id).await?;
                    }
                }
                let mut tx = begin(&self.pool).await?;
                sqlx::query("DELETE FROM pack_chunks WHERE upload_id = $1 AND staged")
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
                route: Option<$crate::store::Route>,
            ) -> Result<Committed> {
                // A file is durable and in place before its row commits,
                // and holds what the header says, to the byte. A tail that
                // starts at chunk 0 staged nothing: rows, no file to look for.
                let expected = header.header().ciphertext_len;
                let staged_nothing = tail.first().is_some_and(|(idx, _)| *idx == 0);
                let (tail, in_file) = match &self.files {
                    Some(files) if !staged_nothing => {
                        use $crate::store::files::Sealed;
                        match files.seal(upload_id, tail).await? {
                            Sealed::InFile { chunks, bytes } if bytes == expected => {
                                (Vec::new(), Some(chunks))
                            }
                            Sealed::InFile { bytes, .. } => {
                                return Err(StoreError::Corrupt(format!(
                                    "upload {upload_id}: {bytes} bytes in its file, header says {expected}"
                                )));
                            }
                            Sealed::Rows(_) if expected >= $crate::store::CHUNK_BYTES as u64 => {
                                return Err(StoreError::Corrupt(format!(
                                    "upload {upload_id}: no staged file for {expected} bytes"
                                )));
                            }
                            Sealed::Rows(tail) => (tail, None),
                        }
                    }
                    _ => (tail, None),
                };
                let committed = self.committer
                    .commit(
                        upload_id,
                        header,
                        header_bytes,
                        tail,
                        in_file.unwrap_or(0),
                        now_ms,
                        event,
                        directory_version,
                        route.unwrap_or($crate::store::Route {
                            from: header.header().from,
                            to: header.header().to,
                            peer: None,
                        }),
                    )
                    .await;
                if let Some(files) = &self.files && in_file.is_some() {
                    match committed {
                        // Staged again (invisible) for the commit after a
                        // fresh check.
                        Ok(Committed::DirectoryMoved) => files.unseal(upload_id).await?,
                        // Known not stored: its file goes.
                        Ok(Committed::Conflict | Committed::AlreadyStored(_)) => {
                            self.erase_file(upload_id).await;
                        }
                        // Stored, or unknown (an error may follow a commit
                        // that happened): `discard_upload` decides.
                        Ok(Committed::Stored(_)) | Err(_) => {}
                    }
                }
                committed
            }

            async fn inbox(
                &self,
                to: &Laestab,
                after_seq: i64,
                limit: u32,
                event: audit::Event,
            ) -> Result<Page> {
                self.page(INBOX_SQL, to, after_seq, limit, event).await
            }

            async fn sent(
                &self,
                from: &Laestab,
                before_seq: i64,
                limit: u32,
                event: audit::Event,
            ) -> Result<Page> {
                self.page(SENT_SQL, from, before_seq, limit, event).await
            }

            async fn unacknowledged(&self) -> Result<Vec<StoredPack>> {
                let rows: Vec<PackRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    pack_columns!(),
                    " FROM packs WHERE status IN ('pending', 'downloaded') ORDER BY seq"
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(pack_from_row).collect()
            }

            async fn stored_between(&self, since_ms: i64, until_ms: i64) -> Result<Vec<StoredPack>> {
                let rows: Vec<PackRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    pack_columns!(),
                    " FROM packs WHERE uploaded_at_ms >= $1 AND uploaded_at_ms < $2 ORDER BY seq"
                ))
                .bind(since_ms)
                .bind(until_ms)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(pack_from_row).collect()
            }

            async fn outstanding_bytes(&self, from: &Laestab) -> Result<u64> {
                let (bytes,): (i64,) = sqlx::query_as($crate::store::packs::OUTSTANDING_SQL)
                .bind(from.as_str())
                .fetch_one(&self.pool)
                .await?;
                u64::try_from(bytes).map_err(|_| corrupt("a negative pack length"))
            }

            async fn totals(&self) -> Result<Vec<$crate::store::packs::StatusTotal>> {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT status, COUNT(*), CAST(COALESCE(SUM(CASE WHEN deleted_at_ms IS NULL \
                     THEN ciphertext_length ELSE 0 END), 0) AS BIGINT) FROM packs GROUP BY status",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(status, packs, bytes)| {
                        Ok($crate::store::packs::StatusTotal {
                            status: $crate::store::PackStatus::from_text(&status)
                                .ok_or_else(|| corrupt(format!("unknown pack status {status:?}")))?,
                            packs: u64::try_from(packs).map_err(|_| corrupt("a negative count"))?,
                            bytes: u64::try_from(bytes)
                                .map_err(|_| corrupt("a negative pack length"))?,
                        })
                    })
                    .collect()
            }

            async fn chunk(&self, upload_id: &str, idx: i64) -> Result<Vec<u8>> {
                // A chunk after the first is a file's (packs kept in rows
                // beside files are a single partial chunk): read without
                // asking the database first; rows if there is no file (a
                // database older than its files).
                if idx > 0
                    && let Some(files) = &self.files
                    && let Some(data) = files.read(upload_id, idx).await?
                {
                    return Ok(data);
                }
                let row: Option<(Vec<u8>,)> = sqlx::query_as(
                    "SELECT data FROM pack_chunks WHERE upload_id = $1 AND idx = $2 \
                     AND NOT staged",
                )
                .bind(upload_id)
                .bind(idx)
                .fetch_optional(&self.pool)
                .await?;
                // Rows first: the small packs of the busy path never touch
                // the file system; a large pack's chunks are in its file.
                if let Some((data,)) = row {
                    return Ok(data);
                }
                if idx == 0
                    && let Some(files) = &self.files
                    && let Some(data) = files.read(upload_id, idx).await?
                {
                    return Ok(data);
                }
                Err(corrupt(format!("chunk {idx} of upload {upload_id} is missing")))
            }

            async fn mark_downloaded(
                &self,
                id: PackId,
                now_ms: i64,
                event: audit::Event,
            ) -> Result<()> {
                use $crate::store::appender::Write;
                self.audit.write(now_ms, Write::Downloaded { id, event }).await.map(|_| ())
            }

            async fn confirm_download(
                &self,
                id: PackId,
                to: &Laestab,
                sha256: &[u8],
                safeguarding: bool,
                directory_version: Option<i64>,
                now_ms: i64,
                event: audit::Event,
            ) -> Result<bool> {
                use $crate::store::appender::{Write, Written};
                let write = Write::Confirm {
                    id,
                    to: to.to_string(),
                    sha256: sha256.to_vec(),
                    safeguarding,
                    directory_version,
                    event,
                };
                match self.audit.write(now_ms, write).await? {
                    Written::Confirmed(moved) => Ok(moved),
                    _ => Err(corrupt("a download's write answered without an outcome")),
                }
            }

            async fn acknowledge(
                &self,
                id: PackId,
                receipt: &[u8],
                now_ms: i64,
                event: audit::Event,
            ) -> Result<Acknowledged> {
                use $crate::store::appender::{Write, Written};
                let write = Write::Acknowledge { id, receipt: receipt.to_vec(), event };
                match self.audit.write(now_ms, write).await? {
                    Written::Acknowledged(outcome) => Ok(outcome),
                    _ => Err(corrupt("a receipt's write answered without an outcome")),
                }
            }
        }

        impl $crate::store::Calendars for $store {
            async fn set_calendar(
                &self,
                cal: &$crate::store::StoredCalendar,
                event: audit::Event,
            ) -> Result<()> {
                let mut tx = begin(&self.pool).await?;
                sqlx::query(
                    "INSERT INTO calendars (scope, name, body, imported_at_ms) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (scope) DO UPDATE SET name = excluded.name, body = excluded.body, \
                     imported_at_ms = excluded.imported_at_ms",
                )
                .bind(cal.school.map(|s| s.to_string()).unwrap_or_default())
                .bind(&cal.name)
                .bind(&cal.body)
                .bind(cal.imported_at_ms)
                .execute(&mut *tx)
                .await?;
                append(&mut tx, cal.imported_at_ms, &event).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn calendars(&self) -> Result<Vec<$crate::store::StoredCalendar>> {
                let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
                    "SELECT scope, name, body, imported_at_ms FROM calendars ORDER BY scope",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(scope, name, body, imported_at_ms)| {
                        let school = if scope.is_empty() { None } else { Some(laestab(&scope)?) };
                        Ok($crate::store::StoredCalendar { school, name, body, imported_at_ms })
                    })
                    .collect()
            }
        }

        impl AuditLog for $store {
            async fn record(&self, event: audit::Event) -> Result<()> {
                self.audit.append($crate::store::now_ms(), event).await
            }

            async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>> {
                let row: Option<(i64, Vec<u8>)> = sqlx::query_as($crate::store::rows::HEAD_SQL)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map($crate::store::rows::head).transpose()
            }

            fn written_head(&self) -> Option<(u64, [u8; 32])> {
                self.committer.written_head()
            }

            async fn recent_audit(&self, limit: u32) -> Result<Vec<audit::Entry>> {
                let rows: Vec<AuditRow> = sqlx::query_as(
                    "SELECT seq, at_ms, actor, action, subject, prev_hash, hash FROM audit \
                     ORDER BY seq DESC LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(entry_from_row).collect())
            }

            fn audit_log(&self) -> Entries<'_> {
                Box::pin(
                    sqlx::query_as::<_, AuditRow>(AUDIT_SQL)
                        .fetch(&self.pool)
                        .map(|row| row.map(entry_from_row).map_err(StoreError::from)),
                )
            }
        }
    };
}
