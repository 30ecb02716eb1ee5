//! The PostgreSQL store: the conformance suite on a fresh database per test
//! (skipped, saying so, without `BATON_TEST_DATABASE_URL`), plus what only
//! a shared database must do: several stores (nodes) on one database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit;
use crate::store::conformance::{self, last, suite};
use crate::store::{Committed, Packs as _, StoreError};
use baton::pack::PackId;

#[path = "../../../tests/it/common/pgdb.rs"]
mod pgdb;

/// A store on a database of its own, or `None` (skipped) without a server.
async fn open() -> Option<(Postgres, pgdb::TestDb)> {
    let Some(db) = pgdb::TestDb::from_env().await else {
        pgdb::skipped("postgres-conformance");
        return None;
    };
    let store = Postgres::open(&db.url, 8).await.unwrap();
    pgdb::note("postgres-conformance: ran");
    Some((store, db))
}

suite!(open);

fn event() -> audit::Event {
    audit::Event::by_admin("test", "x")
}

#[tokio::test]
async fn only_stale_staged_chunks_are_cleaned() {
    let Some((store, _db)) = open().await else {
        return;
    };
    store.stage_chunk("old", 0, last(b"ab")).await.unwrap();
    store.stage_chunk("old", 1, last(b"cd")).await.unwrap();
    store.stage_chunk("live", 0, last(b"ef")).await.unwrap();
    let long_ago = super::super::now_ms() - super::events::STALE_UPLOAD.as_millis() as i64 - 1000;
    sqlx::query("UPDATE pack_chunks SET staged_at_ms = $1 WHERE upload_id = 'old'")
        .bind(long_ago)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(store.clean_staging().await.unwrap(), 2);
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pack_chunks")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 1);
}

#[tokio::test]
async fn a_commit_missing_a_chunk_is_refused() {
    let Some((store, _db)) = open().await else {
        return;
    };
    let id = PackId::new();
    let (a, b) = (conformance::school_id(1), conformance::school_id(2));
    let h = conformance::header(id, a, b, 1, 4);
    store.stage_chunk("u", 0, last(b"ab")).await.unwrap();
    let refused = store
        .commit_upload("u", &h, b"h", vec![], 1, event(), None, None)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Corrupt(_))),
        "{refused:?}"
    );
    assert!(store.pack(id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_chain_and_hear_each_other() {
    let Some((node_a, db)) = open().await else {
        return;
    };
    let node_b = Arc::new(Postgres::open(&db.url, 4).await.unwrap());
    let node_a = Arc::new(node_a);
    node_b.listen().await.unwrap();
    let mut heard = node_b.subscribe();
    let (a, b) = (conformance::school_id(1), conformance::school_id(2));
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let node = if i % 2 == 0 {
            node_a.clone()
        } else {
            node_b.clone()
        };
        tasks.push(tokio::spawn(async move {
            let id = PackId::new();
            let upload = format!("u{i}");
            node.stage_chunk(&upload, 0, last(b"abc")).await.unwrap();
            let h = conformance::header(id, a, b, i, 3);
            let done = node
                .commit_upload(&upload, &h, &[i], vec![], i64::from(i), event(), None, None)
                .await
                .unwrap();
            assert!(matches!(done, Committed::Stored(_)));
            node.acknowledge(id, b"r", 1, event()).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for _ in 0..16 {
        tokio::time::timeout(Duration::from_secs(10), heard.recv())
            .await
            .expect("node B missed an arrival")
            .unwrap();
    }
    assert_eq!(audit::verify(&conformance::log(&*node_a).await), Ok(32));
}

#[tokio::test]
async fn tokens_from_before_keys_are_bound_to_the_schools_first_key() {
    let Some(db) = pgdb::TestDb::from_env().await else {
        pgdb::skipped("postgres-conformance");
        return;
    };
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::migrate!("server/migrations/postgres")
        .run_to(2, &pool)
        .await
        .unwrap();
    conformance::seed_tokens_without_keys!(&pool);
    pool.close().await;
    let store = Postgres::open(&db.url, 4).await.unwrap();
    conformance::tokens_without_keys_are_bound_to_the_first_key(&store).await;
}
