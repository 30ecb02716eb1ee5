//! The SQLite store: the conformance suite, plus what only a single-node
//! file database does (every staged chunk is removed on start).
#![allow(clippy::unwrap_used)]

use super::*;
use crate::store::conformance::{self, suite};

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
    store.stage_chunk("u1", 0, b"ab").await.unwrap();
    store.stage_chunk("u1", 1, b"cd").await.unwrap();
    assert_eq!(store.clean_staging().await.unwrap(), 2);

    let id = PackId::new();
    let (a, b) = (conformance::school_id(1), conformance::school_id(2));
    let h = conformance::header(id, a, b, 1, 2);
    store.stage_chunk("u2", 0, b"ab").await.unwrap();
    store
        .commit_upload("u2", &h, b"h", vec![], 1, event())
        .await
        .unwrap();
    store.stage_chunk("u3", 0, b"ab").await.unwrap();
    store
        .commit_upload("u3", &h, b"h", vec![], 2, event())
        .await
        .unwrap();
    let (left,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM pack_chunks WHERE upload_id != 'u2'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}
