//! The SQLite store: the conformance suite, plus what only a single-node
//! file database does (every staged chunk is removed on start).
#![allow(clippy::unwrap_used)]

use super::sql::{INBOX_SQL, SENT_SQL};
use super::*;
use crate::audit;
use crate::store::conformance::{self, last, suite};
use crate::store::{Committed, Packs as _};
use baton::pack::PackId;

/// A store in a temporary directory (kept alive by the guard).
async fn open() -> Option<(Sqlite, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(&dir.path().join("t.db")).await.unwrap();
    Some((store, dir))
}

suite!(open);

fn event() -> audit::Event {
    audit::Event::by_admin("test", "x")
}

#[tokio::test]
async fn staging_is_cleaned_and_finished_uploads_leave_no_staged_chunks() {
    let (store, _dir) = open().await.unwrap();
    store
        .stage_chunk("u1", 0, conformance::full(b"ab"))
        .await
        .unwrap();
    store
        .stage_chunk("u1", 1, conformance::full(b"cd"))
        .await
        .unwrap();
    assert_eq!(store.clean_staging().await.unwrap(), 2);

    let id = PackId::new();
    let (a, b) = (conformance::school_id(1), conformance::school_id(2));
    let h = conformance::header(id, a, b, 1, 2);
    store.stage_chunk("u2", 0, last(b"ab")).await.unwrap();
    store
        .commit_upload("u2", &h, b"h", vec![], 1, event(), None, None)
        .await
        .unwrap();
    store.stage_chunk("u3", 0, last(b"ab")).await.unwrap();
    store
        .commit_upload("u3", &h, b"h", vec![], 2, event(), None, None)
        .await
        .unwrap();
    let (left,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM pack_chunks WHERE upload_id != 'u2'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_are_grouped_all_visible_and_the_audit_chain_verifies() {
    const N: usize = 64;
    let (store, _dir) = open().await.unwrap();
    let (a, b) = (conformance::school_id(1), conformance::school_id(2));
    // One pack id is committed twice with different headers: exactly one
    // wins, the other is a conflict and fails alone.
    let contested = PackId::new();
    let mut tasks = Vec::new();
    for i in 0..N {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let upload = format!("u{i}");
            store
                .stage_chunk(&upload, 0, conformance::full(b"staged"))
                .await
                .unwrap();
            let (id, header_bytes) = if i >= N - 2 {
                (contested, format!("contested {i}").into_bytes())
            } else {
                (PackId::new(), format!("h{i}").into_bytes())
            };
            let h = conformance::header(id, a, b, 1, crate::store::CHUNK_BYTES as u64 + 4);
            let event = audit::Event::by_school(&a, "pack.upload", id);
            let done = store
                .commit_upload(
                    &upload,
                    &h,
                    &header_bytes,
                    vec![(1, b"tail".to_vec())],
                    7,
                    event,
                    None,
                    None,
                )
                .await
                .unwrap();
            (id, done)
        }));
    }
    let mut stored = 0;
    let mut conflicts = 0;
    for task in tasks {
        let (id, done) = task.await.unwrap();
        match done {
            Committed::Stored(7) => {
                stored += 1;
                let pack = store.pack(id).await.unwrap().unwrap();
                assert_eq!(pack.chunks, 2);
                assert_eq!(
                    store.chunk(&pack.upload_id, 0).await.unwrap(),
                    conformance::full(b"staged")
                );
                assert_eq!(store.chunk(&pack.upload_id, 1).await.unwrap(), b"tail");
            }
            Committed::Conflict => conflicts += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((stored, conflicts), (N - 1, 1));
    // Settled by the batched write itself, never by the fallback.
    assert_eq!(
        crate::store::group::FALLBACKS.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    let log = conformance::log(&store).await;
    assert_eq!(log.len(), N - 1);
    assert_eq!(audit::verify(&log).unwrap(), (N - 1) as u64);
    // The losing upload's staged chunk is gone; nothing is left staged.
    let (staged,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pack_chunks WHERE staged = 1")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(staged, 0);
}

#[tokio::test]
async fn listings_are_index_range_scans_without_a_sort() {
    let (store, _dir) = open().await.unwrap();
    for (sql, index) in [(INBOX_SQL, "packs_inbox_live"), (SENT_SQL, "packs_sent")] {
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .bind("8612001")
                .bind(0_i64)
                .bind(10_i64)
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let text: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        let text = text.join("; ");
        assert!(text.contains(&format!("USING INDEX {index}")), "{text}");
        assert!(!text.contains("TEMP B-TREE"), "{text}");
    }
}

#[tokio::test]
async fn the_quota_is_read_from_outstanding_packs_only() {
    let (store, _dir) = open().await.unwrap();
    let sql = format!(
        "EXPLAIN QUERY PLAN {}",
        crate::store::packs::OUTSTANDING_SQL
    );
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind("8612001")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    let text: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
    let text = text.join("; ");
    assert!(
        text.contains("USING COVERING INDEX packs_outstanding"),
        "{text}"
    );
}

#[tokio::test]
async fn tokens_from_before_keys_are_bound_to_the_schools_first_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate!("server/migrations/sqlite")
        .run_to(3, &pool)
        .await
        .unwrap();
    conformance::seed_tokens_without_keys!(&pool);
    pool.close().await;
    let store = Sqlite::open(&path).await.unwrap();
    conformance::tokens_without_keys_are_bound_to_the_first_key(&store).await;
}

#[tokio::test]
async fn connections_zero_deleted_content_keep_temporary_storage_in_memory_and_never_checkpoint() {
    let (store, _dir) = open().await.unwrap();
    // Three connections held at once: three different ones.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = store.pool.acquire().await.unwrap();
        let (secure, temp): (i64, i64) = sqlx::query_as(
            "SELECT secure_delete, temp_store FROM pragma_secure_delete, pragma_temp_store",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        let (autocheckpoint,): (i64,) = sqlx::query_as("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        // secure_delete ON; temp_store 2 is MEMORY; no call checkpoints
        // the WAL inside itself (the checkpoint task does).
        assert_eq!((secure, temp, autocheckpoint), (1, 2, 0));
        held.push(conn);
    }
}

/// Each query through the pool costs one round trip to the connection's
/// thread less without a ping before it (a connection here is a thread in
/// the daemon, not a link that can drop); sqlx still pings a connection as
/// it goes back to the pool.
#[tokio::test]
async fn the_pool_hands_out_connections_without_pinging_them_first() {
    let (store, _dir) = open().await.unwrap();
    assert!(!store.pool.options().get_test_before_acquire());
    // Connections handed out that way still work, and one taken back and
    // handed out again too.
    for _ in 0..3 {
        let (one,): (i64,) = sqlx::query_as("SELECT 1")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(one, 1);
    }
}

#[tokio::test]
async fn the_group_writer_connects_with_the_pools_settings() {
    let (store, dir) = open().await.unwrap();
    let writer = writer::connect(&dir.path().join("t.db")).unwrap();
    let mut pooled = store.pool.acquire().await.unwrap();
    for pragma in [
        "journal_mode",
        "synchronous",
        "foreign_keys",
        "secure_delete",
        "temp_store",
        "wal_autocheckpoint",
        "busy_timeout",
        "cache_size",
        "locking_mode",
    ] {
        let sql = format!("PRAGMA {pragma}");
        let pool_value: String =
            match sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_one(&mut *pooled)
                .await
            {
                Ok((text,)) => text,
                Err(_) => {
                    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                        .fetch_one(&mut *pooled)
                        .await
                        .unwrap();
                    n.to_string()
                }
            };
        let writer_value: rusqlite::types::Value =
            writer.query_row(&sql, [], |row| row.get(0)).unwrap();
        let writer_value = match writer_value {
            rusqlite::types::Value::Integer(n) => n.to_string(),
            rusqlite::types::Value::Text(text) => text,
            other => panic!("{pragma}: {other:?}"),
        };
        assert_eq!(writer_value, pool_value, "PRAGMA {pragma}");
    }
    // Not the defaults, so the comparison means something.
    let synchronous: i64 = writer
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap();
    assert_eq!(synchronous, 2, "FULL");
    let checkpoints: i64 = writer
        .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))
        .unwrap();
    assert_eq!(checkpoints, 0);
}
